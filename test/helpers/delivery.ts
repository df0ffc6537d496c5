/**
 * Delivery test helpers: seed events and deliveries straight into D1, and run the
 * Worker's queue handler on a batch built with createMessageBatch, returning what it
 * acked and retried (getQueueResult).
 */
import { createExecutionContext, createMessageBatch, getQueueResult, type QueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import { newId } from "../../src/db/ids";
import type { DeliverMessage, FanoutMessage } from "../../src/delivery/messages";

export async function insertEvent(
  sourceId: string,
  opts: { type?: string; payload?: string; status?: "pending" | "dispatched"; receivedAt?: number } = {},
): Promise<string> {
  const at = opts.receivedAt ?? Date.now();
  const id = newId(at);
  await env.DB.prepare(
    "INSERT INTO events (id, source_id, type, dedupe_key, payload, headers, status, received_at) VALUES (?, ?, ?, NULL, ?, '{}', ?, ?)",
  )
    .bind(id, sourceId, opts.type ?? "invoice.paid", opts.payload ?? JSON.stringify({ id: "evt_1", type: opts.type ?? "invoice.paid" }), opts.status ?? "dispatched", at)
    .run();
  return id;
}

export async function insertDelivery(
  eventId: string,
  destinationId: string,
  opts: { attemptsInRun?: number; attemptCount?: number; status?: string } = {},
): Promise<DeliverMessage> {
  const id = newId();
  const now = Date.now();
  await env.DB.prepare(
    "INSERT INTO deliveries (id, event_id, destination_id, status, attempt_count, attempts_in_run, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
  )
    .bind(id, eventId, destinationId, opts.status ?? "pending", opts.attemptCount ?? opts.attemptsInRun ?? 0, opts.attemptsInRun ?? 0, now, now, now)
    .run();
  return { kind: "deliver", delivery_id: id, event_id: eventId, destination_id: destinationId };
}

let seq = 0;

/** Runs the queue handler on one batch of `queue` and returns the ack/retry result. */
export async function runQueue<T extends DeliverMessage | FanoutMessage>(
  queue: "krafter-deliver" | "krafter-fanout" | "krafter-dead-letter",
  bodies: T[],
  opts: { env?: Env; attempts?: number } = {},
): Promise<QueueResult & { ids: string[] }> {
  const ids = bodies.map(() => `msg-${++seq}`);
  const batch = createMessageBatch<T>(
    queue,
    bodies.map((body, i) => ({ id: ids[i]!, timestamp: new Date(), attempts: opts.attempts ?? 1, body })),
  );
  const ctx = createExecutionContext();
  await worker.queue!(batch as MessageBatch<DeliverMessage | FanoutMessage>, opts.env ?? (env as unknown as Env), ctx);
  return { ...(await getQueueResult(batch, ctx)), ids };
}

export async function deliveryRow(id: string) {
  return env.DB.prepare("SELECT * FROM deliveries WHERE id = ?").bind(id).first<{
    status: string;
    attempt_count: number;
    attempts_in_run: number;
    last_attempt_at: number;
    next_attempt_at: number;
  }>();
}

/**
 * The delay, in seconds, the consumer chose after the last attempt. The plugin's
 * getQueueResult records that a message was retried but not its delay, so read the
 * due time the consumer stored with the same value it passed to `retry()`.
 */
export async function retryDelay(deliveryId: string): Promise<number> {
  const row = await deliveryRow(deliveryId);
  return (row!.next_attempt_at - row!.last_attempt_at) / 1000;
}

export async function attemptRows(deliveryId: string) {
  const { results } = await env.DB.prepare("SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY id")
    .bind(deliveryId)
    .all<{
      number: number;
      outcome: string;
      status_code: number | null;
      error: string | null;
      duration_ms: number;
      response_body: string | null;
    }>();
  return results;
}

export async function destinationRow(id: string) {
  return env.DB.prepare("SELECT enabled, failure_count FROM destinations WHERE id = ?")
    .bind(id)
    .first<{ enabled: number; failure_count: number }>();
}
