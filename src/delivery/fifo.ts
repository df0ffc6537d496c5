/**
 * The line of a fifo destination, kept by its DestinationHealth object in its own SQLite
 * storage (durable: it survives eviction). Each delivery to the destination joins the
 * line when the deliver consumer first brings it; the one with the smallest key is the
 * head, and only the head may start, one attempt at a time. The head leaves the line when
 * it succeeds or is given up (exhausted, cancelled); its retries keep their schedule and
 * it stays the head meanwhile. The object then sends the next head's deliver message
 * itself, so those waiting need not poll; each waiting delivery also has a message of
 * its own due after FIFO_PARK_SECONDS, in case that send is lost.
 *
 * Ingest order is the order of event ids (time first, then the shard). Events of one
 * source's day in other shards are stored and queued independently, so the head starts
 * only once its event is FIFO_SETTLE_MS old: an earlier event from another partition has
 * had that long to join. Redeliveries and replays of events older than FIFO_REPLAY_AGE_MS
 * join behind everything already in line, in event order among themselves.
 */

import { idTimeMs } from "../store/ids";

export const FIFO_SETTLE_MS = 2_000;
export const FIFO_PARK_SECONDS = 300;
const FIFO_REPLAY_AGE_MS = 60_000;

export interface FifoItem {
  deliveryId: string;
  eventId: string;
  /** The partition's name (store/ids.ts partitionName). */
  partition: string;
  /** The token the delivery will carry if it is held now (the consumer sets it). */
  nextToken: string;
}

type FifoVerdict = { kind: "head" } | { kind: "settle"; waitMs: number } | { kind: "wait" };

export interface FifoRow {
  delivery_id: string;
  key: string;
  event_id: string;
  partition: string;
  token: string;
  in_flight_until: number;
}

const idMs = (id: string) => idTimeMs(id) ?? 0;

export class FifoLine {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(`CREATE TABLE IF NOT EXISTS fifo_line (
      delivery_id TEXT PRIMARY KEY,
      key TEXT NOT NULL,
      event_id TEXT NOT NULL,
      partition TEXT NOT NULL,
      token TEXT NOT NULL,
      in_flight_until INTEGER NOT NULL DEFAULT 0
    )`);
    sql.exec("CREATE INDEX IF NOT EXISTS fifo_line_key ON fifo_line (key)");
  }

  private head(): FifoRow | null {
    return (this.sql.exec("SELECT * FROM fifo_line ORDER BY key LIMIT 1").toArray()[0] as unknown as FifoRow | undefined) ?? null;
  }

  private row(id: string): FifoRow | null {
    return (this.sql.exec("SELECT * FROM fifo_line WHERE delivery_id = ?", id).toArray()[0] as unknown as FifoRow | undefined) ?? null;
  }

  /** Joins the line (or updates its token), and says whether this delivery may start now. */
  ask(item: FifoItem, now: number): FifoVerdict {
    if (!this.row(item.deliveryId)) {
      const last = this.sql.exec("SELECT key FROM fifo_line ORDER BY key DESC LIMIT 1").toArray()[0] as { key: string } | undefined;
      const late = last !== undefined && item.eventId < last.key && idMs(item.eventId) < now - FIFO_REPLAY_AGE_MS;
      const key = late ? `${last.key}|${item.eventId}` : item.eventId;
      this.sql.exec(
        "INSERT INTO fifo_line (delivery_id, key, event_id, partition, token) VALUES (?, ?, ?, ?, ?)",
        item.deliveryId,
        key,
        item.eventId,
        item.partition,
        item.nextToken,
      );
    }
    const head = this.head()!;
    const hold = (v: FifoVerdict): FifoVerdict => {
      this.sql.exec("UPDATE fifo_line SET token = ? WHERE delivery_id = ?", item.nextToken, item.deliveryId);
      return v;
    };
    if (head.delivery_id !== item.deliveryId) return hold({ kind: "wait" });
    // The head's own retry: it keeps its schedule.
    if (head.in_flight_until > 0) return { kind: "head" };
    // One that joined behind it started first (it arrived late from another partition): wait for it.
    const other = this.sql.exec("SELECT 1 FROM fifo_line WHERE in_flight_until > ? AND delivery_id != ? LIMIT 1", now, item.deliveryId).toArray();
    if (other.length > 0) return hold({ kind: "wait" });
    const young = idMs(item.eventId) + FIFO_SETTLE_MS - now;
    if (young > 0) return hold({ kind: "settle", waitMs: young });
    return { kind: "head" };
  }

  /** The head started an attempt: in flight until then (its permit's lease). */
  started(deliveryId: string, until: number): void {
    this.sql.exec("UPDATE fifo_line SET in_flight_until = ? WHERE delivery_id = ?", until, deliveryId);
  }

  /** The head was held after all (its rate slot, the breaker): its message comes back with this token. */
  heldBack(deliveryId: string, token: string): void {
    this.sql.exec("UPDATE fifo_line SET token = ?, in_flight_until = 0 WHERE delivery_id = ?", token, deliveryId);
  }

  /** An attempt ended: `final` (succeeded, exhausted, cancelled, or no longer ours) leaves the line; returns the next head to send, if it changed. */
  ended(deliveryId: string, final: boolean, retryInMs: number, leaseMs: number, now: number): FifoRow | null {
    const before = this.head();
    if (final) this.sql.exec("DELETE FROM fifo_line WHERE delivery_id = ?", deliveryId);
    else if (retryInMs > 0) this.sql.exec("UPDATE fifo_line SET in_flight_until = ? WHERE delivery_id = ?", now + retryInMs + leaseMs, deliveryId);
    else this.sql.exec("UPDATE fifo_line SET in_flight_until = 0 WHERE delivery_id = ?", deliveryId);
    const after = this.head();
    return after && after.delivery_id !== before?.delivery_id ? after : null;
  }

  /** The head of the line, if any. */
  headRow(): FifoRow | null {
    return this.head();
  }

  /** The head, when its attempt's permit lapsed with no outcome. */
  lapsedHead(now: number): FifoRow | null {
    const head = this.head();
    return head && head.in_flight_until > 0 && head.in_flight_until <= now ? head : null;
  }

  /** Until when the head's attempt holds the line (null: none in flight). */
  headInFlightUntil(): number | null {
    const head = this.head();
    return head && head.in_flight_until > 0 ? head.in_flight_until : null;
  }

  /** How many wait, and the head: for tests and the console. */
  summary(): { waiting: number; head: string | null } {
    const n = (this.sql.exec("SELECT count(*) AS n FROM fifo_line").toArray()[0] as { n: number }).n;
    return { waiting: n, head: this.head()?.delivery_id ?? null };
  }
}
