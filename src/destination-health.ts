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
import { admit as admitToGate, close as closeGate, emptyGate, release as releaseToGate, type Admission, type AttemptEnd, type BreakerConfig, type GateConfig, type GateItem, type GateState } from "./delivery/gate";
import { FIFO_PARK_SECONDS, FIFO_SETTLE_MS, FifoLine, type FifoItem, type FifoRow } from "./delivery/fifo";
import { deliverMessage } from "./delivery/messages";
import { servicesFor } from "./services";
import { idTimeMs, parsePartitionName } from "./store/ids";
import { log } from "./log";
import { AlertsOutbox } from "./alerts/outbox";
import { AttemptCounts, type HourCount } from "./delivery/attempt-counts";

export const AUTO_DISABLE_THRESHOLD = 10;

export interface HealthState {
  failure_count: number;
  /** true when this call flipped the destination to disabled. */
  disabled_now: boolean;
}

const COUNT = "failure_count";
const GATE = "gate";


export class DestinationHealth extends DurableObject<Env> {
  private get count(): number {
    return this.ctx.storage.kv.get<number>(COUNT) ?? 0;
  }

  /** `eventId`: the event whose forward gave up, named by delivery.exhausted alerts (looked up when not given). */
  async exhausted(destinationId: string, eventId?: string): Promise<HealthState> {
    return this.ctx.blockConcurrencyWhile(async () => {
      const count = this.count + 1;
      let disabledNow = false;
      if (count >= AUTO_DISABLE_THRESHOLD) {
        const flipped = await this.env.DB.prepare(
          "UPDATE destinations SET failure_count = ?1, enabled = 0, updated_at = ?2 WHERE id = ?3 AND enabled = 1 RETURNING id",
        )
          .bind(count, Date.now(), destinationId)
          .first();
        disabledNow = flipped !== null;
        if (!disabledNow) await this.writeCount(destinationId, count);
      } else {
        await this.writeCount(destinationId, count);
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
        await this.writeCount(destinationId, 0);
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
    return (this.alertsOutbox ??= new AlertsOutbox(this.ctx, this.env));
  }

  /**
   * The object's one alarm, shared by whatever part of it needs one: each part is called
   * in turn, does what is due, and sets the alarm again for what it still needs (a part
   * only ever brings the alarm forward, so none hides another's).
   */
  override async alarm(): Promise<void> {
    await this.alertsAlarm();
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
    return (this.gateMemo ??= this.ctx.storage.kv.get<GateState>(GATE) ?? emptyGate());
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
    const g = this.gate;
    const was = g.breaker.state;
    const now = this.now();
    const out = items.map((item): Admission => {
      if (cfg.ordering !== "fifo" || !item.fifo) return admitToGate(g, cfg, [item], now)[0]!;
      const verdict = this.line.ask(item.fifo, now);
      if (verdict.kind === "wait") return { kind: "hold", waitMs: FIFO_PARK_SECONDS * 1000, reason: "fifo" };
      if (verdict.kind === "settle") return { kind: "hold", waitMs: Math.max(1000, verdict.waitMs), reason: "fifo" };
      const a = admitToGate(g, { ...cfg, maxInFlight: 1 }, [item], now)[0]!;
      if (a.kind === "go") this.line.started(item.id, now + a.startInMs + cfg.leaseMs);
      else this.line.heldBack(item.id, item.fifo.nextToken);
      return a;
    });
    this.saveGate(g, was, cfg.rateLimit !== null);
    if (was !== g.breaker.state) log("info", "destination_circuit", { destination_id: destinationId, state: g.breaker.state });
    return out;
  }

  /** Attempts that ended (or never started): their permits come back, and the circuit breaker learns. */
  async release(
    destinationId: string,
    ends: { deliveryId: string; end: AttemptEnd; durationMs: number; final?: boolean; retryInMs?: number }[],
    breaker?: BreakerConfig,
    fifo?: { leaseMs: number },
  ): Promise<void> {
    const g = this.gate;
    const was = g.breaker.state;
    const now = this.now();
    const next: FifoRow[] = [];
    for (const e of ends) {
      releaseToGate(g, e.deliveryId, e.end, e.durationMs, now, breaker);
      if (fifo) {
        const head = this.line.ended(e.deliveryId, e.final ?? false, e.retryInMs ?? 0, fifo.leaseMs, now);
        if (head) next.push(head);
      }
    }
    this.saveGate(g, was, false);
    // The console's 24-hour chart: counted here as attempts end, never read from the log.
    this.counts.record(now, ends);
    // The line moved on: its new head's message goes now (after its settle time), not when its parked one comes back.
    for (const head of next) await this.sendHead(destinationId, head);
    if (was !== g.breaker.state) {
      log(g.breaker.state === "open" ? "warn" : "info", "destination_circuit", { destination_id: destinationId, state: g.breaker.state, ...(g.breaker.state === "open" ? { open_ms: g.breaker.openMs } : {}) });
    }
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
      await servicesFor(this.env)
        .queues.deliver(destinationId)
        .send(deliverMessage(ref, head.event_id, [{ deliveryId: head.delivery_id, destinationId, token: head.token }]), wait > 0 ? { delaySeconds: wait } : undefined);
    } catch (err) {
      // Its parked message comes back within FIFO_PARK_SECONDS.
      log("error", "fifo_send_failed", { destination_id: destinationId, error: err instanceof Error ? err.name : "unknown" });
    }
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

  private async writeCount(destinationId: string, count: number): Promise<void> {
    await this.env.DB.prepare("UPDATE destinations SET failure_count = ?1 WHERE id = ?2")
      .bind(count, destinationId)
      .run();
  }
}

/** The stub for a destination's health object. */
export function healthOf(env: Env, destinationId: string) {
  return env.DESTINATION_HEALTH.get(env.DESTINATION_HEALTH.idFromName(destinationId));
}
