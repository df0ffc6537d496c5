/**
 * The alerts of one destination, decided and emitted by its health object
 * (destination-health.ts), which alone knows when failure_count crosses 5, when the
 * destination is disabled, when it recovers and when forwards give up.
 *
 * Deciding is synchronous and local: an alert is written to an outbox in the object's
 * own storage, and the object's alarm is set; nothing here waits on D1 or a partition
 * while a delivery reports, and nothing here fails it. The alarm stores each alert in
 * the account's alerts source (store.ts), one at a time, in order, and retries (1 s
 * doubling to 5 min) until it is stored: an alert is never dropped for a storage error.
 * It is dropped only by rule: the destination is gone, its account has no alerts source,
 * or it belongs to the alerts source (then none is ever decided for it again).
 *
 * delivery.exhausted is at most one per hour: the first forward given up opens an hour,
 * every one in it is counted, and the hour's one alert (count, the latest event_id) is
 * emitted when it ends.
 */
import { log } from "../log";
import type { Services } from "../services";
import { EXHAUSTED_WINDOW_MS, FAILING_AT, alertData, type AlertType, type PendingAlert } from "./alerts";
import { alertContext } from "./context";
import { latestExhaustedEvent } from "./latest-exhausted";
import { storeAlert, type StoreAlert } from "./store";

const KV = {
  outbox: "alerts.outbox",
  seq: "alerts.seq",
  window: "alerts.window",
  /** Set once the destination is known to belong to the alerts source. */
  self: "alerts.self",
} as const;

/** The hour of delivery.exhausted being counted. */
interface ExhaustedWindow {
  destinationId: string;
  since: number;
  until: number;
  count: number;
  /** When the latest forward gave up, and its event (undefined: not told, looked up). */
  at: number;
  eventId?: string | undefined;
}

/** Alerts of one destination waiting at most: far more than a long outage leaves (a few an hour). */
const MAX_OUTBOX = 200;
/** Between two alerts of one destination, so they reach an endpoint in the order they happened. */
const ALERT_SPACING_MS = 1_000;
const RETRY_MS = 1_000;
const RETRY_MAX_MS = 300_000;

export class AlertsOutbox {
  /** The clock deciding the hours and the times alerts tell (tests move it). */
  now: () => number = () => Date.now();
  /** Where alerts are stored (tests make it fail). */
  store: StoreAlert = storeAlert;
  private failures = 0;
  private running: Promise<void> | null = null;
  /** Set while the object's alarm runs: the alarm time getAlarm may still show is spent. */
  private inAlarm = false;

  constructor(
    private readonly ctx: DurableObjectState,
    private readonly s: Services,
  ) {}

  private get kv() {
    return this.ctx.storage.kv;
  }

  get pending(): PendingAlert[] {
    return this.kv.get<PendingAlert[]>(KV.outbox) ?? [];
  }

  /** A forward to the destination gave up; failure_count is now `failureCount`. Never throws. */
  async exhausted(destinationId: string, failureCount: number, disabledNow: boolean, eventId: string | undefined): Promise<void> {
    await this.safely(destinationId, () => {
      if (this.kv.get<boolean>(KV.self)) return;
      const now = this.now();
      let w = this.kv.get<ExhaustedWindow>(KV.window);
      if (w && now >= w.until) {
        this.closeWindow(w);
        w = undefined;
      }
      const next: ExhaustedWindow = w ?? { destinationId, since: now, until: now + EXHAUSTED_WINDOW_MS, count: 0, at: now };
      next.count++;
      next.at = now;
      next.eventId = eventId;
      this.kv.put(KV.window, next);
      // Once per crossing: the count only ever steps by one, and a success resets it.
      if (failureCount === FAILING_AT) this.add(destinationId, "destination.failing", now, { failureCount });
      if (disabledNow) this.add(destinationId, "destination.disabled", now, { failureCount });
    });
  }

  /** A forward succeeded; failure_count was `previousCount` and is 0 now. Never throws. */
  async succeeded(destinationId: string, previousCount: number): Promise<void> {
    if (previousCount < FAILING_AT) return;
    await this.safely(destinationId, () => {
      if (this.kv.get<boolean>(KV.self)) return;
      this.add(destinationId, "destination.recovered", this.now(), { failureCount: previousCount });
    });
  }

  /** The alarm's part for alerts: the hour that ended, then the outbox. */
  async alarm(): Promise<void> {
    this.inAlarm = true;
    try {
      await this.run();
    } finally {
      this.inAlarm = false;
    }
  }

  /** Emits what is due; one run at a time. */
  run(): Promise<void> {
    this.running ??= this.drain().finally(() => (this.running = null));
    return this.running;
  }

  private async drain(): Promise<void> {
    const w = this.kv.get<ExhaustedWindow>(KV.window);
    if (w && this.now() >= w.until) this.closeWindow(w);
    for (;;) {
      const alert = this.pending[0];
      if (!alert) break;
      let stored: boolean;
      try {
        stored = await this.emit(alert);
      } catch (err) {
        this.failures++;
        this.update(alert.key, (a) => ({ ...a, tries: a.tries + 1 }));
        log("warn", "alert_store_failed", { destination_id: alert.destinationId, type: alert.type, tries: alert.tries + 1, error: err instanceof Error ? err.name : "unknown" });
        return this.arm(Math.min(RETRY_MS * 2 ** (this.failures - 1), RETRY_MAX_MS));
      }
      this.failures = 0;
      this.remove(alert.key);
      if (stored && this.pending.length > 0) return this.arm(ALERT_SPACING_MS);
    }
    return this.arm();
  }

  /** Stores one alert where it goes; false when it goes nowhere (by rule). */
  private async emit(alert: PendingAlert): Promise<boolean> {
    const s = this.s;
    const c = await alertContext(s, alert.destinationId);
    if (!c || c.alertsSourceId === null) return false;
    if (c.onAlertsSource) {
      // An alert endpoint failing must not feed itself: never an alert about it.
      this.kv.put(KV.self, true);
      this.kv.delete(KV.window);
      this.kv.put(KV.outbox, []);
      return false;
    }
    let a = alert;
    if (a.type === "delivery.exhausted" && a.eventId === undefined) {
      const eventId = await latestExhaustedEvent(s, c.sourceId, a.destinationId, a.at);
      a = this.update(a.key, (x) => ({ ...x, eventId })) ?? { ...a, eventId };
    }
    const result = await this.store(s, c.alertsSourceId, { type: a.type, key: a.key, data: alertData(a, c) });
    if (result === "duplicate") log("info", "alert_already_stored", { destination_id: a.destinationId, type: a.type });
    return result !== "source_gone";
  }

  /** The hour of exhausted forwards ended: its one alert goes to the outbox. */
  private closeWindow(w: ExhaustedWindow): void {
    this.kv.delete(KV.window);
    this.add(w.destinationId, "delivery.exhausted", w.at, { count: w.count, since: w.since, eventId: w.eventId });
  }

  private add(destinationId: string, type: AlertType, at: number, extra: Partial<PendingAlert>): void {
    const seq = (this.kv.get<number>(KV.seq) ?? 0) + 1;
    this.kv.put(KV.seq, seq);
    const alert: PendingAlert = { key: `alert:${destinationId}:${seq}:${at}`, type, destinationId, at, tries: 0, ...extra };
    const list = this.pending;
    list.push(alert);
    if (list.length > MAX_OUTBOX) {
      const dropped = list.shift()!;
      log("error", "alert_outbox_full", { destination_id: destinationId, dropped_type: dropped.type });
    }
    this.kv.put(KV.outbox, list);
  }

  private update(key: string, f: (a: PendingAlert) => PendingAlert): PendingAlert | undefined {
    const list = this.pending;
    const i = list.findIndex((a) => a.key === key);
    if (i < 0) return undefined;
    list[i] = f(list[i]!);
    this.kv.put(KV.outbox, list);
    return list[i];
  }

  private remove(key: string): void {
    this.kv.put(
      KV.outbox,
      this.pending.filter((a) => a.key !== key),
    );
  }

  /** Runs a decision and arms the alarm; an error is logged, never thrown at a delivery. */
  private async safely(destinationId: string, decide: () => void): Promise<void> {
    try {
      decide();
      await this.arm();
    } catch (err) {
      log("error", "alert_decision_failed", { destination_id: destinationId, error: err instanceof Error ? err.name : "unknown" });
    }
  }

  /**
   * Sets the object's alarm for what alerts need next: the outbox (after `delayMs`), or
   * the end of the hour being counted. The alarm is shared with the rest of the object:
   * it is only ever brought forward here, and each part re-arms what it needs.
   */
  private async arm(delayMs = 0): Promise<void> {
    const wall = Date.now();
    const due: number[] = [];
    if (this.pending.length > 0) due.push(wall + delayMs);
    const w = this.kv.get<ExhaustedWindow>(KV.window);
    if (w) due.push(wall + Math.max(0, w.until - this.now()));
    if (due.length === 0) return;
    const at = Math.min(...due);
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at || (this.inAlarm && current <= wall)) await this.ctx.storage.setAlarm(at);
  }
}
