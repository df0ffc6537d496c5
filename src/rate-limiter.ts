/**
 * RateLimiter: a counter in a Durable Object, one object per thing counted. Exact across
 * every isolate (one object sees every request of what it counts), and cheap: a read and
 * a write of one value in its own storage per call.
 * - `key:<id>`: an API key's requests in fixed 60 s windows (API_RATE_LIMIT).
 * - `account:<id>`: an account's requests, all its keys together (ACCOUNT_API_RATE_LIMIT).
 * - `stored:<id>`: the bytes an account's events took today (UTC), reported by each
 *   isolate in batches (ingest/stored-bytes.ts), against MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY.
 * Over a limit the API answers 429 with Retry-After. (Cloudflare's Rate Limiting binding
 * counts per location and takes its limit from wrangler.toml, not from [vars];
 * docs/decisions.md.)
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "./config";

const API_WINDOW_MS = 60_000;

interface RateVerdict {
  ok: boolean;
  /** When not ok: seconds until the window ends. */
  retryAfterSeconds: number;
  remaining: number;
  /** The window counted in (its start, ms), for refund(). */
  window: number;
}

export interface StoredToday {
  /** The UTC day (days since the epoch) the total is of. */
  day: number;
  total: number;
}

export class RateLimiter extends DurableObject<Env> {
  /** The clock (tests move it). */
  now: () => number = () => Date.now();

  async hit(limit: number, windowMs: number = API_WINDOW_MS): Promise<RateVerdict> {
    const now = this.now();
    const start = now - (now % windowMs);
    const w = this.ctx.storage.kv.get<{ start: number; n: number }>("window");
    const n = w && w.start === start ? w.n : 0;
    if (n >= limit) return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((start + windowMs - now) / 1000)), remaining: 0, window: start };
    this.ctx.storage.kv.put("window", { start, n: n + 1 });
    return { ok: true, retryAfterSeconds: 0, remaining: limit - n - 1, window: start };
  }

  /**
   * Gives back a request hit() counted in `window` that another limit refused (the key's
   * and the account's objects are asked at once): a request counts only where it passed both.
   */
  async refund(window: number): Promise<void> {
    const w = this.ctx.storage.kv.get<{ start: number; n: number }>("window");
    if (w && w.start === window && w.n > 0) this.ctx.storage.kv.put("window", { start: window, n: w.n - 1 });
  }

  /**
   * Adds bytes stored on `day` and answers the day's total. A new day starts at 0; bytes
   * of a day already over (an isolate's late report) are not added to the next one.
   */
  async addStored(day: number, bytes: number): Promise<StoredToday> {
    const s = this.ctx.storage.kv.get<StoredToday>("stored");
    const current = s && s.day >= day ? s : { day, total: 0 };
    if (current.day === day && bytes > 0) {
      current.total += bytes;
      this.ctx.storage.kv.put("stored", current);
    }
    return current;
  }
}
