/**
 * Flow control on destinations (PRODUCT.md "Flow control", "Isolation, limits and
 * quotas"): rate_limit and ordering through the API, and the deliver path's gate: a
 * delivery the gate holds back stays pending, with no attempt, no retry spent and no
 * count, and goes back to the queue with its delay.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import type { RateLimiter } from "../../src/rate-limiter";
import { servicesFor, type Services } from "../../src/services";
import { deliverBatch } from "../../src/delivery/deliver";
import type { EventStore } from "../../src/store/event-store";
import { dayOf } from "../../src/store/ids";
import { call, createAccount, createDestination, createSource, envWith, expect422, json, mailbox, type Account } from "../helpers/api";
import { attemptRows, currentMessage, deliveryRow, destinationRow, insertDelivery, insertEvent, partition, runQueue, storedEvents } from "../helpers/delivery";

let account: Account;
let source: { id: string; ingest_url: string };
const base = () => `/api/v1/webhooks/sources/${source.id}/destinations`;
const post = (body: unknown) => call("POST", base(), { key: account.key, body });
const patch = (id: string, body: unknown) => call("PATCH", `${base()}/${id}`, { key: account.key, body });

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "flow" });
});

describe("rate_limit and ordering through the API", () => {
  it("default to null and none; are returned by create, GET, list and PATCH; PATCH null removes the limit", async () => {
    const plain = (await json(await post({ url: "https://hooks.example.com/a" }))).data;
    expect(plain).toMatchObject({ rate_limit: null, ordering: "none" });
    const created = await post({ url: "https://hooks.example.com/b", rate_limit: 5, ordering: "fifo" });
    expect(created.status).toBe(201);
    const d = (await json(created)).data;
    expect(d).toMatchObject({ rate_limit: 5, ordering: "fifo" });
    expect((await json(await call("GET", `${base()}/${d.id}`, { key: account.key }))).data).toMatchObject({ rate_limit: 5, ordering: "fifo" });
    expect((await json(await call("GET", base(), { key: account.key }))).data.find((x: { id: string }) => x.id === d.id)).toMatchObject({ rate_limit: 5, ordering: "fifo" });
    expect((await json(await patch(d.id, { rate_limit: 1000 }))).data).toMatchObject({ rate_limit: 1000, ordering: "fifo" });
    expect((await json(await patch(d.id, { rate_limit: null, ordering: "none" }))).data).toMatchObject({ rate_limit: null, ordering: "none" });
  });

  it.each([[0], [1001], [2.5], ["5"], [true]])("refuses rate_limit %j with a 422 on rate_limit", async (value) => {
    await expect422(await post({ url: "https://hooks.example.com/a", rate_limit: value }), "rate_limit");
  });

  it.each([["FIFO"], ["lifo"], [null], [1]])("refuses ordering %j with a 422 on ordering", async (value) => {
    await expect422(await post({ url: "https://hooks.example.com/a", ordering: value }), "ordering");
    const d = await createDestination(account, source.id, { url: "https://hooks.example.com/a" });
    await expect422(await patch(d.id, { ordering: value }), "ordering");
  });
});

describe("the gate in the deliver path", () => {
  it("over the in-flight cap with permits of its own: the invocation attempts the rest in its next waves, holding nothing back", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const capped = { ...(env as unknown as Env), MAX_IN_FLIGHT_PER_DESTINATION: "2" } as Env;
    const msgs = [];
    for (let i = 0; i < 5; i++) msgs.push(await insertDelivery(await insertEvent(source.id), dest.id));
    const run = await runQueue("krafter-deliver", msgs, { env: capped });
    expect(run.explicitAcks.sort()).toEqual(run.ids.sort());
    for (const m of msgs) {
      expect(await deliveryRow(m.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded", attempt_count: 1 });
      expect((await currentMessage(m)).deliveries[0]!.token).toBe(m.deliveries[0]!.token); // never held
    }
    expect(await box.requests()).toHaveLength(5);
  });

  it("two batches of one destination at once, 10 deliveries each under the default cap of 10: each wave asks for no more than it runs, so neither batch is held back", async () => {
    const box = await mailbox({ repeat: { delayMs: 50 } });
    const dest = await createDestination(account, source.id, { url: box.url });
    const batches: Awaited<ReturnType<typeof insertDelivery>>[][] = [[], []];
    for (const b of batches) for (let i = 0; i < 10; i++) b.push(await insertDelivery(await insertEvent(source.id), dest.id));
    const runs = await Promise.all(batches.map((msgs) => runQueue("krafter-deliver", msgs)));
    for (const run of runs) expect(run.explicitAcks.sort()).toEqual(run.ids.sort());
    for (const m of batches.flat()) {
      expect(await deliveryRow(m.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded", attempt_count: 1 });
      expect((await currentMessage(m)).deliveries[0]!.token).toBe(m.deliveries[0]!.token); // never held
    }
    expect(await box.requests()).toHaveLength(20);
  });

  it("a batch calls a destination's gate once a wave: the last wave's permits go back in the call that admits the next one, and on their own after the last wave", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const msgs = [];
    for (let i = 0; i < 6; i++) msgs.push(await insertDelivery(await insertEvent(source.id), dest.id));
    const real = servicesFor(env as unknown as Env);
    const calls: string[] = [];
    const counting: Services = {
      ...real,
      health: (id) => {
        const stub = real.health(id);
        return new Proxy(stub, {
          get(target, prop) {
            const v = Reflect.get(target, prop) as unknown;
            if (typeof v !== "function") return v;
            return (...args: unknown[]) => {
              calls.push(String(prop));
              return Reflect.apply(v as (...a: unknown[]) => unknown, target, args);
            };
          },
        });
      },
    };
    await deliverBatch(counting, msgs.map((body, i) => ({ id: `waves-${i}`, body })), () => undefined);
    expect(await box.requests()).toHaveLength(6);
    for (const m of msgs) expect(await deliveryRow(m.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded", attempt_count: 1 });
    // Three deliveries of one destination a wave: two waves, three calls to its gate (the run of successes is one more, apart).
    expect(calls.filter((c) => c !== "success")).toEqual(["turn", "turn", "release"]);
    // Every permit came back.
    expect(Object.keys((await (env as unknown as Env).DESTINATION_HEALTH.getByName(dest.id).gateState()).leases)).toEqual([]);
  });

  it("a wave's turn at the gate is one call: the last wave's permits come back first, so the next wave is admitted at the cap; the breaker hears how they ended", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/turn" });
    const gate = (env as unknown as Env).DESTINATION_HEALTH.getByName(dest.id);
    const cfg = { rateLimit: null, maxInFlight: 2, leaseMs: 60_000 };
    const breaker = { minAttempts: 2, failureRatio: 0.5, openMs: 30_000, openMaxMs: 300_000 };
    expect((await gate.turn(dest.id, null, { cfg, items: [{ id: "w1-a", retry: false }, { id: "w1-b", retry: false }] })).map((a) => a.kind)).toEqual(["go", "go"]);
    // At the cap: a plain admission waits.
    expect((await gate.admit(dest.id, cfg, [{ id: "elsewhere", retry: false }])).map((a) => a.kind)).toEqual(["hold"]);
    // Both attempts failed to connect: their permits come back and the breaker opens before the next wave asks.
    const ended = { ends: ["w1-a", "w1-b"].map((deliveryId) => ({ deliveryId, end: "failed" as const, durationMs: 10 })), breaker };
    const next = await gate.turn(dest.id, ended, { cfg, items: [{ id: "w2-a", retry: false }] });
    expect(next).toEqual([expect.objectContaining({ kind: "hold", reason: "circuit_open" })]);
    expect((await gate.gateState()).breaker.state).toBe("open");
    // A turn with only the ended part releases and admits nothing.
    const open = { ...cfg, maxInFlight: 1 };
    const other = (env as unknown as Env).DESTINATION_HEALTH.getByName(`${dest.id}-other`);
    expect((await other.turn(dest.id, null, { cfg: open, items: [{ id: "x1", retry: false }] })).map((a) => a.kind)).toEqual(["go"]);
    expect(await other.turn(dest.id, { ends: [{ deliveryId: "x1", end: "succeeded", durationMs: 5 }] }, null)).toEqual([]);
    expect((await other.turn(dest.id, null, { cfg: open, items: [{ id: "x2", retry: false }] })).map((a) => a.kind)).toEqual(["go"]);
  });

  it("when other consumers hold every permit: the deliveries are held in their partition, pending, with no attempt, no retry spent, and come back as new messages", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/held" });
    const capped = { ...(env as unknown as Env), MAX_IN_FLIGHT_PER_DESTINATION: "2" } as Env;
    // Another invocation's two attempts are in flight.
    const gate = (env as unknown as Env).DESTINATION_HEALTH.getByName(dest.id);
    const cfg = { rateLimit: null, maxInFlight: 2, leaseMs: 60_000 };
    expect((await gate.admit(dest.id, cfg, [{ id: "elsewhere-1", retry: false }, { id: "elsewhere-2", retry: false }])).map((a) => a.kind)).toEqual(["go", "go"]);
    const msgs = [];
    for (let i = 0; i < 3; i++) msgs.push(await insertDelivery(await insertEvent(source.id), dest.id));
    const run = await runQueue("krafter-deliver", msgs, { env: capped });
    expect(run.explicitAcks.sort()).toEqual(run.ids.sort());
    for (const m of msgs) {
      const row = (await deliveryRow(m.deliveries[0]!.delivery_id))!;
      expect(row).toMatchObject({ status: "pending", attempt_count: 0, attempts_in_run: 0 });
      expect(row.next_attempt_at).toBeGreaterThanOrEqual(Date.now() - 1000);
      expect(await attemptRows(m.deliveries[0]!.delivery_id)).toEqual([]);
      // A new message with a new token: the one that was held no longer counts.
      expect((await currentMessage(m)).deliveries[0]!.token).not.toBe(m.deliveries[0]!.token);
    }
    expect(await destinationRow(dest.id)).toMatchObject({ failure_count: 0 });
  });
});

describe("quotas", () => {
  it("MAX_DESTINATIONS_PER_SOURCE: the last one at the limit is created, one past it is a 422 quota_exceeded naming the quota; a delete makes room", async () => {
    const small = envWith({ MAX_DESTINATIONS_PER_SOURCE: "3" });
    const create = () => call("POST", base(), { key: account.key, body: { url: "https://hooks.example.com/q" }, env: small });
    const made = [];
    for (let i = 0; i < 3; i++) {
      const r = await create();
      expect(r.status).toBe(201);
      made.push((await json(r)).data.id);
    }
    const over = await create();
    expect(over.status).toBe(422);
    const body = await json(over);
    expect(body.error.code).toBe("quota_exceeded");
    expect(body.error.message).toContain("MAX_DESTINATIONS_PER_SOURCE");
    // Nothing of the refused one is left.
    expect((await json(await call("GET", `${base()}?limit=100`, { key: account.key }))).data).toHaveLength(3);
    expect((await call("DELETE", `${base()}/${made[0]}`, { key: account.key })).status).toBe(204);
    expect((await create()).status).toBe(201);
  });

  it("MAX_SOURCES_PER_ACCOUNT: at the limit 201, one past it 422 quota_exceeded, for the alerts source too", async () => {
    const other = await createAccount();
    const small = envWith({ MAX_SOURCES_PER_ACCOUNT: "2" });
    const create = (body: unknown) => call("POST", "/api/v1/webhooks/sources", { key: other.key, body, env: small });
    expect((await create({ name: "a", provider: "stripe" })).status).toBe(201);
    expect((await create({ name: "b", provider: "github" })).status).toBe(201);
    for (const body of [{ name: "c", provider: "stripe" }, { name: "alerts", provider: "krafter" }]) {
      const over = await create(body);
      expect(over.status).toBe(422);
      const err = (await json(over)).error;
      expect(err.code).toBe("quota_exceeded");
      expect(err.message).toContain("MAX_SOURCES_PER_ACCOUNT");
    }
    expect((await json(await call("GET", "/api/v1/webhooks/sources", { key: other.key }))).data).toHaveLength(2);
  });

  it("concurrent creates never pass the quota", async () => {
    const small = envWith({ MAX_DESTINATIONS_PER_SOURCE: "5" });
    const results = await Promise.all(Array.from({ length: 12 }, () => call("POST", base(), { key: account.key, body: { url: "https://hooks.example.com/c" }, env: small })));
    const created = results.filter((r) => r.status === 201).length;
    expect(created).toBeGreaterThan(0);
    expect(created).toBeLessThanOrEqual(5);
    expect(results.every((r) => r.status === 201 || r.status === 422)).toBe(true);
    expect((await json(await call("GET", `${base()}?limit=100`, { key: account.key }))).data.length).toBeLessThanOrEqual(5);
  });
});

describe("rate limits", () => {
  it("API_RATE_LIMIT per API key: over it 429 rate_limited with Retry-After; an unknown key is still 401; the next window lets it through", async () => {
    const limited = envWith({ API_RATE_LIMIT: "3" });
    const mine = await createAccount(); // a key nothing else has used
    const list = (key: string) => call("GET", "/api/v1/webhooks/sources", { key, env: limited });
    for (let i = 0; i < 3; i++) expect((await list(mine.key)).status).toBe(200);
    const over = await list(mine.key);
    expect(over.status).toBe(429);
    const body = await json(over);
    expect(body.error.code).toBe("rate_limited");
    expect(body.error.message).toContain("API_RATE_LIMIT");
    const retryAfter = Number(over.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60).toBe(true);
    // Authentication first: an unknown key is 401, a missing one too, never 429.
    expect((await list("krf_" + "x".repeat(43))).status).toBe(401);
    expect((await call("GET", "/api/v1/webhooks/sources", { env: limited })).status).toBe(401);
    // Another key of the same account has its own count.
    const other = await createAccount();
    expect((await list(other.key)).status).toBe(200);
    // A minute later the key is let through again.
    await runInDurableObject((env as unknown as Env).RATE_LIMITER.getByName(`key:${mine.keyId}`), (instance: RateLimiter) => {
      const t = Date.now() + 60_000;
      instance.now = () => t;
    });
    expect((await list(mine.key)).status).toBe(200);
  });

  it("INGEST_RATE_LIMIT per source: over it 429 with Retry-After, nothing stored; the next window takes events again", async () => {
    const ingest = (i: number) => call("POST", new URL(source.ingest_url).pathname, { raw: JSON.stringify({ type: "t", n: i }), headers: { "content-type": "application/json" } });
    expect((await ingest(0)).status).toBe(202);
    const ref = { sourceId: source.id, day: dayOf(Date.now()), shard: 0 };
    let t = Date.now();
    await runInDurableObject(partition(ref), (instance: EventStore) => {
      const store = instance as unknown as { s: Services; window: { start: number; n: number } };
      store.s = { ...store.s, config: { ...store.s.config, ingestRateLimit: 3 } };
      instance.now = () => t;
      store.window = { start: t - (t % 10_000), n: 1 };
    });
    expect((await ingest(1)).status).toBe(202);
    expect((await ingest(2)).status).toBe(202);
    const over = await ingest(3);
    expect(over.status).toBe(429);
    expect((await json(over)).error.code).toBe("rate_limited");
    expect(Number(over.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await storedEvents(source.id)).toHaveLength(3);
    await runInDurableObject(partition(ref), (instance: EventStore) => {
      t += 10_000;
      instance.now = () => t;
    });
    expect((await ingest(4)).status).toBe(202);
    expect(await storedEvents(source.id)).toHaveLength(4);
  });
});
