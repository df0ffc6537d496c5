/**
 * The retry policy: given the outcome of an attempt and its place in the schedule,
 * retry after some delay, or stop. Attempt 1 happens at fan-out; the schedule lists the
 * delays before attempts 2, 3, … (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
 */
/** Cloudflare Queues delays a message at most this long (send or retry). */
export const MAX_QUEUE_DELAY_SECONDS = 86_400;

type RetryDecision = { retry: true; delaySeconds: number } | { retry: false; reason: "succeeded" | "gone" | "exhausted" };

interface AttemptOutcome {
  /** HTTP status, or null for transport errors, timeouts and refused URLs. */
  status: number | null;
  retryAfter?: string | null;
}

/** Jitter: up to +10 % of the delay, so a burst of failures does not come back as a burst; never past the queue's maximum delay. */
export function withJitter(delay: number, random: () => number): number {
  return Math.min(Math.round(delay + delay * 0.1 * random()), MAX_QUEUE_DELAY_SECONDS);
}

/** Retry-After in seconds (delta-seconds or an HTTP date), or null. */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | null {
  if (!value) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  // An HTTP date names its day and month ("Sun, 26 Apr 2026 09:10:00 GMT").
  if (!/[A-Za-z]{3}/.test(v)) return null;
  const date = Date.parse(v);
  if (Number.isNaN(date)) return null;
  return Math.max(0, Math.ceil((date - nowMs) / 1000));
}

/**
 * @param attemptInRun the attempt just made, counted from 1 since the delivery was queued
 */
export function decide(
  outcome: AttemptOutcome,
  attemptInRun: number,
  schedule: readonly number[],
  nowMs: number,
  random: () => number = Math.random,
): RetryDecision {
  if (outcome.status !== null && outcome.status >= 200 && outcome.status < 300) return { retry: false, reason: "succeeded" };
  if (outcome.status === 410) return { retry: false, reason: "gone" };
  if (attemptInRun > schedule.length) return { retry: false, reason: "exhausted" };
  let delay = schedule[attemptInRun - 1]!;
  if (outcome.status === 429 || outcome.status === 503) {
    const asked = parseRetryAfter(outcome.retryAfter, nowMs);
    // Honoured within the schedule's bounds: no sooner than its shortest delay, no later than its longest.
    if (asked !== null) {
      const bounded = Math.min(Math.max(asked, Math.min(...schedule)), Math.max(...schedule), MAX_QUEUE_DELAY_SECONDS);
      return { retry: true, delaySeconds: bounded };
    }
  }
  return { retry: true, delaySeconds: withJitter(delay, random) };
}
