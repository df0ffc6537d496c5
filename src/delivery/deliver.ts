/**
 * The deliver consumer: for each message, one signed attempt to one destination.
 *
 * Per batch: one query loads every delivery with its destination, one loads the events
 * (each payload once, however many destinations it goes to); the attempts run
 * concurrently; one atomic D1 batch records every attempt and delivery state; then
 * each message is acked or retried with its delay, and DestinationHealth hears of
 * successes after failures and of exhausted forwards.
 */
import { inArray } from "drizzle-orm";
import { signingSecrets } from "../db/destinations";
import { newId } from "../db/ids";
import { attempts, deliveries, destinations, events, type AttemptOutcome, type DeliveryStatus } from "../db/schema";
import { healthOf } from "../destination-health";
import { log } from "../log";
import type { Services } from "../services";
import type { DeliverMessage } from "./messages";
import { decide } from "./retry";
import { sendSigned, type SendResult } from "./send";
import { eq, sql } from "drizzle-orm";

/** How many attempts of one batch are in flight at once (bounds memory with large payloads). */
const CONCURRENCY = 16;

export type Settle = { ack: true } | { ack: false; delaySeconds: number };

interface Loaded {
  delivery: typeof deliveries.$inferSelect;
  destination: typeof destinations.$inferSelect;
}

/** The body forwarded to destinations: the same shape as the test endpoint's. */
export function envelope(type: string, payload: string, sourceId: string): string {
  let data: unknown = payload;
  try {
    data = JSON.parse(payload);
  } catch {
    // Not JSON: forwarded as the raw text.
  }
  return JSON.stringify({ event: type, data, source_id: sourceId });
}

async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(workers);
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Processes deliver messages; returns what to do with each, in the same order. */
export async function deliverBatch(s: Services, messages: DeliverMessage[]): Promise<Settle[]> {
  const deliveryIds = [...new Set(messages.map((m) => m.delivery_id))];
  const loaded = new Map<string, Loaded>();
  for (const ids of chunks(deliveryIds, 90)) {
    const rows = await s.db
      .select({ delivery: deliveries, destination: destinations })
      .from(deliveries)
      .innerJoin(destinations, eq(destinations.id, deliveries.destinationId))
      .where(inArray(deliveries.id, ids))
      .all();
    for (const r of rows) loaded.set(r.delivery.id, r);
  }
  const eventIds = [...new Set([...loaded.values()].map((l) => l.delivery.eventId))];
  const eventRows = new Map<string, { id: string; sourceId: string; type: string; payload: string }>();
  for (const ids of chunks(eventIds, 90)) {
    const rows = await s.db
      .select({ id: events.id, sourceId: events.sourceId, type: events.type, payload: events.payload })
      .from(events)
      .where(inArray(events.id, ids))
      .all();
    for (const r of rows) eventRows.set(r.id, r);
  }

  const settles: Settle[] = messages.map(() => ({ ack: true }));
  const writes: Parameters<typeof s.db.batch>[0][number][] = [];
  const healthCalls: { destinationId: string; kind: "success" | "exhausted" }[] = [];
  const seen = new Set<string>();

  await pool(
    messages.map((m, i) => ({ m, i })),
    CONCURRENCY,
    async ({ m, i }) => {
      const l = loaded.get(m.delivery_id);
      const event = l ? eventRows.get(l.delivery.eventId) : undefined;
      // Deleted destination or event (or purged): nothing to do, drop the message.
      if (!l || !event) return;
      // Settled already (a duplicate message), or twice in this batch: drop.
      if (l.delivery.status !== "pending" || seen.has(m.delivery_id)) return;
      seen.add(m.delivery_id);

      const now = s.now();
      const number = l.delivery.attemptCount + 1;
      const attemptInRun = l.delivery.attemptsInRun + 1;
      const record = (
        outcome: AttemptOutcome,
        status: DeliveryStatus,
        result: { statusCode?: number | null; error?: string | null; durationMs: number; body?: string | null },
        nextAttemptAt: number,
      ) => {
        writes.push(
          s.db.insert(attempts).values({
            id: newId(now),
            deliveryId: l.delivery.id,
            eventId: event.id,
            destinationId: l.destination.id,
            number,
            outcome,
            statusCode: result.statusCode ?? null,
            error: result.error ?? null,
            durationMs: result.durationMs,
            responseBody: result.body ?? null,
            createdAt: now,
          }),
          s.db
            .update(deliveries)
            .set({
              status,
              attemptCount: sql`${deliveries.attemptCount} + 1`,
              attemptsInRun: sql`${deliveries.attemptsInRun} + 1`,
              lastAttemptAt: now,
              nextAttemptAt,
              updatedAt: now,
            })
            .where(eq(deliveries.id, l.delivery.id)),
        );
        log("info", "delivery_attempt", {
          delivery_id: l.delivery.id,
          event_id: event.id,
          destination_id: l.destination.id,
          attempt: number,
          outcome,
          status_code: result.statusCode ?? null,
          duration_ms: result.durationMs,
        });
      };

      if (!l.destination.enabled) {
        // Disabled destinations' queued deliveries are cancelled, and it shows in the attempt log.
        record("cancelled", "cancelled", { error: "destination is disabled", durationMs: 0 }, now);
        return;
      }

      let result: SendResult;
      try {
        result = await sendSigned(s, {
          url: l.destination.url,
          body: envelope(event.type, event.payload, event.sourceId),
          msgId: event.id,
          secrets: await signingSecrets(s, l.destination),
          attempt: number,
          timeoutMs: s.config.deliveryTimeoutMs,
        });
      } catch (err) {
        // Our own failure (a secret that does not decrypt, say): retry the message later as is.
        log("error", "delivery_crashed", { delivery_id: l.delivery.id, error: err instanceof Error ? err.message : String(err) });
        settles[i] = { ack: false, delaySeconds: s.config.retrySchedule[0] ?? 5 };
        return;
      }
      const statusCode = result.kind === "response" ? result.status : null;
      const decision = decide(
        { status: statusCode, retryAfter: result.kind === "response" ? result.retryAfter : null },
        attemptInRun,
        s.config.retrySchedule,
        now,
      );
      const detail = {
        statusCode,
        error: result.kind === "response" ? (statusCode! >= 300 && statusCode! < 400 ? `redirect not followed (HTTP ${statusCode})` : null) : result.error,
        durationMs: result.durationMs,
        body: result.kind === "response" ? result.body : null,
      };
      if (decision.retry) {
        record("failed", "pending", detail, now + decision.delaySeconds * 1000);
        settles[i] = { ack: false, delaySeconds: decision.delaySeconds };
      } else if (decision.reason === "succeeded") {
        record("succeeded", "succeeded", detail, now);
        if (l.destination.failureCount > 0) healthCalls.push({ destinationId: l.destination.id, kind: "success" });
      } else {
        record("failed", "failed", detail, now);
        healthCalls.push({ destinationId: l.destination.id, kind: "exhausted" });
      }
    },
  );

  if (writes.length > 0) {
    await s.db.batch(writes as [(typeof writes)[number], ...(typeof writes)[number][]]);
  }
  for (const call of healthCalls) {
    try {
      const stub = healthOf(s.env, call.destinationId);
      if (call.kind === "success") await stub.success(call.destinationId);
      else await stub.exhausted(call.destinationId);
    } catch (err) {
      log("error", "destination_health_failed", { destination_id: call.destinationId, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return settles;
}
