#!/usr/bin/env node
/**
 * `npm start`: everything a newcomer needs to run Krafter locally, in one command.
 *
 * 1. Writes `.dev.vars` if it is missing (never overwrites it): ENVIRONMENT=development,
 *    a fresh ENCRYPTION_KEY, ALLOW_PRIVATE_DESTINATIONS=true.
 * 2. Applies the D1 migrations to the local database (without prompting).
 * 3. Says how to get an API key.
 * 4. Runs `wrangler dev` (http://localhost:8787 unless `--port` says otherwise). When
 *    ALLOW_PRIVATE_DESTINATIONS is off (as wrangler will read it: `--var`, else
 *    `--env-file`s, else .dev.vars, else .env), it runs the Worker through wrangler's
 *    programmatic API instead, with PUBLIC_NETWORK bound (scripts/lib/dev-public-network.mjs):
 *    destinations are then reached through a network that refuses private addresses.
 *
 * Wrangler dev is run by the project's one launcher (tools/wrangler.ts), in this terminal.
 * Extra arguments go to `wrangler dev`: `npm start -- --port 9000`.
 * `--persist-to DIR` (or KRAFTER_PERSIST_TO=DIR) keeps the local state in DIR instead of
 * .wrangler/state; it is passed to both the migrations and `wrangler dev`.
 */
import { Transform } from "node:stream";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ROOT } from "../tools/process.ts";
import { applyMigrations, Failure, startWranglerDev } from "../tools/wrangler.ts";

const DEV_VARS = join(ROOT, ".dev.vars");

/**
 * Splits out `--persist-to DIR` (npm start's own), `--port` and `--ip` (the launcher
 * passes them, and asks that address when it is up); everything else is for wrangler dev.
 */
function parseArgs(argv) {
  const rest = [];
  let persistTo = process.env.KRAFTER_PERSIST_TO || undefined;
  let port = "8787";
  let ip = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--persist-to") {
      const value = argv[++i];
      if (value === undefined || value === "") fail("--persist-to needs a directory.");
      persistTo = value;
    } else if (arg.startsWith("--persist-to=")) {
      persistTo = arg.slice("--persist-to=".length);
      if (persistTo === "") fail("--persist-to needs a directory.");
    } else if ((arg === "--port" || arg === "--ip") && argv[i + 1] !== undefined) {
      if (arg === "--port") port = argv[++i];
      else ip = argv[++i];
    } else if (arg.startsWith("--port=")) {
      port = arg.slice("--port=".length);
    } else if (arg.startsWith("--ip=")) {
      ip = arg.slice("--ip=".length);
    } else {
      rest.push(arg);
    }
  }
  if (!/^\d+$/.test(port)) fail(`--port needs a number, not ${JSON.stringify(port)}.`);
  return { rest, persistTo: persistTo === undefined ? undefined : resolve(persistTo), port: Number(port), ip };
}

function fail(message) {
  console.error(`npm start: ${message}`);
  process.exit(2);
}

function writeDevVarsIfMissing() {
  if (existsSync(DEV_VARS)) {
    console.log("Using the existing .dev.vars.");
    return;
  }
  const key = randomBytes(32).toString("base64");
  const text = `# Local settings for \`wrangler dev\`, written by \`npm start\` (scripts/dev.mjs) because
# this file was missing. It is never overwritten, and .gitignore keeps it out of git.
# See "Configuration" in README.md for every setting.
ENVIRONMENT=development
# Encrypts destination and signing secrets at rest (base64 of 32 random bytes).
# Keep it: secrets stored in the local database cannot be read without it.
ENCRYPTION_KEY=${key}
# Lets destinations point at http://localhost:3000 and other private addresses.
# The Worker refuses to start with this when ENVIRONMENT=production.
ALLOW_PRIVATE_DESTINATIONS=true
`;
  try {
    // "wx": fails if the file appeared meanwhile; an existing file is never replaced.
    writeFileSync(DEV_VARS, text, { flag: "wx", mode: 0o600 });
    console.log("Wrote .dev.vars with a fresh ENCRYPTION_KEY (ENVIRONMENT=development, ALLOW_PRIVATE_DESTINATIONS=true).");
  } catch (err) {
    if (err?.code !== "EEXIST") throw err;
  }
}

/** The values of KEY=VALUE lines (dotenv syntax: `export`, quotes, `#` comments). */
function parseDotenv(text) {
  const out = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([\w.-]+)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let value = m[2].trim();
    const q = value[0];
    if ((q === '"' || q === "'" || q === "`") && value.indexOf(q, 1) > 0) value = value.slice(1, value.indexOf(q, 1));
    else value = value.replace(/\s+#.*$/, "");
    out[m[1]] = value;
  }
  return out;
}

function readDotenv(path) {
  try {
    return parseDotenv(readFileSync(path, "utf8"));
  } catch (err) {
    if (err?.code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * ALLOW_PRIVATE_DESTINATIONS as wrangler dev will give it to the Worker (wrangler's
 * getVarsForDev and getBindings): a `--var` wins; else with `--env-file`s those files (the
 * last one wins), else .dev.vars (.dev.vars.ENV with `--env ENV`), else the .env files;
 * process.env only with CLOUDFLARE_INCLUDE_PROCESS_ENV=true. wrangler.toml sets none.
 */
function allowPrivateSetting(args, root = ROOT, env = process.env) {
  const NAME = "ALLOW_PRIVATE_DESTINATIONS";
  let fromVar;
  const envFiles = [];
  let cfEnv;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const inline = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : undefined;
    const name = inline === undefined ? arg : arg.slice(0, arg.indexOf("="));
    if (name === "--var") {
      const values = inline !== undefined ? [inline] : [];
      while (inline === undefined && i + 1 < args.length && !args[i + 1].startsWith("-")) values.push(args[++i]);
      for (const v of values) if (v.startsWith(`${NAME}:`)) fromVar = v.slice(NAME.length + 1);
    } else if (name === "--env-file") {
      envFiles.push(inline ?? args[++i]);
    } else if (name === "--env" || name === "-e") {
      cfEnv = inline ?? args[++i];
    }
  }
  if (fromVar !== undefined) return fromVar;
  if (envFiles.length === 0) {
    const devVars = (cfEnv !== undefined && readDotenv(join(root, `.dev.vars.${cfEnv}`))) || readDotenv(join(root, ".dev.vars"));
    if (devVars !== undefined) return devVars[NAME];
  }
  if (env.CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV === "false") return undefined;
  if (env.CLOUDFLARE_INCLUDE_PROCESS_ENV === "true" && env[NAME] !== undefined) return env[NAME];
  const files = envFiles.length > 0 ? envFiles.map((f) => resolve(root, f)) : [".env", ".env.local", ...(cfEnv ? [`.env.${cfEnv}`, `.env.${cfEnv}.local`] : [])].map((f) => join(root, f));
  let value;
  for (const f of files) value = readDotenv(f)?.[NAME] ?? value;
  return value;
}

/** The Worker's own reading of the setting (src/config.ts). */
const isOn = (value) => value === "true" || value === "1";

/** A stream that masks ingest keys (`/in/src_…`) line by line. */
export function redactIngestKeys() {
  let rest = "";
  return new Transform({
    transform(chunk, _enc, done) {
      const text = rest + chunk.toString("utf8");
      const cut = text.lastIndexOf("\n") + 1;
      rest = text.slice(cut);
      done(null, mask(text.slice(0, cut)));
    },
    flush(done) {
      done(null, mask(rest));
    },
  });
}

const mask = (text) => text.replace(/\/in\/src_[A-Za-z0-9_-]+/g, "/in/src_…");

function printHowToGetAKey(persistTo, port) {
  const persist = persistTo ? ` --persist-to ${JSON.stringify(persistTo)}` : "";
  console.log(`
Krafter is starting on http://localhost:${port}

Get an API key (in another terminal):
  npm run api-key -- create --account NAME --scopes webhooks:read,webhooks:write${persist}
The key is the last line printed. Then:
  curl -H "Authorization: Bearer krf_…" http://localhost:${port}/api/v1/webhooks/sources
`);
}

async function main() {
  const { rest, persistTo, port, ip } = parseArgs(process.argv.slice(2));
  writeDevVarsIfMissing();

  try {
    await applyMigrations(persistTo);
  } catch (err) {
    console.error(`npm start: applying the local D1 migrations failed:\n${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }

  printHowToGetAKey(persistTo, port);

  // Private destinations off: the Worker gets PUBLIC_NETWORK, through wrangler's API (the
  // `wrangler dev` command cannot bind a network service), run by the pinned Node.
  // cronEveryMs: wrangler dev runs no cron triggers by itself, so the housekeeping cron
  // (the sweep that re-queues what was saved but never queued, and retention) is fired
  // once a minute through /__scheduled, as Cloudflare would in production.
  // echo: wrangler's own request log prints each request's path, and an ingest path holds
  // the source's ingest key (a credential): its output is passed on with the keys masked.
  const stdout = redactIngestKeys();
  const stderr = redactIngestKeys();
  stdout.pipe(process.stdout);
  stderr.pipe(process.stderr);
  const starting = startWranglerDev({
    port,
    ip,
    inspectorPort: null,
    args: rest,
    ...(persistTo ? { persistTo } : {}),
    publicNetwork: !isOn(allowPrivateSetting(rest)),
    foreground: true,
    cronEveryMs: 60_000,
    echo: { stdout, stderr },
    // The first run bundles the Worker and starts workerd: give it time on a slow machine.
    readyTimeoutMs: 180_000,
  });

  // Until it is up, a signal (kill, a supervisor, Ctrl-C) ends this process, and the
  // launcher's exit hook stops wrangler.
  const early = (signal) => process.exit(signal === "SIGINT" ? 130 : signal === "SIGHUP" ? 129 : 143);
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.once(s, early);
  let dev;
  try {
    dev = await starting;
  } catch (err) {
    // The launcher has stopped it; wrangler's output was shown as it came.
    const why = err instanceof Error ? err.message.split("\n")[0] : String(err);
    fail(err instanceof Failure ? err.message : why);
  }
  for (const s of signals) process.off(s, early);
  console.log(`Krafter is up on ${dev.origin}`);

  // Signals sent to this process go on to wrangler dev; this process exits the way it exits.
  const forward = (signal) => dev.signal(signal);
  for (const s of signals) process.on(s, forward);
  const { code, signal } = await dev.exited;
  for (const s of signals) process.off(s, forward);
  if (signal) process.kill(process.pid, signal);
  else process.exit(code ?? 0);
}

main().catch((err) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
