/// <reference types="node" />
/**
 * DNS rebinding under `npm start` with ALLOW_PRIVATE_DESTINATIONS off (issue 20, item 1).
 *
 * The SSRF guard asks the DoH resolver, which answers a public address; the connection is
 * then made by workerd, which asks the system resolver, which answers 127.0.0.1. Here the
 * system resolver is made to do so in a mount namespace of the relay's own (`unshare`: a
 * private /etc/hosts for the relay only, nothing on the machine changes), and the DoH
 * resolver is the loopback test receiver. The relay must send nothing to loopback: the
 * socket refuses it (a workerd network service that allows public addresses only), so the
 * test endpoint reports a failure and the delivery attempt is a failure with no reply kept.
 *
 * Needs Linux user and mount namespaces (`unshare -rm`), as this project's machines have; fails, saying so, without.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startReceiver, type ReceiverHandle } from "../support/receiver";
import { childEnv, E2E_ENCRYPTION_KEY, freePort, ROOT, runApiKey } from "./harness";

/** Public to the DoH resolver, loopback to the system resolver (in the relay's namespace). */
const NAME = "rebind.krafter-e2e.example";
/** A public unicast address (what the DoH resolver claims). */
const PUBLIC_ADDRESS = "93.184.215.14";
const SECRET = "LOOPBACK-ONLY SECRET: never to be sent to a relay's user";

/** Runs `argv` with /etc/hosts replaced by `hostsFile`, for that process tree only. */
function inNamespace(hostsFile: string, argv: string[]): [string, string[]] {
  return ["unshare", ["--user", "--map-root-user", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hostsFile, ...argv]];
}

let dir: string;
let hostsFile: string;
let namespaces = false;
let whyNot = "";

// Decided before the tests are collected: can this machine give a process its own /etc/hosts?
{
  const probeDir = await mkdtemp(join(tmpdir(), "krafter-rebind-probe-"));
  try {
    const hosts = join(probeDir, "hosts");
    await writeFile(hosts, `127.0.0.1 localhost\n127.0.0.1 ${NAME}\n`);
    const [cmd, args] = inNamespace(hosts, [process.execPath, "-e", `require("node:dns").lookup(${JSON.stringify(NAME)}, (e, a) => { if (e) process.exit(3); console.log(a); })`]);
    const r = process.platform === "linux" ? spawnSync(cmd, args, { encoding: "utf8", timeout: 20_000 }) : undefined;
    namespaces = r?.status === 0 && r.stdout.trim() === "127.0.0.1";
    whyNot = r === undefined ? "not Linux" : `unshare -rm gave status ${r.status}: ${(r.stderr || r.error?.message || "").trim()}`;
  } finally {
    await rm(probeDir, { recursive: true, force: true });
  }

}

let receiver: ReceiverHandle;
let port: number;
let pid: number | undefined;
let output = "";
let key: string;

const api = async (method: string, path: string, body?: unknown) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
};

async function mailbox(): Promise<{ id: string; url: string }> {
  const res = await fetch(`${receiver.origin}/control/mailboxes`, { method: "POST", body: JSON.stringify({ repeat: { status: 200, body: SECRET } }) });
  return (await res.json()) as { id: string; url: string };
}

async function received(id: string): Promise<unknown[]> {
  const res = await fetch(`${receiver.origin}/control/mailboxes/${id}`);
  return ((await res.json()) as { requests: unknown[] }).requests;
}

/** The mailbox's URL with its host replaced by the rebinding name. */
const rebound = (url: string) => {
  const u = new URL(url);
  u.hostname = NAME;
  return u.toString();
};

describe("npm start with ALLOW_PRIVATE_DESTINATIONS off", () => {
  beforeAll(async () => {
    // The test never skips: without namespaces it cannot make the system resolver lie, so it fails saying so.
    if (!namespaces) throw new Error(`rebinding.test.ts needs Linux user and mount namespaces (unshare -rm): ${whyNot}`);
    receiver = await startReceiver();
    // The DoH resolver (the receiver's /dns-query) says the name is public.
    await fetch(`${receiver.origin}/control/dns`, { method: "POST", body: JSON.stringify({ name: NAME, addresses: [PUBLIC_ADDRESS] }) });

    dir = await mkdtemp(join(tmpdir(), "krafter-rebind-"));
    hostsFile = join(dir, "hosts");
    const system = await readFile("/etc/hosts", "utf8").catch(() => "127.0.0.1 localhost\n");
    await writeFile(hostsFile, `${system.trimEnd()}\n127.0.0.1 ${NAME}\n`);
    // The vars `npm start` would read from .dev.vars, but with private destinations off
    // (the developer's own .dev.vars is not read: --env-file).
    const envFile = join(dir, "vars.env");
    await writeFile(
      envFile,
      [
        "ENVIRONMENT=development",
        `ENCRYPTION_KEY=${E2E_ENCRYPTION_KEY}`,
        "ALLOW_PRIVATE_DESTINATIONS=false",
        `DOH_URL=${receiver.origin}/dns-query`,
        "RETRY_SCHEDULE=1,1,1",
        "DELIVERY_TIMEOUT_MS=3000",
        "TEST_TIMEOUT_MS=3000",
        "",
      ].join("\n"),
    );

    port = await freePort();
    const [cmd, args] = inNamespace(hostsFile, [
      "node", "scripts/dev.mjs",
      "--port", String(port), "--ip", "127.0.0.1", "--show-interactive-dev-session=false",
      "--persist-to", dir, "--env-file", envFile,
    ]);
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env: childEnv({ WRANGLER_REGISTRY_PATH: join(dir, "dev-registry") }),
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    pid = child.pid!;
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (output += d));
    const deadline = Date.now() + 90_000;
    for (;;) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/`)).ok) break;
      } catch {
        /* not yet */
      }
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`npm start did not come up:\n${output}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const created = await runApiKey(["create", "--account", "rebind", "--scopes", "webhooks:read,webhooks:write"], dir);
    if (created.code !== 0) throw new Error(`api-key create failed:\n${created.stdout}\n${created.stderr}`);
    key = created.stdout.trim().split("\n").pop()!;
  }, 150_000);

  afterAll(async () => {
    if (pid !== undefined) {
      try {
        process.kill(-pid, "SIGTERM");
      } catch {
        /* gone */
      }
      await new Promise((r) => setTimeout(r, 1500));
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    await receiver?.close();
    if (dir) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  });

  it("sends nothing to loopback when the system resolver answers 127.0.0.1 for a name DoH calls public", async () => {
    const source = await api("POST", "/api/v1/webhooks/sources", { name: "rebinding" });
    expect(source.status, JSON.stringify(source.body)).toBe(201);
    const box = await mailbox();
    // The guard's check passes: DoH answers a public address.
    const dest = await api("POST", `/api/v1/webhooks/sources/${source.body.data.id}/destinations`, { url: rebound(box.url) });
    expect(dest.status, JSON.stringify(dest.body)).toBe(201);
    const base = `/api/v1/webhooks/sources/${source.body.data.id}/destinations/${dest.body.data.id}`;

    // The test endpoint, then a delivery of an event.
    const test = await api("POST", `${base}/test`);
    const ingestKey = new URL(source.body.data.ingest_url).pathname.split("/").pop()!;
    const sent = await fetch(`http://127.0.0.1:${port}/in/${ingestKey}`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"type":"rebind.check"}' });
    expect(sent.status).toBe(202);
    let attempts: { outcome: string; status_code: number | null; error: string | null; response_body: string | null }[] = [];
    const deadline = Date.now() + 30_000;
    while (attempts.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      attempts = (await api("GET", `${base}/attempts`)).body?.data ?? [];
    }
    const observed = {
      test: { status: test.status, body: test.body },
      firstAttempt: attempts.at(-1) ?? null,
      loopbackRequests: (await received(box.id)).length,
    };
    // Refused at the socket: the test endpoint reports a transport failure, the attempt is
    // a failure with no status and no reply kept, and the loopback service saw nothing.
    expect(observed, output.slice(-4000)).toMatchObject({
      test: { status: 422, body: { ok: false, error: expect.stringMatching(/^transport error: no public address reachable/) } },
      firstAttempt: { outcome: "failed", status_code: null, response_body: null, error: expect.stringMatching(/^transport error/) },
      loopbackRequests: 0,
    });
    expect(JSON.stringify(observed)).not.toContain(SECRET);
  }, 90_000);
});
