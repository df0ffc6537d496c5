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
import { and, eq, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { newId } from "../db/ids";
import { deliveries, destinations, events } from "../db/schema";
import type { Services } from "../services";
import { matchesFilter } from "./filter";
import { sendAll, type DeliverMessage, type FanoutMessage } from "./messages";

/**
 * Delivery rows per insert. Each insert binds its rows as one JSON parameter (D1 binds at
 * most 100 parameters per statement, and counts each statement of a batch against its
 * queries per invocation): 2,000 rows are about 180 KB, within D1's 2 MB per value.
 */
const ROWS_PER_INSERT = 2000;

type Statement = BatchItem<"sqlite">;
type Inserted = { id: string; eventId: string; destinationId: string };

/**
 * Inserts pending deliveries, one statement per ROWS_PER_INSERT rows whatever the number
 * of destinations, each returning the rows it inserted — or, for a redeliver, the
 * existing rows it put back to pending at the start of the retry schedule.
 */
function insertDeliveries(s: Services, rows: { eventId: string; destinationId: string }[], now: number, redeliver: boolean): Statement[] {
  const statements: Statement[] = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const values = JSON.stringify(rows.slice(i, i + ROWS_PER_INSERT).map((r) => [newId(now), r.eventId, r.destinationId]));
    // Every column in the table's order; `WHERE true` lets ON CONFLICT follow the SELECT
    // (SQLite's documented way around the parsing ambiguity).
    const insert = s.db.insert(deliveries).select(sql`
      SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        'pending', 0, 0, NULL, ${now}, ${now}, ${now}
      FROM json_each(${values}) WHERE true`);
    statements.push(
      (redeliver
        ? insert.onConflictDoUpdate({
            target: [deliveries.eventId, deliveries.destinationId],
            set: { status: "pending", attemptsInRun: 0, nextAttemptAt: now, updatedAt: now },
          })
        : insert.onConflictDoNothing()
      ).returning({ id: deliveries.id, eventId: deliveries.eventId, destinationId: deliveries.destinationId }),
    );
  }
  return statements;
}

const queueOf = (rows: Inserted[]): DeliverMessage[] =>
  rows.map((r) => ({ kind: "deliver", delivery_id: r.id, event_id: r.eventId, destination_id: r.destinationId }));

/**
 * @param isRetry the queue is handing this message over again (an earlier run may have
 *   inserted deliveries and died before queueing them): queue every delivery of the
 *   event still waiting for its first attempt, not only the rows this run inserted.
 */
export async function fanout(s: Services, msg: FanoutMessage, isRetry = false): Promise<number> {
  // The event and its source's enabled destinations, in one read (an index lookup each).
  const joined = await eventsWithDestinations(s, [msg.event_id]).all();
  const event = joined[0];
  if (!event) return 0; // purged or its source deleted

  // An explicit redeliver goes to the named destinations whatever their filter (picked
  // here rather than in SQL: up to 100 ids would exceed D1's 100 bound parameters).
  const named = msg.destination_ids ? new Set(msg.destination_ids) : undefined;
  const targets = joined
    .filter((d): d is typeof d & { destinationId: string; eventFilter: string } => d.destinationId !== null)
    .filter((d) => (named ? named.has(d.destinationId) : matchesFilter(JSON.parse(d.eventFilter) as string[], event.type)))
    .map((d) => ({ eventId: event.id, destinationId: d.destinationId }));

  // One round trip, atomic: the deliveries exist exactly when the event is dispatched.
  const dispatched = s.db.update(events).set({ status: "dispatched" }).where(eq(events.id, event.id));
  const results = await s.db.batch([dispatched, ...insertDeliveries(s, targets, s.now(), msg.redeliver === true)]);
  const inserted = (results.slice(1) as Inserted[][]).flat();
  const rows = isRetry && targets.length > 0
    ? await s.db
        .select({ id: deliveries.id, eventId: deliveries.eventId, destinationId: deliveries.destinationId })
        .from(deliveries)
        // Every delivery of the event still waiting for its first attempt (no id list:
        // a source may have more destinations than D1 binds parameters).
        .where(and(eq(deliveries.eventId, event.id), eq(deliveries.status, "pending"), eq(deliveries.attemptsInRun, 0)))
        .all()
    : inserted;
  const queued = queueOf(rows);
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
  const joined = await eventsWithDestinations(s, [...new Set(msgs.map((m) => m.event_id))]).all();
  const found = [...new Set(joined.map((r) => r.id))];
  if (found.length === 0) return 0; // purged or their source deleted

  const targets = joined
    .filter((d): d is typeof d & { destinationId: string; eventFilter: string } => d.destinationId !== null)
    .filter((d) => matchesFilter(JSON.parse(d.eventFilter) as string[], d.type))
    .map((d) => ({ eventId: d.id, destinationId: d.destinationId }));
  const dispatched = s.db
    .update(events)
    .set({ status: "dispatched" })
    .where(sql`${events.id} IN (SELECT value FROM json_each(${JSON.stringify(found)}))`);
  // One round trip, atomic.
  const results = await s.db.batch([dispatched, ...insertDeliveries(s, targets, s.now(), false)]);
  const queued = queueOf((results.slice(1) as Inserted[][]).flat());
  await sendAll(s.env.DELIVER_QUEUE, queued);
  return queued.length;
}

/**
 * The events with their sources' enabled destinations (one row per pair; one row with
 * null destination fields for an event that has none). The ids travel as one JSON
 * parameter: any number of them within D1's 100 bound parameters.
 */
export function eventsWithDestinations(s: Services, eventIds: string[]) {
  return s.db
    .select({
      id: events.id,
      type: events.type,
      destinationId: destinations.id,
      eventFilter: destinations.eventFilter,
    })
    .from(events)
    .leftJoin(destinations, and(eq(destinations.sourceId, events.sourceId), eq(destinations.enabled, true)))
    .where(sql`${events.id} IN (SELECT value FROM json_each(${JSON.stringify(eventIds)}))`);
}
