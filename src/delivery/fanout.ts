/**
 * The fan-out consumer: an event becomes one delivery (a D1 row and a deliver message)
 * per enabled destination of its source whose event_filter matches.
 *
 * `fanoutMany` takes the plain first fan-outs of a queue batch together: one read (the
 * events with their sources' enabled destinations, joined), one atomic batch (every
 * delivery row and the events' status), then the deliver messages — three round trips
 * for up to 50 events. `fanout` takes one message (a redeliver, a replay, a retry) the
 * same way: two D1 round trips, then the send.
 *
 * Idempotent: a delivery row is unique per (event, destination), and only rows this
 * run inserted are queued, so a repeated fan-out message sends nothing twice. Should a
 * run die between the insert and the send, the retried message (or the delivery sweep)
 * queues the rows later; the event is already `dispatched`, as its deliveries exist.
 * A redeliver (or replay) message names its destinations and puts existing deliveries
 * back to pending at the start of the retry schedule: same event id, same webhook-id.
 */
import { and, eq, inArray } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { newId } from "../db/ids";
import { deliveries, destinations, events } from "../db/schema";
import type { Services } from "../services";
import { matchesFilter } from "./filter";
import { sendAll, type DeliverMessage, type FanoutMessage } from "./messages";

/** D1 binds at most 100 parameters per statement; drizzle binds all 10 columns of a delivery row. */
const ROWS_PER_INSERT = 9;
/** Ids per `IN (…)`, within D1's 100 bound parameters. */
const IDS_PER_QUERY = 90;

/**
 * @param isRetry the queue is handing this message over again (an earlier run may have
 *   inserted deliveries and died before queueing them): queue every delivery of the
 *   event still waiting for its first attempt, not only the rows this run inserted.
 */
export async function fanout(s: Services, msg: FanoutMessage, isRetry = false): Promise<number> {
  // The event and its source's enabled destinations, in one read (an index lookup each).
  const joined = await s.db
    .select({
      id: events.id,
      sourceId: events.sourceId,
      type: events.type,
      destinationId: destinations.id,
      eventFilter: destinations.eventFilter,
    })
    .from(events)
    .leftJoin(destinations, and(eq(destinations.sourceId, events.sourceId), eq(destinations.enabled, true)))
    .where(eq(events.id, msg.event_id))
    .all();
  const event = joined[0];
  if (!event) return 0; // purged or its source deleted

  // An explicit redeliver goes to the named destinations whatever their filter (picked
  // here rather than in SQL: up to 100 ids would exceed D1's 100 bound parameters).
  const named = msg.destination_ids ? new Set(msg.destination_ids) : undefined;
  const targets = joined
    .filter((d): d is typeof d & { destinationId: string; eventFilter: string } => d.destinationId !== null)
    .filter((d) => (named ? named.has(d.destinationId) : matchesFilter(JSON.parse(d.eventFilter) as string[], event.type)))
    .map((d) => ({ id: d.destinationId }));

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
  // One round trip, atomic: the deliveries exist exactly when the event is dispatched.
  const dispatched = s.db.update(events).set({ status: "dispatched" }).where(eq(events.id, event.id));
  const results = await s.db.batch([dispatched, ...inserts]);
  const inserted = (results.slice(1) as { id: string; destinationId: string }[][]).flat();
  const rows = isRetry && targets.length > 0
    ? await s.db
        .select({ id: deliveries.id, destinationId: deliveries.destinationId })
        .from(deliveries)
        // Every delivery of the event still waiting for its first attempt (no id list:
        // a source may have more destinations than D1 binds parameters).
        .where(and(eq(deliveries.eventId, event.id), eq(deliveries.status, "pending"), eq(deliveries.attemptsInRun, 0)))
        .all()
    : inserted;
  const queued: DeliverMessage[] = rows.map((r) => ({
    kind: "deliver",
    delivery_id: r.id,
    event_id: event.id,
    destination_id: r.destinationId,
  }));
  await sendAll(s.env.DELIVER_QUEUE, queued);
  return queued.length;
}

/**
 * Fans out the plain messages of a queue batch together (first delivery of an event to
 * every matching destination; not a redeliver, not a retry): one read for all their
 * events and destinations, one atomic batch for every delivery row and status, then the
 * deliver messages in sends of 100. Three D1 round trips for a batch of 50 events
 * instead of two per event. Idempotent as `fanout` is: only inserted rows are queued.
 */
export async function fanoutMany(s: Services, msgs: FanoutMessage[]): Promise<number> {
  const ids = [...new Set(msgs.map((m) => m.event_id))];
  const joined = [];
  for (let i = 0; i < ids.length; i += IDS_PER_QUERY) {
    joined.push(
      ...(await s.db
        .select({
          id: events.id,
          type: events.type,
          destinationId: destinations.id,
          eventFilter: destinations.eventFilter,
        })
        .from(events)
        .leftJoin(destinations, and(eq(destinations.sourceId, events.sourceId), eq(destinations.enabled, true)))
        .where(inArray(events.id, ids.slice(i, i + IDS_PER_QUERY)))
        .all()),
    );
  }
  const found = [...new Set(joined.map((r) => r.id))];
  if (found.length === 0) return 0; // purged or their source deleted

  const now = s.now();
  const rows = joined
    .filter((d): d is typeof d & { destinationId: string; eventFilter: string } => d.destinationId !== null)
    .filter((d) => matchesFilter(JSON.parse(d.eventFilter) as string[], d.type))
    .map((d) => ({
      id: newId(now),
      eventId: d.id,
      destinationId: d.destinationId,
      status: "pending" as const,
      nextAttemptAt: now,
      createdAt: now,
      updatedAt: now,
    }));
  const statements: BatchItem<"sqlite">[] = [];
  for (let i = 0; i < found.length; i += IDS_PER_QUERY) {
    statements.push(s.db.update(events).set({ status: "dispatched" }).where(inArray(events.id, found.slice(i, i + IDS_PER_QUERY))));
  }
  const updates = statements.length;
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    statements.push(
      s.db
        .insert(deliveries)
        .values(rows.slice(i, i + ROWS_PER_INSERT))
        .onConflictDoNothing()
        .returning({ id: deliveries.id, eventId: deliveries.eventId, destinationId: deliveries.destinationId }),
    );
  }
  // One round trip, atomic.
  const results = await s.db.batch(statements as [BatchItem<"sqlite">, ...BatchItem<"sqlite">[]]);
  const inserted = (results.slice(updates) as { id: string; eventId: string; destinationId: string }[][]).flat();
  const queued: DeliverMessage[] = inserted.map((r) => ({
    kind: "deliver",
    delivery_id: r.id,
    event_id: r.eventId,
    destination_id: r.destinationId,
  }));
  await sendAll(s.env.DELIVER_QUEUE, queued);
  return queued.length;
}
