/**
 * Queries of the event log and the attempt log. Every list is a range scan over an
 * index ending in `id` (UUIDv7): a time bound becomes an id bound, the cursor is an id
 * bound, and the optional equality filter (type, outcome) sits in the index before it.
 * List functions return the (awaitable) query, so test/integration/query-plans.test.ts
 * can EXPLAIN exactly what runs.
 */
import { and, desc, eq, gte, inArray, lt, sql } from "drizzle-orm";
import type { Services } from "../services";
import { idBoundAt } from "./ids";
import { attempts, deliveries, events } from "./schema";

export interface TimeWindow {
  sinceMs?: number | undefined;
  untilMs?: number | undefined;
}

/** since inclusive, until exclusive, as id bounds. */
function idWindow(column: typeof events.id | typeof attempts.id, w: TimeWindow, cursor?: string) {
  return [
    w.sinceMs !== undefined ? gte(column, idBoundAt(w.sinceMs, "low")) : undefined,
    w.untilMs !== undefined ? lt(column, idBoundAt(w.untilMs, "low")) : undefined,
    cursor ? lt(column, cursor) : undefined,
  ];
}

export function listEvents(
  s: Services,
  sourceId: string,
  q: TimeWindow & { type?: string | undefined; limit: number; cursor?: string | undefined },
) {
  return s.db
    .select({ id: events.id, sourceId: events.sourceId, type: events.type, status: events.status, receivedAt: events.receivedAt })
    .from(events)
    .where(and(eq(events.sourceId, sourceId), q.type !== undefined ? eq(events.type, q.type) : undefined, ...idWindow(events.id, q, q.cursor)))
    .orderBy(desc(events.id))
    .limit(q.limit + 1);
}

export async function getEvent(s: Services, sourceId: string, id: string) {
  return s.db
    .select()
    .from(events)
    .where(and(eq(events.id, id), eq(events.sourceId, sourceId)))
    .get();
}

/** Each delivery of an event with its latest attempt. */
export async function deliveriesOfEvent(s: Services, eventId: string) {
  const rows = await s.db.select().from(deliveries).where(eq(deliveries.eventId, eventId)).orderBy(deliveries.id).all();
  if (rows.length === 0) return [];
  const latest = await s.db
    .select()
    .from(attempts)
    .where(
      inArray(
        attempts.id,
        s.db
          .select({ id: sql<string>`max(${attempts.id})` })
          .from(attempts)
          .where(eq(attempts.eventId, eventId))
          .groupBy(attempts.deliveryId),
      ),
    )
    .all();
  const byDelivery = new Map(latest.map((a) => [a.deliveryId, a]));
  return rows.map((d) => ({ delivery: d, lastAttempt: byDelivery.get(d.id) ?? null }));
}

export function listAttempts(
  s: Services,
  destinationId: string,
  q: TimeWindow & { outcome?: "succeeded" | "failed" | "cancelled" | undefined; limit: number; cursor?: string | undefined },
) {
  return s.db
    .select()
    .from(attempts)
    .where(
      and(
        eq(attempts.destinationId, destinationId),
        q.outcome !== undefined ? eq(attempts.outcome, q.outcome) : undefined,
        ...idWindow(attempts.id, q, q.cursor),
      ),
    )
    .orderBy(desc(attempts.id))
    .limit(q.limit + 1);
}

/**
 * The events of a source in a window, oldest first, for a replay to one destination:
 * all of them, or only those it missed (its delivery failed or was cancelled, or it
 * never got one, e.g. while it was disabled).
 */
export function eventsToReplay(
  s: Services,
  sourceId: string,
  destinationId: string,
  w: TimeWindow,
  onlyFailed: boolean,
  limit: number,
  afterId?: string,
) {
  const base = and(
    eq(events.sourceId, sourceId),
    ...idWindow(events.id, w),
    afterId ? sql`${events.id} > ${afterId}` : undefined,
  );
  if (!onlyFailed) {
    return s.db.select({ id: events.id, type: events.type }).from(events).where(base).orderBy(events.id).limit(limit);
  }
  return s.db
    .select({ id: events.id, type: events.type })
    .from(events)
    .leftJoin(deliveries, and(eq(deliveries.eventId, events.id), eq(deliveries.destinationId, destinationId)))
    .where(and(base, sql`(${deliveries.id} IS NULL OR ${deliveries.status} IN ('failed', 'cancelled'))`))
    .orderBy(events.id)
    .limit(limit);
}
