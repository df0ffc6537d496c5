/**
 * Alerts: what an account is told about its destinations, as events of its alerts source
 * (provider krafter), so they reach its endpoints through ordinary destinations, with
 * filters, signing, retries, the attempt log, redeliver and replay. PRODUCT.md, "Alerts".
 *
 * An alert event's payload is its `data` (the envelope a destination receives is
 * `{ event: type, data, source_id }`, source_id being the alerts source's); `data` always
 * holds destination_id, source_id (the destination's own source), url and at (RFC 3339).
 *
 * The destination's health object decides them (destination-health.ts, outbox.ts); this
 * module says what they are.
 */
import { rfc3339 } from "../time";

export const alertTypes = ["destination.failing", "destination.disabled", "destination.recovered", "delivery.exhausted"] as const;
export type AlertType = (typeof alertTypes)[number];

/** `destination.failing` when failure_count reaches this: half the auto-disable threshold (10). */
export const FAILING_AT = 5;
/** `delivery.exhausted` tells of one hour of them, from the first. */
export const EXHAUSTED_WINDOW_MS = 3_600_000;

/** One alert decided and not yet stored: what happened, not yet where it goes. */
export interface PendingAlert {
  /** The dedupe key of its event: the same on every try, so a retried emission is stored once. */
  key: string;
  type: AlertType;
  destinationId: string;
  /** When it happened (ms); for delivery.exhausted, when the latest forward gave up. */
  at: number;
  /** failing and disabled: failure_count then; recovered: the count the success reset. */
  failureCount?: number;
  /** delivery.exhausted: how many forwards gave up in the hour, and when the first did. */
  count?: number;
  since?: number;
  /** delivery.exhausted: the latest one's event; undefined while not known (looked up when stored). */
  eventId?: string | null;
  /** Failed tries to store it so far. */
  tries: number;
}

/** Where an alert about a destination goes, read from D1 when it is stored. */
export interface AlertContext {
  /** The destination's own source. */
  sourceId: string;
  url: string;
  /** True when the destination belongs to the alerts source: no alerts about it, ever. */
  onAlertsSource: boolean;
  /** The account's alerts source, or null when it has none (the alert goes nowhere). */
  alertsSourceId: string | null;
}

/** The alert event's payload (its `data`). */
export function alertData(a: PendingAlert, c: AlertContext): Record<string, unknown> {
  const base = { destination_id: a.destinationId, source_id: c.sourceId, url: c.url, at: rfc3339(a.at) };
  switch (a.type) {
    case "destination.failing":
    case "destination.disabled":
      return { ...base, failure_count: a.failureCount };
    case "destination.recovered":
      return { ...base, failure_count: 0, previous_failure_count: a.failureCount };
    case "delivery.exhausted":
      return { ...base, count: a.count, event_id: a.eventId ?? null, since: rfc3339(a.since ?? a.at) };
  }
}
