/**
 * The D1 bookkeeping of partitions: one row per source and UTC day, with the day's shard
 * count and a bit per shard that exists. Written once by each partition when it first
 * stores something (and cleared when retention drops it); read by lists, recovery and
 * deletes to know which partitions to ask, newest first.
 */
import { and, desc, eq, gte, lt, lte, sql } from "drizzle-orm";
import type { Services } from "../services";
import type { PartitionRef } from "../store/ids";
import { keyShards, MAX_DAY_SHARDS } from "../store/shards";
import { partitions } from "./schema";

/** A day's layout: its shard count now and at its start, and the shards that exist. */
export interface DayLayout {
  shards: number;
  baseShards: number;
  /** One character per shard, "1" where the partition exists (MAX_DAY_SHARDS of them). */
  mask: string;
}

/** Registration and router views of a day. */
export interface Registration {
  today: DayLayout;
  previous: DayLayout | null;
}

/** A mask with only this shard's character set. */
const maskWith = (shard: number) => "0".repeat(shard) + "1" + "0".repeat(MAX_DAY_SHARDS - shard - 1);

function hasShard(layout: { mask: string }, shard: number): boolean {
  return layout.mask.charCodeAt(shard) === 49; // "1"
}

export function shardsOf(layout: { mask: string }): number[] {
  const out: number[] = [];
  for (let s = 0; s < layout.mask.length && s < MAX_DAY_SHARDS; s++) if (hasShard(layout, s)) out.push(s);
  return out;
}

/** SQL setting one shard's character of the mask column to "1" or "0" (1-based substr). */
const maskSet = (shard: number, to: "0" | "1") =>
  sql`substr(${partitions.mask}, 1, ${shard}) || ${to} || substr(${partitions.mask}, ${shard + 2})`;

const layout = { shards: partitions.shards, baseShards: partitions.baseShards, mask: partitions.mask };

/**
 * Marks the partition as existing, and reads the layouts of its day and the day before
 * (one D1 batch). The first partition of a day sets its count: half the day before's
 * last (store/shards.ts), computed in the same statement, so every router that reads
 * the day before computes the same. "source_gone" when the source was deleted meanwhile.
 */
export async function registerPartition(s: Services, ref: PartitionRef, now: number): Promise<Registration | "source_gone"> {
  const min = s.config.eventShards;
  const initial = sql`max(${min}, coalesce((SELECT ${partitions.shards} / 2 FROM ${partitions} WHERE ${partitions.sourceId} = ${ref.sourceId} AND ${partitions.day} = ${ref.day - 1}), ${min}))`;
  try {
    const [mine, previous] = await s.db.batch([
      s.db
        .insert(partitions)
        .values({ sourceId: ref.sourceId, day: ref.day, shards: initial, baseShards: initial, mask: maskWith(ref.shard), createdAt: now })
        .onConflictDoUpdate({ target: [partitions.sourceId, partitions.day], set: { mask: maskSet(ref.shard, "1") } })
        .returning(layout),
      s.db.select(layout).from(partitions).where(and(eq(partitions.sourceId, ref.sourceId), eq(partitions.day, ref.day - 1))),
    ]);
    return { today: mine[0]!, previous: previous[0] ?? null };
  } catch (err) {
    if (err instanceof Error && /FOREIGN KEY/i.test(err.message)) return "source_gone";
    throw err;
  }
}

/** The day's shard count, and the day before's (for a router deciding where a new day's events go). */
export async function dayShards(s: Services, sourceId: string, day: number): Promise<{ today: number | null; previous: number | null }> {
  const rows = await s.db
    .select({ day: partitions.day, shards: partitions.shards })
    .from(partitions)
    .where(and(eq(partitions.sourceId, sourceId), gte(partitions.day, day - 1), lte(partitions.day, day)))
    .all();
  return { today: rows.find((r) => r.day === day)?.shards ?? null, previous: rows.find((r) => r.day === day - 1)?.shards ?? null };
}

/** Raises the day's shard count to `to` (a power of two), unless it already is as high; returns the count now. */
export async function growShards(s: Services, ref: PartitionRef, to: number): Promise<number> {
  const where = and(eq(partitions.sourceId, ref.sourceId), eq(partitions.day, ref.day));
  const target = Math.min(to, MAX_DAY_SHARDS);
  const [, now] = await s.db.batch([
    s.db.update(partitions).set({ shards: target }).where(and(where, lt(partitions.shards, target))),
    s.db.select({ shards: partitions.shards }).from(partitions).where(where),
  ]);
  return now[0]?.shards ?? target;
}

/** Clears a dropped partition's bit; the day's row goes with its last partition. */
export async function removePartitionBit(s: Services, ref: PartitionRef): Promise<void> {
  const where = and(eq(partitions.sourceId, ref.sourceId), eq(partitions.day, ref.day));
  await s.db.batch([
    s.db.update(partitions).set({ mask: maskSet(ref.shard, "0") }).where(where),
    s.db.delete(partitions).where(and(where, sql`instr(${partitions.mask}, '1') = 0`)),
  ]);
}

/**
 * The other partitions that may hold an event with this delivery id within the dedupe
 * window: this day's shards the key went to before the count grew, and the day before's
 * (those that exist, as the registration saw them).
 */
export function lookupChain(ref: PartitionRef, reg: Registration, shards: number, key: string): { today: PartitionRef[]; previous: PartitionRef[] } {
  const today = keyShards(key, shards, reg.today.baseShards)
    .filter((shard) => shard !== ref.shard && hasShard(reg.today, shard))
    .map((shard) => ({ ...ref, shard }));
  const prev = reg.previous;
  const previous = prev
    ? keyShards(key, prev.shards, prev.baseShards)
        .filter((shard) => hasShard(prev, shard))
        .map((shard) => ({ sourceId: ref.sourceId, day: ref.day - 1, shard }))
    : [];
  return { today, previous };
}

interface DayPartitions {
  day: number;
  shards: number[];
}

/** The source's days between two (inclusive) that have partitions, newest first, with their shards. */
export async function partitionDays(s: Services, sourceId: string, fromDay: number, toDay: number): Promise<DayPartitions[]> {
  const rows = await s.db
    .select({ day: partitions.day, mask: partitions.mask })
    .from(partitions)
    .where(and(eq(partitions.sourceId, sourceId), gte(partitions.day, fromDay), lte(partitions.day, toDay)))
    .orderBy(desc(partitions.day))
    .all();
  return rows.map((r) => ({ day: r.day, shards: shardsOf(r) })).filter((d) => d.shards.length > 0);
}
