/**
 * The dead-letter consumer: messages the other consumers failed on max_retries times.
 * Each is recorded against its event, never dropped silently: a delivery is marked
 * failed with an attempt saying why; an event whose fan-out kept failing is marked
 * dead_lettered (and so leaves the sweep). Both show in the event log.
 */
import { and, eq, sql } from "drizzle-orm";
import { newId } from "../db/ids";
import { attempts, deliveries, events } from "../db/schema";
import { log } from "../log";
import type { Services } from "../services";
import type { DeliverMessage, FanoutMessage } from "./messages";

export async function deadLetter(s: Services, msg: FanoutMessage | DeliverMessage): Promise<void> {
  const now = s.now();
  if (msg.kind === "fanout") {
    await s.db
      .update(events)
      .set({ status: "dead_lettered" })
      .where(and(eq(events.id, msg.event_id), eq(events.status, "pending")))
      .run();
    log("error", "fanout_dead_lettered", { event_id: msg.event_id });
    return;
  }
  const delivery = await s.db
    .select({ id: deliveries.id, status: deliveries.status, attemptCount: deliveries.attemptCount })
    .from(deliveries)
    .where(eq(deliveries.id, msg.delivery_id))
    .get();
  if (!delivery || delivery.status !== "pending") return;
  await s.db.batch([
    s.db.insert(attempts).values({
      id: newId(now),
      deliveryId: delivery.id,
      eventId: msg.event_id,
      destinationId: msg.destination_id,
      number: delivery.attemptCount + 1,
      outcome: "failed",
      statusCode: null,
      error: "dead-lettered: the delivery could not be processed after repeated tries",
      durationMs: 0,
      responseBody: null,
      createdAt: now,
    }),
    s.db
      .update(deliveries)
      .set({ status: "failed", attemptCount: sql`${deliveries.attemptCount} + 1`, lastAttemptAt: now, updatedAt: now })
      .where(eq(deliveries.id, delivery.id)),
  ]);
  log("error", "delivery_dead_lettered", { delivery_id: delivery.id, event_id: msg.event_id, destination_id: msg.destination_id });
}
