/**
 * The README's walk-through, run verbatim so it cannot drift from what Krafter does.
 *
 * The shell blocks marked `<!-- e2e: setup -->` and `<!-- e2e: walkthrough -->` are run
 * in order, in one bash, against a fresh `wrangler dev`: the only substitution is the
 * origin (`http://localhost:8787` → the harness's), and KRAFTER_PERSIST_TO points the
 * README's own `npm run api-key` command at that instance's database. A `curl` wrapper
 * records each request's status and body so every step is checked here.
 * The block marked `<!-- e2e: receiver -->` is started too when port 3000 is free, and
 * must print the forwarded event.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { childEnv, ROOT, run, startDev, type Dev } from "./harness";

const README_ORIGIN = "http://localhost:8787";

type Marker = "setup" | "walkthrough" | "receiver";

async function readme(): Promise<string> {
  return readFile(join(ROOT, "README.md"), "utf8");
}

/** The fenced shell blocks right after `<!-- e2e: marker -->`, in order. */
function blocks(text: string, marker: Marker): string[] {
  const re = new RegExp(`<!-- e2e: ${marker} -->\\s*\\n\`\`\`(?:sh|bash)\\n([\\s\\S]*?)\\n\`\`\``, "g");
  return [...text.matchAll(re)].map((m) => m[1]!);
}

/** The shell blocks under a `## heading`, up to the next one. */
function sectionBlocks(text: string, heading: string): string[] {
  const start = text.indexOf(`\n## ${heading}\n`);
  if (start < 0) return [];
  const end = text.indexOf("\n## ", start + 1);
  const section = text.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```(?:sh|bash)\n([\s\S]*?)\n```/g)].map((m) => m[1]!.trim());
}

/** Records every curl call: its arguments, response headers and body, numbered in order. */
const CURL_RECORDER = [
  "curl() {",
  "  local n",
  '  n=$(( $(cat "$STEPS/count") + 1 ))',
  '  echo "$n" > "$STEPS/count"',
  "  printf '%s\\n' \"$@\" > \"$STEPS/$n.args\"",
  '  command curl -D "$STEPS/$n.headers" "$@" | tee "$STEPS/$n.body"',
  '  return "${PIPESTATUS[0]}"',
  "}",
].join("\n");

interface Step {
  args: string[];
  status: number;
  body: string;
}

async function recordedSteps(dir: string): Promise<Step[]> {
  const count = Number((await readFile(join(dir, "count"), "utf8")).trim());
  const steps: Step[] = [];
  for (let n = 1; n <= count; n++) {
    const args = (await readFile(join(dir, `${n}.args`), "utf8")).trimEnd().split("\n");
    const headers = await readFile(join(dir, `${n}.headers`), "utf8");
    let body = await readFile(join(dir, `${n}.body`), "utf8");
    // With `-i` the headers are part of the output as well.
    if (args.includes("-i") || args.includes("--include")) body = body.slice(body.search(/\r?\n\r?\n/)).trim();
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(headers)?.[1]);
    steps.push({ args, status, body });
  }
  return steps;
}

const json = <T>(s: string) => JSON.parse(s) as T;

describe("README", () => {
  it("gives the set-up commands the product promises", async () => {
    const text = await readme();
    expect(sectionBlocks(text, "Quick start")).toEqual(["npm install\nnpm start", "npm test"]);
    expect(text).toContain("npm run api-key -- create --account me --scopes webhooks:read,webhooks:write");
    expect(text).toContain("npm run deploy");
    expect(blocks(text, "setup")).toHaveLength(1);
    expect(blocks(text, "walkthrough").length).toBeGreaterThanOrEqual(4);
    expect(blocks(text, "receiver")).toHaveLength(1);
  });

  it(".ci/run runs exactly the README's test command (then the load suite, which the README documents too)", async () => {
    const ci = await readFile(join(ROOT, ".ci", "run"), "utf8");
    const [testCommand] = sectionBlocks(await readme(), "Quick start").slice(-1);
    const commands = ci
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    expect(commands).toContain(testCommand);
    expect(commands).toContain("set -euo pipefail");
    expect(commands).toContain("npm ci");
    // After the README's test command, only the longer suites the README names.
    const after = commands.slice(commands.indexOf(testCommand!) + 1);
    const readmeText = await readme();
    for (const extra of after) expect(readmeText).toContain(extra);
  });
});

describe("README walk-through against wrangler dev", () => {
  let dev: Dev;
  let steps: string;
  let receiver: ChildProcess | undefined;
  let receiverOutput = "";

  beforeAll(async () => {
    dev = await startDev();
    steps = await mkdtemp(join(tmpdir(), "krafter-readme-"));
  });

  afterAll(async () => {
    if (receiver?.pid) {
      try {
        process.kill(-receiver.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await dev?.stop();
    if (steps) await rm(steps, { recursive: true, force: true });
  });

  /** Starts the README's receiver; resolves whether it is listening (port 3000 may be taken). */
  async function startReceiver(command: string): Promise<boolean> {
    receiver = spawn("bash", ["-c", command], { cwd: ROOT, env: childEnv(), stdio: ["ignore", "pipe", "pipe"], detached: true });
    receiver.stdout!.setEncoding("utf8").on("data", (d: string) => (receiverOutput += d));
    receiver.stderr!.setEncoding("utf8").on("data", (d: string) => (receiverOutput += d));
    const exited = new Promise<boolean>((resolve) => receiver!.once("exit", () => resolve(false)));
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const up = await fetch("http://127.0.0.1:3000/", { method: "POST", body: "probe" }).then(
        (r) => r.ok,
        () => false,
      );
      if (up) return true;
      if (await Promise.race([exited, new Promise<undefined>((r) => setTimeout(r, 250))]) === false) return false;
    }
    return false;
  }

  it("runs verbatim, and every step answers as the README says", async () => {
    const text = await readme();
    const [setup] = blocks(text, "setup");
    const walkthrough = blocks(text, "walkthrough");
    expect(setup).toContain(`KRAFTER=${README_ORIGIN}`);

    const ingestBlock = walkthrough.find((b) => b.includes('"$INGEST_URL"'));
    expect(ingestBlock).toBeDefined();

    const [receiverBlock] = blocks(text, "receiver");
    const receiving = await startReceiver(receiverBlock!);

    await writeFile(join(steps, "count"), "0");
    const script = [
      "set -euo pipefail",
      CURL_RECORDER,
      setup!.replaceAll(README_ORIGIN, dev.origin),
      ...walkthrough,
      // The README says a provider's retry of the same event is recognised: send it again.
      ingestBlock,
      `printf '%s\\n' "$KRAFTER" "$KEY" "$SOURCE_ID" "$INGEST_URL" > "$STEPS/vars"`,
    ].join("\n\n");
    const r = await run("bash", ["-c", script], {
      env: { STEPS: steps, KRAFTER_PERSIST_TO: dev.persistTo },
      timeoutMs: 120_000,
    });
    expect(r.code, `bash failed:\n${r.stdout}\n${r.stderr}\n--- wrangler ---\n${dev.output()}`).toBe(0);

    const [krafter, key, sourceId, ingestUrl] = (await readFile(join(steps, "vars"), "utf8")).split("\n");
    expect(krafter).toBe(dev.origin);
    expect(key).toMatch(/^krf_[A-Za-z0-9_-]{43}$/);

    const recorded = await recordedSteps(steps);
    expect(recorded.map((s) => s.status)).toEqual([201, 201, 201, 202, 200, 200]);
    const [createSource, createDestination, createFiltered, ingest, listSources, ingestAgain] = recorded as [Step, Step, Step, Step, Step, Step];

    expect(createSource.args).toContain(`${dev.origin}/api/v1/webhooks/sources`);
    const source = json<{ data: { id: string; name: string; provider: string; ingest_url: string; verifies_signatures: boolean } }>(createSource.body).data;
    expect(source).toMatchObject({ id: sourceId, name: "Stripe production", provider: "stripe", verifies_signatures: false });
    expect(source.ingest_url).toBe(ingestUrl);
    expect(source.ingest_url.startsWith(`${dev.origin}/in/`)).toBe(true);

    expect(createDestination.args).toContain(`${dev.origin}/api/v1/webhooks/sources/${sourceId}/destinations`);
    const destination = json<{ data: { source_id: string; url: string; event_filter: string[]; enabled: boolean; secret: string } }>(createDestination.body).data;
    expect(destination).toMatchObject({ source_id: sourceId, url: "http://localhost:3000/webhooks", event_filter: ["invoice.*"], enabled: true });
    expect(destination.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);

    // The filtered destination with its own header: the filter as given, the header masked.
    const filtered = json<{ data: { url: string; payload_filter: unknown; headers: Record<string, string> } }>(createFiltered.body).data;
    expect(filtered).toMatchObject({
      url: "http://localhost:3000/big-invoices",
      payload_filter: { type: "invoice.paid", data: { object: { amount_paid: { $gt: 10000 } } } },
      headers: { Authorization: "********" },
    });
    expect(createFiltered.body).not.toContain("my-endpoint-token");

    expect(ingest.args).toContain(ingestUrl);
    const eventId = json<{ data: { event_id: string } }>(ingest.body).data.event_id;
    expect(eventId).toMatch(/^[0-9a-f-]{36}$/);

    // The same Stripe event id again: 200, the first event's id.
    expect(ingestAgain.args).toContain(ingestUrl);
    expect(json<{ data: { event_id: string } }>(ingestAgain.body).data.event_id).toBe(eventId);

    const list = json<{ data: { id: string; name: string }[]; next_cursor: string | null }>(listSources.body);
    expect(list.data.map((s) => s.id)).toEqual([sourceId]);
    expect(list.next_cursor).toBeNull();

    // The receiver from the README gets the forwarded event, signed, with the event id.
    if (receiving) {
      const deadline = Date.now() + 30_000;
      while (!receiverOutput.includes(eventId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
      expect(receiverOutput, `receiver output:\n${receiverOutput}\n--- wrangler ---\n${dev.output()}`).toContain(`POST /webhooks ${eventId}`);
      const line = receiverOutput.split("\n").find((l) => l.startsWith(`POST /webhooks ${eventId}`))!;
      const forwarded = JSON.parse(line.slice(`POST /webhooks ${eventId} `.length));
      expect(forwarded).toEqual({ event: "invoice.paid", data: { id: "evt_1", type: "invoice.paid" }, source_id: sourceId });
      // The duplicate was not forwarded a second time; the event (no amount_paid) did not
      // match the payload filter, so /big-invoices got nothing.
      await new Promise((r) => setTimeout(r, 2_000));
      expect(receiverOutput.split("\n").filter((l) => l.startsWith("POST /webhooks "))).toHaveLength(1);
      expect(receiverOutput).not.toContain("POST /big-invoices");
    } else {
      console.warn(`port 3000 is taken: the README's receiver was not checked.\n${receiverOutput}`);
    }

    // Nothing else was recorded: the walk-through made exactly these requests.
    expect((await readdir(steps)).filter((f) => f.endsWith(".args"))).toHaveLength(6);
  });
});
