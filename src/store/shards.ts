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

/** Two 32-bit halves of a bit mask of shards (db/partitions.ts). */
export const MAX_DAY_SHARDS = 64;

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
