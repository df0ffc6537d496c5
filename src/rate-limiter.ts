/**
 * RateLimiter: one Durable Object per API key (named `key:<id>`), counting its requests
 * in fixed windows. Exact across every isolate (one object sees every request of its
 * key), and cheap: a read and a write of one value in its own storage per request.
 * API_RATE_LIMIT requests per 60 s; over it the API answers 429 with Retry-After.
 * (Cloudflare's Rate Limiting binding counts per location and takes its limit from
 * wrangler.toml, not from [vars]; docs/decisions.md.)
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "./config";

export const API_WINDOW_MS = 60_000;

export interface RateVerdict {
  ok: boolean;
  /** When not ok: seconds until the window ends. */
  retryAfterSeconds: number;
  remaining: number;
}

export class RateLimiter extends DurableObject<Env> {
  /** The clock (tests move it). */
  now: () => number = () => Date.now();

  async hit(limit: number, windowMs: number = API_WINDOW_MS): Promise<RateVerdict> {
    const now = this.now();
    const start = now - (now % windowMs);
    const w = this.ctx.storage.kv.get<{ start: number; n: number }>("window");
    const n = w && w.start === start ? w.n : 0;
    if (n >= limit) return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((start + windowMs - now) / 1000)), remaining: 0 };
    this.ctx.storage.kv.put("window", { start, n: n + 1 });
    return { ok: true, retryAfterSeconds: 0, remaining: limit - n - 1 };
  }
}
