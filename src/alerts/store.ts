/**
 * Storing an alert: ingested into the alerts source's partition of today like any event
 * (routed as ingest/route.ts routes one), which fans it out to the source's destinations
 * through its outbox and the deliver queues. Its dedupe key makes a repeated try a
 * duplicate, never a second event.
 */
import { learnShards, shardsFor } from "../ingest/router";
import type { Services } from "../services";
import { dayOf, dayStart, shardFor } from "../store/ids";
import type { IngestRequest, IngestResult } from "../store/types";

/** A day's count can double while an event is routed; a few tries always find its shard. */
const MAX_ROUTES = 8;

export type StoreAlert = (
  s: Services,
  alertsSourceId: string,
  alert: { type: string; key: string; data: Record<string, unknown> },
) => Promise<"stored" | "duplicate" | "source_gone">;

export const storeAlert: StoreAlert = async (s, alertsSourceId, alert) => {
  const now = s.now();
  const event: IngestRequest = {
    type: alert.type,
    dedupeKey: alert.key,
    payload: JSON.stringify(alert.data),
    payloadIsJson: true,
    headers: {},
    receivedAt: now,
  };
  let day = dayOf(now);
  let result: IngestResult = { kind: "sealed" };
  for (let tries = 0; tries < MAX_ROUTES; tries++) {
    const shards = await shardsFor(s, alertsSourceId, day);
    result = await s.store({ sourceId: alertsSourceId, day, shard: shardFor(alert.key, shards) }).ingest(event, shards);
    if (result.kind === "moved") learnShards(s, alertsSourceId, day, result.shards);
    else if (result.kind === "sealed") {
      day++;
      event.receivedAt = Math.max(now, dayStart(day));
    } else break;
  }
  if (result.kind === "moved" || result.kind === "sealed") throw new Error("alert could not be routed");
  // Over the alerts source's INGEST_RATE_LIMIT: the outbox tries again later.
  if (result.kind === "rate_limited") throw new Error("alert rate limited");
  if (result.kind === "stored") return "stored";
  return result.kind;
};
