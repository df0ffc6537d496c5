/// <reference types="node" />
/**
 * A black-box client for e2e and load runs: the API over HTTP, a pool of concurrent
 * senders to an ingest URL, and the check that every expected delivery arrived, signed,
 * exactly as sent (by webhook-id and body), at least once.
 */
import { Webhook } from "standardwebhooks";
import type { Received, Refusals, Step } from "../support/receiver";

export class Api {
  constructor(
    readonly origin: string,
    readonly key: string,
  ) {}

  async call<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.origin}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.key}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  async createSource(body: Record<string, unknown>) {
    const r = await this.call("POST", "/api/v1/webhooks/sources", body);
    if (r.status !== 201) throw new Error(`create source: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.data as { id: string; ingest_url: string };
  }

  async createDestination(sourceId: string, body: Record<string, unknown>) {
    const r = await this.call("POST", `/api/v1/webhooks/sources/${sourceId}/destinations`, body);
    if (r.status !== 201) throw new Error(`create destination: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.data as { id: string; secret: string; event_filter: string[] };
  }
}

export interface Sent {
  eventId: string;
  type: string;
  body: string;
  /** When its request was sent (epoch ms, the receiver's clock: same machine). */
  sentAt: number;
}

export interface SendReport {
  accepted: Sent[];
  /** Statuses other than 202, counted. */
  refused: Record<number, number>;
  latenciesMs: number[];
  durationMs: number;
}

/** Sends `count` events with `concurrency` senders; `make(i)` gives each one's body and type. */
export async function sendEvents(
  ingestUrl: string,
  count: number,
  concurrency: number,
  make: (i: number) => { type: string; body: Record<string, unknown> },
): Promise<SendReport> {
  const accepted: Sent[] = [];
  const refused: Record<number, number> = {};
  const latenciesMs: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const { type, body } = make(i);
        const text = JSON.stringify(body);
        const t0 = performance.now();
        const sentAt = Date.now();
        const res = await fetch(ingestUrl, { method: "POST", headers: { "content-type": "application/json" }, body: text });
        const json = (await res.json()) as { data?: { event_id?: string } };
        latenciesMs.push(performance.now() - t0);
        if (res.status === 202 && json.data?.event_id) accepted.push({ eventId: json.data.event_id, type, body: text, sentAt });
        else refused[res.status] = (refused[res.status] ?? 0) + 1;
      }
    }),
  );
  return { accepted, refused, latenciesMs, durationMs: performance.now() - started };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export interface Verification {
  expected: number;
  /** Distinct expected events received, verified and intact. */
  delivered: number;
  missing: string[];
  /** Received but not expected (wrong filter, unknown id). */
  unexpected: string[];
  /** Requests this destination refused (non-2xx): failed attempts, retried by the relay. */
  refusedByReceiver: number;
  duplicates: number;
  badSignatures: number;
  altered: number;
}

/**
 * Checks what a destination received against what it should have: every request must
 * verify with the destination's secret (standardwebhooks, an independent verifier) and
 * carry the envelope of the event its webhook-id names, with the body exactly as sent.
 */
export function verifyDeliveries(
  received: Received[],
  expected: Sent[],
  secret: string,
  sourceId: string,
): Verification {
  const wh = new Webhook(secret);
  const want = new Map(expected.map((e) => [e.eventId, e]));
  const seen = new Map<string, number>();
  let badSignatures = 0;
  let altered = 0;
  let refusedByReceiver = 0;
  const unexpected: string[] = [];
  for (const r of received) {
    if (r.answered === undefined || r.answered < 200 || r.answered >= 300) {
      refusedByReceiver++;
      continue;
    }
    const id = r.headers["webhook-id"] ?? "";
    try {
      wh.verify(r.body, r.headers);
    } catch {
      badSignatures++;
      continue;
    }
    const e = want.get(id);
    if (!e) {
      unexpected.push(id);
      continue;
    }
    const envelope = JSON.parse(r.body) as { event: string; data: unknown; source_id: string };
    if (envelope.event !== e.type || envelope.source_id !== sourceId || JSON.stringify(envelope.data) !== e.body) altered++;
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  const missing = [...want.keys()].filter((id) => !seen.has(id));
  const duplicates = [...seen.values()].reduce((n, c) => n + c - 1, 0);
  return { expected: want.size, delivered: seen.size, missing, unexpected, refusedByReceiver, duplicates, badSignatures, altered };
}

export async function waitFor<T>(check: () => Promise<T | undefined>, timeoutMs: number, what: string, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A mailbox on the loopback receiver (test/support/receiver.ts), driven over HTTP. */
export async function openMailbox(receiverOrigin: string, spec: { script?: Step[]; repeat?: Step; refuse?: Refusals } = {}) {
  const res = await fetch(`${receiverOrigin}/control/mailboxes`, { method: "POST", body: JSON.stringify(spec) });
  const { id, url } = (await res.json()) as { id: string; url: string };
  return {
    id,
    url,
    async requests(): Promise<Received[]> {
      const r = await fetch(`${receiverOrigin}/control/mailboxes/${id}`);
      return ((await r.json()) as { requests: Received[] }).requests;
    },
    async script(next: { script?: Step[]; repeat?: Step }) {
      await fetch(`${receiverOrigin}/control/mailboxes/${id}`, { method: "PUT", body: JSON.stringify(next) });
    },
  };
}
