/**
 * The D1 bookkeeping of partitions: one row per source and UTC day, with the day's shard
 * count and a bit per shard that exists. Written once by each partition when it first
 * stores something (and cleared when retention drops it); read by lists, recovery and
 * deletes to know which partitions to ask, newest first.
 */
import { and, desc, eq, gte, lte, sql } from "drizzle-orm";
import type { Services } from "../services";
import { shardOfKey, type PartitionRef } from "../store/ids";
import { partitions } from "./schema";

/** What a partition learns when it registers: its day's shard count and the day before's layout. */
export interface Registration {
  shards: number;
  previous: { shards: number; maskLo: number; maskHi: number } | null;
}

/** Up to 64 shards: two 32-bit halves of a mask. */
export const MAX_DAY_SHARDS = 64;

const bit = (shard: number) => ({ lo: shard < 32 ? (1 << shard) >>> 0 : 0, hi: shard >= 32 ? (1 << (shard - 32)) >>> 0 : 0 });

export function hasShard(mask: { maskLo: number; maskHi: number }, shard: number): boolean {
  const b = bit(shard);
  return ((mask.maskLo >>> 0) & b.lo) !== 0 || ((mask.maskHi >>> 0) & b.hi) !== 0;
}

export function shardsOf(mask: { maskLo: number; maskHi: number }): number[] {
  const out: number[] = [];
  for (let s = 0; s < MAX_DAY_SHARDS; s++) if (hasShard(mask, s)) out.push(s);
  return out;
}

/** Marks the partition as existing; "source_gone" when the source was deleted meanwhile. */
export async function registerPartition(s: Services, ref: PartitionRef, shards: number, now: number): Promise<Registration | "source_gone"> {
  const b = bit(ref.shard);
  try {
    const [mine, previous] = await s.db.batch([
      s.db
        .insert(partitions)
        .values({ sourceId: ref.sourceId, day: ref.day, shards, maskLo: b.lo, maskHi: b.hi, createdAt: now })
        .onConflictDoUpdate({
          target: [partitions.sourceId, partitions.day],
          set: { maskLo: sql`${partitions.maskLo} | ${b.lo}`, maskHi: sql`${partitions.maskHi} | ${b.hi}` },
        })
        .returning({ shards: partitions.shards }),
      s.db
        .select({ shards: partitions.shards, maskLo: partitions.maskLo, maskHi: partitions.maskHi })
        .from(partitions)
        .where(and(eq(partitions.sourceId, ref.sourceId), eq(partitions.day, ref.day - 1))),
    ]);
    return { shards: mine[0]?.shards ?? shards, previous: previous[0] ?? null };
  } catch (err) {
    if (err instanceof Error && /FOREIGN KEY/i.test(err.message)) return "source_gone";
    throw err;
  }
}

/** Clears a dropped partition's bit; the day's row goes with its last partition. */
export async function removePartitionBit(s: Services, ref: PartitionRef): Promise<void> {
  const b = bit(ref.shard);
  const where = and(eq(partitions.sourceId, ref.sourceId), eq(partitions.day, ref.day));
  await s.db.batch([
    s.db
      .update(partitions)
      .set({ maskLo: sql`${partitions.maskLo} & ${~b.lo >>> 0}`, maskHi: sql`${partitions.maskHi} & ${~b.hi >>> 0}` })
      .where(where),
    s.db.delete(partitions).where(and(where, eq(partitions.maskLo, 0), eq(partitions.maskHi, 0))),
  ]);
}

/**
 * The other partitions that may hold an event with this delivery id within the dedupe
 * window: the previous day's partition the key routed to, if that one exists.
 */
export function lookupChain(ref: PartitionRef, reg: Registration, key: string): PartitionRef[] {
  const prev = reg.previous;
  if (!prev) return [];
  const shard = shardOfKey(key, prev.shards);
  return hasShard(prev, shard) ? [{ sourceId: ref.sourceId, day: ref.day - 1, shard }] : [];
}

export interface DayPartitions {
  day: number;
  shards: number[];
}

/** The source's days between two (inclusive) that have partitions, newest first, with their shards. */
export async function partitionDays(s: Services, sourceId: string, fromDay: number, toDay: number): Promise<DayPartitions[]> {
  const rows = await s.db
    .select({ day: partitions.day, maskLo: partitions.maskLo, maskHi: partitions.maskHi })
    .from(partitions)
    .where(and(eq(partitions.sourceId, sourceId), gte(partitions.day, fromDay), lte(partitions.day, toDay)))
    .orderBy(desc(partitions.day))
    .all();
  return rows.map((r) => ({ day: r.day, shards: shardsOf(r) })).filter((d) => d.shards.length > 0);
}
