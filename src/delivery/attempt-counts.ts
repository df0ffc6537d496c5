/**
 * A destination's succeeded and failed attempts per UTC hour, counted by its
 * DestinationHealth object as attempts end (the consumer's release of each wave), so the
 * console's 24-hour chart is one small read, never a walk of the attempt log.
 *
 * One row per hour in the object's own SQLite; rows older than KEEP_HOURS are dropped
 * when a new hour starts. An attempt that got no answer or a non-2xx answer is a failure,
 * a 2xx a success; a cancelled delivery (or one that never started) is not an attempt
 * made and counts nothing. Counting is best effort in one way: a release the consumer
 * could not make (the object unreachable) is lost from the chart, never the log.
 */
import type { AttemptEnd } from "./gate";

export const HOUR_MS = 3_600_000;
/** Hours kept: the chart shows 24, a day more is room for a clock that moved. */
export const KEEP_HOURS = 48;

export interface HourCount {
  /** The hour's start, Unix milliseconds. */
  hour: number;
  succeeded: number;
  failed: number;
}

/** How an attempt's end counts in the chart, if at all. */
function countAs(end: AttemptEnd): "succeeded" | "failed" | null {
  if (end === "succeeded") return "succeeded";
  if (end === "failed" || end === "answered") return "failed";
  return null;
}

export class AttemptCounts {
  private prunedHour = -1;

  constructor(private readonly sql: SqlStorage) {
    sql.exec(`CREATE TABLE IF NOT EXISTS attempt_counts (
      hour INTEGER PRIMARY KEY,
      succeeded INTEGER NOT NULL DEFAULT 0,
      failed INTEGER NOT NULL DEFAULT 0
    )`);
  }

  /** Adds a wave's ends to the hour of `now`: one write, none when nothing counts. */
  record(now: number, ends: readonly { end: AttemptEnd }[]): void {
    let succeeded = 0;
    let failed = 0;
    for (const e of ends) {
      const as = countAs(e.end);
      if (as === "succeeded") succeeded++;
      else if (as === "failed") failed++;
    }
    if (succeeded === 0 && failed === 0) return;
    const hour = Math.floor(now / HOUR_MS) * HOUR_MS;
    this.sql.exec(
      "INSERT INTO attempt_counts (hour, succeeded, failed) VALUES (?, ?, ?) ON CONFLICT (hour) DO UPDATE SET succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed",
      hour,
      succeeded,
      failed,
    );
    if (hour !== this.prunedHour) {
      this.prunedHour = hour;
      this.sql.exec("DELETE FROM attempt_counts WHERE hour < ?", hour - KEEP_HOURS * HOUR_MS);
    }
  }

  /** The last `hours` hours up to the one holding `now`, oldest first, empty hours as zeros. */
  lastHours(now: number, hours = 24): HourCount[] {
    const current = Math.floor(now / HOUR_MS) * HOUR_MS;
    const first = current - (hours - 1) * HOUR_MS;
    const rows = this.sql
      .exec<{ hour: number; succeeded: number; failed: number }>("SELECT hour, succeeded, failed FROM attempt_counts WHERE hour >= ? AND hour <= ?", first, current)
      .toArray();
    const byHour = new Map(rows.map((r) => [r.hour, r]));
    return Array.from({ length: hours }, (_, i) => {
      const hour = first + i * HOUR_MS;
      const r = byHour.get(hour);
      return { hour, succeeded: r?.succeeded ?? 0, failed: r?.failed ?? 0 };
    });
  }
}
