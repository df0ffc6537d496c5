/**
 * The queries a partition runs, as builders over its own drizzle database, so the
 * object runs them and test/integration/query-plans.test.ts can EXPLAIN exactly them:
 * every list is a range scan over an index that ends in `id`, never a sort.
 */
import { and, asc, desc, eq, gt, gte, lt, lte, sql } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "./schema";
import { attempts, deliveries, events, outbox } from "./schema";
import type { AttemptRow, IdRange } from "./types";

export type PartitionDb = DrizzleSqliteDODatabase<typeof schema>;

function idBounds(column: typeof events.id | typeof attempts.id, r: IdRange) {
  return [r.low !== undefined ? gte(column, r.low) : undefined, r.high !== undefined ? lt(column, r.high) : undefined];
}

/** A page of events, newest first, optionally of one type. */
export const eventsPage = (db: PartitionDb, range: IdRange & { type?: string | undefined }) =>
  db
    .select({ id: events.id, type: events.type, status: events.status, receivedAt: events.receivedAt })
    .from(events)
    .where(and(range.type !== undefined ? eq(events.type, range.type) : undefined, ...idBounds(events.id, range)))
    .orderBy(desc(events.id))
    .limit(range.limit);

/** A page of one destination's attempts, newest first, optionally of one outcome. */
export const attemptsPage = (db: PartitionDb, destinationId: string, range: IdRange & { outcome?: AttemptRow["outcome"] | undefined; eventId?: string | undefined }) =>
  db
    .select()
    .from(attempts)
    .where(
      and(
        eq(attempts.destinationId, destinationId),
        range.outcome !== undefined ? eq(attempts.outcome, range.outcome) : undefined,
        // One delivery's timeline: read along the destination's index from the event's time on (no index of its own: each one costs every attempt's write).
        range.eventId !== undefined ? eq(attempts.eventId, range.eventId) : undefined,
        ...idBounds(attempts.id, range),
      ),
    )
    .orderBy(desc(attempts.id))
    .limit(range.limit);

/** The events still waiting for their fan-out, oldest first. */
export const pendingEvents = (db: PartitionDb, limit: number) =>
  db.select({ id: events.id, type: events.type }).from(events).where(eq(events.status, "pending")).orderBy(asc(events.id)).limit(limit);

/** An event's deliveries, by destination (the order of their index). */
export const deliveriesOfEvent = (db: PartitionDb, eventId: string) =>
  db.select().from(deliveries).where(eq(deliveries.eventId, eventId)).orderBy(asc(deliveries.destinationId));

/** A replay window's events after `after`, oldest first, with their delivery to one destination if any. */
export const replayPage = (db: PartitionDb, destinationId: string, low: string, high: string, after: string | undefined, limit: number) =>
  db
    .select({ id: events.id, type: events.type, status: deliveries.status })
    .from(events)
    .leftJoin(deliveries, and(eq(deliveries.eventId, events.id), eq(deliveries.destinationId, destinationId)))
    .where(and(gte(events.id, low), lt(events.id, high), after !== undefined ? gt(events.id, after) : undefined))
    .orderBy(asc(events.id))
    .limit(limit);

/**
 * Rows of one destination in a table after `after`, in id order, a chunk at a time (its
 * removal): attempts along their destination's index, deliveries along the primary key
 * (they have no index by destination), each chunk going on where the last one ended.
 */
export const destinationRows = (db: PartitionDb, table: typeof deliveries | typeof attempts, destinationId: string, after: string, limit: number) =>
  db
    .select({ id: table.id })
    .from(table)
    .where(and(eq(table.destinationId, destinationId), gt(table.id, after)))
    .orderBy(asc(table.id))
    .limit(limit);

const p = sql.placeholder;
/** A named value in an UPDATE's SET (drizzle takes placeholders there only inside sql). */
const v = (name: string) => sql`${p(name)}`;

/**
 * The statements a partition runs once or more per event, delivery or attempt, built
 * once per object (drizzle builds a query's SQL on every call otherwise, which was a
 * quarter of the partition's CPU under load) and run with named values.
 */
export function hotStatements(db: PartitionDb) {
  return {
    insertEvent: db
      .insert(events)
      .values({
        id: p("id"),
        type: p("type"),
        dedupeKey: p("dedupeKey"),
        payload: p("payload"),
        payloadIsJson: p("payloadIsJson"),
        headers: p("headers"),
        status: p("status"),
        receivedAt: p("receivedAt"),
      })
      .onConflictDoNothing()
      .returning({ id: events.id })
      .prepare(),
    eventIdByKey: db.select({ id: events.id }).from(events).where(eq(events.dedupeKey, p("key"))).prepare(),
    payloadOf: db.select({ payload: events.payload, payloadIsJson: events.payloadIsJson }).from(events).where(eq(events.id, p("id"))).prepare(),
    markDispatched: db
      .update(events)
      .set({ status: "dispatched" })
      .where(and(eq(events.id, p("id")), eq(events.status, "pending")))
      .returning({ id: events.id })
      .prepare(),
    insertDelivery: db
      .insert(deliveries)
      .values({
        id: p("id"),
        eventId: p("eventId"),
        destinationId: p("destinationId"),
        status: "pending",
        token: p("token"),
        nextAttemptAt: p("now"),
        createdAt: p("now"),
        updatedAt: p("now"),
      })
      .prepare(),
    insertOutbox: db
      .insert(outbox)
      .values({ kind: "deliver", queueKey: p("queueKey"), body: p("body"), delaySeconds: p("delaySeconds"), createdAt: p("now") })
      .prepare(),
    outboxHead: db.select().from(outbox).orderBy(asc(outbox.seq)).limit(p("limit")).prepare(),
    outboxSent: db.delete(outbox).where(lte(outbox.seq, p("seq"))).prepare(),
    anyOutbox: db.select({ seq: outbox.seq }).from(outbox).limit(1).prepare(),
    anyPending: db.select({ id: events.id }).from(events).where(eq(events.status, "pending")).limit(1).prepare(),
    /** What a claim and a settlement look at. */
    deliveryState: db
      .select({
        id: deliveries.id,
        eventId: deliveries.eventId,
        destinationId: deliveries.destinationId,
        status: deliveries.status,
        token: deliveries.token,
        claimedBy: deliveries.claimedBy,
        claimedUntil: deliveries.claimedUntil,
        attemptCount: deliveries.attemptCount,
        attemptsInRun: deliveries.attemptsInRun,
      })
      .from(deliveries)
      .where(eq(deliveries.id, p("id")))
      .prepare(),
    payloadBytes: db.select({ n: sql<number>`length(CAST(${events.payload} AS BLOB))` }).from(events).where(eq(events.id, p("id"))).prepare(),
    eventForAttempt: db
      .select({ id: events.id, type: events.type, payload: events.payload, payloadIsJson: events.payloadIsJson })
      .from(events)
      .where(eq(events.id, p("id")))
      .prepare(),
    claim: db.update(deliveries).set({ claimedBy: v("by"), claimedUntil: v("until") }).where(eq(deliveries.id, p("id"))).prepare(),
    insertAttempt: db
      .insert(attempts)
      .values({
        id: p("id"),
        deliveryId: p("deliveryId"),
        eventId: p("eventId"),
        destinationId: p("destinationId"),
        number: p("number"),
        outcome: p("outcome"),
        statusCode: p("statusCode"),
        error: p("error"),
        durationMs: p("durationMs"),
        responseBody: p("responseBody"),
        createdAt: p("createdAt"),
      })
      .onConflictDoNothing()
      .prepare(),
    settle: db
      .update(deliveries)
      .set({
        status: v("status"),
        token: v("token"),
        claimedBy: null,
        claimedUntil: 0,
        attemptCount: v("attemptCount"),
        attemptsInRun: v("attemptsInRun"),
        nextAttemptAt: v("nextAttemptAt"),
        lastAttemptId: v("lastAttemptId"),
        lastAttemptAt: v("lastAttemptAt"),
        lastOutcome: v("lastOutcome"),
        lastStatusCode: v("lastStatusCode"),
        lastError: v("lastError"),
        lastDurationMs: v("lastDurationMs"),
        updatedAt: v("now"),
      })
      .where(eq(deliveries.id, p("id")))
      .prepare(),
    /** A delivery the destination's gate holds back: a new token, the claim released, due later; no attempt. */
    hold: db
      .update(deliveries)
      .set({ token: v("token"), claimedBy: null, claimedUntil: 0, nextAttemptAt: v("nextAttemptAt"), updatedAt: v("now") })
      .where(eq(deliveries.id, p("id")))
      .prepare(),
  };
}

export type HotStatements = ReturnType<typeof hotStatements>;
