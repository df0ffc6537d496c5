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
import { TtlCache } from "../ttl-cache";

export const ROUTE_CACHE_TTL_MS = 5_000;
const ROUTE_CACHE_ENTRIES = 10_000;

const cache = new TtlCache<string, number>(ROUTE_CACHE_ENTRIES);

export async function shardsFor(s: Services, sourceId: string, day: number): Promise<number> {
  const key = `${sourceId}/${day}`;
  const hit = cache.get(key, s.now());
  if (hit) return hit.value;
  const d = await dayShards(s, sourceId, day);
  const shards = d.today ?? initialShards(d.previous, s.config.eventShards);
  // Another request may have learnt a larger count meanwhile: keep the larger.
  const known = cache.get(key, s.now());
  const best = Math.max(shards, known?.value ?? 0);
  cache.set(key, best, s.now() + ROUTE_CACHE_TTL_MS);
  return best;
}

/** A partition said the day has more shards than we thought. */
export function learnShards(s: Services, sourceId: string, day: number, shards: number): void {
  cache.set(`${sourceId}/${day}`, shards, s.now() + ROUTE_CACHE_TTL_MS);
}
