/**
 * The queries a partition runs, as builders over its own drizzle database, so the
 * object runs them and test/integration/query-plans.test.ts can EXPLAIN exactly them:
 * every list is a range scan over an index that ends in `id`, never a sort.
 */
import { and, asc, desc, eq, gt, gte, lt } from "drizzle-orm";
import type { DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import * as schema from "./schema";
import { attempts, deliveries, events } from "./schema";
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
export const attemptsPage = (db: PartitionDb, destinationId: string, range: IdRange & { outcome?: AttemptRow["outcome"] | undefined }) =>
  db
    .select()
    .from(attempts)
    .where(and(eq(attempts.destinationId, destinationId), range.outcome !== undefined ? eq(attempts.outcome, range.outcome) : undefined, ...idBounds(attempts.id, range)))
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

/** Rows of one destination in a table, a chunk at a time (its removal). */
export const destinationRows = (db: PartitionDb, table: typeof deliveries | typeof attempts, destinationId: string, limit: number) =>
  db.select({ id: table.id }).from(table).where(eq(table.destinationId, destinationId)).limit(limit);
