/**
 * The deliver consumer: for each message, one signed attempt to one destination.
 *
 * Per batch: one query loads every delivery with its destination, one loads the events
 * (each payload once, however many destinations it goes to). Then the attempts run
 * concurrently; each is recorded (the attempt and the delivery's state, atomically; the
 * records of attempts that end together share one D1 round trip) and its message acked
 * or retried with its delay at once; DestinationHealth hears of successes after
 * failures and of exhausted forwards.
 */
import { eq, inArray, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { signingSecrets } from "../db/destinations";
import { newId } from "../db/ids";
import { attempts, deliveries, destinations, events, type AttemptOutcome, type DeliveryStatus } from "../db/schema";
import { healthOf } from "../destination-health";
import { log } from "../log";
import type { Services } from "../services";
import type { DeliverMessage } from "./messages";
import { decide } from "./retry";
import { sendSigned, type SendResult } from "./send";

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

/**
 * Processes deliver messages. Each message is recorded (one atomic D1 batch: the attempt
 * and the delivery's new state) and settled through `settle` as soon as its own attempt
 * ends, so a crash later in the batch never sends an acknowledged message again.
 * Returns what was done with each, in the same order.
 */
export async function deliverBatch(
  s: Services,
  messages: DeliverMessage[],
  settle: (index: number, what: Settle) => void = () => undefined,
): Promise<Settle[]> {
  const settles: Settle[] = messages.map(() => ({ ack: true }));
  const done = (i: number, what: Settle) => {
    settles[i] = what;
    settle(i, what);
  };
  const retryLater = (): Settle => ({ ack: false, delaySeconds: s.config.retrySchedule[0] ?? 5 });

  let loaded: Map<string, Loaded>;
  let eventRows: Map<string, { id: string; sourceId: string; type: string; payload: string }>;
  try {
    ({ loaded, eventRows } = await load(s, messages));
  } catch (err) {
    log("error", "delivery_load_failed", { error: err instanceof Error ? err.message : String(err) });
    messages.forEach((_, i) => done(i, retryLater()));
    return settles;
  }
  const seen = new Set<string>();
  const write = recordWriter(s);

  await pool(
    messages.map((m, i) => ({ m, i })),
    CONCURRENCY,
    async ({ m, i }) => {
      try {
        const l = loaded.get(m.delivery_id);
        const event = l ? eventRows.get(l.delivery.eventId) : undefined;
        // Deleted destination or event (or purged), settled already (a duplicate
        // message), or twice in this batch: nothing to send, drop the message.
        if (!l || !event || l.delivery.status !== "pending" || seen.has(m.delivery_id)) return done(i, { ack: true });
        seen.add(m.delivery_id);
        const outcome = await attempt(s, write, l, event);
        done(i, outcome.settle);
        if (outcome.health) await tellHealth(s, l.destination.id, outcome.health);
      } catch (err) {
        // Our own failure (a secret that does not decrypt, D1 refusing the record because
        // the destination was just deleted, …): retry the message later as it is.
        log("error", "delivery_crashed", { delivery_id: m.delivery_id, error: err instanceof Error ? err.message : String(err) });
        done(i, retryLater());
      }
    },
  );
  return settles;
}

async function load(s: Services, messages: DeliverMessage[]) {
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
  return { loaded, eventRows };
}

type Statement = BatchItem<"sqlite">;
export type RecordWriter = (statements: [Statement, ...Statement[]]) => Promise<void>;

/**
 * Group commit of attempt records: while one D1 batch is in flight, the records of the
 * attempts that end meanwhile wait, then go together in the next batch — one round trip
 * (and one commit) per group instead of one per attempt. Each caller resumes once its
 * own record is durable, so a message is still settled only after its attempt is
 * recorded. Should a group fail (a destination deleted mid-flight makes one insert
 * break its foreign key), each record of it is written again on its own, so only the
 * one at fault fails.
 */
export function recordWriter(s: Services): RecordWriter {
  type Pending = { statements: [Statement, ...Statement[]]; resolve: () => void; reject: (err: unknown) => void };
  let waiting: Pending[] = [];
  let writing = false;
  const drain = async () => {
    writing = true;
    while (waiting.length > 0) {
      const group = waiting;
      waiting = [];
      try {
        await s.db.batch(group.flatMap((g) => g.statements) as [Statement, ...Statement[]]);
        for (const g of group) g.resolve();
      } catch (err) {
        if (group.length === 1) group[0]!.reject(err);
        else {
          for (const g of group) {
            try {
              await s.db.batch(g.statements);
              g.resolve();
            } catch (one) {
              g.reject(one);
            }
          }
        }
      }
    }
    writing = false;
  };
  return (statements) =>
    new Promise<void>((resolve, reject) => {
      waiting.push({ statements, resolve, reject });
      if (!writing) void drain();
    });
}

/** One attempt: send (unless the destination is disabled), then record it. */
async function attempt(
  s: Services,
  write: RecordWriter,
  l: Loaded,
  event: { id: string; sourceId: string; type: string; payload: string },
): Promise<{ settle: Settle; health?: "success" | "exhausted" }> {
  const number = l.delivery.attemptCount + 1;
  const record = async (
    outcome: AttemptOutcome,
    status: DeliveryStatus,
    result: { statusCode?: number | null; error?: string | null; durationMs: number; body?: string | null },
    nextAttemptAt: number,
    now = s.now(),
  ) => {
    await write([
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
    ]);
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
    await record("cancelled", "cancelled", { error: "destination is disabled", durationMs: 0 }, s.now());
    return { settle: { ack: true } };
  }

  const result: SendResult = await sendSigned(s, {
    url: l.destination.url,
    body: envelope(event.type, event.payload, event.sourceId),
    msgId: event.id,
    secrets: await signingSecrets(s, l.destination),
    attempt: number,
    timeoutMs: s.config.deliveryTimeoutMs,
  });
  const now = s.now();
  const statusCode = result.kind === "response" ? result.status : null;
  const decision = decide(
    { status: statusCode, retryAfter: result.kind === "response" ? result.retryAfter : null },
    l.delivery.attemptsInRun + 1,
    s.config.retrySchedule,
    now,
  );
  const detail = {
    statusCode,
    error:
      result.kind !== "response"
        ? result.error
        : statusCode! >= 300 && statusCode! < 400
          ? `redirect not followed (HTTP ${statusCode})`
          : null,
    durationMs: result.durationMs,
    body: result.kind === "response" ? result.body : null,
  };
  if (decision.retry) {
    await record("failed", "pending", detail, now + decision.delaySeconds * 1000, now);
    return { settle: { ack: false, delaySeconds: decision.delaySeconds } };
  }
  if (decision.reason === "succeeded") {
    await record("succeeded", "succeeded", detail, now);
    // Only a destination with failures on record needs to hear of a success.
    return { settle: { ack: true }, ...(l.destination.failureCount > 0 ? { health: "success" as const } : {}) };
  }
  await record("failed", "failed", detail, now);
  return { settle: { ack: true }, health: "exhausted" };
}

async function tellHealth(s: Services, destinationId: string, kind: "success" | "exhausted"): Promise<void> {
  try {
    const stub = healthOf(s.env, destinationId);
    if (kind === "success") await stub.success(destinationId);
    else await stub.exhausted(destinationId);
  } catch (err) {
    log("error", "destination_health_failed", { destination_id: destinationId, error: err instanceof Error ? err.message : String(err) });
  }
}
