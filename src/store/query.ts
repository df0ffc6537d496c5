/**
 * Reads across a source's partitions, for the API. Lists walk the days that have
 * partitions (D1's bookkeeping rows) newest first; within a day they ask every shard
 * that exists at once and merge by id. Ids order by time across shards and days (a
 * partition's ids fall within its day), so the cursor, the last id of a page, is an exact
 * keyset bound: nothing repeats and nothing is skipped, whatever arrives meanwhile.
 * An event id names its partition itself (ids.ts), so getting one event is one call.
 */
import { partitionDays } from "../db/partitions";
import { Limiter } from "../delivery/limiter";
import type { Services } from "../services";
import { dayOf, dayStart, idBoundAt, idTimeMs, partitionOf, type PartitionRef } from "./ids";
import type { AttemptRow, EventDetail, EventSummary, IdRange } from "./types";

interface Window {
  sinceMs?: number | undefined;
  untilMs?: number | undefined;
}

interface PageQuery extends Window {
  limit: number;
  /** The last id of the previous page. */
  cursor?: string | undefined;
}

/** `since` inclusive, `until` exclusive, the cursor exclusive: as id bounds. */
function bounds(q: Window & { cursor?: string | undefined }): { low?: string; high?: string } {
  const until = q.untilMs !== undefined ? idBoundAt(q.untilMs, "low") : undefined;
  const high = q.cursor !== undefined && (until === undefined || q.cursor < until) ? q.cursor : until;
  return {
    ...(q.sinceMs !== undefined ? { low: idBoundAt(q.sinceMs, "low") } : {}),
    ...(high !== undefined ? { high } : {}),
  };
}

/** The days a window can touch, oldest and newest. */
function dayRange(s: Services, b: { low?: string; high?: string }): [number, number] {
  const now = s.now();
  const from = b.low !== undefined ? dayOf(idTimeMs(b.low) ?? 0) : dayOf(now) - s.config.retentionDays - 2;
  const to = b.high !== undefined ? dayOf(idTimeMs(b.high) ?? now) : dayOf(now) + 1;
  return [from, to];
}

/**
 * The most partitions one page reads (its first day always whole, up to MAX_DAY_SHARDS):
 * well within an invocation's 1,000 subrequests, however many days a filter that matches
 * little has to walk. A page that stops there is shorter than `limit`, and its cursor
 * continues below the last day it read.
 */
const MAX_PARTITION_READS_PER_PAGE = 300;

/**
 * Walks the partitions of a window newest first, asking each day's shards at once for
 * what they hold below the bound, until `limit + 1` rows are found or the page's
 * partition budget is spent.
 */
async function walk<T extends { id: string }>(
  s: Services,
  sourceId: string,
  q: PageQuery,
  read: (ref: PartitionRef, range: IdRange) => Promise<T[]>,
): Promise<{ items: T[]; nextId: string | null }> {
  const b = bounds(q);
  const [from, to] = dayRange(s, b);
  if (b.low !== undefined && b.high !== undefined && b.high <= b.low) return { items: [], nextId: null };
  const days = await partitionDays(s, sourceId, from, to);
  const limiter = new Limiter();
  const out: T[] = [];
  let reads = 0;
  for (const day of days) {
    if (reads > 0 && reads + day.shards.length > MAX_PARTITION_READS_PER_PAGE) {
      // Everything of the days read is in `out`; the next page starts below them.
      const lastRead = days[days.indexOf(day) - 1]!.day;
      return { items: out, nextId: idBoundAt(dayStart(lastRead), "low") };
    }
    reads += day.shards.length;
    const want = q.limit + 1 - out.length;
    const parts = await Promise.all(
      day.shards.map((shard) => limiter.run("storage", () => read({ sourceId, day: day.day, shard }, { ...b, limit: want }))),
    );
    out.push(...parts.flat().sort((a, z) => (a.id < z.id ? 1 : a.id > z.id ? -1 : 0)).slice(0, want));
    if (out.length > q.limit) break;
  }
  const items = out.slice(0, q.limit);
  return { items, nextId: out.length > q.limit ? items[items.length - 1]!.id : null };
}

export function listEvents(s: Services, sourceId: string, q: PageQuery & { type?: string | undefined }) {
  return walk<EventSummary>(s, sourceId, q, (ref, range) => s.store(ref).listEvents({ ...range, type: q.type }));
}

export function listAttempts(s: Services, sourceId: string, destinationId: string, q: PageQuery & { outcome?: AttemptRow["outcome"] | undefined; eventId?: string | undefined }) {
  // An event's attempts are never older than the event: its id bounds the walk.
  const eventAt = q.eventId !== undefined ? idTimeMs(q.eventId) : null;
  const sinceMs = eventAt !== null ? Math.max(q.sinceMs ?? 0, eventAt) : q.sinceMs;
  return walk<AttemptRow>(s, sourceId, { ...q, sinceMs }, (ref, range) => s.store(ref).listAttempts(destinationId, { ...range, outcome: q.outcome, eventId: q.eventId }));
}

/** One event of a source, from the partition its id names; null when there is none. */
export async function getEvent(s: Services, sourceId: string, eventId: string): Promise<EventDetail | null> {
  const ref = partitionOf(sourceId, eventId);
  return ref ? s.store(ref).getEvent(eventId) : null;
}

/** The partitions of a window that exist, newest first. */
export async function partitionsIn(s: Services, sourceId: string, w: Window): Promise<PartitionRef[]> {
  const [from, to] = dayRange(s, bounds(w));
  const days = await partitionDays(s, sourceId, from, to);
  return days.flatMap((d) => d.shards.map((shard) => ({ sourceId, day: d.day, shard })));
}
