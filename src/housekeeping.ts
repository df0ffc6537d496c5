/**
 * The cron trigger's work, each part bounded so one run stays well inside a Worker's
 * limits: re-queue what was saved but never queued (events whose fan-out never ran,
 * deliveries long past their due time), then purge what is older than RETENTION_DAYS.
 */
import { and, asc, eq, inArray, lt } from "drizzle-orm";
import { idBoundAt } from "./db/ids";
import { deliveries, events } from "./db/schema";
import { sendAll, type DeliverMessage, type FanoutMessage } from "./delivery/messages";
import { log } from "./log";
import type { Services } from "./services";

const SWEEP_LIMIT = 500;
const PURGE_BATCH = 200;
const PURGE_MAX_BATCHES = 25;

export interface HousekeepingReport {
  events_requeued: number;
  deliveries_requeued: number;
  events_purged: number;
}

/** Events saved but never fanned out (the queue send failed, or the message was lost). */
export const stuckEvents = (s: Services, cutoff: number) =>
  s.db
    .select({ id: events.id })
    .from(events)
    .where(and(eq(events.status, "pending"), lt(events.receivedAt, cutoff)))
    .orderBy(asc(events.receivedAt))
    .limit(SWEEP_LIMIT);

/** Deliveries pending long past their due time: their message was lost or never sent. */
export const stuckDeliveries = (s: Services, cutoff: number) =>
  s.db
    .select({ id: deliveries.id, eventId: deliveries.eventId, destinationId: deliveries.destinationId })
    .from(deliveries)
    .where(and(eq(deliveries.status, "pending"), lt(deliveries.nextAttemptAt, cutoff)))
    .orderBy(asc(deliveries.nextAttemptAt))
    .limit(SWEEP_LIMIT);

/** One bounded batch of expired events, by primary key range (ids are time-ordered). */
export const expiredEvents = (s: Services, bound: string) =>
  s.db.select({ id: events.id }).from(events).where(lt(events.id, bound)).orderBy(asc(events.id)).limit(PURGE_BATCH);

export async function sweepPendingEvents(s: Services, now: number): Promise<number> {
  const stuck = await stuckEvents(s, now - s.config.sweepAfterSeconds * 1000);
  await sendAll<FanoutMessage>(s.env.FANOUT_QUEUE, stuck.map((e) => ({ kind: "fanout", event_id: e.id })));
  return stuck.length;
}

export async function sweepPendingDeliveries(s: Services, now: number): Promise<number> {
  const stuck = await stuckDeliveries(s, now - s.config.sweepAfterSeconds * 1000);
  if (stuck.length === 0) return 0;
  // Push their due time forward first, so the next sweep does not queue them again.
  for (let i = 0; i < stuck.length; i += 90) {
    await s.db
      .update(deliveries)
      .set({ nextAttemptAt: now })
      .where(inArray(deliveries.id, stuck.slice(i, i + 90).map((d) => d.id)))
      .run();
  }
  await sendAll<DeliverMessage>(
    s.env.DELIVER_QUEUE,
    stuck.map((d) => ({ kind: "deliver", delivery_id: d.id, event_id: d.eventId, destination_id: d.destinationId })),
  );
  return stuck.length;
}

/** Deletes events (and, by cascade, their deliveries and attempts) older than the retention window. */
export async function purgeExpired(s: Services, now: number): Promise<number> {
  const bound = idBoundAt(now - s.config.retentionDays * 86_400_000, "low");
  let purged = 0;
  for (let i = 0; i < PURGE_MAX_BATCHES; i++) {
    const res = await s.db
      .delete(events)
      .where(inArray(events.id, expiredEvents(s, bound)))
      .run();
    const n = res.meta.changes ?? 0;
    purged += n;
    if (n < PURGE_BATCH) break;
  }
  return purged;
}

export async function housekeeping(s: Services): Promise<HousekeepingReport> {
  const now = s.now();
  const report = {
    events_requeued: await sweepPendingEvents(s, now),
    deliveries_requeued: await sweepPendingDeliveries(s, now),
    events_purged: await purgeExpired(s, now),
  };
  log("info", "housekeeping", { ...report });
  return report;
}

