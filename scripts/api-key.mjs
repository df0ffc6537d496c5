#!/usr/bin/env node
/**
 * `npm run api-key -- <command>`: manage API keys in the local or the deployed D1.
 *
 *   create --account NAME --scopes webhooks:read,webhooks:write
 *   list [--account NAME]
 *   revoke ID
 *
 * Local by default (the database `npm start` serves, under .wrangler/state, or
 * `--persist-to DIR` / KRAFTER_PERSIST_TO); `--remote` for the deployed Worker's D1.
 * It talks to D1 through `wrangler d1 execute --json`. A new key is printed alone on the
 * last line of stdout; everything meant for a human goes to stderr, so
 * `KEY=$(npm run --silent api-key -- create … | tail -n 1)` works.
 *
 * The key is generated exactly as src/security/api-keys.ts does it: `krf_` + base64url of
 * 32 random bytes. Only its SHA-256 (hex) and its first 12 characters are stored.
 */
import { createHash, randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { v7 as uuidv7 } from "uuid";
import { Failure, wrangler } from "../tools/wrangler.ts";
import { parseJsonOutput, remoteConfig } from "./lib/remote-d1.mjs";

const SCOPES = ["webhooks:read", "webhooks:write"];
const PREFIX_LENGTH = 12;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const USAGE = `Usage: npm run api-key -- <command> [options]

Commands:
  create --account NAME --scopes SCOPES   Create a key (and the account if it is new).
                                          SCOPES: webhooks:read, webhooks:write or both,
                                          comma-separated; write implies read.
                                          The key is printed alone on the last line.
  list [--account NAME]                   List keys (never the key itself or its hash).
  revoke ID                               Revoke the key with that id.

Options:
  --remote            Use the deployed D1 database (default: the local one).
  --persist-to DIR    Local state directory, as for \`wrangler dev --persist-to\`
                      (default: $KRAFTER_PERSIST_TO, else wrangler's .wrangler/state).
  -h, --help          Show this help.

Example:
  npm run api-key -- create --account me --scopes webhooks:read,webhooks:write`;

class UsageError extends Error {}

/** Where the statements run: the local database, or the deployed one (its id resolved by name). */
async function locationArgs(opts) {
  if (opts.remote) return ["--remote", "--config", (opts.config ??= await remoteConfig())];
  return ["--local", ...(opts.persistTo ? ["--persist-to", opts.persistTo] : [])];
}

/** Applies the local migrations, quietly unless they fail: the CLI works before `npm start` ever ran. */
async function applyLocalMigrations(opts) {
  const r = await wrangler(["d1", "migrations", "apply", "DB", ...(await locationArgs(opts))], { capture: true });
  if (r.code !== 0) {
    throw new Failure(`Applying the local migrations failed:\n${(r.stdout + r.stderr).trim()}`);
  }
}

/** Runs SQL statements (separated by `;`) and returns each statement's result rows. */
async function execute(opts, sql) {
  const r = await wrangler(["d1", "execute", "DB", ...(await locationArgs(opts)), "--yes", "--json", "--command", sql], { capture: true });
  const out = parseJsonOutput(r.stdout);
  if (r.code !== 0 || !Array.isArray(out)) {
    const why = out?.error?.text ?? out?.error?.message ?? (r.stderr.trim() || r.stdout.trim() || `exit code ${r.code}`);
    const hint = opts.remote
      ? "\nIs wrangler logged in (`npx wrangler login`), and was the Worker deployed (`npm run deploy`)?"
      : "";
    throw new Failure(`The database query failed: ${why}${hint}`);
  }
  return out.map((statement) => statement.results ?? []);
}

// ---------------------------------------------------------------------------------------
// SQL values. User input never reaches the SQL text as such: strings go in as hex blobs
// cast to text, so no quote, semicolon or comment in them can change the statement.

const sqlText = (s) => `CAST(X'${Buffer.from(s, "utf8").toString("hex")}' AS TEXT)`;
const sqlInt = (n) => {
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${n}`);
  return String(n);
};

// ---------------------------------------------------------------------------------------
// validation

function accountName(raw) {
  if (raw === undefined) {
    throw new UsageError("Missing --account NAME: the account the key belongs to (created if new).");
  }
  const name = raw.trim();
  if (name.length < 1 || name.length > 100) {
    throw new UsageError("--account must be 1 to 100 characters.");
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) {
    throw new UsageError("--account must not contain control characters.");
  }
  return name;
}

function scopeList(raw) {
  if (raw === undefined) {
    throw new UsageError(`Missing --scopes: one or both of ${SCOPES.join(", ")}, comma-separated.`);
  }
  const given = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const unknown = given.filter((s) => !SCOPES.includes(s));
  if (unknown.length > 0) {
    throw new UsageError(`Unknown scope${unknown.length > 1 ? "s" : ""}: ${unknown.join(", ")}. Valid scopes: ${SCOPES.join(", ")}.`);
  }
  if (given.length === 0) {
    throw new UsageError(`--scopes needs at least one of ${SCOPES.join(", ")}.`);
  }
  // Canonical order, no duplicates: only our own constants reach the SQL.
  return SCOPES.filter((s) => given.includes(s));
}

// ---------------------------------------------------------------------------------------
// commands

async function create(opts, values, positionals) {
  if (positionals.length > 0) throw new UsageError(`create takes no positional arguments (got: ${positionals.join(" ")}).`);
  const name = accountName(values.account);
  const scopes = scopeList(values.scopes);

  const key = "krf_" + randomBytes(32).toString("base64url");
  const keyHash = createHash("sha256").update(key, "utf8").digest("hex");
  const prefix = key.slice(0, PREFIX_LENGTH);
  const now = Date.now();
  const accountId = uuidv7({ msecs: now });
  const keyId = uuidv7({ msecs: now });

  if (!opts.remote) await applyLocalMigrations(opts);
  const results = await execute(
    opts,
    [
      `INSERT INTO accounts (id, name, created_at) VALUES ('${accountId}', ${sqlText(name)}, ${sqlInt(now)}) ON CONFLICT (name) DO NOTHING`,
      `INSERT INTO api_keys (id, account_id, prefix, key_hash, scopes, created_at) SELECT '${keyId}', id, '${prefix}', '${keyHash}', '${scopes.join(",")}', ${sqlInt(now)} FROM accounts WHERE name = ${sqlText(name)}`,
      `SELECT a.id AS account_id FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.id = '${keyId}'`,
    ].join(";\n"),
  );
  const row = results[2]?.[0];
  if (!row) throw new Failure("The key was not stored (no row came back); nothing was created.");

  const where = opts.remote ? "the deployed database" : "the local database";
  const account = row.account_id === accountId ? `new account "${name}"` : `account "${name}"`;
  console.error(`Created API key ${keyId} for ${account} in ${where}, scopes: ${scopes.join(", ")}.`);
  console.error("This is the only time the key is shown: store it now.");
  if (!opts.remote) {
    console.error('Try it (with npm start running): curl -H "Authorization: Bearer <the key below>" http://localhost:8787/api/v1/webhooks/sources');
  }
  // The key alone, on the last line of stdout.
  process.stdout.write(key + "\n");
}

function iso(ms) {
  return ms === null || ms === undefined ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function printable(s) {
  // eslint-disable-next-line no-control-regex
  return String(s).replace(/[\u0000-\u001f\u007f]/g, "?");
}

function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

async function list(opts, values, positionals) {
  if (positionals.length > 0) throw new UsageError(`list takes no positional arguments (got: ${positionals.join(" ")}).`);
  if (values.scopes !== undefined) throw new UsageError("list does not take --scopes.");
  const name = values.account === undefined ? undefined : accountName(values.account);

  if (!opts.remote) await applyLocalMigrations(opts);
  const where = name === undefined ? "" : ` WHERE a.name = ${sqlText(name)}`;
  const [rows = []] = await execute(
    opts,
    `SELECT k.id, a.name AS account, k.prefix, k.scopes, k.created_at, k.last_used_at, k.revoked_at ` +
      `FROM api_keys k JOIN accounts a ON a.id = k.account_id${where} ORDER BY k.created_at DESC, k.id DESC`,
  );
  if (rows.length === 0) {
    console.log(name === undefined ? "No API keys yet." : `No API keys for account "${printable(name)}".`);
    console.error("Create one: npm run api-key -- create --account NAME --scopes webhooks:read,webhooks:write");
    return;
  }
  console.log(
    table(
      ["ID", "ACCOUNT", "PREFIX", "SCOPES", "CREATED", "LAST USED", "REVOKED"],
      rows.map((r) => [
        printable(r.id),
        printable(r.account),
        `${printable(r.prefix)}…`,
        printable(r.scopes),
        iso(r.created_at),
        r.last_used_at === null ? "never" : iso(r.last_used_at),
        r.revoked_at === null ? "-" : iso(r.revoked_at),
      ]),
    ),
  );
}

async function revoke(opts, values, positionals) {
  if (values.account !== undefined || values.scopes !== undefined) {
    throw new UsageError("revoke takes only the key id: npm run api-key -- revoke ID");
  }
  if (positionals.length !== 1) {
    throw new UsageError("revoke needs exactly one key id (see `npm run api-key -- list`).");
  }
  const id = positionals[0].trim().toLowerCase();
  if (!UUID.test(id)) {
    throw new UsageError(`"${printable(positionals[0])}" is not a key id: ids look like 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b (see \`npm run api-key -- list\`).`);
  }

  if (!opts.remote) await applyLocalMigrations(opts);
  const [before = [], updated = []] = await execute(
    opts,
    [
      `SELECT revoked_at FROM api_keys WHERE id = '${id}'`,
      `UPDATE api_keys SET revoked_at = ${sqlInt(Date.now())} WHERE id = '${id}' AND revoked_at IS NULL RETURNING id`,
    ].join(";\n"),
  );
  if (updated.length === 1) {
    console.log(`Revoked API key ${id}: requests with it now get 401.`);
    return;
  }
  if (before.length === 1) throw new Failure(`API key ${id} was already revoked at ${iso(before[0].revoked_at)}.`);
  throw new Failure(`No API key with id ${id}${opts.remote ? " in the deployed database" : " in the local database"}.`);
}

// ---------------------------------------------------------------------------------------

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        account: { type: "string" },
        scopes: { type: "string" },
        remote: { type: "boolean", default: false },
        local: { type: "boolean", default: false },
        "persist-to": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const [command, ...rest] = positionals;
  if (values.remote && values.local) throw new UsageError("Use either --remote or --local, not both.");
  const persistRaw = values["persist-to"] ?? (values.remote ? undefined : process.env.KRAFTER_PERSIST_TO || undefined);
  if (values.remote && values["persist-to"] !== undefined) throw new UsageError("--persist-to is for the local database; it cannot be combined with --remote.");
  const opts = { remote: values.remote, persistTo: persistRaw === undefined ? undefined : resolve(persistRaw) };

  switch (command) {
    case "create":
      return create(opts, values, rest);
    case "list":
      return list(opts, values, rest);
    case "revoke":
      return revoke(opts, values, rest);
    case undefined:
      throw new UsageError("Missing command: create, list or revoke.");
    default:
      throw new UsageError(`Unknown command "${printable(command)}": use create, list or revoke.`);
  }
}

// No process.exit(): let stdout drain (it may be a pipe) and exit with exitCode.
main(process.argv.slice(2)).then(
  () => {
    process.exitCode = 0;
  },
  (err) => {
    if (err instanceof UsageError) {
      console.error(`api-key: ${err.message}\n\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    console.error(`api-key: ${err instanceof Failure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  },
);
