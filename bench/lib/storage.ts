/**
 * What a relay keeps on disk, read straight from the SQLite files of its `--persist-to`
 * (miniflare's layout): D1 under `v3/d1/<class>/<id>.sqlite`, each Durable Object of
 * class EventStore (a partition) under `v3/do/<script>-EventStore/<id>.sqlite`, named in
 * its own `__miniflare_do_name` table. Opened read-only with Node's built-in SQLite, so
 * this can run while `wrangler dev` has them open (SQLite's locking makes the reads
 * consistent; the relay's `npm run api-key` reads D1 the same way).
 *
 * Sizes are the database's logical size, page_count × page_size as seen by a reader
 * (committed pages still in the WAL included): what `ctx.storage.sql.databaseSize`
 * reports and Cloudflare bills, not the file's length on disk, which lags a checkpoint.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";

export function sqliteFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".sqlite") && f !== "metadata.sqlite")
    .map((f) => join(dir, f));
}

/** The class directories of one kind of storage (`d1`, `do`) whose name ends with `suffix`. */
function classDirs(persistTo: string, kind: "d1" | "do", suffix: string): string[] {
  const root = join(persistTo, "v3", kind);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => d.endsWith(suffix))
    .map((d) => join(root, d));
}

export function withDatabase<T>(file: string, fn: (db: DatabaseSync) => T, readOnly = true): T {
  const db = new DatabaseSync(file, { readOnly });
  try {
    // The relay may be writing (its own transactions are short): wait rather than fail.
    db.exec("PRAGMA busy_timeout = 5000");
    return fn(db);
  } finally {
    db.close();
  }
}

function tables(db: DatabaseSync): string[] {
  return (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
}

function logicalBytes(db: DatabaseSync): number {
  const { page_count } = db.prepare("PRAGMA page_count").get() as { page_count: number };
  const { page_size } = db.prepare("PRAGMA page_size").get() as { page_size: number };
  return page_count * page_size;
}

// ---------------------------------------------------------------------------------------
// D1

export interface D1State {
  /** logical size of every D1 database file of the state directory */
  bytes: number;
  files: number;
  /** rows of every table (summed over the files) */
  rows: Record<string, number>;
}

export function d1State(persistTo: string): D1State {
  const state: D1State = { bytes: 0, files: 0, rows: {} };
  for (const dir of classDirs(persistTo, "d1", "D1DatabaseObject")) {
    for (const file of sqliteFiles(dir)) {
      withDatabase(file, (db) => {
        state.files++;
        state.bytes += logicalBytes(db);
        for (const t of tables(db)) {
          const { n } = db.prepare(`SELECT count(*) AS n FROM "${t.replaceAll('"', '""')}"`).get() as { n: number };
          state.rows[t] = (state.rows[t] ?? 0) + n;
        }
      });
    }
  }
  return state;
}

/** The rows of one query over the D1 database(s) of the state directory. */
export function d1Rows(persistTo: string, sql: string): unknown[] {
  return classDirs(persistTo, "d1", "D1DatabaseObject").flatMap((dir) => sqliteFiles(dir).flatMap((f) => withDatabase(f, (db) => db.prepare(sql).all())));
}

/** Every table's rows before → after: "partitions 2→3" for those that changed, "accounts 1" for the others. */
export function rowChanges(before: Record<string, number>, after: Record<string, number>): { changed: string; unchanged: string } {
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  const differs = (t: string) => (before[t] ?? 0) !== (after[t] ?? 0);
  const changed = names.filter(differs).map((t) => `${t} ${before[t] ?? 0}→${after[t] ?? 0}`);
  const unchanged = names.filter((t) => !differs(t)).map((t) => `${t} ${after[t] ?? 0}`);
  return { changed: changed.join(", ") || "none", unchanged: unchanged.join(", ") };
}

// ---------------------------------------------------------------------------------------
// Partitions (EventStore Durable Objects)

export interface PartitionFile {
  file: string;
  /** the object's name, `source/day/shard` (null if miniflare did not record it) */
  name: string | null;
  bytes: number;
  /** rows of its events table; null when it has none (never written, or dropped) */
  events: number | null;
  tables: number;
}

export function readPartitionFile(file: string): PartitionFile {
  return withDatabase(file, (db) => {
    const names = tables(db);
    const name = names.includes("__miniflare_do_name")
      ? ((db.prepare("SELECT name FROM __miniflare_do_name LIMIT 1").get() as { name: string } | undefined)?.name ?? null)
      : null;
    const events = names.includes("events") ? (db.prepare("SELECT count(*) AS n FROM events").get() as { n: number }).n : null;
    return { file, name, bytes: logicalBytes(db), events, tables: names.length };
  });
}

export function partitionFiles(persistTo: string): PartitionFile[] {
  return classDirs(persistTo, "do", "-EventStore").flatMap((dir) => sqliteFiles(dir).map(readPartitionFile));
}

/** Whether a partition file's events table holds this event id (to find a partition when its name is not recorded). */
function holdsEvent(file: string, eventId: string): boolean {
  return withDatabase(file, (db) => tables(db).includes("events") && db.prepare("SELECT 1 FROM events WHERE id = ?").get(eventId) !== undefined);
}

/** The file of one partition: by its recorded name, else the file whose events hold `eventId`. */
export function findPartitionFile(persistTo: string, name: string, eventId: string): string {
  const all = partitionFiles(persistTo);
  const byName = all.find((p) => p.name === name);
  if (byName) return byName.file;
  const byEvent = all.find((p) => p.events !== null && holdsEvent(p.file, eventId));
  if (!byEvent) throw new Error(`no partition file of ${name} (holding event ${eventId}) under ${persistTo}`);
  return byEvent.file;
}

export interface SourceStorage {
  partitions: number;
  bytes: number;
  events: number;
  bytesPerEvent: number;
}

/** Every partition of a source (its name starts with the source id), summed. */
export function sourceStorage(persistTo: string, sourceId: string): SourceStorage {
  const mine = partitionFiles(persistTo).filter((p) => p.name?.startsWith(`${sourceId}/`));
  const bytes = mine.reduce((a, p) => a + p.bytes, 0);
  const events = mine.reduce((a, p) => a + (p.events ?? 0), 0);
  return { partitions: mine.length, bytes, events, bytesPerEvent: events > 0 ? Math.round(bytes / events) : Number.NaN };
}
