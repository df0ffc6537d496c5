/**
 * Where an incoming event goes: its source's partition for today, in the shard its
 * provider delivery id names under the day's shard count (any shard without one). The
 * count comes from D1 at most once per ROUTE_CACHE_TTL_MS per source and isolate; a
 * partition that knows a larger count answers "moved" with it, and the event is routed
 * again, so a stale count costs one more call, never a misplaced event.
 */
import { dayShards } from "../db/partitions";
import type { Services } from "../services";
import { dayOf, dayStart, shardFor } from "../store/ids";
import type { IngestRequest, IngestResult } from "../store/types";
import { initialShards } from "../store/shards";
import { TtlCache } from "../ttl-cache";

const ROUTE_CACHE_TTL_MS = 5_000;
const ROUTE_CACHE_ENTRIES = 10_000;

const cache = new TtlCache<string, number>(ROUTE_CACHE_ENTRIES);

async function shardsFor(s: Services, sourceId: string, day: number): Promise<number> {
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
function learnShards(s: Services, sourceId: string, day: number, shards: number): void {
  cache.set(`${sourceId}/${day}`, shards, s.now() + ROUTE_CACHE_TTL_MS);
}

/** A day's count can grow while an event is routed; a few tries always find its shard. */
const MAX_ROUTES = 8;

/**
 * Stores an event in its source's partition for today, in the shard its delivery id
 * names: routed again when the partition knows a larger count ("moved"), or to the next
 * day when today's partitions are closed ("sealed"). Throws when it cannot be routed.
 */
export async function ingestRouted(s: Services, sourceId: string, event: IngestRequest): Promise<Exclude<IngestResult, { kind: "moved" | "sealed" }>> {
  const now = event.receivedAt;
  let day = dayOf(now);
  for (let tries = 0; tries < MAX_ROUTES; tries++) {
    const shards = await shardsFor(s, sourceId, day);
    const result = await s.store({ sourceId, day, shard: shardFor(event.dedupeKey, shards) }).ingest(event, shards);
    if (result.kind === "moved") learnShards(s, sourceId, day, result.shards);
    else if (result.kind === "sealed") {
      // Our clock is behind the partition that closed this day: the event belongs to the next.
      day++;
      event.receivedAt = Math.max(now, dayStart(day));
    } else return result;
  }
  throw new Error("ingest could not be routed");
}
