/// <reference types="node" />
/**
 * `krafter listen` end to end (issue 18): the real CLI (bin/krafter.mjs, run by the
 * system's own Node when there is one besides the pinned 22, so Node 20 is what runs it
 * here) against `wrangler dev`, forwarding to real loopback receivers.
 *
 * - 20 live events arrive, each verified by `standardwebhooks` with the secret the CLI
 *   printed, in order, one line each;
 * - killed (SIGKILL), 10 events sent, restarted: the 10 arrive first, in order, then new
 *   ones, none twice, and the secret is the same;
 * - the relay stopped for a few seconds under a running CLI: it reconnects by itself and
 *   misses nothing, in order;
 * - two sources at once;
 * - listener traffic (the local URL answering 500) leaves the destination's attempts and
 *   failure_count alone, and the CLI retries nothing;
 * - an unknown key and another account's source are refused: nothing forwarded;
 * - Ctrl-C exits cleanly; `npx krafter` is the same command.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { Webhook } from "standardwebhooks";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Received } from "../support/receiver";
import { startReceiver, type ReceiverHandle } from "../support/receiver";
import { Api, openMailbox, waitFor } from "./flow";
import { applyMigrations, childEnv, DEFAULT_VARS, freePort, ROOT, run, runApiKey, startWranglerDev, type WranglerDev } from "./harness";

const CLI = join(ROOT, "bin", "krafter.mjs");

/** The Node a developer has: the first `node` on PATH outside node_modules (the pinned 22 is there), else this one. */
function plainNode(): string {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir || dir.includes("node_modules")) continue;
    const candidate = join(dir, "node");
    if (existsSync(candidate)) return candidate;
  }
  return process.execPath;
}
const NODE = plainNode();

let receiver: ReceiverHandle;
let persistTo: string;
let envFile: string;
let port: number;
let relay: WranglerDev;
let origin: string;
let key: string;
let api: Api;
let stateDir: string;
const clis = new Set<Cli>();

async function startRelay(): Promise<void> {
  relay = await startWranglerDev({ port, persistTo, envFile, vars: { ...DEFAULT_VARS } });
  origin = relay.origin;
}

async function createKey(account: string, scopes = "webhooks:read"): Promise<string> {
  const r = await runApiKey(["create", "--account", account, "--scopes", scopes], persistTo);
  const k = r.stdout.trimEnd().split("\n").at(-1) ?? "";
  if (r.code !== 0 || !k.startsWith("krf_")) throw new Error(`api-key create failed:\n${r.stdout}\n${r.stderr}`);
  return k;
}

beforeAll(async () => {
  receiver = await startReceiver();
  persistTo = await mkdtemp(join(tmpdir(), "krafter-listen-e2e-"));
  stateDir = join(persistTo, "listen-state");
  envFile = join(persistTo, "empty.env");
  await writeFile(envFile, "");
  await applyMigrations(persistTo);
  port = await freePort();
  await startRelay();
  api = new Api(origin, await createKey("listen-e2e", "webhooks:read,webhooks:write"));
  // The CLI gets a read-only key: all it needs.
  key = await createKey("listen-e2e");
});

// A test that failed halfway leaves no CLI behind to forward into the next one's mailboxes.
afterEach(async () => {
  const left = [...clis];
  for (const c of left) c.kill("SIGKILL");
  await Promise.all(left.map((c) => c.exited));
});

afterAll(async () => {
  for (const c of clis) c.kill("SIGKILL");
  await relay?.stop();
  await receiver?.close();
  if (persistTo) await rm(persistTo, { recursive: true, force: true, maxRetries: 3 });
});

class Cli {
  readonly lines: string[] = [];
  readonly errors: string[] = [];
  readonly exited: Promise<number>;
  private readonly proc: ChildProcess;

  constructor(args: string[], opts: { env?: Record<string, string>; command?: string[] } = {}) {
    const command = opts.command ?? [NODE, CLI];
    this.proc = spawn(command[0]!, [...command.slice(1), ...args], {
      cwd: ROOT,
      env: childEnv({ KRAFTER_URL: origin, KRAFTER_API_KEY: key, KRAFTER_STATE_DIR: stateDir, ...opts.env }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    clis.add(this);
    const split = (into: string[]) => {
      let rest = "";
      return (d: string) => {
        rest += d;
        const parts = rest.split("\n");
        rest = parts.pop()!;
        into.push(...parts);
      };
    };
    this.proc.stdout!.setEncoding("utf8").on("data", split(this.lines));
    this.proc.stderr!.setEncoding("utf8").on("data", split(this.errors));
    this.exited = new Promise((resolve) =>
      this.proc.on("exit", (code, signal) => {
        clis.delete(this);
        resolve(code ?? (signal ? 128 : 0));
      }),
    );
  }

  output(): string {
    return `--- stdout ---\n${this.lines.join("\n")}\n--- stderr ---\n${this.errors.join("\n")}`;
  }

  async waitForLine(re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    return waitFor(async () => {
      for (const l of this.lines) {
        const m = re.exec(l);
        if (m) return m;
      }
      return undefined;
    }, timeoutMs, `${re} in the CLI's output\n${this.output()}`);
  }

  async secret(): Promise<string> {
    return (await this.waitForLine(/^Listener secret: (whsec_\S+)/))[1]!;
  }

  /** Waits until every source has said "Ready" this many times in all. */
  async ready(times = 1): Promise<void> {
    await waitFor(async () => (this.lines.filter((l) => l.startsWith("Ready: ")).length >= times ? true : undefined), 60_000, `ready ×${times}\n${this.output()}`);
  }

  kill(signal: NodeJS.Signals) {
    this.proc.kill(signal);
  }
}

const listen = (sources: string[], forwardTo: string, extra: string[] = []) => new Cli(["listen", "--source", sources.join(","), "--forward-to", forwardTo, ...extra]);

/** Sends events one after another (so their order is known), returning their ids and bodies. */
async function send(ingestUrl: string, n: number, tag: string): Promise<{ id: string; body: string; type: string }[]> {
  const out = [];
  for (let i = 0; i < n; i++) {
    const type = i % 2 ? "invoice.paid" : "customer.created";
    // A big integer, byte for byte: the relay never parses and serializes a payload again.
    const body = `{"id":"evt_${tag}_${i}","type":"${type}","n":${i},"big":12345678901234567890,"note":"é ✓"}`;
    const res = await fetch(ingestUrl, { method: "POST", headers: { "content-type": "application/json" }, body });
    const json = (await res.json()) as { data: { event_id: string } };
    expect(res.status).toBe(202);
    out.push({ id: json.data.event_id, body, type });
  }
  return out;
}

/** Every request verified with the listener secret; their webhook-ids in arrival order. */
function verified(received: Received[], secret: string): string[] {
  const wh = new Webhook(secret);
  return received.map((r) => {
    wh.verify(r.body, r.headers);
    return r.headers["webhook-id"]!;
  });
}

const arrived = async (box: { requests(): Promise<Received[]> }, n: number, what: string) =>
  waitFor(async () => {
    const r = await box.requests();
    return r.length >= n ? r : undefined;
  }, 60_000, what);

describe("krafter listen", () => {
  let source: { id: string; ingest_url: string };
  let box: Awaited<ReturnType<typeof openMailbox>>;
  let firstSecret: string;
  let all: { id: string; body: string; type: string }[] = [];

  it("forwards 20 live events, each verified with the printed secret, in order, one line each", async () => {
    source = await api.createSource({ name: "listen e2e" });
    box = await openMailbox(receiver.origin);
    const cli = listen([source.id], box.url);
    firstSecret = await cli.secret();
    await cli.ready();
    all = await send(source.ingest_url, 20, "live");
    const got = await arrived(box, 20, "20 forwards");
    await new Promise((r) => setTimeout(r, 500));
    expect(await box.requests()).toHaveLength(20);
    expect(verified(got, firstSecret)).toEqual(all.map((e) => e.id));
    for (const [i, r] of got.entries()) {
      expect(r.method).toBe("POST");
      expect(r.headers["content-type"]).toBe("application/json");
      expect(r.headers["user-agent"]).toMatch(/^Krafter-Webhooks\//);
      expect(r.body).toBe(`{"event":${JSON.stringify(all[i]!.type)},"data":${all[i]!.body},"source_id":"${source.id}"}`);
    }
    for (const e of all) {
      const line = await cli.waitForLine(new RegExp(`  ${e.id}  `));
      // ("(missed)" only if wrangler dev reloaded the Worker meanwhile, as it does when a
      // source file changes: the CLI then reconnected and caught up.)
      expect(line.input).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ  ${e.type.replace(".", "\\.")}  ${e.id}  → 200  \\d+ ms(  \\(missed\\))?$`));
    }
    cli.kill("SIGKILL");
    await cli.exited;
  });

  it("killed, then 10 events, then restarted: the 10 first, in order, then new ones; none twice; the same secret", async () => {
    const missed = await send(source.ingest_url, 10, "missed");
    const cli = listen([source.id], box.url);
    expect(await cli.secret()).toBe(firstSecret);
    await cli.ready();
    await arrived(box, 30, "the 10 missed");
    const live = await send(source.ingest_url, 5, "after");
    const got = await arrived(box, 35, "5 more");
    await new Promise((r) => setTimeout(r, 500));
    all = [...all, ...missed, ...live];
    expect(verified(await box.requests(), firstSecret)).toEqual(all.map((e) => e.id));
    for (const e of missed) expect((await cli.waitForLine(new RegExp(`  ${e.id}  `))).input).toMatch(/ → 200  \d+ ms  \(missed\)$/);
    await cli.waitForLine(new RegExp(`^${source.id}: caught up on 10 missed events$`));
    expect(got).toHaveLength(35);

    // Ctrl-C: a clean stop.
    cli.kill("SIGINT");
    expect(await cli.exited).toBe(0);
    expect(cli.errors).toContain("Stopped.");
  });

  it("the relay stopped for a few seconds under a running CLI: it reconnects by itself and misses nothing", async () => {
    const cli = listen([source.id], box.url);
    await cli.ready();
    // Nothing was missed since the Ctrl-C.
    await cli.waitForLine(new RegExp(`^${source.id}: caught up on 0 missed events$`));
    const before = await send(source.ingest_url, 3, "before-stop");
    await arrived(box, all.length + 3, "3 before the stop");
    await relay.stop();
    await new Promise((r) => setTimeout(r, 3_000));
    await startRelay();
    // Sent while the CLI is still waiting to reconnect: caught up on reconnect.
    const during = await send(source.ingest_url, 4, "after-restart");
    await cli.ready(2);
    const after = await send(source.ingest_url, 3, "live-again");
    all = [...all, ...before, ...during, ...after];
    await arrived(box, all.length, "everything after the restart");
    await new Promise((r) => setTimeout(r, 500));
    expect(verified(await box.requests(), firstSecret)).toEqual(all.map((e) => e.id));
    expect(cli.errors.some((l) => l.includes("reconnecting in"))).toBe(true);
    cli.kill("SIGINT");
    expect(await cli.exited).toBe(0);
  });

  it("listens to two sources at once", async () => {
    const a = await api.createSource({ name: "listen a" });
    const b = await api.createSource({ name: "listen b" });
    const both = await openMailbox(receiver.origin);
    const cli = listen([a.id, b.id], both.url);
    const secret = await cli.secret();
    await cli.ready(2);
    const sent = [];
    for (let i = 0; i < 5; i++) {
      sent.push({ ...(await send(a.ingest_url, 1, `a${i}`))[0]!, source: a.id });
      sent.push({ ...(await send(b.ingest_url, 1, `b${i}`))[0]!, source: b.id });
    }
    const got = await arrived(both, 10, "10 forwards from 2 sources");
    await new Promise((r) => setTimeout(r, 500));
    expect(await both.requests()).toHaveLength(10);
    expect(new Set(verified(got, secret))).toEqual(new Set(sent.map((e) => e.id)));
    for (const r of got) {
      const e = sent.find((s) => s.id === r.headers["webhook-id"])!;
      expect(JSON.parse(r.body).source_id).toBe(e.source);
    }
    // Each source's own events in order.
    for (const s of [a.id, b.id]) {
      expect(got.filter((r) => JSON.parse(r.body).source_id === s).map((r) => r.headers["webhook-id"])).toEqual(sent.filter((e) => e.source === s).map((e) => e.id));
    }
    cli.kill("SIGINT");
    expect(await cli.exited).toBe(0);
  });

  it("large events: 200 KB inline in one frame, 1 MB by reference through the events API; both byte for byte", async () => {
    const s = await api.createSource({ name: "listen large" });
    const big = await openMailbox(receiver.origin);
    const cli = listen([s.id], big.url);
    const secret = await cli.secret();
    await cli.ready();
    // 200 KB of two-byte characters (a 64-bit frame length), then a frame over 1 MB.
    const bodies = [`{"type":"large.0","blob":"${"é".repeat(100_000)}"}`, `{"type":"large.1","blob":"${"x".repeat(1_000_100)}"}`];
    const ids: string[] = [];
    for (const body of bodies) {
      const res = await fetch(s.ingest_url, { method: "POST", headers: { "content-type": "application/json" }, body });
      expect(res.status).toBe(202);
      ids.push(((await res.json()) as { data: { event_id: string } }).data.event_id);
    }
    const got = await arrived(big, 2, "the 2 large events");
    expect(verified(got, secret)).toEqual(ids);
    got.forEach((r, i) => expect(r.body).toBe(`{"event":"large.${i}","data":${bodies[i]},"source_id":"${s.id}"}`));
    // Only the second was read through the API (the relay's request log says so).
    const detailPath = (id: string) => `"path":"/api/v1/webhooks/sources/${s.id}/events/${id}"`;
    expect(relay.output()).toContain(detailPath(ids[1]!));
    expect(relay.output()).not.toContain(detailPath(ids[0]!));
    cli.kill("SIGINT");
    expect(await cli.exited).toBe(0);
  });

  it("a local URL answering 500 leaves the destination's attempts and failure_count alone, and is not retried", async () => {
    const s = await api.createSource({ name: "listen and deliver" });
    const destBox = await openMailbox(receiver.origin);
    const dest = await api.createDestination(s.id, { url: destBox.url });
    const local = await openMailbox(receiver.origin, { repeat: { status: 500, body: "local bug" } });
    const cli = listen([s.id], local.url);
    await cli.ready();
    const sent = await send(s.ingest_url, 5, "both");
    await arrived(destBox, 5, "the destination's 5");
    await arrived(local, 5, "the listener's 5");
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await local.requests()).toHaveLength(5);
    expect(await destBox.requests()).toHaveLength(5);
    for (const e of sent) await cli.waitForLine(new RegExp(`  ${e.id}  → 500  \\d+ ms$`));
    const d = await api.call("GET", `/api/v1/webhooks/sources/${s.id}/destinations/${dest.id}`);
    expect(d.body.data).toMatchObject({ failure_count: 0, enabled: true });
    const attempts = await api.call("GET", `/api/v1/webhooks/sources/${s.id}/destinations/${dest.id}/attempts`);
    expect(attempts.body.data).toHaveLength(5);
    expect(attempts.body.data.every((a: { outcome: string }) => a.outcome === "succeeded")).toBe(true);
    const detail = await api.call("GET", `/api/v1/webhooks/sources/${s.id}/events/${sent[0]!.id}`);
    expect(detail.body.data.deliveries.map((x: { destination_id: string }) => x.destination_id)).toEqual([dest.id]);
    cli.kill("SIGINT");
    await cli.exited;
  });

  it("refuses an unknown key and another account's source, forwarding nothing; --since replays from a time", async () => {
    const box2 = await openMailbox(receiver.origin);
    const unknown = new Cli(["listen", "--source", source.id, "--forward-to", box2.url], { env: { KRAFTER_API_KEY: "krf_" + "A".repeat(43) } });
    expect(await unknown.exited).toBe(1);
    expect(unknown.errors.join("\n")).toMatch(/unauthorized.*HTTP 401/);
    const stranger = new Cli(["listen", "--source", source.id, "--forward-to", box2.url], { env: { KRAFTER_API_KEY: await createKey("someone-else") } });
    expect(await stranger.exited).toBe(1);
    expect(stranger.errors.join("\n")).toMatch(/not_found.*HTTP 404/);
    await new Promise((r) => setTimeout(r, 300));
    expect(await box2.requests()).toEqual([]);

    // --since: from the first event's second, everything, in order, whatever was handled.
    const detail = await api.call("GET", `/api/v1/webhooks/sources/${source.id}/events/${all[0]!.id}`);
    const since = detail.body.data.received_at as string;
    const replay = new Cli(["listen", "--source", source.id, "--forward-to", box2.url, "--since", since]);
    await replay.ready();
    const got = await arrived(box2, all.length, "the replay");
    await new Promise((r) => setTimeout(r, 500));
    expect(verified(await box2.requests(), firstSecret)).toEqual(all.map((e) => e.id));
    expect(got).toHaveLength(all.length);
    replay.kill("SIGINT");
    expect(await replay.exited).toBe(0);
  });

  it("the README shows the command and output this CLI prints", async () => {
    const text = await readFile(join(ROOT, "README.md"), "utf8");
    const start = text.indexOf("\n## Listening locally\n");
    expect(start).toBeGreaterThan(0);
    const section = text.slice(start, text.indexOf("\n## ", start + 1));
    expect(section).toContain('npx krafter listen --source "$SOURCE_ID" --forward-to http://localhost:3000/webhooks');
    const lines = [...section.matchAll(/```text\n([\s\S]*?)\n```/g)].flatMap((m) => m[1]!.split("\n"));
    const eventLines = lines.filter((l) => /^\d{4}-/.test(l));
    expect(eventLines.length).toBeGreaterThan(3);
    for (const l of eventLines) expect(l).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  [a-z_.]+  019…-[0-9a-f]{4}-[0-9a-f]{12}  → \d{3}  \d+ ms(  \(missed\))?$/);
    for (const prefix of ["Listener secret: whsec_", "Forwarding ", "Ready: "]) expect(lines.some((l) => l.startsWith(prefix)), prefix).toBe(true);
    expect(lines).toContain("019…: caught up on 3 missed events");
  });

  it("npx krafter is the same command; bad arguments are a usage error", async () => {
    const help = await run("npx", ["krafter", "--help"], { timeoutMs: 60_000 });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: krafter listen --source/);
    const bad = await run(NODE, [CLI, "listen", "--source", "x", "--forward-to", "http://localhost:1/x", "--api-key", key, "--since", "yesterday"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--since must be an RFC 3339 date-time/);
  });
});
