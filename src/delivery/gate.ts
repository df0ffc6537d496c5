/**
 * The gate of one destination: which of its deliveries may start an attempt now, and how
 * long the others wait. Kept by the destination's Durable Object (DestinationHealth), the
 * one place that sees every attempt to that destination, so it holds across every
 * consumer invocation at once. Pure: the object persists `GateState` and passes the clock.
 *
 * In order, for each delivery asked about:
 * 1. Circuit breaker (Convoy's, simplified): over the last BREAKER_WINDOW_MS (60 s), once
 *    at least `minAttempts` (10) attempts ended and at least `failureRatio` (50 %) of them
 *    got no answer (timed out, could not connect: what holds consumer slots; an endpoint
 *    that answers with an error is alive, its retries and auto-disable deal with it), the
 *    breaker opens for `openMs` (30 s; doubling at each
 *    reopening, up to `openMaxMs`, 5 min). Open: no first attempt starts; the retries of
 *    deliveries already attempted keep their schedule (so a dead endpoint's forwards
 *    still exhaust, and auto-disable still comes after 10 of them), and a success among
 *    them closes the breaker. Then half-open: one trial starts; its success closes the
 *    breaker, its failure opens it again. Re-enabling a destination closes it.
 * 2. In flight: at most `maxInFlight` attempts at once (MAX_IN_FLIGHT_PER_DESTINATION),
 *    counted at the delivery's start (its rate slot, if any: inFlightAt). A permit is
 *    returned with the attempt's outcome, or lapses after its lease.
 * 3. Rate limit: starts are spaced 1000 / rate_limit ms apart (a generic cell rate
 *    algorithm with no burst): a delivery gets the next free slot, kept for it while it
 *    waits, so over any 10 s no more than 10 × rate_limit + 1 attempts start.
 * 0. Lane: a slow destination (its circuit not closed, its attempts taking over
 *    SLOW_ATTEMPT_MS on average, one of them in flight for longer than that, or none of
 *    them ever answered within it: a new destination sends one probe to the slow lane
 *    and the rest of its deliveries wait a second, until an answer within
 *    SLOW_ATTEMPT_MS proves it) is not
 *    attempted from the shared deliver queues: its deliveries move to the slow lane (the
 *    deliver-slow queue) at once, and wait there for 1–3. So a batch of the shared queues
 *    never waits on a dead endpoint's timeouts after its first ones, whatever the platform
 *    runs at once; the slow lane's batches wait on each other's only.
 * A delivery that may not start waits outside the deliver path (its partition queues it
 * again with the delay): waiting is not an attempt, spends no retry and counts nothing.
 */

const BREAKER_WINDOW_MS = 60_000;
const BREAKER_BUCKET_MS = 10_000;
export const BREAKER_MIN_ATTEMPTS = 10;
const BREAKER_FAILURE_RATIO = 0.5;
export const BREAKER_OPEN_MS = 30_000;
export const BREAKER_OPEN_MAX_MS = 300_000;
/** A destination whose attempts take longer than this (on average, or one in flight now) is slow: the slow lane's. */
export const SLOW_ATTEMPT_MS = 1_000;
/** A probe of a destination not proven yet (startSlow) is sent again after this long without an answer. */
const PROBE_MS = 5_000;
/** A delivery held for the in-flight cap asks again after about this long, at least. */
const IN_FLIGHT_WAIT_MS = 1_000;
/** Slots reserved for deliveries that never came back are forgotten after this. */
const RESERVATION_TTL_MS = 60_000;

export interface BreakerConfig {
  minAttempts: number;
  failureRatio: number;
  openMs: number;
  openMaxMs: number;
}

const DEFAULT_BREAKER: BreakerConfig = {
  minAttempts: BREAKER_MIN_ATTEMPTS,
  failureRatio: BREAKER_FAILURE_RATIO,
  openMs: BREAKER_OPEN_MS,
  openMaxMs: BREAKER_OPEN_MAX_MS,
};

export interface GateConfig {
  rateLimit: number | null;
  /** fifo: one at a time, in ingest order (delivery/fifo.ts). */
  ordering?: "none" | "fifo";
  maxInFlight: number;
  /** The circuit breaker's parameters (CIRCUIT_* in [vars]); the defaults above otherwise. */
  breaker?: BreakerConfig;
  /** How long a permit lasts when nobody returns it (a consumer that died). */
  leaseMs: number;
  /** The deliver queue asking: a shared one moves a slow destination's deliveries to the slow lane; the slow lane (or a deployment without one: none given) keeps them. */
  lane?: Lane;
  /** Until one of its attempts has answered within SLOW_ATTEMPT_MS, a destination is slow (NEW_DESTINATIONS_START_SLOW). */
  startSlow?: boolean;
}

/** Which deliver queues a delivery is attempted from (services.ts deliveryQueues). */
export type Lane = "shared" | "slow";

export type Admission = { kind: "go"; startInMs: number } | { kind: "hold"; waitMs: number; reason: "circuit_open" | "in_flight" | "rate" | "fifo" | "slow" };

/** succeeded; failed: no answer (timed out, could not connect); answered: an error status, quickly (alive); none: never started. */
export type AttemptEnd = "succeeded" | "failed" | "answered" | "none";

export interface BreakerState {
  state: "closed" | "open" | "half_open";
  /** open: until when; half_open: the trial's lease end (0 when no trial is out). */
  until: number;
  /** The pause of the next opening. */
  openMs: number;
  trial: string | null;
}

export interface GateState {
  nextSlot: number;
  reserved: Record<string, number>;
  leases: Record<string, number>;
  buckets: { at: number; ok: number; failed: number }[];
  breaker: BreakerState;
  /** Mean attempt duration (ms), to space the waits of the in-flight cap. */
  meanMs: number;
  /** One attempt has answered within SLOW_ATTEMPT_MS: the destination may leave the slow lane. */
  proven?: boolean;
  /** When a delivery of a destination not proven yet last went to the slow lane to find out. */
  probeAt?: number;
  /** An attempt has ended (proving the destination fast, or not). */
  probed?: boolean;
  /** The start of each permit given for a rate slot still ahead (inFlightAt). */
  starts?: Record<string, number>;
}

export const emptyGate = (): GateState => ({
  nextSlot: 0,
  reserved: {},
  leases: {},
  buckets: [],
  breaker: { state: "closed", until: 0, openMs: BREAKER_OPEN_MS, trial: null },
  // A prior, until attempts are timed: short, so that a rate limit's next second of starts
  // is not taken for attempts in flight together (inFlightAt).
  meanMs: 100,
});

function sweep(g: GateState, now: number): void {
  for (const [id, until] of Object.entries(g.leases)) if (until <= now) delete g.leases[id];
  if (g.starts) for (const [id, at] of Object.entries(g.starts)) if (at <= now || g.leases[id] === undefined) delete g.starts[id];
  for (const [id, at] of Object.entries(g.reserved)) if (at < now - RESERVATION_TTL_MS) delete g.reserved[id];
  g.buckets = g.buckets.filter((b) => b.at > now - BREAKER_WINDOW_MS);
  const b = g.breaker;
  if (b.state === "open" && now >= b.until) {
    b.state = "half_open";
    b.until = 0;
    b.trial = null;
  }
  if (b.state === "half_open" && b.trial !== null && b.until <= now) {
    // The trial's permit lapsed without an outcome: let another try.
    b.trial = null;
  }
}

/** A delivery asking to start: `retry` when it was attempted before in its current run. */
export interface GateItem {
  id: string;
  retry: boolean;
}

/** Whether this destination's attempts belong in the slow lane now (0. above). */
export function isSlow(g: GateState, leaseMs: number, now: number): boolean {
  if (g.breaker.state !== "closed" || g.meanMs > SLOW_ATTEMPT_MS) return true;
  // A lease ends leaseMs after its attempt's start.
  for (const until of Object.values(g.leases)) if (until - leaseMs < now - SLOW_ATTEMPT_MS) return true;
  return false;
}

/**
 * Attempts in flight at `at` (now, or a rate slot under a second away): every permit whose
 * attempt has started and not come back, and those starting before `at` that are not
 * expected to be done by then (the mean attempt time). Without it, a rate limit's starts
 * scheduled over the next second would count as in flight from now: at 20/s, 20 permits
 * for attempts of a few ms, and the cap of 10 halved the rate.
 */
function inFlightAt(g: GateState, at: number, now: number): number {
  let n = 0;
  for (const id of Object.keys(g.leases)) {
    const start = g.starts?.[id];
    if (start === undefined || start <= now || (start <= at && start + g.meanMs > at)) n++;
  }
  return n;
}

/** Which of these deliveries start now (and after how many ms), and how long the others wait. */
export function admit(g: GateState, cfg: GateConfig, items: GateItem[], now: number): Admission[] {
  sweep(g, now);
  if (cfg.lane === "shared" && isSlow(g, cfg.leaseMs, now)) return items.map(() => ({ kind: "hold", waitMs: 0, reason: "slow" }));
  // Tried and not proven (no answer, or a slow one): the slow lane's.
  if (cfg.lane === "shared" && cfg.startSlow && !g.proven && g.probed) return items.map(() => ({ kind: "hold", waitMs: 0, reason: "slow" }));
  if (cfg.lane === "shared" && cfg.startSlow && !g.proven) {
    // Not known to answer yet: one delivery goes to the slow lane to find out (a probe at a
    // time, a new one once the last has been out for PROBE_MS); the others wait a second
    // here, and come back to a destination proven fast, or found slow.
    const probing = g.probeAt !== undefined && g.probeAt > now - PROBE_MS;
    return items.map((_, i): Admission => (i === 0 && !probing ? ((g.probeAt = now), { kind: "hold", waitMs: 0, reason: "slow" }) : { kind: "hold", waitMs: IN_FLIGHT_WAIT_MS, reason: "in_flight" }));
  }
  let heldForFlight = 0;
  return items.map(({ id, retry }): Admission => {
    const b = g.breaker;
    if (!retry && b.state === "open") return { kind: "hold", waitMs: b.until - now, reason: "circuit_open" };
    if (!retry && b.state === "half_open" && b.trial !== null && b.trial !== id) return { kind: "hold", waitMs: Math.max(IN_FLIGHT_WAIT_MS, b.until - now), reason: "circuit_open" };
    const holding = g.leases[id] !== undefined;
    // Under a rate limit the start is the delivery's slot (kept for it while it waits).
    const slot = cfg.rateLimit === null ? now : (g.reserved[id] ?? Math.max(now, g.nextSlot));
    if (!holding && inFlightAt(g, slot, now) >= cfg.maxInFlight) {
      // Spread the waits so those held come back about as permits free up.
      const waitMs = Math.max(IN_FLIGHT_WAIT_MS, g.meanMs * (1 + Math.floor(heldForFlight++ / Math.max(1, cfg.maxInFlight))));
      return { kind: "hold", waitMs, reason: "in_flight" };
    }
    let startAt = now;
    if (cfg.rateLimit !== null) {
      if (g.reserved[id] === undefined) {
        g.nextSlot = slot + 1000 / cfg.rateLimit;
        g.reserved[id] = slot;
      }
      if (slot - now >= 1000) return { kind: "hold", waitMs: slot - now, reason: "rate" };
      delete g.reserved[id];
      startAt = slot;
    }
    g.leases[id] = startAt + cfg.leaseMs;
    if (startAt > now) (g.starts ??= {})[id] = startAt;
    if (b.state === "half_open" && !retry) {
      b.trial = id;
      b.until = startAt + cfg.leaseMs;
    }
    return { kind: "go", startInMs: Math.max(0, Math.ceil(startAt - now)) };
  });
}

/** An attempt ended (or never started: "none"): its permit comes back, and the breaker learns. */
export function release(g: GateState, deliveryId: string, end: AttemptEnd, durationMs: number, now: number, bc: BreakerConfig = DEFAULT_BREAKER): void {
  sweep(g, now);
  delete g.leases[deliveryId];
  if (g.starts) delete g.starts[deliveryId];
  if (end === "none") {
    if (g.breaker.trial === deliveryId) g.breaker.trial = null;
    return;
  }
  g.meanMs = Math.round(g.meanMs * 0.8 + Math.max(1, durationMs) * 0.2);
  if ((end === "succeeded" || end === "answered") && durationMs <= SLOW_ATTEMPT_MS) g.proven = true;
  g.probed = true;
  const b = g.breaker;
  if (b.state !== "closed" && (end === "succeeded" || end === "answered")) {
    // The endpoint answers again (a trial, or a retry that went ahead meanwhile).
    close(g, bc);
    return;
  }
  if (b.state === "half_open" && b.trial === deliveryId) {
    open(g, now, bc);
    return;
  }
  const at = now - (now % BREAKER_BUCKET_MS);
  let bucket = g.buckets.find((x) => x.at === at);
  if (!bucket) g.buckets.push((bucket = { at, ok: 0, failed: 0 }));
  if (end === "failed") bucket.failed++;
  else bucket.ok++;
  if (b.state !== "closed") return;
  const ok = g.buckets.reduce((n, x) => n + x.ok, 0);
  const failed = g.buckets.reduce((n, x) => n + x.failed, 0);
  if (ok + failed >= bc.minAttempts && failed / (ok + failed) >= bc.failureRatio) open(g, now, bc);
}

/** Closed, with nothing learnt: after a success, or when the destination is enabled again. */
export function close(g: GateState, bc: BreakerConfig = DEFAULT_BREAKER): void {
  g.breaker = { state: "closed", until: 0, openMs: bc.openMs, trial: null };
  g.buckets = [];
}

function open(g: GateState, now: number, bc: BreakerConfig): void {
  const pause = g.breaker.state === "closed" ? bc.openMs : Math.min(g.breaker.openMs * 2, bc.openMaxMs);
  g.breaker = { state: "open", until: now + pause, openMs: pause, trial: null };
  g.buckets = [];
}
