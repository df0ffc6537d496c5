/**
 * The fan-out consumer: an event becomes one delivery (a D1 row and a deliver message)
 * per enabled destination of its source whose event_filter matches.
 *
 * Idempotent: a delivery row is unique per (event, destination), and only rows this
 * run inserted are queued, so a repeated fan-out message sends nothing twice. Should a
 * run die between the insert and the send, the delivery sweep queues the row later.
 * A redeliver (or replay) message names its destinations and puts existing deliveries
 * back to pending at the start of the retry schedule: same event id, same webhook-id.
 */
import { and, eq, inArray } from "drizzle-orm";
import { newId } from "../db/ids";
import { deliveries, destinations, events } from "../db/schema";
import type { Services } from "../services";
import { matchesFilter } from "./filter";
import type { DeliverMessage, FanoutMessage } from "./messages";

/** D1 binds at most 100 parameters per statement; drizzle binds all 10 columns of a delivery row. */
const ROWS_PER_INSERT = 9;
/** Queue sendBatch takes at most 100 messages. */
const MESSAGES_PER_SEND = 100;

/**
 * @param isRetry the queue is handing this message over again (an earlier run may have
 *   inserted deliveries and died before queueing them): queue every delivery of the
 *   event still waiting for its first attempt, not only the rows this run inserted.
 */
export async function fanout(s: Services, msg: FanoutMessage, isRetry = false): Promise<number> {
  const event = await s.db
    .select({ id: events.id, sourceId: events.sourceId, type: events.type })
    .from(events)
    .where(eq(events.id, msg.event_id))
    .get();
  if (!event) return 0; // purged or its source deleted

  const candidates = await s.db
    .select({ id: destinations.id, eventFilter: destinations.eventFilter })
    .from(destinations)
    .where(
      and(
        eq(destinations.sourceId, event.sourceId),
        eq(destinations.enabled, true),
        msg.destination_ids ? inArray(destinations.id, msg.destination_ids) : undefined,
      ),
    )
    .all();
  // An explicit redeliver goes to the named destinations whatever their filter.
  const targets = msg.destination_ids
    ? candidates
    : candidates.filter((d) => matchesFilter(JSON.parse(d.eventFilter) as string[], event.type));

  const now = s.now();
  const inserts = [];
  for (let i = 0; i < targets.length; i += ROWS_PER_INSERT) {
    const rows = targets.slice(i, i + ROWS_PER_INSERT).map((d) => ({
      id: newId(now),
      eventId: event.id,
      destinationId: d.id,
      status: "pending" as const,
      nextAttemptAt: now,
      createdAt: now,
      updatedAt: now,
    }));
    const insert = s.db.insert(deliveries).values(rows);
    inserts.push(
      (msg.redeliver
        ? insert.onConflictDoUpdate({
            target: [deliveries.eventId, deliveries.destinationId],
            set: { status: "pending", attemptsInRun: 0, nextAttemptAt: now, updatedAt: now },
          })
        : insert.onConflictDoNothing()
      ).returning({ id: deliveries.id, destinationId: deliveries.destinationId }),
    );
  }
  // One round trip, atomic.
  const inserted = inserts.length > 0 ? (await s.db.batch(inserts as [(typeof inserts)[number], ...typeof inserts])).flat() : [];
  const rows = isRetry && targets.length > 0
    ? await s.db
        .select({ id: deliveries.id, destinationId: deliveries.destinationId })
        .from(deliveries)
        .where(
          and(
            eq(deliveries.eventId, event.id),
            eq(deliveries.status, "pending"),
            eq(deliveries.attemptsInRun, 0),
            inArray(deliveries.destinationId, targets.map((d) => d.id)),
          ),
        )
        .all()
    : inserted;
  const queued: DeliverMessage[] = rows.map((r) => ({
    kind: "deliver",
    delivery_id: r.id,
    event_id: event.id,
    destination_id: r.destinationId,
  }));
  for (let i = 0; i < queued.length; i += MESSAGES_PER_SEND) {
    await s.env.DELIVER_QUEUE.sendBatch(queued.slice(i, i + MESSAGES_PER_SEND).map((body) => ({ body })));
  }
  await s.db.update(events).set({ status: "dispatched" }).where(eq(events.id, event.id)).run();
  return queued.length;
}
