/**
 * The deliver consumer, top to bottom: load → attempt → a typed outcome → settle.
 *
 * - load: the destinations of the batch (one D1 read), then the deliveries claimed from
 *   their partitions, one call per partition, with the payloads up to a byte budget per
 *   wave (the rest is claimed once the wave is done): memory stays bounded whatever the
 *   payload sizes.
 * - attempt: one signed POST (attempt.ts), within the invocation's connection limit
 *   (limiter.ts), at most PER_DESTINATION at once for one destination.
 * - settle: the outcome becomes the attempt record and the delivery's new state, written
 *   by the partition (records.ts groups them), then the message is acknowledged;
 *   exhausted forwards and successes go to the destination's health object (a run of
 *   successes in one batch as one call).
 *
 * A batch is never held by one destination's silence: once every attempt in flight has
 * waited longer than SLOW_MS and nothing else can start, the attempts not started yet
 * go back to the queue (retried at once, spending nothing) for another invocation; and
 * once its gate knows a destination is slow, its deliveries leave the shared queues for
 * the slow lane (gate.ts), whose batches this one never waits on.
 */
import { destinationsForDelivery, forgetDeliveryDestination, type DeliveryDestination } from "../db/destinations";
import { log } from "../log";
import type { Services } from "../services";
import { attemptId, dayOf, parsePartitionName, partitionName, type PartitionRef } from "../store/ids";
import type { ClaimedEvent, ClaimItem, Settlement } from "../store/types";
import { attempt, type Outcome } from "./attempt";
import { envelopeBytes } from "./envelope";
import type { GateRelease } from "../destination-health";
import type { Admission, AttemptEnd, Lane } from "./gate";
import { Limiter } from "./limiter";
import type { DeliverMessage, DeliveryItem } from "./messages";
import { recordWriters, type RecordWriters } from "./records";

/** Payload bytes claimed per wave. */
const WAVE_BUDGET_BYTES = 8 * 1024 * 1024;
/** Attempts to one destination in flight at once within one batch. */
const PER_DESTINATION = 2;
/** Deliveries to one destination claimed and gated per wave. */
const WAVE_PER_DESTINATION = PER_DESTINATION + 1;
/** When every attempt in flight has waited this long and nothing else can start, the rest goes back to the queue. */
export const SLOW_MS = 1_000;
/** A gate's permit lasts the delivery timeout and this much more when nobody returns it. */
const LEASE_MARGIN_MS = 30_000;
/** Our own failures (a partition or D1 unreachable) are retried after this. */
const RETRY_OURS_SECONDS = 5;

export interface Incoming {
  /** The queue message's id: it holds the claim on its deliveries while it is processed. */
  id: string;
  body: DeliverMessage;
  /** How many times the queue has handed this message over (1 the first time). */
  attempts?: number;
}

/** Our own failures are retried sooner first, then less often: 5 s doubling to 5 min. */
function oursDelay(attempts: number): number {
  return Math.min(RETRY_OURS_SECONDS * 2 ** Math.max(0, attempts - 1), 300);
}

type Settle = { ack: true } | { ack: false; delaySeconds: number };

interface BatchReport {
  /** The most outbound connections open at once. */
  peakConnections: number;
  /** The most payload and envelope bytes held at once (an upper bound). */
  peakHeldBytes: number;
  /** Messages given back to the queue unattempted. */
  handedBack: number;
  /** Messages retried for our own failure (storage refusing or unreachable). */
  ours: number;
}

/** One delivery of a message, waiting for its attempt. */
interface Waiting {
  /** The message's index in the batch. */
  index: number;
  ref: PartitionRef;
  eventId: string;
  item: DeliveryItem;
  messageId: string;
  attempts: number;
}

interface Ready extends Waiting {
  destination: DeliveryDestination;
  event: ClaimedEvent;
  eventBytes: number;
  attemptCount: number;
  attemptsInRun: number;
  /** The gate's slot for this start (epoch ms, under a second away when admitted). */
  startAt?: number;
}

/** How each attempt of a wave ended, for the destinations' gates. */
type GateEnds = Map<Ready, { end: AttemptEnd; durationMs: number; final: boolean; retryInMs: number }>;

/** Bytes held: payloads claimed, and envelopes being sent. */
class Held {
  private now = 0;
  peak = 0;
  add(n: number): void {
    this.now += n;
    this.peak = Math.max(this.peak, this.now);
  }
}

export async function deliverBatch(
  s: Services,
  messages: Incoming[],
  settle: (index: number, what: Settle) => void,
  limiter = new Limiter(),
  lane: Lane = "shared",
): Promise<BatchReport> {
  // A message is settled once each of its deliveries is: acknowledged when all of them
  // are, else retried after the longest delay any of them asked for (a retried message
  // finds its deliveries already recorded settled, and drops them).
  const left = new Map<number, { items: number; retryIn: number | null }>();
  const settleMessage = (i: number, what: Settle) => {
    if (!left.has(i)) settle(i, what);
    else {
      const m = left.get(i)!;
      if (m.items === 0) return;
      m.items--;
      if (!what.ack) m.retryIn = Math.max(m.retryIn ?? 0, what.delaySeconds);
      if (m.items === 0) settle(i, m.retryIn === null ? { ack: true } : { ack: false, delaySeconds: m.retryIn });
    }
  };
  const finished = new Set<Waiting>();
  const done = (w: Waiting, what: Settle) => {
    if (finished.has(w)) return;
    finished.add(w);
    settleMessage(w.index, what);
  };
  let oursCount = 0;
  const oursMessages = new Set<number>();
  const ours = (w: Waiting) => {
    if (!finished.has(w) && !oursMessages.has(w.index)) {
      oursMessages.add(w.index);
      oursCount++;
    }
    done(w, { ack: false, delaySeconds: oursDelay(w.attempts) });
  };
  const held = new Held();
  let handedBack = 0;

  // Messages that cannot be read are dropped, and so are deliveries repeated within the batch.
  let waiting: Waiting[] = [];
  const seen = new Set<string>();
  messages.forEach((m, index) => {
    const ref = m.body?.kind === "deliver" && Array.isArray(m.body.deliveries) ? parsePartitionName(m.body.partition) : null;
    if (!ref) return settle(index, { ack: true });
    const items = m.body.deliveries.filter((d) => {
      if (typeof d?.delivery_id !== "string" || seen.has(d.delivery_id)) return false;
      seen.add(d.delivery_id);
      return true;
    });
    if (items.length === 0) return settle(index, { ack: true });
    left.set(index, { items: items.length, retryIn: null });
    for (const item of items) waiting.push({ index, ref, eventId: m.body.event_id, item, messageId: m.id, attempts: m.attempts ?? 1 });
  });

  let destinations = new Map<string, DeliveryDestination>();
  if (waiting.length > 0) {
    try {
      destinations = await limiter.run("storage", () => destinationsForDelivery(s, waiting.map((w) => w.item.destination_id)));
    } catch (err) {
      log("error", "delivery_load_failed", { error: errorName(err) });
      for (const w of waiting) ours(w);
      waiting = [];
    }
  }

  const writers = recordWriters(s, limiter);
  const health = healthReports(s, limiter);
  // The last wave's attempts, whose permits go back to their gates with the next wave's
  // admission (one call per destination and wave), or on their own once no wave follows.
  let ended = new Map<string, GateRelease>();
  while (waiting.length > 0) {
    const claimed = await claimWave(s, limiter, waiting, destinations, held, done, ours);
    waiting = claimed.deferred;
    // The destinations' gates say which may start now; the rest wait in their partitions.
    // Without a slow lane bound, the shared queues keep every destination.
    const { wave, later } = await gateWave(s, limiter, lane === "shared" && !s.queues.slowLane ? undefined : lane, claimed.wave, ended, held, done, ours);
    ended = new Map();
    // Over the cap but with permits of their own destination in this wave: the next wave.
    waiting.push(...later);
    const ends: GateEnds = new Map();
    let stalled = false;
    await runWave(wave, held, limiter.httpPermits, (r, sent) => attemptAndSettle(s, limiter, writers, health, r, ends, lane, sent), done, ours, (unstarted) => {
      // Every connection is held by a silent destination: the rest goes to another
      // invocation now, not once these time out.
      stalled = true;
      for (const w of [...unstarted, ...waiting]) done(w, { ack: false, delaySeconds: 0 });
      handedBack = unstarted.length + waiting.length;
      log("warn", "delivery_batch_handed_back", { messages: handedBack });
      waiting = [];
    });
    ended = endedOf(s, wave, ends);
    if (stalled) break;
  }
  await releaseWave(s, limiter, ended);
  return { peakConnections: limiter.peak, peakHeldBytes: held.peak, handedBack, ours: oursCount };
}

/** Claims what fits in one wave's byte budget and its gates' caps, partition by partition; the rest waits for the next wave. */
async function claimWave(
  s: Services,
  limiter: Limiter,
  waiting: Waiting[],
  destinations: Map<string, DeliveryDestination>,
  held: Held,
  done: (w: Waiting, what: Settle) => void,
  ours: (w: Waiting) => void,
): Promise<{ wave: Ready[]; deferred: Waiting[] }> {
  const wave: Ready[] = [];
  const deferred: Waiting[] = [];
  // Of one destination, what this invocation runs at once and one more (never over its
  // in-flight cap): the rest are claimed in a later wave, each delivery once. A wave asks
  // its gate for no permits it would only sit on, so the deliver queues' other batches
  // get that destination's permits instead of being held back and queued again.
  const cap = Math.min(s.config.maxInFlightPerDestination, WAVE_PER_DESTINATION);
  const perDestination = new Map<string, number>();
  const inWave: Waiting[] = [];
  for (const w of waiting) {
    const n = perDestination.get(w.item.destination_id) ?? 0;
    if (n >= cap) deferred.push(w);
    else {
      perDestination.set(w.item.destination_id, n + 1);
      inWave.push(w);
    }
  }
  let budget = WAVE_BUDGET_BYTES;
  for (const group of groupBy(inWave, (w) => partitionName(w.ref)).values()) {
    if (budget <= 0) {
      deferred.push(...group);
      continue;
    }
    const ref = group[0]!.ref;
    const items: ClaimItem[] = group.map((w) => ({ deliveryId: w.item.delivery_id, token: w.item.token, messageId: w.messageId }));
    let claimed;
    try {
      claimed = await limiter.run("storage", () => s.store(ref).claim(items, budget));
    } catch (err) {
      log("error", "delivery_claim_failed", { partition: partitionName(ref), error: errorName(err) });
      for (const w of group) ours(w);
      continue;
    }
    const events = new Map(claimed.events.map((e) => [e.id, { event: e, bytes: utf8Length(e.payload) }]));
    for (const e of events.values()) {
      budget -= e.bytes;
      held.add(e.bytes);
    }
    const used = new Set<string>();
    claimed.results.forEach((r, i) => {
      const w = group[i]!;
      if (r.kind === "drop") {
        // Settled or gone: a fifo line must not wait for it.
        const d = destinations.get(w.item.destination_id);
        if (d?.ordering === "fifo" && r.reason !== "stale") forgetInLine(s, limiter, d.id, w.item.delivery_id);
        return done(w, { ack: true });
      }
      if (r.kind === "busy") return done(w, { ack: false, delaySeconds: Math.max(1, Math.ceil(r.retryInMs / 1000)) });
      if (r.kind === "deferred") return deferred.push(w);
      const destination = destinations.get(w.item.destination_id);
      const e = events.get(r.eventId);
      // Deleted since it was queued: nothing to send, nothing to record.
      if (!destination || !e) return done(w, { ack: true });
      used.add(r.eventId);
      wave.push({ ...w, destination, event: e.event, eventBytes: e.bytes, attemptCount: r.attemptCount, attemptsInRun: r.attemptsInRun });
    });
    for (const [id, e] of events) if (!used.has(id)) held.add(-e.bytes);
  }
  return { wave, deferred };
}

/**
 * Asks each destination's gate (its DestinationHealth object, one call per destination)
 * which of the wave's deliveries may start now: its open circuit, its in-flight cap and
 * its rate limit decide (gate.ts). The others go back to their partitions to wait, as
 * new messages with their delays: no attempt, no retry spent, nothing counted. The same
 * call first gives back the permits of the last wave's attempts to that destination
 * (`ended`); a destination with none in this wave gets them back on their own.
 */
async function gateWave(
  s: Services,
  limiter: Limiter,
  lane: Lane | undefined,
  wave: Ready[],
  ended: Map<string, GateRelease>,
  held: Held,
  done: (w: Waiting, what: Settle) => void,
  ours: (w: Waiting) => void,
): Promise<{ wave: Ready[]; later: Waiting[] }> {
  const go: Ready[] = [];
  const later: Ready[] = [];
  const waits: { r: Ready; token: string; waitSeconds: number; lane: Lane | undefined }[] = [];
  const byDestination = groupBy(wave, (r) => r.destination.id);
  const releasedOnly = new Map([...ended].filter(([id]) => !byDestination.has(id)));
  await Promise.all([
    releaseWave(s, limiter, releasedOnly),
    ...[...byDestination].map(async ([destinationId, rs]) => {
      const d = rs[0]!.destination;
      const cfg = { rateLimit: d.rateLimit, ordering: d.ordering, maxInFlight: s.config.maxInFlightPerDestination, leaseMs: s.config.deliveryTimeoutMs + LEASE_MARGIN_MS, breaker: s.config.breaker, lane, startSlow: s.config.newDestinationsStartSlow };
      // The token each delivery will carry if it is held back (a fifo line sends its message itself).
      const tokens = rs.map(() => crypto.randomUUID());
      const items = rs.map((r, i) => ({
        id: r.item.delivery_id,
        retry: r.attemptsInRun > 0,
        ...(d.ordering === "fifo" ? { fifo: { deliveryId: r.item.delivery_id, eventId: r.eventId, partition: partitionName(r.ref), nextToken: tokens[i]! } } : {}),
      }));
      let admissions: Admission[];
      try {
        admissions = await limiter.run("storage", () => s.health(destinationId).turn(destinationId, ended.get(destinationId) ?? null, { cfg, items }));
      } catch (err) {
        log("error", "destination_gate_failed", { destination_id: destinationId, error: errorName(err) });
        for (const r of rs) ours(r);
        return;
      }
      const admittedHere = admissions.some((a) => a.kind === "go");
      admissions.forEach((a, i) => {
        const r = rs[i]!;
        if (a.kind === "go") go.push(a.startInMs > 0 ? { ...r, startAt: Date.now() + a.startInMs } : r);
        // This invocation holds permits of that destination: the rest wait here for the
        // next wave (its permits come back at this wave's end), costing no message.
        else if (a.reason === "in_flight" && admittedHere) later.push(r);
        // A rate slot's remainder under a second is waited out when it comes back.
        // A slow destination's go to the slow lane at once; the others wait in their own lane.
        else waits.push({ r, token: tokens[i]!, waitSeconds: a.reason === "rate" ? Math.floor(a.waitMs / 1000) : Math.ceil(a.waitMs / 1000), lane: a.reason === "slow" ? "slow" : lane });
      });
    }),
  ]);
  await Promise.all(
    [...groupBy(waits, (w) => partitionName(w.r.ref))].map(async ([, ws]) => {
      try {
        await limiter.run("storage", () =>
          s.store(ws[0]!.r.ref).hold(ws.map((w) => ({ deliveryId: w.r.item.delivery_id, token: w.r.item.token, newToken: w.token, messageId: w.r.messageId, waitSeconds: w.waitSeconds, lane: w.lane }))),
        );
        // Held, or no longer this message's to hold (settled meanwhile): either way done here.
        for (const w of ws) done(w.r, { ack: true });
      } catch (err) {
        log("error", "delivery_hold_failed", { partition: partitionName(ws[0]!.r.ref), error: errorName(err) });
        for (const w of ws) ours(w.r);
      }
    }),
  );
  // The payloads of events none of whose deliveries start now are not held any longer.
  const starting = new Set(go.map((r) => r.event.id));
  const dropped = new Map<string, number>();
  for (const { r } of waits) if (!starting.has(r.event.id)) dropped.set(r.event.id, r.eventBytes);
  // Keep the wave's order (claim order) for those that start.
  for (const r of later) if (!starting.has(r.event.id)) dropped.set(r.event.id, r.eventBytes);
  for (const bytes of dropped.values()) held.add(-bytes);
  const order = new Map(wave.map((r, i) => [r.item.delivery_id, i]));
  return { wave: go.sort((a, z) => order.get(a.item.delivery_id)! - order.get(z.item.delivery_id)!), later };
}

/** A delivery of a fifo destination is settled or gone: its line moves on (best effort: its parked message would tell the line too). */
function forgetInLine(s: Services, limiter: Limiter, destinationId: string, deliveryId: string): void {
  void limiter
    .run("storage", () => s.health(destinationId).release(destinationId, [{ deliveryId, end: "none", durationMs: 0, final: true }], s.config.breaker, { leaseMs: 0 }))
    .catch((err) => log("error", "destination_gate_failed", { destination_id: destinationId, error: errorName(err) }));
}

/** How a wave's attempts ended, by destination, for their gates. */
function endedOf(s: Services, wave: Ready[], ends: GateEnds): Map<string, GateRelease> {
  const out = new Map<string, GateRelease>();
  for (const [destinationId, rs] of groupBy(wave, (r) => r.destination.id)) {
    out.set(destinationId, {
      ends: rs.map((r) => ({ deliveryId: r.item.delivery_id, ...(ends.get(r) ?? { end: "none" as const, durationMs: 0, final: false, retryInMs: 0 }) })),
      breaker: s.config.breaker,
      ...(rs[0]!.destination.ordering === "fifo" ? { fifo: { leaseMs: s.config.deliveryTimeoutMs + LEASE_MARGIN_MS } } : {}),
    });
  }
  return out;
}

/** Returns permits to the gates, with how each attempt ended (one call per destination). */
async function releaseWave(s: Services, limiter: Limiter, ended: Map<string, GateRelease>): Promise<void> {
  await Promise.all(
    [...ended].map(async ([destinationId, e]) => {
      try {
        await limiter.run("storage", () => s.health(destinationId).release(destinationId, e.ends, e.breaker, e.fifo));
      } catch (err) {
        // The permits lapse after their lease.
        log("error", "destination_gate_failed", { destination_id: destinationId, error: errorName(err) });
      }
    }),
  );
}

/**
 * Runs a wave's attempts, at most `slots` at once (the connections they may hold) and
 * PER_DESTINATION to one destination. Once every attempt in flight has waited longer
 * than SLOW_MS, those not started yet go to `stall` at once. Resolves when the attempts
 * it started have ended.
 */
function runWave(
  wave: Ready[],
  held: Held,
  slots: number,
  run: (r: Ready, sent: () => void) => Promise<Settle>,
  done: (w: Waiting, what: Settle) => void,
  ours: (w: Waiting) => void,
  stall: (unstarted: Ready[]) => void,
): Promise<void> {
  const left = new Map<string, number>();
  for (const r of wave) left.set(r.event.id, (left.get(r.event.id) ?? 0) + 1);
  const finished = (r: Ready) => {
    const n = left.get(r.event.id)! - 1;
    left.set(r.event.id, n);
    if (n === 0) held.add(-r.eventBytes);
  };
  const queue = [...wave];
  const perDestination = new Map<string, number>();
  /** When each attempt in flight started. */
  const inFlight = new Map<Ready, number>();
  // Of those, the ones not answered yet (a slot each): once its response headers are in,
  // reading the excerpt and settling (the records) hold no slot, and the next one starts.
  const sending = new Set<Ready>();
  return new Promise<void>((resolve) => {
    const watchdog = setInterval(() => {
      const now = Date.now();
      if (queue.length > 0 && inFlight.size > 0 && [...inFlight.values()].every((t) => now - t > SLOW_MS)) {
        const unstarted = queue.splice(0);
        for (const r of unstarted) finished(r);
        stall(unstarted);
      }
    }, SLOW_MS / 4);
    // A start the gate gave a slot under a second away waits for it here, holding no connection.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const pump = () => {
      const now = Date.now();
      let nextAt = Infinity;
      for (let i = 0; i < queue.length && sending.size < slots; i++) {
        const r = queue[i]!;
        if (r.startAt !== undefined && r.startAt > now) {
          nextAt = Math.min(nextAt, r.startAt);
          continue;
        }
        const busy = perDestination.get(r.destination.id) ?? 0;
        if (busy >= PER_DESTINATION) continue;
        queue.splice(i--, 1);
        perDestination.set(r.destination.id, busy + 1);
        const bytes = envelopeBytes(r.event.type, r.eventBytes, r.ref.sourceId);
        held.add(bytes);
        inFlight.set(r, Date.now());
        sending.add(r);
        const sent = () => {
          if (sending.delete(r)) pump();
        };
        run(r, sent)
          .then((what) => done(r, what))
          .catch((err) => {
            log("error", "delivery_crashed", { delivery_id: r.item.delivery_id, error: errorName(err) });
            ours(r);
          })
          .finally(() => {
            held.add(-bytes);
            finished(r);
            inFlight.delete(r);
            sending.delete(r);
            perDestination.set(r.destination.id, perDestination.get(r.destination.id)! - 1);
            pump();
          });
      }
      if (nextAt !== Infinity && timer === undefined) {
        timer = setTimeout(() => {
          timer = undefined;
          pump();
        }, nextAt - now);
      }
      if (inFlight.size === 0 && queue.length === 0) {
        clearInterval(watchdog);
        if (timer !== undefined) clearTimeout(timer);
        resolve();
      }
    };
    pump();
  });
}

/** One attempt and its settlement: the records written, then what to tell the queue. */
async function attemptAndSettle(
  s: Services,
  limiter: Limiter,
  writers: RecordWriters,
  health: ReturnType<typeof healthReports>,
  r: Ready,
  ends: GateEnds,
  lane: Lane,
  sent: () => void,
): Promise<Settle> {
  const outcome: Outcome = await attempt(s, limiter, {
    destination: r.destination,
    event: r.event,
    sourceId: r.ref.sourceId,
    number: r.attemptCount + 1,
    attemptInRun: r.attemptsInRun + 1,
  }, sent);
  // Refused, cancelled or failed before any answer: its slot is free all the same.
  sent();
  ends.set(r, {
    // For the circuit breaker a failure is an endpoint that did not answer (timed out, could
    // not connect); one that answered, even with an error, is alive and holds no slot long.
    end:
      outcome.kind === "succeeded"
        ? "succeeded"
        : outcome.kind === "retry" || outcome.kind === "exhausted"
          ? outcome.statusCode === null
            ? "failed"
            : "answered"
          : "none",
    durationMs: outcome.kind === "ours" ? 0 : outcome.durationMs,
    // For a fifo line: the delivery is done with (succeeded or given up), or waits for its retry.
    final: outcome.kind === "succeeded" || outcome.kind === "exhausted" || outcome.kind === "cancelled",
    retryInMs: outcome.kind === "retry" ? outcome.delaySeconds * 1000 : 0,
  });
  if (outcome.kind === "ours") {
    log("warn", "delivery_deferred", { delivery_id: r.item.delivery_id, destination_id: r.destination.id, reason: outcome.error.slice(0, 200) });
    return { ack: false, delaySeconds: oursDelay(r.attempts) };
  }

  const now = s.now();
  const record = {
    id: attemptId(r.ref.shard, now),
    number: r.attemptCount + 1,
    outcome: outcome.kind === "succeeded" ? ("succeeded" as const) : outcome.kind === "cancelled" ? ("cancelled" as const) : ("failed" as const),
    statusCode: outcome.statusCode,
    error: outcome.error,
    durationMs: outcome.durationMs,
    createdAt: now,
  };
  const settlement: Settlement = {
    deliveryId: r.item.delivery_id,
    token: r.item.token,
    messageId: r.messageId,
    status: outcome.kind === "succeeded" ? "succeeded" : outcome.kind === "cancelled" ? "cancelled" : outcome.kind === "retry" ? "pending" : "failed",
    attempt: record,
    ...(outcome.kind === "retry" ? { retryAfterSeconds: outcome.delaySeconds } : {}),
  };
  const row = { ...record, deliveryId: r.item.delivery_id, eventId: r.eventId, destinationId: r.destination.id, responseBody: outcome.responseBody };
  // The attempt goes to the partition of the day it was made, in the event's shard: for
  // today's events that is the event's own partition, in the same write.
  const attemptRef = { ...r.ref, day: dayOf(now) };
  const sameDay = attemptRef.day === r.ref.day;
  const counted = await writers.write(r.ref, { attempts: sameDay ? [row] : [], settlements: [settlement] });
  if (!sameDay) await writers.write(attemptRef, { attempts: [row], settlements: [] });
  log("info", "delivery_attempt", {
    delivery_id: r.item.delivery_id,
    event_id: r.eventId,
    destination_id: r.destination.id,
    attempt: record.number,
    outcome: record.outcome,
    status_code: record.statusCode,
    duration_ms: record.durationMs,
    lane,
    ...(counted ? {} : { superseded: true }),
  });
  if (counted && (outcome.kind === "exhausted" || outcome.kind === "succeeded")) await health.tell(r.destination.id, outcome.kind === "exhausted" ? "exhausted" : "success", r.eventId);
  return { ack: true };
}

/**
 * What the destinations' health objects hear from one batch: every exhausted forward,
 * and a success unless the last thing this batch told that destination was a success
 * already (a run of successes is one call: the count is reset once).
 */
function healthReports(s: Services, limiter: Limiter) {
  const last = new Map<string, "success" | "exhausted">();
  return {
    async tell(destinationId: string, kind: "success" | "exhausted", eventId: string): Promise<void> {
      if (kind === "success" && last.get(destinationId) === "success") return;
      last.set(destinationId, kind);
      await tellHealth(s, limiter, destinationId, kind, eventId);
    },
  };
}

async function tellHealth(s: Services, limiter: Limiter, destinationId: string, kind: "success" | "exhausted", eventId: string): Promise<void> {
  try {
    const stub = s.health(destinationId);
    // An exhausted forward names its event (the delivery.exhausted alert carries it).
    const state = await limiter.run("storage", () => (kind === "success" ? stub.success(destinationId) : stub.exhausted(destinationId, eventId)));
    // Disabled just now: this isolate stops sending at once (others within their cache's time).
    if (state.disabled_now) forgetDeliveryDestination(destinationId);
  } catch (err) {
    log("error", "destination_health_failed", { destination_id: destinationId, error: errorName(err) });
  }
}

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const t of items) {
    const k = key(t);
    const list = out.get(k);
    if (list) list.push(t);
    else out.set(k, [t]);
  }
  return out;
}

/** The UTF-8 size of a string, in one pass and without a copy. */
function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : "unknown";
}

