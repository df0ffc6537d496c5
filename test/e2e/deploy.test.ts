/// <reference types="node" />
/**
 * `npm run deploy` from a clean account, against a stand-in wrangler that records its
 * calls and answers as Cloudflare would (an account with nothing: no queues, no
 * database, no Worker). The order of the commands, the refusal without the secret, a
 * second run finding everything in place, and the URL printed at the end.
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ROOT, run } from "./harness";

/** A wrangler that keeps its "account" in a JSON file and logs every call. */
const STAND_IN = `#!/usr/bin/env node
const fs = require("node:fs");
const state = process.env.FAKE_STATE;
const s = fs.existsSync(state) ? JSON.parse(fs.readFileSync(state, "utf8")) : { queues: [], dbs: [], secrets: [], worker: false, calls: [] };
const args = process.argv.slice(2);
let input = "";
try { input = fs.readFileSync(0, "utf8"); } catch {}
s.calls.push(args.filter((a) => !a.endsWith("wrangler.deploy.toml")).join(" "));
const save = () => fs.writeFileSync(state, JSON.stringify(s));
const out = (t) => process.stdout.write(t + "\\n");
const [a, b, c] = args;
let code = 0;
if (a === "queues" && b === "create") { if (s.queues.includes(c)) { out("Queue name already taken [code: 11009]"); code = 1; } else { s.queues.push(c); out("Created queue " + c); } }
else if (a === "queues" && b === "info") { code = s.queues.includes(c) ? 0 : 1; }
else if (a === "d1" && b === "list") { out(JSON.stringify(s.dbs)); }
else if (a === "d1" && b === "create") { s.dbs.push({ name: c, uuid: "11111111-2222-4333-8444-555555555555" }); out("Created " + c); }
else if (a === "secret" && b === "list") { if (!s.worker) { out("This Worker does not exist on your account. [code: 10007]"); code = 1; } else out(JSON.stringify(s.secrets.map((n) => ({ name: n, type: "secret_text" })))); }
else if (a === "secret" && b === "put") { s.worker = true; s.secrets.push(c); s.secretValue = input.trim(); out("Success! Uploaded secret " + c); }
else if (a === "d1" && b === "migrations") { if (!args.includes("--config")) { out("missing a database_id"); code = 1; } else out("Migrations applied"); }
else if (a === "deploy") { if (!s.secrets.includes("ENCRYPTION_KEY")) { code = 1; out("no secret"); } else { s.worker = true; out("Uploaded krafter\\nDeployed krafter triggers\\n  https://krafter.example-sub.workers.dev\\nCurrent Version ID: x"); } }
else { out("unexpected: " + args.join(" ")); code = 3; }
save();
process.exit(code);
`;

const KEY = "q1ZsS0cRkq1KqfUIv8u2RoX0mWd2p3yqJ4n3f0mQH9U=";
let dir: string;
let state: string;
let bin: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "krafter-deploy-"));
  state = join(dir, "account.json");
  bin = join(dir, "wrangler");
  await writeFile(bin, STAND_IN);
  await chmod(bin, 0o755);
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
  await rm(join(ROOT, "wrangler.deploy.toml"), { force: true });
});

const deploy = (extra: Record<string, string> = {}) =>
  run("node", ["scripts/deploy.mjs"], { env: { KRAFTER_WRANGLER: bin, FAKE_STATE: state, ENCRYPTION_KEY: "", ...extra }, timeoutMs: 60_000 });
const account = async () => JSON.parse(await readFile(state, "utf8")) as { calls: string[]; queues: string[]; dbs: { name: string }[]; secrets: string[]; secretValue?: string };

describe("npm run deploy from a clean account", () => {
  it("without ENCRYPTION_KEY: creates the queues and the database, then refuses, deploying nothing", async () => {
    const r = await run("node", ["scripts/deploy.mjs"], { env: { KRAFTER_WRANGLER: bin, FAKE_STATE: state }, timeoutMs: 60_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no secret ENCRYPTION_KEY/);
    expect(r.stderr).toMatch(/wrangler secret put ENCRYPTION_KEY/);
    const a = await account();
    expect(a.calls.some((c) => c.startsWith("deploy"))).toBe(false);
    expect(a.calls.some((c) => c.startsWith("d1 migrations"))).toBe(false);
    expect(a.queues.sort()).toEqual(["krafter-dead-letter", "krafter-deliver", "krafter-deliver-1", "krafter-deliver-2", "krafter-deliver-3", "krafter-deliver-slow", "krafter-work"]);
    expect(a.dbs.map((d) => d.name)).toEqual(["krafter"]);
  });

  it("with the key in the environment: every step in order, the secret set, the URL printed; a second run changes nothing", async () => {
    const r = await deploy({ ENCRYPTION_KEY: KEY });
    expect(r.code, r.stderr).toBe(0);
    const a = await account();
    expect(a.calls).toEqual([
      "queues create krafter-deliver",
      "queues create krafter-deliver-1",
      "queues create krafter-deliver-2",
      "queues create krafter-deliver-3",
      "queues create krafter-deliver-slow",
      "queues create krafter-work",
      "queues create krafter-dead-letter",
      "d1 list --json",
      "d1 create krafter",
      "d1 list --json",
      "secret list --format json --config",
      "secret put ENCRYPTION_KEY --config",
      "d1 migrations apply DB --remote --config",
      "deploy --config",
    ]);
    expect(a.secretValue).toBe(KEY);
    expect(r.stdout).toContain("Deployed at https://krafter.example-sub.workers.dev");
    expect(r.stdout).toContain("npm run api-key -- create --remote");
    // The config wrangler ran with: wrangler.toml plus the database's id.
    const config = await readFile(join(ROOT, "wrangler.deploy.toml"), "utf8");
    expect(config).toContain('database_id = "11111111-2222-4333-8444-555555555555"');
    expect(config).toContain('database_name = "krafter"');

    // Again, without the key: everything exists; nothing is created, the secret is found.
    const again = await deploy();
    expect(again.code, again.stderr).toBe(0);
    const b = await account();
    const second = b.calls.slice(a.calls.length);
    expect(second.filter((c) => c.startsWith("d1 create") || c.startsWith("secret put"))).toEqual([]);
    expect(second.slice(-2)).toEqual(["d1 migrations apply DB --remote --config", "deploy --config"]);
    expect(b.queues).toHaveLength(7);
  });

  it("refuses an ENCRYPTION_KEY that is not the base64 of 32 bytes", async () => {
    const r = await deploy({ ENCRYPTION_KEY: "too-short" });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not the base64 of 32 bytes/);
    expect((await account()).calls.some((c) => c.startsWith("deploy") || c.startsWith("secret put"))).toBe(false);
  });
});
