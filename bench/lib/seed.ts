/**
 * Bulk seeding of stored events for the growth step, straight into the local D1 of a
 * relay's state directory (`wrangler d1 execute --local --file`), not through HTTP.
 *
 * SQLite generates the rows itself (a recursive CTE), so the SQL file stays a few
 * kilobytes whatever the count. Rows are what ingest would have stored: UUIDv7 ids
 * carrying their `received_at` millisecond (src/db/ids.ts: 48-bit time, version 7,
 * random bits, variant 10), `received_at` in ms, status `dispatched` (so no sweep
 * picks them up), a realistic payload and kept headers.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { v7 as uuidv7 } from "uuid";
import { executeSql } from "./wrangler.ts";

const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`;

export interface SeededSource {
  id: string;
  ingestKey: string;
}

/** A new ingest key, in the relay's format (src_ + 32 URL-safe characters). */
export function ingestKey(): string {
  return `src_${randomBytes(24).toString("base64url")}`;
}

/**
 * Creates a generic source for `account` (which must exist: `api-key create` makes it)
 * and `count` events of it received in the `spanMs` before `endMs`, oldest first.
 */
export async function seedEvents(o: {
  config: string;
  persistTo: string;
  account: string;
  count: number;
  endMs: number;
  spanMs: number;
  payload: string;
  type: string;
}): Promise<SeededSource> {
  const source: SeededSource = { id: uuidv7(), ingestKey: ingestKey() };
  const now = Date.now();
  const step = Math.max(1, Math.floor(o.spanMs / Math.max(1, o.count)));
  const start = o.endMs - step * o.count;
  const headers = JSON.stringify({ "content-type": "application/json", "user-agent": "krafter-bench-seed" });
  // ms → the UUIDv7 layout: tttttttt-tttt-7rrr-[89ab]rrr-rrrrrrrrrrrr
  const uuid7 =
    "substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || printf('%03x', abs(random()) % 4096) || '-' || " +
    "printf('%04x', 32768 + abs(random()) % 16384) || '-' || printf('%012x', abs(random()) % 281474976710656)";
  const sql = [
    `INSERT INTO sources (id, account_id, name, provider, ingest_key, signing_secret_ct, created_at, updated_at)
       SELECT ${sqlString(source.id)}, id, 'bench growth', 'generic', ${sqlString(source.ingestKey)}, NULL, ${start - 1000}, ${now}
       FROM accounts WHERE name = ${sqlString(o.account)};`,
    `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${o.count - 1})
     INSERT INTO events (id, source_id, type, dedupe_key, payload, headers, status, received_at)
       SELECT ${uuid7}, ${sqlString(source.id)}, ${sqlString(o.type)}, NULL, ${sqlString(o.payload)}, ${sqlString(headers)}, 'dispatched', ms
       FROM (SELECT ${start} + i * ${step} AS ms, printf('%012x', ${start} + i * ${step}) AS h FROM n);`,
  ].join("\n");
  const file = join(o.persistTo, `seed-${source.id}.sql`);
  await writeFile(file, sql);
  await executeSql(o.config, o.persistTo, file);
  return source;
}
