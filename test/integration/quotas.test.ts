/**
 * The account-wide limits (PRODUCT.md "Isolation, limits and quotas", issue 21):
 * ACCOUNT_API_RATE_LIMIT across an account's keys, and MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY
 * at ingest: each at the limit and one past, and each recovering (the next window, the
 * next UTC day). The bytes are reported to the account's counter from the request's
 * waitUntil, which call() waits for, so every request sees what the ones before it stored.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { storedSize } from "../../src/ingest/stored-bytes";
import type { RateLimiter, StoredToday } from "../../src/rate-limiter";
import { servicesFor } from "../../src/services";
import { dayOf, dayStart } from "../../src/store/ids";
import { addKey, call, createAccount, createSource, envWith, json, type Account } from "../helpers/api";
import { storedEvents } from "../helpers/delivery";

const limiter = (name: string) => (env as unknown as Env).RATE_LIMITER.getByName(name);
const DAY_MS = 86_400_000;

async function storedToday(accountId: string): Promise<StoredToday | undefined> {
  return runInDurableObject(limiter(`stored:${accountId}`), (_: RateLimiter, state) => state.storage.kv.get<StoredToday>("stored"));
}

describe("ACCOUNT_API_RATE_LIMIT", () => {
  it("counts every key of the account together: at the limit 200, one past 429 naming it with Retry-After, for each key; another account is not touched; the next window lets it through", async () => {
    const limited = envWith({ ACCOUNT_API_RATE_LIMIT: "3" });
    const account = await createAccount();
    const second = (await addKey(account.id, ["webhooks:read"])).key;
    const list = (key: string) => call("GET", "/api/v1/webhooks/sources", { key, env: limited });
    expect((await list(account.key)).status).toBe(200);
    expect((await list(second)).status).toBe(200);
    expect((await list(account.key)).status).toBe(200);
    for (const key of [second, account.key]) {
      const over = await list(key);
      expect(over.status).toBe(429);
      const body = await json(over);
      expect(body.error.code).toBe("rate_limited");
      expect(body.error.message).toContain("ACCOUNT_API_RATE_LIMIT");
      const retryAfter = Number(over.headers.get("retry-after"));
      expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60).toBe(true);
    }
    // Authentication still first.
    expect((await call("GET", "/api/v1/webhooks/sources", { env: limited })).status).toBe(401);
    const other = await createAccount();
    expect((await list(other.key)).status).toBe(200);
    // A minute later on the account's counter.
    await runInDurableObject(limiter(`account:${account.id}`), (instance: RateLimiter) => {
      const t = Date.now() + 60_000;
      instance.now = () => t;
    });
    expect((await list(second)).status).toBe(200);
  });

  it("a request the key's own limit refuses is not counted against the account, so one key over API_RATE_LIMIT leaves the others their share", async () => {
    const limited = envWith({ API_RATE_LIMIT: "2", ACCOUNT_API_RATE_LIMIT: "5" });
    const account = await createAccount();
    const other = (await addKey(account.id, ["webhooks:read"])).key;
    const list = (key: string) => call("GET", "/api/v1/webhooks/sources", { key, env: limited });
    for (let i = 0; i < 2; i++) expect((await list(account.key)).status).toBe(200);
    for (let i = 0; i < 4; i++) {
      const over = await list(account.key);
      expect(over.status).toBe(429);
      expect((await json(over)).error.message).toContain("API_RATE_LIMIT");
    }
    // The account has spent 2 of its 5: the other key gets 2 (its own limit), not 0.
    expect((await list(other)).status).toBe(200);
    expect((await list(other)).status).toBe(200);
    const count = await runInDurableObject(limiter(`account:${account.id}`), (_: RateLimiter, state) => state.storage.kv.get<{ n: number }>("window"));
    expect(count?.n).toBe(4);
  });
});

describe("MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY", () => {
  const ingestAs = (source: { ingest_url: string }, e: Env, n: number) =>
    call("POST", new URL(source.ingest_url).pathname, { raw: JSON.stringify({ type: "t", n: 1000 + n }), headers: { "content-type": "application/json" }, env: e });

  async function oneEventSize(account: Account, source: { id: string; ingest_url: string }): Promise<number> {
    expect((await ingestAs(source, env as unknown as Env, 0)).status).toBe(202);
    const [stored] = await storedEvents(source.id);
    const size = storedSize(new TextEncoder().encode(stored!.payload), stored!.headers as Record<string, string>);
    // The account's counter has it already (call() waited for the report).
    expect(await storedToday(account.id)).toEqual({ day: dayOf(Date.now()), total: size });
    return size;
  }

  it("up to the quota 202; an event that would pass it, by one byte even, 429 rate_limited naming it with Retry-After at the next UTC midnight, nothing stored; another account is not touched", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "bytes" });
    const size = await oneEventSize(account, source);
    // Room for exactly three events (bodies of the same length, the same kept headers);
    // the default flush period (1 s) is back on.
    const quota = envWith({ MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: String(3 * size), STORED_BYTES_FLUSH_MS: undefined });
    expect((await ingestAs(source, quota, 1)).status).toBe(202);
    expect((await ingestAs(source, quota, 2)).status).toBe(202);
    expect(await storedToday(account.id)).toEqual({ day: dayOf(Date.now()), total: 3 * size });

    const over = await ingestAs(source, quota, 3);
    expect(over.status).toBe(429);
    const body = await json(over);
    expect(body.error.code).toBe("rate_limited");
    expect(body.error.message).toContain("MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY");
    const retryAfter = Number(over.headers.get("retry-after"));
    const untilMidnight = (dayStart(dayOf(Date.now()) + 1) - Date.now()) / 1000;
    expect(Math.abs(retryAfter - untilMidnight)).toBeLessThanOrEqual(2);

    // Nothing of the refused event: three stored, three listed, the counter unchanged.
    expect(await storedEvents(source.id)).toHaveLength(3);
    const listed = await json(await call("GET", `/api/v1/webhooks/sources/${source.id}/events`, { key: account.key }));
    expect(listed.data).toHaveLength(3);
    expect(await storedToday(account.id)).toEqual({ day: dayOf(Date.now()), total: 3 * size });

    // One byte more of quota is still not room for a fourth.
    const almost = envWith({ MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: String(4 * size - 1) });
    expect((await ingestAs(source, almost, 4)).status).toBe(429);
    expect(await storedEvents(source.id)).toHaveLength(3);

    // The quota is the account's: another account's source takes events.
    const other = await createAccount();
    const theirs = await createSource(other, { name: "bytes elsewhere" });
    expect((await ingestAs(theirs, quota, 5)).status).toBe(202);
  });

  it("the next UTC day starts again at 0", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "bytes tomorrow" });
    const size = await oneEventSize(account, source);
    const today = envWith({ MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: String(size) });
    expect((await ingestAs(source, today, 1)).status).toBe(429);

    // The same quota, a day later (the Worker's clock: the counter takes the day it is told).
    const tomorrow = envWith({ MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: String(size) });
    const later = Date.now() + DAY_MS;
    servicesFor(tomorrow).now = () => later;
    expect((await ingestAs(source, tomorrow, 2)).status).toBe(202);
    expect(await storedToday(account.id)).toEqual({ day: dayOf(later), total: size });
    expect((await ingestAs(source, tomorrow, 3)).status).toBe(429);
    // A late report of the day before is not added to the new day.
    await runInDurableObject(limiter(`stored:${account.id}`), async (instance: RateLimiter) => {
      expect(await instance.addStored(dayOf(Date.now()), 1000)).toEqual({ day: dayOf(later), total: size });
    });
  });

  it("events ingested at once, their reports coalesced over the default 1 s, are each counted once", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "bytes at once" });
    const size = await oneEventSize(account, source);
    const coalesced = envWith({ STORED_BYTES_FLUSH_MS: undefined });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => ingestAs(source, coalesced, 10 + i)));
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(202));
    expect(await storedToday(account.id)).toEqual({ day: dayOf(Date.now()), total: 9 * size });
  });
});
