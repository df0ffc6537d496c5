/**
 * The remote D1 database, resolved by name, for the scripts (deploy, api-key --remote).
 * wrangler.toml carries no database_id (wrangler can create the database itself), but
 * `wrangler d1 … --remote` still needs one (workers-sdk #13632), so the scripts look it
 * up and run wrangler with a copy of the config that has it (wrangler.deploy.toml, next
 * to wrangler.toml so its relative paths hold; not committed). Wrangler itself is run by
 * the project's one wrapper, tools/wrangler.ts.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../../tools/process.ts";
import { Failure, wrangler } from "../../tools/wrangler.ts";

export const DEPLOY_CONFIG = join(ROOT, "wrangler.deploy.toml");

/** Parses the JSON wrangler prints, tolerating a stray line (an update notice) before it. */
export function parseJsonOutput(text) {
  try {
    return JSON.parse(text);
  } catch {
    const start = text.search(/^[[{]/m);
    if (start < 0) return undefined;
    try {
      return JSON.parse(text.slice(start));
    } catch {
      return undefined;
    }
  }
}

/** The D1 database name wrangler.toml binds as DB. */
export function databaseName() {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const block = /\[\[d1_databases\]\][^[]*/.exec(toml)?.[0] ?? "";
  const name = /database_name\s*=\s*"([^"]+)"/.exec(block)?.[1];
  if (!name) throw new Failure("wrangler.toml has no [[d1_databases]] database_name.");
  return name;
}

/** The id of the remote D1 database with this name, or null when the account has none. */
export async function findDatabaseId(name) {
  const listed = await wrangler(["d1", "list", "--json"], { capture: true });
  const rows = parseJsonOutput(listed.stdout);
  if (listed.code !== 0 || !Array.isArray(rows)) {
    const hint = /CLOUDFLARE_API_TOKEN|not logged in|authenticat/i.test(listed.output)
      ? "\nLog in first with `npx wrangler login`, or set CLOUDFLARE_API_TOKEN (and CLOUDFLARE_ACCOUNT_ID)."
      : "";
    throw new Failure(`listing the D1 databases failed:\n${listed.output.trim()}${hint}`);
  }
  return rows.find((r) => r.name === name)?.uuid ?? rows.find((r) => r.name === name)?.id ?? null;
}

/** Writes wrangler.deploy.toml: wrangler.toml with the database's id. Returns its path. */
export function writeDeployConfig(databaseId) {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const withId = toml.replace(/(\[\[d1_databases\]\][^[]*?database_name\s*=\s*"[^"]+"\s*\n)(\s*database_id\s*=\s*"[^"]*"\s*\n)?/, (_, head) => `${head}database_id = "${databaseId}"\n`);
  if (!withId.includes(`database_id = "${databaseId}"`)) throw new Failure("could not write the database id into the deploy config.");
  writeFileSync(DEPLOY_CONFIG, `# Written by scripts/lib/remote-d1.mjs for remote commands: wrangler.toml plus the D1 database id. Not committed.\n${withId}`);
  return DEPLOY_CONFIG;
}

/** The config for remote D1 commands: the database must exist (npm run deploy creates it). */
export async function remoteConfig() {
  const name = databaseName();
  const id = await findDatabaseId(name);
  if (!id) throw new Failure(`The account has no D1 database named ${name}: run \`npm run deploy\` first.`);
  return writeDeployConfig(id);
}
