/**
 * MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: how many bytes of events (bodies and kept headers)
 * an account may store per UTC day, counted off the ingest path.
 *
 * Ingest makes no extra call for it. Each isolate adds up the bytes it stored per account
 * in memory and reports them to the account's counter (a RateLimiter object named
 * `stored:<account id>`) at most once per STORED_BYTES_FLUSH_MS (1 s), from the
 * waitUntil of the request that found nothing scheduled; the counter answers the day's
 * total, which the isolate keeps. An ingest is refused (429, nothing stored) when the
 * last total this isolate learnt, plus what it stored since, plus the event would pass
 * the quota.
 *
 * Within a day totals only grow, so a total learnt earlier is a lower bound: staleness
 * can let events through, never refuse one wrongly. An isolate learns the account's
 * total within one flush (≤ 1 s plus a round trip) of storing an event, so past the quota
 * each isolate taking the account's events accepts at most what it stores in that time
 * (and a first event, on an isolate that has not stored one for the account today).
 * README, Limits, quotas and flow control, states the bound.
 */
import { log } from "../log";
import type { Services } from "../services";
import { dayOf, dayStart } from "../store/ids";
import { TtlCache } from "../ttl-cache";

const ACCOUNTS = 10_000;

const key = (accountId: string, day: number) => `${accountId}/${day}`;

/** The day's total each account's counter last answered here (expires with its day). */
const known = new TtlCache<string, number>(ACCOUNTS);
/** Bytes stored here and not yet sent, and bytes sent whose answer has not come. */
const pending = new Map<string, { accountId: string; day: number; bytes: number }>();
const inFlight = new Map<string, number>();
/** A request holds the next flush in its waitUntil; until it takes the batch, others only add to it. */
let scheduled = false;
let lastFlushAt = 0;

/** The bytes an event takes: its body and the headers it keeps (names and values). */
export function storedSize(body: Uint8Array, headers: Record<string, string>): number {
  let n = body.byteLength;
  for (const [name, value] of Object.entries(headers)) n += name.length + value.length;
  return n;
}

/**
 * Whether storing `bytes` more for the account today would pass the quota, as far as this
 * isolate knows: then the seconds until the next UTC midnight, when it starts again at 0.
 */
export function overStoredQuota(s: Services, accountId: string, bytes: number, now: number): { retryAfterSeconds: number } | null {
  const day = dayOf(now);
  const k = key(accountId, day);
  const total = (known.get(k, now)?.value ?? 0) + (pending.get(k)?.bytes ?? 0) + (inFlight.get(k) ?? 0);
  if (total + bytes <= s.config.maxStoredBytesPerAccountPerDay) return null;
  return { retryAfterSeconds: Math.max(1, Math.ceil((dayStart(day + 1) - now) / 1000)) };
}

/** Counts an event stored for the account on `day`; the report goes out within STORED_BYTES_FLUSH_MS. */
export function countStored(s: Services, ctx: Pick<ExecutionContext, "waitUntil">, accountId: string, day: number, bytes: number): void {
  const k = key(accountId, day);
  const p = pending.get(k);
  if (p) p.bytes += bytes;
  else pending.set(k, { accountId, day, bytes });
  if (scheduled) return;
  scheduled = true;
  ctx.waitUntil(flush(s));
}

async function flush(s: Services): Promise<void> {
  try {
    const wait = lastFlushAt + s.config.storedBytesFlushMs - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  } finally {
    scheduled = false;
  }
  lastFlushAt = Date.now();
  const batch = [...pending.values()];
  pending.clear();
  await Promise.all(
    batch.map(async ({ accountId, day, bytes }) => {
      const k = key(accountId, day);
      inFlight.set(k, (inFlight.get(k) ?? 0) + bytes);
      try {
        const answer = await s.storedBytes(accountId).addStored(day, bytes);
        const ak = key(accountId, answer.day);
        const now = s.now();
        known.set(ak, Math.max(answer.total, known.get(ak, now)?.value ?? 0), dayStart(answer.day + 1));
      } catch (err) {
        // Sent again with the next flush: a counter out of reach undercounts for that long.
        const p = pending.get(k);
        if (p) p.bytes += bytes;
        else pending.set(k, { accountId, day, bytes });
        log("warn", "stored_bytes_report_failed", { account_id: accountId, error: err instanceof Error ? err.name : "unknown" });
      } finally {
        const left = (inFlight.get(k) ?? 0) - bytes;
        if (left > 0) inFlight.set(k, left);
        else inFlight.delete(k);
      }
    }),
  );
}
