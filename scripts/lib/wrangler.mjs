/**
 * The project's wrangler, for the scripts (deploy, api-key): run with the pinned Node
 * first on PATH, with its output captured or shared with the terminal; and the remote D1
 * database resolved by name. wrangler.toml carries no database_id (wrangler can create
 * the database itself), but `wrangler d1 … --remote` still needs one (workers-sdk #13632),
 * so the scripts look it up and run wrangler with a copy of the config that has it
 * (wrangler.deploy.toml, next to wrangler.toml so its relative paths hold; not committed).
 *
 * KRAFTER_WRANGLER replaces the wrangler binary: the deploy test runs a stand-in that
 * records its calls.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const DEPLOY_CONFIG = join(ROOT, "wrangler.deploy.toml");

export class Failure extends Error {}

export function wranglerBin() {
  if (process.env.KRAFTER_WRANGLER) return process.env.KRAFTER_WRANGLER;
  const bin = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "wrangler.cmd" : "wrangler");
  if (!existsSync(bin)) throw new Failure("wrangler is not installed: run `npm install` (or `npm ci`) first.");
  return bin;
}

/**
 * Runs wrangler. With `capture`, its output is collected (and not shown) and stdin is
 * closed, so it never prompts; `input` is written to its stdin (a secret's value).
 * Otherwise it shares this terminal (prompts work interactively, and are skipped in CI).
 */
export function wrangler(args, { capture = false, input } = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(wranglerBin(), args, {
      cwd: ROOT,
      stdio: [input !== undefined ? "pipe" : capture ? "ignore" : "inherit", capture ? "pipe" : "inherit", capture ? "pipe" : "inherit"],
      shell: process.platform === "win32",
      // The pinned Node (node_modules/.bin/node) first, for wrangler's `#!/usr/bin/env node`.
      env: { ...process.env, PATH: join(ROOT, "node_modules", ".bin") + delimiter + (process.env.PATH ?? "") },
    });
    let stdout = "";
    let stderr = "";
    if (capture) {
      child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
      child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
    }
    if (input !== undefined) child.stdin.end(input);
    child.on("error", reject);
    child.on("close", (code, signal) => resolvePromise({ code: code ?? (signal ? 1 : 0), stdout, stderr, output: stdout + stderr }));
  });
}

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
  writeFileSync(DEPLOY_CONFIG, `# Written by scripts/lib/wrangler.mjs for remote commands: wrangler.toml plus the D1 database id. Not committed.\n${withId}`);
  return DEPLOY_CONFIG;
}

/** The config for remote D1 commands: the database must exist (npm run deploy creates it). */
export async function remoteConfig() {
  const name = databaseName();
  const id = await findDatabaseId(name);
  if (!id) throw new Failure(`The account has no D1 database named ${name}: run \`npm run deploy\` first.`);
  return writeDeployConfig(id);
}
