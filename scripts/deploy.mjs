#!/usr/bin/env node
/**
 * `npm run deploy`: a deploy from a clean Cloudflare account, safe to run again and again.
 *
 * 1. Creates the queues wrangler.toml uses unless they exist.
 * 2. Creates the D1 database unless it exists, and resolves its id (wrangler.toml carries
 *    none: scripts/lib/remote-d1.mjs writes wrangler.deploy.toml with it).
 * 3. Refuses to go on unless the Worker has the secret ENCRYPTION_KEY (`wrangler secret
 *    list`). Given one in the environment (ENCRYPTION_KEY=… npm run deploy), it sets it.
 * 4. Applies the D1 migrations to the remote database.
 * 5. `wrangler deploy`, then prints the Worker's URL and how to get an API key.
 *
 * Works from a terminal (after `npx wrangler login`) and from CI or the Cloudflare
 * dashboard's Git integration (deploy command `npm run deploy`), where wrangler
 * authenticates with CLOUDFLARE_API_TOKEN and skips its confirmation prompts.
 * Extra arguments go to `wrangler deploy` (e.g. `--message "…"`).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../tools/process.ts";
import { Failure, wrangler } from "../tools/wrangler.ts";
import { databaseName, findDatabaseId, parseJsonOutput, writeDeployConfig } from "./lib/remote-d1.mjs";

const SECRET = "ENCRYPTION_KEY";

function fail(message) {
  console.error(`\ndeploy: ${message}`);
  process.exit(1);
}

/** The queues wrangler.toml produces to or consumes from. */
function queuesOf() {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  return [...new Set([...toml.matchAll(/^\s*(?:queue|dead_letter_queue)\s*=\s*"([^"]+)"/gm)].map((m) => m[1]))];
}

async function ensureQueue(name) {
  const created = await wrangler(["queues", "create", name], { capture: true });
  if (created.code === 0) return console.log(`  created queue ${name}`);
  // Most often it exists already. Say so only if Cloudflare agrees it does, whatever the
  // wording of the create error: anything else (auth, limits) stops the deploy.
  const exists = /already (exists|taken)|\b11009\b/i.test(created.output) || (await wrangler(["queues", "info", name], { capture: true })).code === 0;
  if (exists) return console.log(`  queue ${name} exists`);
  const hint = /CLOUDFLARE_API_TOKEN|not logged in/i.test(created.output)
    ? "\nLog in first with `npx wrangler login`, or set CLOUDFLARE_API_TOKEN (and CLOUDFLARE_ACCOUNT_ID)."
    : "";
  fail(`creating the queue ${name} failed:\n${created.output.trim()}${hint}`);
}

async function ensureDatabase(name) {
  let id = await findDatabaseId(name);
  if (id) {
    console.log(`  D1 database ${name} exists (${id})`);
    return id;
  }
  const created = await wrangler(["d1", "create", name], { capture: true });
  if (created.code !== 0) fail(`creating the D1 database ${name} failed:\n${created.output.trim()}`);
  id = await findDatabaseId(name);
  if (!id) fail(`the D1 database ${name} was created but cannot be found by name.`);
  console.log(`  created D1 database ${name} (${id})`);
  return id;
}

const validKey = (v) => {
  try {
    return Buffer.from(v, "base64").length === 32 && /^[A-Za-z0-9+/]+=*$/.test(v);
  } catch {
    return false;
  }
};

/** The Worker must have ENCRYPTION_KEY: without it, it serves 500s. */
async function ensureSecret(config) {
  const listed = await wrangler(["secret", "list", "--format", "json", "--config", config], { capture: true });
  const secrets = listed.code === 0 ? parseJsonOutput(listed.stdout) : undefined;
  if (Array.isArray(secrets) && secrets.some((s) => s.name === SECRET)) return console.log(`  secret ${SECRET} is set`);
  // Not listed: the Worker has no such secret, or does not exist yet (a first deploy).
  const given = process.env[SECRET];
  if (!given) {
    fail(
      `the Worker has no secret ${SECRET}, so it would refuse to store any secret (500s). Set it, then deploy again:\n` +
        `  node -e "console.log(require('crypto').randomBytes(32).toString('base64'))"\n` +
        `  npx wrangler secret put ${SECRET}\n` +
        `or give it to this script once: ${SECRET}=<the key> npm run deploy\n` +
        `Keep a copy of the key: the stored secrets cannot be read without it.`,
    );
  }
  if (!validKey(given)) fail(`${SECRET} in the environment is not the base64 of 32 bytes.`);
  const put = await wrangler(["secret", "put", SECRET, "--config", config], { capture: true, input: given });
  if (put.code !== 0) fail(`setting the secret ${SECRET} failed:\n${put.output.trim()}`);
  console.log(`  secret ${SECRET} set from the environment`);
}

async function main() {
  const extra = process.argv.slice(2);

  console.log("Queues:");
  for (const q of queuesOf()) await ensureQueue(q);

  console.log("D1:");
  const config = writeDeployConfig(await ensureDatabase(databaseName()));

  console.log("Secret:");
  await ensureSecret(config);

  console.log("\nRemote D1 migrations:");
  const migrated = await wrangler(["d1", "migrations", "apply", "DB", "--remote", "--config", config]);
  if (migrated.code !== 0) fail("applying the remote D1 migrations failed (see above); nothing was deployed.");

  console.log("\nDeploying the Worker:");
  const deployed = await wrangler(["deploy", "--config", config, ...extra], { capture: true });
  process.stdout.write(deployed.output);
  if (deployed.code !== 0) fail("wrangler deploy failed (see above).");
  const url = /https:\/\/[\w.-]+\.workers\.dev\b/.exec(deployed.output)?.[0];

  console.log(`
Deployed${url ? ` at ${url}` : ""}. An API key for it:
  npm run api-key -- create --remote --account NAME --scopes webhooks:read,webhooks:write
Then follow the README's walk-through with KRAFTER=${url ?? "https://krafter.<your-subdomain>.workers.dev"}.`);
}

main().catch((err) => fail(err instanceof Failure || err instanceof Error ? err.message : String(err)));
