/**
 * DestinationHealth: one Durable Object per destination (named by its id), the only
 * writer of `failure_count` and of auto-disable. Each call runs alone
 * (blockConcurrencyWhile spans the D1 write too), so concurrent deliveries never lose
 * a count and the flip to `enabled: false` happens exactly once per crossing.
 *
 * - exhausted: a forward used up its retries. failure_count + 1; at 10 or more, if the
 *   destination is enabled, it is disabled (one log line).
 * - success: failure_count back to 0.
 * - alerts (src/alerts): both decide the destination's alerts (failing at 5, disabled,
 *   recovered, exhausted forwards by the hour), kept in this object's storage and stored
 *   in the account's alerts source by its alarm; they never slow or fail these calls.
 * PATCH enabled:true does not reset the count, so a re-enabled destination that fails
 * once more is disabled again; its first success resets it.
 * Durable storage holds the count, so it survives eviction; D1 mirrors it for reads.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "./config";
import { disableForFailures, writeFailureCount } from "./db/destinations";
import { admit as admitToGate, close as closeGate, emptyGate, release as releaseToGate, type Admission, type AttemptEnd, type BreakerConfig, type GateConfig, type GateItem, type GateState } from "./delivery/gate";
import { FIFO_PARK_SECONDS, FIFO_SETTLE_MS, FifoLine, type FifoItem, type FifoRow } from "./delivery/fifo";
import { deliverMessage } from "./delivery/messages";
import { servicesFor, type Services } from "./services";
import { idTimeMs, parsePartitionName } from "./store/ids";
import { log } from "./log";
import { AlertsOutbox } from "./alerts/outbox";
import { AttemptCounts, type HourCount } from "./delivery/attempt-counts";

/** How one attempt ended, for its destination's gate. */
export type ReleaseEnd = { deliveryId: string; end: AttemptEnd; durationMs: number; final?: boolean; retryInMs?: number };

/** A wave's attempts to one destination, as its gate hears of them (release's arguments). */
export interface GateRelease {
  ends: ReleaseEnd[];
  breaker?: BreakerConfig;
  fifo?: { leaseMs: number };
}

const AUTO_DISABLE_THRESHOLD = 10;

interface HealthState {
  failure_count: number;
  /** true when this call flipped the destination to disabled. */
  disabled_now: boolean;
}

const COUNT = "failure_count";
const GATE = "gate";
/** One attempt answered within SLOW_ATTEMPT_MS (delivery/gate.ts): the destination leaves the slow lane. */
const PROVEN = "proven_fast";
/** The destination a fifo line belongs to, for its alarm. */
const FIFO_DESTINATION = "fifo_destination";
/** A lapsed head still pending is looked at again after this long. */
const FIFO_RECHECK_MS = 60_000;
/** The head's message last sent by this object, and when it was due. */
const FIFO_HEAD_SENT = "fifo_head_sent";
/** A head neither in flight nor sent for this long is sent again (resendIdleHead). */
const FIFO_HEAD_IDLE_MS = 10_000;


export class DestinationHealth extends DurableObject<Env> {
  private readonly s: Services;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.s = servicesFor(env);
  }

  private get count(): number {
    return this.ctx.storage.kv.get<number>(COUNT) ?? 0;
  }

  /** `eventId`: the event whose forward gave up, named by delivery.exhausted alerts (looked up when not given). */
  async exhausted(destinationId: string, eventId?: string): Promise<HealthState> {
    return this.ctx.blockConcurrencyWhile(async () => {
      const count = this.count + 1;
      let disabledNow = false;
      if (count >= AUTO_DISABLE_THRESHOLD) {
        disabledNow = await disableForFailures(this.s, destinationId, count);
        if (!disabledNow) await writeFailureCount(this.s, destinationId, count);
      } else {
        await writeFailureCount(this.s, destinationId, count);
      }
      this.ctx.storage.kv.put(COUNT, count);
      if (disabledNow) {
        log("warn", "destination_auto_disabled", { destination_id: destinationId, failure_count: count });
      }
      await this.alerts.exhausted(destinationId, count, disabledNow, eventId);
      return { failure_count: count, disabled_now: disabledNow };
    });
  }

  async success(destinationId: string): Promise<HealthState> {
    return this.ctx.blockConcurrencyWhile(async () => {
      const before = this.count;
      if (before !== 0) {
        await writeFailureCount(this.s, destinationId, 0);
        this.ctx.storage.kv.put(COUNT, 0);
        await this.alerts.succeeded(destinationId, before);
      }
      return { failure_count: 0, disabled_now: false };
    });
  }

  // ---- alerts (src/alerts): decided by exhausted() and success(), stored by the alarm ----

  private alertsOutbox: AlertsOutbox | undefined;

  /** This destination's alerts: their outbox, their clock and where they are stored (tests replace the last two). */
  get alerts(): AlertsOutbox {
    return (this.alertsOutbox ??= new AlertsOutbox(this.ctx, this.s));
  }

  /**
   * The object's one alarm, shared by whatever part of it needs one: each part is called
   * in turn, does what is due, and sets the alarm again for what it still needs (a part
   * only ever brings the alarm forward, so none hides another's).
   */
  override async alarm(): Promise<void> {
    await this.alertsAlarm();
    await this.fifoAlarm();
  }

  /** The alerts' part of the alarm: the hour of exhausted forwards that ended, then the outbox. */
  async alertsAlarm(): Promise<void> {
    await this.alerts.alarm();
  }

  // ---- end of alerts ----

  async state(): Promise<{ failure_count: number }> {
    return { failure_count: this.count };
  }

  // ---- the gate (src/delivery/gate.ts): rate limit, in-flight cap, circuit breaker ----

  /** The clock of the gate (tests move it). */
  now: () => number = () => Date.now();

  private gateMemo: GateState | undefined;

  /**
   * The gate's state, kept in memory between calls. Written to storage when the breaker
   * changes state, and at every admission under a rate limit (its slots); the permits out
   * and the breaker's recent counts are not: an eviction (only after the object has been
   * idle) forgets them, which lets at most one more wave in and re-learns the counts.
   */
  private get gate(): GateState {
    if (!this.gateMemo) {
      this.gateMemo = this.ctx.storage.kv.get<GateState>(GATE) ?? emptyGate();
      // Proven fast once is kept apart, written once: an evicted object does not start slow again.
      if (this.ctx.storage.kv.get<boolean>(PROVEN)) this.gateMemo.proven = true;
    }
    return this.gateMemo;
  }

  private saveGate(g: GateState, breakerWas: string, always: boolean): void {
    if (always || g.breaker.state !== breakerWas) this.ctx.storage.kv.put(GATE, g);
  }

  private fifoLine: FifoLine | undefined;
  private get line(): FifoLine {
    return (this.fifoLine ??= new FifoLine(this.ctx.storage.sql));
  }

  /**
   * Which of these deliveries may start an attempt now; the others wait (gate.ts). For a
   * fifo destination only the head of its line may (fifo.ts), and then the gate decides.
   */
  async admit(destinationId: string, cfg: GateConfig, items: (GateItem & { fifo?: FifoItem })[]): Promise<Admission[]> {
    if (cfg.ordering === "fifo") await this.checkLapsedHead(destinationId);
    let lapseAt: number | null = null;
    const g = this.gate;
    const was = g.breaker.state;
    const now = this.now();
    const out = items.map((item): Admission => {
      if (cfg.ordering !== "fifo" || !item.fifo) return admitToGate(g, cfg, [item], now)[0]!;
      const verdict = this.line.ask(item.fifo, now);
      if (verdict.kind === "wait") return { kind: "hold", waitMs: FIFO_PARK_SECONDS * 1000, reason: "fifo" };
      if (verdict.kind === "settle") return { kind: "hold", waitMs: Math.max(1000, verdict.waitMs), reason: "fifo" };
      const a = admitToGate(g, { ...cfg, maxInFlight: 1 }, [item], now)[0]!;
      if (a.kind === "go") {
        this.line.started(item.id, now + a.startInMs + cfg.leaseMs);
        lapseAt = now + a.startInMs + cfg.leaseMs;
      } else this.line.heldBack(item.id, item.fifo.nextToken);
      return a;
    });
    this.saveGate(g, was, cfg.rateLimit !== null);
    if (was !== g.breaker.state) log("info", "destination_circuit", { destination_id: destinationId, state: g.breaker.state });
    // Should the head's outcome never come back, the alarm looks into it once its permit lapses.
    if (lapseAt !== null) await this.fifoAlarmBy(lapseAt, destinationId);
    return out;
  }

  /** Attempts that ended (or never started): their permits come back, and the circuit breaker learns. */
  async release(
    destinationId: string,
    ends: ReleaseEnd[],
    breaker?: BreakerConfig,
    fifo?: { leaseMs: number },
  ): Promise<void> {
    const g = this.gate;
    const was = g.breaker.state;
    const now = this.now();
    const next: FifoRow[] = [];
    // Armed before the line moves: should this object be evicted between the move and the
    // next head's send, the alarm sends it (fifoAlarm), not its parked message minutes later.
    if (fifo) await this.fifoAlarmBy(now + FIFO_HEAD_IDLE_MS, destinationId);
    for (const e of ends) {
      releaseToGate(g, e.deliveryId, e.end, e.durationMs, now, breaker);
      if (fifo) {
        const head = this.line.ended(e.deliveryId, e.final ?? false, e.retryInMs ?? 0, fifo.leaseMs, now);
        if (head) next.push(head);
      }
    }
    this.saveGate(g, was, false);
    if (g.proven && !this.ctx.storage.kv.get<boolean>(PROVEN)) this.ctx.storage.kv.put(PROVEN, true);
    // The console's 24-hour chart: counted here as attempts end, never read from the log.
    this.counts.record(now, ends);
    // The line moved on: its new head's message goes now (after its settle time), not when its parked one comes back.
    for (const head of next) await this.sendHead(destinationId, head);
    if (was !== g.breaker.state) {
      log(g.breaker.state === "open" ? "warn" : "info", "destination_circuit", { destination_id: destinationId, state: g.breaker.state, ...(g.breaker.state === "open" ? { open_ms: g.breaker.openMs } : {}) });
    }
  }

  /**
   * One wave's turn at the gate, in one call: the permits of the last wave's attempts come
   * back (release), then the next wave asks for its own (admit), exactly as the two calls
   * one after the other would do. Either part may be absent.
   */
  async turn(
    destinationId: string,
    ended: GateRelease | null,
    next: { cfg: GateConfig; items: (GateItem & { fifo?: FifoItem })[] } | null,
  ): Promise<Admission[]> {
    if (ended) await this.release(destinationId, ended.ends, ended.breaker, ended.fifo);
    return next ? this.admit(destinationId, next.cfg, next.items) : [];
  }

  /** The destination was enabled again (or its URL changed): its circuit breaker closes. */
  async resetCircuit(destinationId: string): Promise<void> {
    const g = this.gate;
    if (g.breaker.state === "closed" && g.buckets.length === 0) return;
    closeGate(g);
    this.saveGate(g, "", true);
    log("info", "destination_circuit", { destination_id: destinationId, state: "closed", reason: "reset" });
  }

  private async sendHead(destinationId: string, head: FifoRow): Promise<void> {
    const ref = parsePartitionName(head.partition);
    if (!ref) return;
    try {
      const wait = Math.max(0, Math.ceil(((idTimeMs(head.event_id) ?? 0) + FIFO_SETTLE_MS - this.now()) / 1000));
      await this.s.queues
        .deliver(destinationId)
        .send(deliverMessage(ref, head.event_id, [{ deliveryId: head.delivery_id, destinationId, token: head.token }]), wait > 0 ? { delaySeconds: wait } : undefined);
      this.ctx.storage.kv.put(FIFO_HEAD_SENT, { id: head.delivery_id, at: this.now() + wait * 1000 });
    } catch (err) {
      // Its parked message comes back within FIFO_PARK_SECONDS.
      log("error", "fifo_send_failed", { destination_id: destinationId, error: err instanceof Error ? err.name : "unknown" });
    }
  }

  /**
   * The head's permit lapsed with no word of how its attempt ended: its consumer died, or
   * the object was evicted before the outcome reached it. Its partition says: settled
   * (or gone), and the line moves on at once; still pending, and its own message (its
   * retry, the queue's redelivery of a message never acknowledged, or the partition's
   * lost-message recovery) brings it back as the head, so the line asks again later.
   */
  private async checkLapsedHead(destinationId: string): Promise<void> {
    const now = this.now();
    const head = this.line.lapsedHead(now);
    if (!head) return;
    const ref = parsePartitionName(head.partition);
    let status: string | null = null;
    if (ref) {
      try {
        status = await this.s.store(ref).deliveryStatus(head.delivery_id);
      } catch (err) {
        log("error", "fifo_head_check_failed", { destination_id: destinationId, error: err instanceof Error ? err.name : "unknown" });
        return;
      }
    }
    if (status === "pending") {
      this.line.started(head.delivery_id, now + FIFO_RECHECK_MS);
      await this.fifoAlarmBy(now + FIFO_RECHECK_MS, destinationId);
      return;
    }
    const next = this.line.ended(head.delivery_id, true, 0, 0, now);
    log("warn", "fifo_head_lapsed", { destination_id: destinationId, delivery_id: head.delivery_id, status });
    if (next) await this.sendHead(destinationId, next);
  }

  /** The fifo line's part of the alarm: a head whose permit lapsed is looked into (checkLapsedHead). */
  async fifoAlarm(): Promise<void> {
    const destinationId = this.ctx.storage.kv.get<string>(FIFO_DESTINATION);
    if (destinationId === undefined) return;
    this.inFifoAlarm = true;
    try {
      await this.checkLapsedHead(destinationId);
      await this.resendIdleHead(destinationId);
      const until = this.line.headInFlightUntil();
      if (until !== null) await this.fifoAlarmBy(until, destinationId);
      else if (this.line.summary().head !== null) await this.fifoAlarmBy(this.now() + FIFO_HEAD_IDLE_MS, destinationId);
    } finally {
      this.inFifoAlarm = false;
    }
  }

  /**
   * A head that is not in flight and whose message has not come for FIFO_HEAD_IDLE_MS
   * (its send was lost with an evicted object, or it was never sent): its message goes
   * again, with the token the line knows. A copy of a message still on its way is
   * harmless: its partition lets one message hold a delivery's claim at a time.
   */
  private async resendIdleHead(destinationId: string): Promise<void> {
    const head = this.line.headRow();
    if (!head || head.in_flight_until > 0) return;
    const sent = this.ctx.storage.kv.get<{ id: string; at: number }>(FIFO_HEAD_SENT);
    if (sent?.id === head.delivery_id && this.now() - sent.at < FIFO_HEAD_IDLE_MS) return;
    log("warn", "fifo_head_resent", { destination_id: destinationId, delivery_id: head.delivery_id });
    await this.sendHead(destinationId, head);
  }

  /** Set while the alarm runs: the alarm time getAlarm may still show is the one being spent. */
  private inFifoAlarm = false;

  /** Brings the alarm forward to `at` at the latest (never later: another part may need it sooner). */
  private async fifoAlarmBy(at: number, destinationId: string): Promise<void> {
    if (this.ctx.storage.kv.get<string>(FIFO_DESTINATION) !== destinationId) this.ctx.storage.kv.put(FIFO_DESTINATION, destinationId);
    // The object's clock may be a test's; the alarm runs on the real one.
    const wall = Date.now();
    const when = Math.max(wall, at - this.now() + wall);
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > when || (this.inFifoAlarm && current <= wall)) await this.ctx.storage.setAlarm(when);
  }

  /** A fifo destination's line: how many wait, and the head. */
  async fifoSummary(): Promise<{ waiting: number; head: string | null }> {
    return this.line.summary();
  }

  private attemptCounts: AttemptCounts | undefined;
  private get counts(): AttemptCounts {
    return (this.attemptCounts ??= new AttemptCounts(this.ctx.storage.sql));
  }

  /** Succeeded and failed attempts per hour over the last 24 hours, oldest first (delivery/attempt-counts.ts). */
  async hourlyCounts(): Promise<HourCount[]> {
    return this.counts.lastHours(this.now());
  }

  /** The gate's state, for tests and the console. */
  async gateState(): Promise<GateState> {
    return this.gate;
  }
}
