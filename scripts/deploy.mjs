#!/usr/bin/env node
/**
 * `npm run deploy`: everything a deploy needs, safe to run again and again.
 *
 * 1. Creates the queues wrangler.toml uses (krafter-fanout, krafter-deliver,
 *    krafter-dead-letter) unless they exist.
 * 2. Applies the D1 migrations to the remote database.
 * 3. `wrangler deploy`.
 *
 * Works from a terminal (after `npx wrangler login`) and from CI or the Cloudflare
 * dashboard's Git integration (deploy command `npm run deploy`), where wrangler
 * authenticates with CLOUDFLARE_API_TOKEN and skips its confirmation prompts.
 * Extra arguments go to `wrangler deploy` (e.g. `--message "…"`).
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const QUEUES = ["krafter-fanout", "krafter-deliver", "krafter-dead-letter"];
const PLACEHOLDER_DATABASE_ID = "00000000-0000-0000-0000-000000000000";

function fail(message) {
  console.error(`\ndeploy: ${message}`);
  process.exit(1);
}

function wranglerBin() {
  const bin = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "wrangler.cmd" : "wrangler");
  if (!existsSync(bin)) fail("wrangler is not installed: run `npm install` (or `npm ci`) first.");
  return bin;
}

/**
 * Runs the project's wrangler. With capture, its output is collected (and not shown);
 * otherwise it shares this terminal, so prompts (the remote migrations' confirmation)
 * work interactively and are skipped in CI.
 */
function wrangler(args, { capture = false } = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(wranglerBin(), args, {
      cwd: ROOT,
      stdio: capture ? ["ignore", "pipe", "pipe"] : "inherit",
      shell: process.platform === "win32",
      // The pinned Node (node_modules/.bin/node) first, for wrangler's `#!/usr/bin/env node`.
      env: { ...process.env, PATH: join(ROOT, "node_modules", ".bin") + delimiter + (process.env.PATH ?? "") },
    });
    let output = "";
    if (capture) {
      child.stdout.setEncoding("utf8").on("data", (d) => (output += d));
      child.stderr.setEncoding("utf8").on("data", (d) => (output += d));
    }
    child.on("error", reject);
    child.on("close", (code, signal) => resolvePromise({ code: code ?? (signal ? 1 : 0), output }));
  });
}

function checkDatabaseId() {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  if (toml.includes(PLACEHOLDER_DATABASE_ID)) {
    fail(
      "wrangler.toml still has the placeholder database_id.\n" +
        "Create the database with `npx wrangler d1 create krafter` and put the database_id it prints into\n" +
        "the [[d1_databases]] section of wrangler.toml, then run `npm run deploy` again.",
    );
  }
}

async function ensureQueue(name) {
  const created = await wrangler(["queues", "create", name], { capture: true });
  if (created.code === 0) {
    console.log(`Created queue ${name}.`);
    return;
  }
  // Most often it exists already. Say so only if Cloudflare agrees it does, whatever the
  // wording of the create error: anything else (auth, limits) stops the deploy.
  const exists = /already (exists|taken)|\b11009\b/i.test(created.output) || (await wrangler(["queues", "info", name], { capture: true })).code === 0;
  if (exists) {
    console.log(`Queue ${name} exists.`);
    return;
  }
  const hint = /CLOUDFLARE_API_TOKEN/.test(created.output)
    ? "\nLog in first with `npx wrangler login`, or set CLOUDFLARE_API_TOKEN (and CLOUDFLARE_ACCOUNT_ID)."
    : "";
  fail(`creating the queue ${name} failed:\n${created.output.trim()}${hint}`);
}

async function main() {
  const extra = process.argv.slice(2);
  checkDatabaseId();

  console.log("Queues:");
  for (const q of QUEUES) await ensureQueue(q);

  console.log("\nRemote D1 migrations:");
  const migrated = await wrangler(["d1", "migrations", "apply", "DB", "--remote"]);
  if (migrated.code !== 0) fail("applying the remote D1 migrations failed (see above); nothing was deployed.");

  console.log("\nDeploying the Worker:");
  const deployed = await wrangler(["deploy", ...extra]);
  if (deployed.code !== 0) fail("wrangler deploy failed (see above).");

  console.log(`
Deployed. Next:
  - if you have not yet: npx wrangler secret put ENCRYPTION_KEY
    (base64 of 32 random bytes: node -e "console.log(require('crypto').randomBytes(32).toString('base64'))")
  - an API key for the deployed Worker:
    npm run api-key -- create --remote --account NAME --scopes webhooks:read,webhooks:write`);
}

main().catch((err) => fail(err instanceof Error ? err.message : String(err)));
