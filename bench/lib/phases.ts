/**
 * The benchmark's steps, each measuring one thing the same way for the relay and its
 * baseline: fixed-concurrency ingest in alternating rounds, end-to-end delivery with
 * verification, and fan-out width. The steps on seeded partitions (growth, cost, drop)
 * are in stored.ts.
 */
import { Receiver, type Mailbox, type Verdict } from "./deliveries.ts";
import { load, percentile, pool, sleep, type LoadResult } from "./load.ts";
import { cpuBetween, type CpuSample } from "./proc.ts";
import { envelope, RelayClient, samplePayload } from "./relay.ts";
import { note, RUN, S } from "./settings.ts";
import type { Runtime } from "./wrangler.ts";

export const round1 = (n: number) => Math.round(n * 10) / 10;
export const round2 = (n: number) => Math.round(n * 100) / 100;
export const round3 = (n: number) => Math.round(n * 1000) / 1000;

/** Waits until the Worker's processes have been idle for a while (its queues drained); returns the CPU then. */
export async function quiet(rt: Runtime, maxMs = 180_000): Promise<CpuSample> {
  const started = Date.now();
  let prev = rt.cpu();
  let calm = 0;
  while (Date.now() - started < maxMs) {
    await sleep(500);
    const cur = rt.cpu();
    // Idle wrangler dev uses ~0.02 CPU-s per second; a queue batch is far above 0.03 per 0.5 s.
    if (cur.total - prev.total < 0.03) {
      if (++calm >= S.calmSamples) return cur;
    } else calm = 0;
    prev = cur;
  }
  return prev;
}

export interface Sent {
  sentAt: number;
  status: number;
  eventId: string;
  ms: number;
  /** for anything but 202: the start of the answer, or the transport error */
  answer?: string;
}

/** POSTs each body once, `concurrency` at a time; returns what each answer said. */
export async function send(url: string, bodies: string[], concurrency: number, extraHeaders?: (body: string) => Record<string, string>): Promise<Sent[]> {
  return pool(bodies, concurrency, async (body) => {
    const sentAt = Date.now();
    const started = performance.now();
    try {
      const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...(extraHeaders?.(body) ?? {}) }, body });
      const text = await res.text();
      let eventId = "";
      try {
        eventId = (JSON.parse(text) as { data?: { event_id?: string } }).data?.event_id ?? "";
      } catch {
        // not JSON
      }
      return { sentAt, status: res.status, eventId, ms: performance.now() - started, ...(res.status !== 202 ? { answer: text.slice(0, 300) } : {}) };
    } catch (err) {
      const why = err instanceof Error ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ""}` : String(err);
      return { sentAt, status: 0, eventId: "", ms: performance.now() - started, answer: why };
    }
  });
}

// ---------------------------------------------------------------------------------------
// 1. Ingest

export interface IngestTarget {
  name: string;
  rt: Runtime;
  url: string;
  body: string;
  next?: () => { body: string; headers: Record<string, string> };
}

export interface IngestFigures {
  name: string;
  requests: number;
  errors: number;
  statuses: Record<string, number>;
  seconds: number;
  rps: number;
  roundsRps: number[];
  p50: number;
  p99: number;
  cpuSeconds: number;
  cpuPer1k: number;
  cpuByProcess: Record<string, number>;
}

export async function ingestRounds(targets: IngestTarget[], seconds: number, rounds: number, connections: number): Promise<Map<string, IngestFigures>> {
  const acc = new Map<string, { results: LoadResult[]; cpu: CpuSample[] }>();
  for (const t of targets) acc.set(t.name, { results: [], cpu: [] });
  const per = Math.max(1, Math.round(seconds / rounds));
  for (const t of S.warmupSeconds > 0 ? targets : []) {
    note(`warm-up ${t.name} (${S.warmupSeconds} s)`);
    await load({ url: t.url, connections, durationS: S.warmupSeconds, body: t.body, headers: { "content-type": "application/json" }, ...(t.next ? { next: t.next } : {}), expectStatus: 202 });
    await quiet(t.rt);
  }
  for (let r = 0; r < rounds; r++) {
    // Rotate the order each round: no Worker always goes first or last.
    const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
    for (const t of order) {
      const before = t.rt.cpu();
      const res = await load({ url: t.url, connections, durationS: per, body: t.body, headers: { "content-type": "application/json" }, ...(t.next ? { next: t.next } : {}), expectStatus: 202 });
      // The CPU of an ingested event includes its fan-out consumer's work after the 202.
      const after = await quiet(t.rt);
      acc.get(t.name)!.results.push(res);
      acc.get(t.name)!.cpu.push(cpuBetween(before, after));
      note(`round ${r + 1}/${rounds} ${t.name}: ${(res.ok / res.durationS).toFixed(0)} req/s, p50 ${percentile(res.latencies, 50).toFixed(1)} ms, p99 ${percentile(res.latencies, 99).toFixed(1)} ms${res.bad ? `, ${res.bad} errors` : ""}`);
    }
  }
  const out = new Map<string, IngestFigures>();
  for (const [name, { results, cpu }] of acc) {
    const ok = results.reduce((a, r) => a + r.ok, 0);
    const secs = results.reduce((a, r) => a + r.durationS, 0);
    const lat = results.flatMap((r) => r.latencies);
    const statuses: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
    const cpuSeconds = cpu.reduce((a, c) => a + c.total, 0);
    const byName: Record<string, number> = {};
    for (const c of cpu) for (const [k, v] of Object.entries(c.byName)) byName[k] = round2((byName[k] ?? 0) + v);
    out.set(name, {
      name,
      requests: ok,
      errors: results.reduce((a, r) => a + r.bad, 0),
      statuses,
      seconds: round2(secs),
      rps: round1(ok / secs),
      roundsRps: results.map((r) => round1(r.ok / r.durationS)),
      p50: round1(percentile(lat, 50)),
      p99: round1(percentile(lat, 99)),
      cpuSeconds: round2(cpuSeconds),
      cpuPer1k: round2((cpuSeconds / Math.max(1, ok)) * 1000),
      cpuByProcess: byName,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// 2. End to end

export interface E2EFigures {
  name: string;
  events: number;
  destinations: number;
  expected: number;
  delivered: number;
  lost: number;
  missing: number;
  badSignature: number;
  bodyMismatch: number;
  unexpected: number;
  duplicates: number;
  ingestErrors: number;
  seconds: number;
  deliveriesPerSecond: number;
  p50: number;
  p99: number;
  eventP50: number;
  eventP99: number;
  ingestP50: number;
  ingestP99: number;
  cpuSeconds: number;
  cpuPer1kDeliveries: number;
  cpuPer1kEvents: number;
  cpuByProcess: Record<string, number>;
  problems: string[];
}

/**
 * Sends `payloads` to `url`, waits for every delivery to `mailboxes`, verifies them.
 * `expectedBody(payload, eventId)` is what each destination must receive.
 */
export async function endToEnd(o: {
  name: string;
  rt: Runtime;
  url: string;
  payloads: string[];
  mailboxes: Mailbox[];
  receiver: Receiver;
  expectedBody: (payload: string) => string;
  headers?: (body: string) => Record<string, string>;
  /** default S.stallMs */
  stallMs?: number;
}): Promise<E2EFigures> {
  const before = o.rt.cpu();
  const sent = await send(o.url, o.payloads, S.sendConcurrency, o.headers);
  const events = new Map<string, { body: string; sentAt: number }>();
  let ingestErrors = 0;
  sent.forEach((s, i) => {
    if (s.status !== 202 || !s.eventId) ingestErrors++;
    else events.set(s.eventId, { body: o.expectedBody(o.payloads[i]!), sentAt: s.sentAt });
  });
  note(`${o.name}: ${o.payloads.length} events sent in ${((Math.max(...sent.map((s) => s.sentAt + s.ms)) - Math.min(...sent.map((s) => s.sentAt))) / 1000).toFixed(1)} s; waiting for ${events.size * o.mailboxes.length} deliveries`);
  const v: Verdict = await o.receiver.await(
    { events, mailboxes: o.mailboxes },
    { stallMs: o.stallMs ?? S.stallMs, onProgress: (n, of) => note(`${o.name}: ${n}/${of} arrived`) },
  );
  const after = await quiet(o.rt);
  const cpu = cpuBetween(before, after);
  const seconds = (v.completedAt - v.firstSentAt) / 1000;
  return {
    name: o.name,
    events: o.payloads.length,
    destinations: o.mailboxes.length,
    expected: o.payloads.length * o.mailboxes.length,
    delivered: v.delivered,
    lost: v.lost + ingestErrors * o.mailboxes.length,
    missing: v.missing,
    badSignature: v.badSignature,
    bodyMismatch: v.bodyMismatch,
    unexpected: v.unexpected,
    duplicates: v.duplicates,
    ingestErrors,
    seconds: round2(seconds),
    deliveriesPerSecond: round1(v.delivered / seconds),
    p50: Math.round(percentile(v.latencies, 50)),
    p99: Math.round(percentile(v.latencies, 99)),
    eventP50: Math.round(percentile(v.eventLatencies, 50)),
    eventP99: Math.round(percentile(v.eventLatencies, 99)),
    ingestP50: round1(percentile(sent.map((s) => s.ms), 50)),
    ingestP99: round1(percentile(sent.map((s) => s.ms), 99)),
    cpuSeconds: round2(cpu.total),
    cpuPer1kDeliveries: round2((cpu.total / Math.max(1, v.delivered)) * 1000),
    cpuPer1kEvents: round2((cpu.total / Math.max(1, o.payloads.length)) * 1000),
    cpuByProcess: Object.fromEntries(Object.entries(cpu.byName).map(([k, x]) => [k, round2(x)])),
    problems: [...(ingestErrors ? [`${ingestErrors} events not answered 202 (${statusCounts(sent)})`, ...refusals(sent)] : []), ...v.problems],
  };
}

/** The first few answers other than 202, as they came. */
function refusals(sent: Sent[]): string[] {
  return sent.filter((x) => x.status !== 202).slice(0, 3).map((x) => `${x.status}: ${x.answer ?? ""}`);
}

/** "503: 160, 0: 3": the statuses other than 202, 0 for a transport error. */
function statusCounts(sent: Sent[]): string {
  const counts = new Map<number, number>();
  for (const x of sent) if (x.status !== 202) counts.set(x.status, (counts.get(x.status) ?? 0) + 1);
  return [...counts].map(([k, n]) => `${k}: ${n}`).join(", ");
}

/** A source of the relay with `destinations` destinations, each a mailbox of the receiver. */
export async function relaySource(name: string, client: RelayClient, receiver: Receiver, destinations: number) {
  const source = await client.source(`${name} ${RUN}`);
  const mailboxes = await pool(Array.from({ length: destinations }), 8, async () => {
    const box = await receiver.mailbox();
    box.secret = (await client.destination(source.id, box.url)).secret;
    return box;
  });
  return { source, mailboxes };
}

/**
 * `events` events to a new source of the relay with `destinations` destinations, every
 * delivery verified. `ready` runs once the source and its destinations exist, just
 * before the first event is sent (a snapshot of the storage, the meter).
 */
export async function relayEndToEnd(o: {
  name: string;
  rt: Runtime;
  client: RelayClient;
  receiver: Receiver;
  events: number;
  destinations: number;
  payload?: (seq: number) => string;
  ready?: (sourceId: string) => void | Promise<void>;
}): Promise<E2EFigures & { sourceId: string }> {
  const { source, mailboxes } = await relaySource(o.name, o.client, o.receiver, o.destinations);
  const payload = o.payload ?? ((i: number) => samplePayload(`${RUN}${o.name.replace(/\W/g, "")}`, i));
  const payloads = Array.from({ length: o.events }, (_, i) => payload(i));
  await o.ready?.(source.id);
  const figures = await endToEnd({ name: o.name, rt: o.rt, url: source.ingestUrl, payloads, mailboxes, receiver: o.receiver, expectedBody: (p) => envelope("invoice.paid", p, source.id) });
  return { ...figures, sourceId: source.id };
}

export interface WidthFigures {
  name: string;
  destinations: number;
  events: number;
  expected: number;
  delivered: number;
  lost: number;
  duplicates: number;
  /** per event, ms from sending it to its last delivery */
  eventP50: number;
  eventP99: number;
  /** eventP50 / destinations */
  msPerDelivery: number;
  cpuPer1kDeliveries: number;
  problems: string[];
}

/**
 * Fan-out width: events sent one at a time, each only once the previous one has reached
 * every destination, so each event's time is its own fan-out, not a queue behind others.
 */
export async function fanoutWidth(rt: Runtime, client: RelayClient, receiver: Receiver, events: number, destinations: number): Promise<WidthFigures> {
  const name = `fan-out ${destinations}`;
  const { source, mailboxes } = await relaySource(name, client, receiver, destinations);
  const expectation = { events: new Map<string, { body: string; sentAt: number }>(), mailboxes };
  const times: number[] = [];
  let ingestErrors = 0;
  let v: Verdict | undefined;
  const before = rt.cpu();
  for (let i = 0; i < events; i++) {
    const payload = samplePayload(`${RUN}w${destinations}`, i);
    const [sent] = await send(source.ingestUrl, [payload], 1);
    if (!sent || sent.status !== 202 || !sent.eventId) {
      ingestErrors++;
      continue;
    }
    expectation.events.set(sent.eventId, { body: envelope("invoice.paid", payload, source.id), sentAt: sent.sentAt });
    v = await receiver.await(expectation, { stallMs: S.stallMs });
    if (v.lost > 0) break;
    times.push(v.eventLatencies.at(-1)!);
  }
  const cpu = cpuBetween(before, await quiet(rt));
  const delivered = v?.delivered ?? 0;
  const p50 = percentile(times, 50);
  note(`${name}: per event p50 ${Math.round(p50)} ms, p99 ${Math.round(percentile(times, 99))} ms`);
  return {
    name,
    destinations,
    events,
    expected: events * destinations,
    delivered,
    lost: (v?.lost ?? 0) + (events - expectation.events.size) * destinations,
    duplicates: v?.duplicates ?? 0,
    eventP50: Math.round(p50),
    eventP99: Math.round(percentile(times, 99)),
    msPerDelivery: round1(p50 / destinations),
    cpuPer1kDeliveries: round2((cpu.total / Math.max(1, delivered)) * 1000),
    problems: [...(ingestErrors ? [`${ingestErrors} events not answered 202`] : []), ...(v?.problems ?? [])],
  };
}
