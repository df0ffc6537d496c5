/**
 * Delivery test helpers: seed events and deliveries into the real partitions (EventStore
 * Durable Objects) through drizzle on their own storage, read them back the same way
 * (runInDurableObject), and run the Worker's queue handler on a batch built with
 * createMessageBatch, returning what it acked and retried (getQueueResult).
 */
import { createExecutionContext, createMessageBatch, getQueueResult, runDurableObjectAlarm, runInDurableObject, type QueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { and, asc, eq } from "drizzle-orm";
import { drizzle, type DrizzleSqliteDODatabase } from "drizzle-orm/durable-sqlite";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import { deliverMessage, removalMessage, type DeliverMessage, type WorkMessage } from "../../src/delivery/messages";
import { removals } from "../../src/db/schema";
import { servicesFor } from "../../src/services";
import type { EventStore } from "../../src/store/event-store";
import { dayOf, IdMaker, partitionName, partitionOf, type PartitionRef } from "../../src/store/ids";
import * as schema from "../../src/store/schema";
import { shardsOf } from "../../src/db/partitions";

type PartitionDb = DrizzleSqliteDODatabase<typeof schema>;

const sourceOfEvent = new Map<string, string>();
const partitionOfDelivery = new Map<string, PartitionRef>();

export function partition(ref: PartitionRef) {
  return env.EVENT_STORE.getByName(partitionName(ref));
}

/** Runs `fn` on a partition's own storage through drizzle, creating the partition if it does not exist yet. */
export async function inPartition<T>(ref: PartitionRef, fn: (db: PartitionDb, instance: EventStore, state: DurableObjectState) => T | Promise<T>): Promise<T> {
  return runInDurableObject(partition(ref), async (instance: EventStore, state) => {
    if ((await instance["register"]()) === "source_gone") throw new Error("inPartition: no such source in D1");
    return fn(drizzle(state.storage, { schema }), instance, state);
  });
}

/** Reads a partition's storage without creating it. */
export async function readPartition<T>(ref: PartitionRef, fn: (db: PartitionDb, instance: EventStore, state: DurableObjectState) => T | Promise<T>): Promise<T> {
  return runInDurableObject(partition(ref), (instance: EventStore, state) => fn(drizzle(state.storage, { schema }), instance, state));
}

/** Runs a partition's alarm now (its fan-out and outbox), as the runtime would. */
export async function runPartitionAlarm(ref: PartitionRef): Promise<boolean> {
  return runDurableObjectAlarm(partition(ref));
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** An event straight into its partition (shard 0 of its day unless told), without fan-out unless `pending`. */
export async function insertEvent(
  sourceId: string,
  opts: { type?: string; payload?: string; status?: "pending" | "dispatched"; receivedAt?: number; shard?: number; dedupeKey?: string } = {},
): Promise<string> {
  const at = opts.receivedAt ?? Date.now();
  const id = new IdMaker(opts.shard ?? 0).next(at);
  const type = opts.type ?? "invoice.paid";
  const payload = opts.payload ?? JSON.stringify({ id: "evt_1", type });
  await inPartition(partitionOf(sourceId, id)!, (db) =>
    db
      .insert(schema.events)
      .values({ id, type, dedupeKey: opts.dedupeKey ?? null, payload, payloadIsJson: isJson(payload), headers: {}, status: opts.status ?? "dispatched", receivedAt: at })
      .run(),
  );
  sourceOfEvent.set(id, sourceId);
  return id;
}

export function eventPartition(eventId: string): PartitionRef {
  const sourceId = sourceOfEvent.get(eventId);
  if (!sourceId) throw new Error("insertEvent made no such event");
  return partitionOf(sourceId, eventId)!;
}

/** A pending delivery of a seeded event, and the deliver message that may attempt it. */
export async function insertDelivery(
  eventId: string,
  destinationId: string,
  opts: { attemptsInRun?: number; attemptCount?: number; status?: schema.DeliveryStatus } = {},
): Promise<DeliverMessage> {
  const ref = eventPartition(eventId);
  const now = Date.now();
  const id = new IdMaker(ref.shard).next(now);
  const token = crypto.randomUUID();
  await inPartition(ref, (db) =>
    db
      .insert(schema.deliveries)
      .values({
        id,
        eventId,
        destinationId,
        status: opts.status ?? "pending",
        token,
        attemptCount: opts.attemptCount ?? opts.attemptsInRun ?? 0,
        attemptsInRun: opts.attemptsInRun ?? 0,
        nextAttemptAt: now,
        createdAt: now,
        updatedAt: now,
      })
      .run(),
  );
  partitionOfDelivery.set(id, ref);
  return deliverMessage(ref, eventId, [{ deliveryId: id, destinationId, token }]);
}

function deliveryPartition(deliveryId: string): PartitionRef {
  const ref = partitionOfDelivery.get(deliveryId);
  if (!ref) throw new Error("insertDelivery made no such delivery");
  return ref;
}

export async function deliveryRow(deliveryId: string) {
  const row = await readPartition(deliveryPartition(deliveryId), (db) => db.select().from(schema.deliveries).where(eq(schema.deliveries.id, deliveryId)).get());
  return row
    ? {
        status: row.status,
        token: row.token,
        attempt_count: row.attemptCount,
        attempts_in_run: row.attemptsInRun,
        last_attempt_at: row.lastAttemptAt,
        next_attempt_at: row.nextAttemptAt,
      }
    : undefined;
}

/** The message that may make a delivery's next attempt (it carries the delivery's current token). */
export async function currentMessage(first: DeliverMessage): Promise<DeliverMessage> {
  const item = first.deliveries[0]!;
  const row = await deliveryRow(item.delivery_id);
  return { ...first, deliveries: [{ ...item, token: row!.token }] };
}

/**
 * The delay, in seconds, the consumer chose after the last attempt: the due time the
 * partition stored with the delay of the retry message it queued.
 */
export async function retryDelay(deliveryId: string): Promise<number> {
  const row = await deliveryRow(deliveryId);
  return (row!.next_attempt_at! - row!.last_attempt_at!) / 1000;
}

export interface AttemptView {
  id: string;
  number: number;
  outcome: string;
  status_code: number | null;
  error: string | null;
  duration_ms: number;
  response_body: string | null;
  created_at: number;
}

/** A delivery's attempts, oldest first: they live in the partitions of the days they were made, in the event's shard. */
export async function attemptRows(deliveryId: string): Promise<AttemptView[]> {
  const ref = deliveryPartition(deliveryId);
  const days = [...new Set([ref.day, dayOf(Date.now())])];
  const rows = (
    await Promise.all(
      days.map((day) =>
        readPartition({ ...ref, day }, (db, instance) =>
          instance["registration"] ? db.select().from(schema.attempts).where(eq(schema.attempts.deliveryId, deliveryId)).orderBy(asc(schema.attempts.id)).all() : [],
        ),
      ),
    )
  ).flat();
  return rows.map((a) => ({
    id: a.id,
    number: a.number,
    outcome: a.outcome,
    status_code: a.statusCode,
    error: a.error,
    duration_ms: a.durationMs,
    response_body: a.responseBody,
    created_at: a.createdAt,
  }));
}

/** The deliveries of a seeded or ingested event, with their destination and status. */
export async function deliveriesOf(sourceId: string, eventId: string) {
  return readPartition(partitionOf(sourceId, eventId)!, (db, instance) =>
    instance["registration"]
      ? db
          .select({ id: schema.deliveries.id, destination_id: schema.deliveries.destinationId, status: schema.deliveries.status, token: schema.deliveries.token })
          .from(schema.deliveries)
          .where(and(eq(schema.deliveries.eventId, eventId)))
          .all()
      : [],
  );
}

export async function eventStatus(sourceId: string, eventId: string) {
  return readPartition(partitionOf(sourceId, eventId)!, (db, instance) =>
    instance["registration"] ? db.select({ status: schema.events.status }).from(schema.events).where(eq(schema.events.id, eventId)).get()?.status : undefined,
  );
}

let seq = 0;

/** Runs the queue handler on one batch of `queue` and returns the ack/retry result. */
export async function runQueue<T extends DeliverMessage | WorkMessage>(
  queue: "krafter-deliver" | "krafter-deliver-slow" | "krafter-work" | "krafter-dead-letter",
  bodies: T[],
  opts: { env?: Env; attempts?: number; ids?: string[] } = {},
): Promise<QueueResult & { ids: string[] }> {
  const ids = opts.ids ?? bodies.map(() => `msg-${++seq}`);
  const batch = createMessageBatch<T>(
    queue,
    bodies.map((body, i) => ({ id: ids[i]!, timestamp: new Date(), attempts: opts.attempts ?? 1, body })),
  );
  const ctx = createExecutionContext();
  await worker.queue!(batch as MessageBatch<DeliverMessage | WorkMessage>, opts.env ?? (env as unknown as Env), ctx);
  return { ...(await getQueueResult(batch, ctx)), ids };
}

export async function destinationRow(id: string) {
  return env.DB.prepare("SELECT enabled, failure_count FROM destinations WHERE id = ?")
    .bind(id)
    .first<{ enabled: number; failure_count: number }>();
}

/** Every partition of a source that exists, from D1's bookkeeping rows. */
export async function partitionsOf(sourceId: string): Promise<PartitionRef[]> {
  const { results } = await env.DB.prepare("SELECT day, mask FROM partitions WHERE source_id = ? ORDER BY day")
    .bind(sourceId)
    .all<{ day: number; mask: string }>();
  return results.flatMap((r) => shardsOf(r).map((shard) => ({ sourceId, day: r.day, shard })));
}

export interface StoredEvent {
  id: string;
  type: string;
  payload: string;
  headers: Record<string, string>;
  status: string;
  dedupe_key: string | null;
}

/** Every event of a source, oldest first, read from its partitions. */
export async function storedEvents(sourceId: string): Promise<StoredEvent[]> {
  const all = await Promise.all(
    (await partitionsOf(sourceId)).map((ref) => readPartition(ref, (db) => db.select().from(schema.events).all())),
  );
  return all
    .flat()
    .sort((a, b) => (a.id < b.id ? -1 : 1))
    .map((e) => ({ id: e.id, type: e.type, payload: e.payload, headers: e.headers, status: e.status, dedupe_key: e.dedupeKey }));
}

/** Rows of a partition table for a destination, across the source's partitions. */
export async function countFor(sourceId: string, table: "deliveries" | "attempts", destinationId: string, extra?: { outcome?: string }): Promise<number> {
  const counts = await Promise.all(
    (await partitionsOf(sourceId)).map((ref) =>
      readPartition(ref, (db) => {
        const t = table === "deliveries" ? schema.deliveries : schema.attempts;
        const rows = db.select().from(t).where(eq(t.destinationId, destinationId)).all() as { outcome?: string }[];
        return rows.filter((r) => extra?.outcome === undefined || r.outcome === extra.outcome).length;
      }),
    ),
  );
  return counts.reduce((a, b) => a + b, 0);
}

/** An attempt row for a seeded delivery, in its partition. */
export async function insertAttempt(msg: DeliverMessage, number: number, outcome: schema.AttemptOutcome = "failed"): Promise<string> {
  const ref = deliveryPartition(msg.deliveries[0]!.delivery_id);
  const id = new IdMaker(ref.shard).next(Date.now());
  await inPartition(ref, (db) =>
    db
      .insert(schema.attempts)
      .values({ id, deliveryId: msg.deliveries[0]!.delivery_id, eventId: msg.event_id, destinationId: msg.deliveries[0]!.destination_id, number, outcome, statusCode: 500, error: null, durationMs: 12, responseBody: "boom", createdAt: Date.now() })
      .run(),
  );
  return id;
}

/** Carries out, now, the background removals recorded for a source (what the work queue does after its delay). */
export async function runRemovals(sourceId: string): Promise<void> {
  const { results } = await env.DB.prepare("SELECT id FROM removals WHERE source_id = ?").bind(sourceId).all<{ id: string }>();
  const s = servicesFor(env as unknown as Env);
  for (const { id } of results) {
    const job = await s.db.select().from(removals).where(eq(removals.id, id)).get();
    if (!job) continue;
    const size = Math.max(20, Math.ceil(job.partitions.length / 50));
    const msgs: WorkMessage[] = [];
    for (let i = 0, chunk = 0; i < job.partitions.length; i += size, chunk++) {
      msgs.push(removalMessage(job.id, chunk, job.sourceId, job.destinationId, job.partitions.slice(i, i + size)));
    }
    const r = await runQueue("krafter-work", msgs);
    if (r.explicitAcks.length !== msgs.length) throw new Error("a removal failed");
  }
}
