/**
 * How many shards a source's day has, and where a delivery id can be. A day starts with
 * half the shards the day before ended with (at least EVENT_SHARDS), and a partition
 * that projects to outgrow PARTITION_SPLIT_BYTES by the end of its day doubles the day's
 * count (event-store.ts, `split`). Counts are powers of two, so a key's shard under a
 * count is its shard under the doubled count, or that plus the old count: the shards a
 * key may have gone to, as the day's count grew, are its shard under each count from the
 * day's first to its last.
 */
import { shardOfKey } from "./ids";

/**
 * The most shards a source's day may have: the characters of its mask (db/partitions.ts).
 * At 4 GiB a partition (PARTITION_SPLIT_BYTES), 1.1 TB a source a day: docs/scale.md.
 */
export const MAX_DAY_SHARDS = 256;

export const isPowerOfTwo = (n: number) => Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;

/** The count a day starts with, given the day before's last count. */
export function initialShards(previous: number | null | undefined, minimum: number): number {
  return Math.max(minimum, Math.floor((previous ?? 0) / 2), 1);
}

/** The shards a key may be in on a day whose count went from `first` to `last`: newest first, each once. */
export function keyShards(key: string, last: number, first: number): number[] {
  const out: number[] = [];
  for (let n = last; n >= Math.max(1, first); n = n / 2) {
    const shard = shardOfKey(key, n);
    if (!out.includes(shard)) out.push(shard);
    if (n === 1) break;
  }
  return out;
}

/**
 * The most ingests a second one partition is meant to take: a quarter of the about 1,000
 * requests a second a Durable Object serves (Cloudflare's published soft limit), leaving
 * the rest for the claims, records, lists and dedupe lookups it also answers.
 */
export const PARTITION_INGEST_RATE = 250;

/**
 * The shard count a day needs, from what one partition saw over a window: enough that
 * this partition, taking its share of the traffic from now on, neither passes
 * `splitBytes` by the end of its day nor takes more than PARTITION_INGEST_RATE ingests a
 * second. A power of two, at least `shards`, at most MAX_DAY_SHARDS.
 */
export function neededShards(o: { shards: number; size: number; bytesPerMs: number; insertsPerSec: number; msLeft: number; splitBytes: number }): number {
  const room = Math.max(o.splitBytes - o.size, o.splitBytes / 8);
  const factor = Math.max((o.bytesPerMs * o.msLeft) / room, o.insertsPerSec / PARTITION_INGEST_RATE, 1);
  let n = o.shards;
  while (n < MAX_DAY_SHARDS && n < o.shards * factor) n *= 2;
  return n;
}
