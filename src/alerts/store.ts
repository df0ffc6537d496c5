/**
 * Storing an alert: ingested into the alerts source's partition of today like any event
 * (routed as ingest/receive.ts routes one), which fans it out to the source's destinations
 * through its outbox and the deliver queues. Its dedupe key makes a repeated try a
 * duplicate, never a second event.
 */
import { ingestRouted } from "../ingest/router";
import type { Services } from "../services";
import type { IngestRequest } from "../store/types";

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
  const result = await ingestRouted(s, alertsSourceId, event);
  // Over the alerts source's INGEST_RATE_LIMIT: the outbox tries again later.
  if (result.kind === "rate_limited") throw new Error("alert rate limited");
  if (result.kind === "stored") return "stored";
  return result.kind;
};
