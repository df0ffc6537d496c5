/**
 * Bulk seeding of stored events for the growth and drop steps, straight into a
 * partition's own SQLite file, not through HTTP (100,000 events at ingest speed would
 * take minutes).
 *
 * A partition (an EventStore Durable Object, src/store/event-store.ts) only has tables
 * once it has stored something: its first event creates them, registers it in D1's
 * `partitions` row and sets its retention alarm. So the benchmark ingests one real event
 * per source while the relay runs, stops the relay, adds rows to that partition's file
 * here, and starts the relay again on the same state directory: everything but the rows
 * is the relay's own doing.
 *
 * SQLite generates the rows itself (a recursive CTE). They are what ingest would have
 * stored: ids in IdMaker's exact layout (src/store/ids.ts: 48-bit ms within the
 * partition's day, version 7, 12 bits of shard, variant 10 and a 62-bit counter), so
 * lists, cursors and routing by id treat them as their own; older than the real event,
 * so the partition's next ids still sort after them; status `dispatched` (their fan-out
 * done: nothing to send); a realistic JSON payload and kept headers.
 */
import { withDatabase } from "./storage.ts";

/** A partition holds one UTC day (src/store/ids.ts; not imported: it is not erasable TypeScript). */
export const DAY_MS = 86_400_000;
export const dayOf = (ms: number) => Math.floor(ms / DAY_MS);

export interface SeedSpec {
  /** the partition's SQLite file (its relay stopped) */
  file: string;
  day: number;
  shard: number;
  count: number;
  /** the rows' times end before this (the real event's) millisecond */
  beforeMs: number;
  /** and spread over at most this span, within the partition's day */
  spanMs: number;
  payload: string;
  type: string;
  headers: Record<string, string>;
}

export interface Seeded {
  /** rows in the events table afterwards (the real event included) */
  events: number;
  /** the newest ids, newest first, as `GET …/events?limit=N` must list them */
  newest: string[];
  seconds: number;
}

// Built in SQL from the row's ms and i (its index): tttttttt-tttt-7sss-vvvv-vvvvcccccccc,
// v: the variant bits (10) and 30 counter bits (a random start, as IdMaker takes one per
// millisecond), c: 32 counter bits, here the index, so every id is unique.
const ID_SQL =
  "substr(t, 1, 8) || '-' || substr(t, 9, 4) || '-7' || printf('%03x', :shard) || '-' || substr(v, 1, 4) || '-' || substr(v, 5, 4) || printf('%08x', i)";

export function seedPartition(o: SeedSpec, listLimit = 50): Seeded {
  const started = Date.now();
  const dayStart = o.day * DAY_MS;
  const end = Math.min(o.beforeMs, dayStart + DAY_MS) - 1;
  const start = Math.max(dayStart, end - o.spanMs);
  if (end < start) throw new Error(`no room to seed before ${o.beforeMs} in day ${o.day}`);
  return withDatabase(
    o.file,
    (db) => {
      db.prepare(
        `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)
         INSERT INTO events (id, type, dedupe_key, payload, payload_is_json, headers, status, received_at)
         SELECT ${ID_SQL}, :type, NULL, :payload, 1, :headers, 'dispatched', ms
         FROM (SELECT i, ms, printf('%012x', ms) AS t, printf('%08x', 2147483648 + abs(random()) % 536870912) AS v
               FROM (SELECT i, :start + (i * (:end - :start)) / :count AS ms FROM n))`,
      ).run({ count: o.count, shard: o.shard, type: o.type, payload: o.payload, headers: JSON.stringify(o.headers), start, end });
      const events = (db.prepare("SELECT count(*) AS n FROM events").get() as { n: number }).n;
      const newest = (db.prepare("SELECT id FROM events ORDER BY id DESC LIMIT ?").all(listLimit) as { id: string }[]).map((r) => r.id);
      return { events, newest, seconds: (Date.now() - started) / 1000 };
    },
    false,
  );
}

const V7 = /^([0-9a-f]{8})-([0-9a-f]{4})-7([0-9a-f]{3})-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The millisecond, day and shard an event id carries (src/store/ids.ts `readId`). */
export function readEventId(id: string): { ms: number; day: number; shard: number } {
  const m = V7.exec(id);
  if (!m) throw new Error(`not an event id of the relay: ${JSON.stringify(id)}`);
  const ms = parseInt(m[1]! + m[2]!, 16);
  return { ms, day: dayOf(ms), shard: parseInt(m[3]!, 16) };
}
