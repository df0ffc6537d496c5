/**
 * Where an incoming event goes: its source's partition for today, in the shard its
 * provider delivery id names under the day's shard count (any shard without one). The
 * count comes from D1 at most once per ROUTE_CACHE_TTL_MS per source and isolate; a
 * partition that knows a larger count answers "moved" with it, and the event is routed
 * again, so a stale count costs one more call, never a misplaced event.
 */
import { dayShards } from "../db/partitions";
import type { Services } from "../services";
import { initialShards } from "../store/shards";

export const ROUTE_CACHE_TTL_MS = 5_000;
const ROUTE_CACHE_ENTRIES = 10_000;

const cache = new Map<string, { shards: Promise<number>; expires: number }>();

export function shardsFor(s: Services, sourceId: string, day: number): Promise<number> {
  const key = `${sourceId}/${day}`;
  const now = s.now();
  const hit = cache.get(key);
  if (hit && hit.expires > now) return hit.shards;
  const shards = dayShards(s, sourceId, day).then((d) => d.today ?? initialShards(d.previous, s.config.eventShards));
  shards.catch(() => cache.delete(key));
  cache.delete(key);
  cache.set(key, { shards, expires: now + ROUTE_CACHE_TTL_MS });
  if (cache.size > ROUTE_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
  return shards;
}

/** A partition said the day has more shards than we thought. */
export function learnShards(s: Services, sourceId: string, day: number, shards: number): void {
  cache.set(`${sourceId}/${day}`, { shards: Promise.resolve(shards), expires: s.now() + ROUTE_CACHE_TTL_MS });
}
