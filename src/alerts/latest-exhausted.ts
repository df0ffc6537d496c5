/**
 * The event a `delivery.exhausted` alert names, when the health object was not told it:
 * the deliver consumer reports an exhausted forward by destination alone
 * (`exhausted(destinationId)`). Looked up once per alert, when it is stored: the
 * destination's newest failed attempts up to the latest exhaustion (attempts live in the
 * partitions of the day they were made), the first whose delivery ended on it as failed.
 * A consumer that passes the event id (`exhausted(destinationId, eventId)`) makes this
 * unnecessary.
 */
import { partitionDays } from "../db/partitions";
import type { Services } from "../services";
import { dayOf, idBoundAt, partitionOf } from "../store/ids";

/** Attempts looked at, newest first. */
const CANDIDATES = 10;
/** The consumer's clock and the health object's may differ a little. */
const CLOCK_SLACK_MS = 5_000;

export async function latestExhaustedEvent(s: Services, sourceId: string, destinationId: string, atMs: number): Promise<string | null> {
  const days = await partitionDays(s, sourceId, dayOf(atMs - CLOCK_SLACK_MS), dayOf(atMs + CLOCK_SLACK_MS));
  const high = idBoundAt(atMs + CLOCK_SLACK_MS, "high");
  const pages = await Promise.all(
    days.flatMap((d) => d.shards.map((shard) => s.store({ sourceId, day: d.day, shard }).listAttempts(destinationId, { outcome: "failed", high, limit: CANDIDATES }))),
  );
  const candidates = pages
    .flat()
    .sort((a, b) => (a.id < b.id ? 1 : -1))
    .slice(0, CANDIDATES);
  const seen = new Set<string>();
  for (const a of candidates) {
    if (seen.has(a.deliveryId)) continue;
    seen.add(a.deliveryId);
    const ref = partitionOf(sourceId, a.eventId);
    if (!ref) continue;
    const event = await s.store(ref).getEvent(a.eventId);
    const delivery = event?.deliveries.find((d) => d.id === a.deliveryId);
    if (delivery?.status === "failed" && delivery.lastAttempt?.id === a.id) return a.eventId;
  }
  return null;
}
