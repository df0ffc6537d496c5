/// <reference types="node" />
/**
 * `npm start` as a developer runs it: the relay comes up, and its terminal output (which
 * includes wrangler's own request log) never shows an ingest key, a credential.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { childEnv, freePort, ROOT, runApiKey } from "./harness";

let dir: string;
let port: number;
let output = "";
let pid: number;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "krafter-start-"));
  port = await freePort();
  const child = spawn("node", ["scripts/dev.mjs", "--port", String(port), "--ip", "127.0.0.1", "--show-interactive-dev-session=false", "--persist-to", dir], {
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
    if (Date.now() > deadline) throw new Error(`npm start did not come up:\n${output}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}, 120_000);

afterAll(async () => {
  try {
    process.kill(-pid, "SIGTERM");
  } catch {
    /* gone */
  }
  await new Promise((r) => setTimeout(r, 1500));
  await rm(dir, { recursive: true, force: true });
});

describe("npm start", () => {
  it("serves the relay, and its output masks every ingest key", async () => {
    const created = await runApiKey(["create", "--account", "start-test", "--scopes", "webhooks:read,webhooks:write"], dir);
    expect(created.code, created.stderr).toBe(0);
    const key = created.stdout.trim().split("\n").pop()!;
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/webhooks/sources`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "start" }),
    });
    expect(res.status).toBe(201);
    const ingestUrl = ((await res.json()) as { data: { ingest_url: string } }).data.ingest_url;
    const ingestKey = new URL(ingestUrl).pathname.split("/").pop()!;
    expect(ingestKey).toMatch(/^src_/);
    const sent = await fetch(`http://127.0.0.1:${port}/in/${ingestKey}`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
    expect(sent.status).toBe(202);
    // wrangler's request line for it is printed within a moment.
    const deadline = Date.now() + 10_000;
    while (!/POST \/in\/src_…/.test(output) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(output).toMatch(/POST \/in\/src_… 202/);
    expect(output).not.toContain(ingestKey);
    // The .dev.vars it wrote (or found) is the developer's, not this test's business.
    expect(await readFile(join(ROOT, ".dev.vars"), "utf8")).toMatch(/ENCRYPTION_KEY=/);
  }, 60_000);
});
