/**
 * The deliver consumer against real loopback receivers: what is sent, how it is signed,
 * what is recorded, and what the queue is told. Every attempt's message is acknowledged
 * once recorded; a retry is a new message (a new token on the delivery) with its delay.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { deliveryQueues, servicesFor } from "../../src/services";
import { call, createAccount, createDestination, createSource, envWith, mailbox, setDestination, setDns, type Account } from "../helpers/api";
import { forgetDeliveryDestination } from "../../src/db/destinations";
import { attemptRows, currentMessage, deliveryRow, destinationRow, eventPartition, insertDelivery, insertEvent, partition, retryDelay, runQueue } from "../helpers/delivery";
import type { DeliverMessage } from "../../src/delivery/messages";
import type { EventStore } from "../../src/store/event-store";

let account: Account;
let sourceId: string;

beforeEach(async () => {
  account = await createAccount();
  sourceId = (await createSource(account, { name: "deliveries" })).id;
});

describe("a successful attempt", () => {
  it("POSTs the envelope signed the Standard Webhooks way, records it and acks", async () => {
    const box = await mailbox({ repeat: { status: 200, body: "thanks" } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const payload = JSON.stringify({ id: "evt_42", type: "invoice.paid", amount: 1200 });
    const eventId = await insertEvent(sourceId, { type: "invoice.paid", payload });
    const msg = await insertDelivery(eventId, dest.id);

    const result = await runQueue("krafter-deliver", [msg]);

    expect(result.explicitAcks).toEqual(result.ids);
    expect(result.retryMessages).toEqual([]);
    const [req] = await box.requests();
    expect(req!.method).toBe("POST");
    expect(req!.headers["content-type"]).toBe("application/json");
    expect(req!.headers["webhook-id"]).toBe(eventId);
    expect(req!.headers["krafter-attempt"]).toBe("1");
    expect(req!.headers["user-agent"]).toMatch(/Krafter/);
    // An independent verifier, not our code.
    expect(new Webhook(dest.secret).verify(req!.body, req!.headers)).toEqual({
      event: "invoice.paid",
      data: JSON.parse(payload),
      source_id: sourceId,
    });
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded", attempt_count: 1 });
    const [attempt] = await attemptRows(msg.deliveries[0]!.delivery_id);
    expect(attempt).toMatchObject({ number: 1, outcome: "succeeded", status_code: 200, error: null, response_body: "thanks" });
    expect(attempt!.duration_ms).toBeGreaterThanOrEqual(0);
  });

  it("forwards a payload that is not JSON as the raw text", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    const eventId = await insertEvent(sourceId, { type: "ping", payload: "plain text, not json" });
    await runQueue("krafter-deliver", [await insertDelivery(eventId, dest.id)]);
    const [req] = await box.requests();
    expect(JSON.parse(req!.body)).toEqual({ event: "ping", data: "plain text, not json", source_id: sourceId });
  });

  it("does not send a delivery that already succeeded again (duplicate message)", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    await runQueue("krafter-deliver", [msg]);
    const again = await runQueue("krafter-deliver", [msg, msg]);
    expect(again.explicitAcks).toEqual(again.ids);
    expect(await box.requests()).toHaveLength(1);
    expect(await attemptRows(msg.deliveries[0]!.delivery_id)).toHaveLength(1);
  });

  it("signs with both the new and the old secret for 24 h after a rotation", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    const newSecret = "whsec_" + btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
    const patch = await call("PATCH", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}`, {
      key: account.key,
      body: { secret: newSecret },
    });
    expect(patch.status).toBe(200);
    await runQueue("krafter-deliver", [await insertDelivery(await insertEvent(sourceId), dest.id)]);
    const [req] = await box.requests();
    const sigs = req!.headers["webhook-signature"]!.split(" ");
    expect(sigs).toHaveLength(2);
    expect(() => new Webhook(newSecret).verify(req!.body, req!.headers)).not.toThrow();
    expect(() => new Webhook(dest.secret).verify(req!.body, req!.headers)).not.toThrow();

    // After the grace period only the new secret signs.
    await setDestination(dest.id, { secretRotatedAt: Date.now() - 25 * 3600 * 1000 });
    // Written behind the API's back: this isolate's deliver cache is told, as the API tells it.
    forgetDeliveryDestination(dest.id);
    await runQueue("krafter-deliver", [await insertDelivery(await insertEvent(sourceId), dest.id)]);
    const second = (await box.requests())[1]!;
    expect(second.headers["webhook-signature"]!.split(" ")).toHaveLength(1);
    expect(() => new Webhook(newSecret).verify(second.body, second.headers)).not.toThrow();
    expect(() => new Webhook(dest.secret).verify(second.body, second.headers)).toThrow();
  });
});

describe("failed attempts and the retry schedule", () => {
  it("retries a 500 after the schedule's next delay and records the failure", async () => {
    const box = await mailbox({ repeat: { status: 500, body: "boom" } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const scheduled = envWith({ RETRY_SCHEDULE: "5,300,1800,7200,18000,36000,36000" });

    const first = await runQueue("krafter-deliver", [msg], { env: scheduled });
    expect(first.explicitAcks).toEqual(first.ids);
    expect(first.retryMessages).toEqual([]);
    // 5 s plus at most 10 % jitter.
    expect(await retryDelay(msg.deliveries[0]!.delivery_id)).toBeGreaterThanOrEqual(5);
    expect(await retryDelay(msg.deliveries[0]!.delivery_id)).toBeLessThanOrEqual(6);
    // The retry is a new message: the first one is stale now and sends nothing.
    const next = await currentMessage(msg);
    expect(next.deliveries[0]!.token).not.toBe(msg.deliveries[0]!.token);
    const stale = await runQueue("krafter-deliver", [msg], { env: scheduled });
    expect(stale.explicitAcks).toEqual(stale.ids);
    expect(await box.requests()).toHaveLength(1);

    const second = await runQueue("krafter-deliver", [next], { env: scheduled });
    expect(second.explicitAcks).toEqual(second.ids);
    expect(await retryDelay(msg.deliveries[0]!.delivery_id)).toBeGreaterThanOrEqual(300);
    expect(await retryDelay(msg.deliveries[0]!.delivery_id)).toBeLessThanOrEqual(330);

    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempt_count: 2, attempts_in_run: 2 });
    const attempts = await attemptRows(msg.deliveries[0]!.delivery_id);
    expect(attempts.map((a) => [a.number, a.outcome, a.status_code, a.response_body])).toEqual([
      [1, "failed", 500, "boom"],
      [2, "failed", 500, "boom"],
    ]);
    expect(await box.requests()).toHaveLength(2);
    expect((await box.requests())[1]!.headers["krafter-attempt"]).toBe("2");
  });

  it("walks the whole default schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then exhausted", async () => {
    const box = await mailbox({ repeat: { status: 503 } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const scheduled = envWith({ RETRY_SCHEDULE: undefined });
    const delays: number[] = [];
    for (let i = 1; i <= 8; i++) {
      const r = await runQueue("krafter-deliver", [await currentMessage(msg)], { env: scheduled });
      expect(r.explicitAcks).toEqual(r.ids);
      if (i < 8) {
        expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: i });
        delays.push(await retryDelay(msg.deliveries[0]!.delivery_id));
      }
    }
    const base = [5, 300, 1800, 7200, 18000, 36000, 36000];
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(base[i]!);
      expect(d).toBeLessThanOrEqual(Math.round(base[i]! * 1.1));
    });
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "failed", attempt_count: 8 });
    expect(await destinationRow(dest.id)).toMatchObject({ failure_count: 1, enabled: 1 });
  });

  it("counts an exhausted forward once in failure_count", async () => {
    const box = await mailbox({ repeat: { status: 500 } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    // The test schedule has 3 retries: this is the 4th and last attempt.
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id, { attemptsInRun: 3 });
    const r = await runQueue("krafter-deliver", [msg]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(r.retryMessages).toEqual([]);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "failed" });
    expect(await destinationRow(dest.id)).toMatchObject({ failure_count: 1 });
  });

  it("stops at once on 410 Gone: exhausted after one attempt", async () => {
    const box = await mailbox({ repeat: { status: 410 } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const r = await runQueue("krafter-deliver", [msg]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "failed", attempt_count: 1 });
    expect((await attemptRows(msg.deliveries[0]!.delivery_id))[0]).toMatchObject({ outcome: "failed", status_code: 410 });
    expect(await destinationRow(dest.id)).toMatchObject({ failure_count: 1 });
  });

  it.each([
    ["429", 429, "60", 60],
    ["503", 503, "120", 120],
    ["429 asking for less than the shortest delay", 429, "1", 5],
    ["429 asking for more than the longest delay", 429, "999999", 36000],
  ])("honours Retry-After on %s within the schedule's bounds", async (_name, status, retryAfter, expected) => {
    const box = await mailbox({ repeat: { status, headers: { "retry-after": retryAfter } } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const r = await runQueue("krafter-deliver", [msg], { env: envWith({ RETRY_SCHEDULE: "5,300,1800,7200,18000,36000,36000" }) });
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending" });
    expect(await retryDelay(msg.deliveries[0]!.delivery_id)).toBe(expected);
  });

  it("honours a Retry-After given as an HTTP date", async () => {
    const when = new Date(Date.now() + 600_000).toUTCString();
    const box = await mailbox({ repeat: { status: 503, headers: { "retry-after": when } } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const r = await runQueue("krafter-deliver", [msg], { env: envWith({ RETRY_SCHEDULE: "5,300,1800" }) });
    expect(r.explicitAcks).toHaveLength(1);
    expect(await retryDelay(msg.deliveries[0]!.delivery_id)).toBeGreaterThanOrEqual(598);
    expect(await retryDelay(msg.deliveries[0]!.delivery_id)).toBeLessThanOrEqual(601);
  });

  it("does not follow a 3xx: a failed attempt, and the redirect target gets nothing", async () => {
    const target = await mailbox();
    const box = await mailbox({ repeat: { status: 302, headers: { location: target.url } } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    await runQueue("krafter-deliver", [msg]);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 1 });
    expect(await target.requests()).toHaveLength(0);
    expect((await attemptRows(msg.deliveries[0]!.delivery_id))[0]).toMatchObject({ outcome: "failed", status_code: 302 });
    expect((await attemptRows(msg.deliveries[0]!.delivery_id))[0]!.error).toMatch(/redirect/);
  });

  it("fails an attempt that times out and retries it", async () => {
    const box = await mailbox({ repeat: { hang: true } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    await runQueue("krafter-deliver", [msg]);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 1 });
    const [a] = await attemptRows(msg.deliveries[0]!.delivery_id);
    expect(a).toMatchObject({ outcome: "failed", status_code: null });
    expect(a!.error).toMatch(/timed out/);
  });

  it("keeps only the first 4 KiB of a huge response body", async () => {
    const box = await mailbox({ repeat: { status: 500, hugeBytes: 5 * 1024 * 1024 } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    await runQueue("krafter-deliver", [msg]);
    const [a] = await attemptRows(msg.deliveries[0]!.delivery_id);
    expect(a!.response_body).toHaveLength(4096);
    expect(a!.status_code).toBe(500);
  });
});

describe("destinations that changed while deliveries were queued", () => {
  it("cancels and records a delivery to a disabled destination, sending nothing", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url, enabled: false });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const r = await runQueue("krafter-deliver", [msg]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await box.requests()).toHaveLength(0);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "cancelled" });
    expect((await attemptRows(msg.deliveries[0]!.delivery_id))[0]).toMatchObject({ outcome: "cancelled" });
    expect(await destinationRow(dest.id)).toMatchObject({ failure_count: 0 });
  });

  it("drops a delivery whose destination was deleted: nothing sent, nothing recorded", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const del = await call("DELETE", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}`, { key: account.key });
    expect(del.status).toBe(204);
    const r = await runQueue("krafter-deliver", [msg]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await box.requests()).toHaveLength(0);
    expect(await attemptRows(msg.deliveries[0]!.delivery_id)).toEqual([]);
  });

  it("re-checks the URL at send time: a name that now resolves to a private address is not sent to", async () => {
    const box = await mailbox();
    const name = `hooks-${crypto.randomUUID().slice(0, 8)}.example.com`;
    await setDns(name, ["93.184.215.14"]);
    const strict = envWith({ ALLOW_PRIVATE_DESTINATIONS: "false" });
    const res = await call("POST", `/api/v1/webhooks/sources/${sourceId}/destinations`, {
      key: account.key,
      body: { url: `http://${name}:${new URL(box.url).port}/r/x` },
      env: strict,
    });
    expect(res.status).toBe(201);
    const dest = ((await res.json()) as { data: { id: string } }).data;
    await setDns(name, ["127.0.0.1"]);
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    await runQueue("krafter-deliver", [msg], { env: strict });
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 1 });
    const [a] = await attemptRows(msg.deliveries[0]!.delivery_id);
    expect(a).toMatchObject({ outcome: "failed", status_code: null });
    expect(a!.error).toMatch(/refused/);
    expect(await box.requests()).toHaveLength(0);
  });
});

describe("a batch", () => {
  it("delivers many messages of one batch, each once, reading each event once", async () => {
    const boxes = await Promise.all([mailbox(), mailbox(), mailbox()]);
    const dests = await Promise.all(boxes.map((b) => createDestination(account, sourceId, { url: b.url })));
    const events = await Promise.all(Array.from({ length: 10 }, (_, i) => insertEvent(sourceId, { type: `t.${i}` })));
    const msgs = [];
    for (const e of events) for (const d of dests) msgs.push(await insertDelivery(e, d.id));
    const r = await runQueue("krafter-deliver", msgs);
    expect(r.explicitAcks.sort()).toEqual([...r.ids].sort());
    for (let i = 0; i < boxes.length; i++) {
      const got = (await boxes[i]!.requests()).map((q) => q.headers["webhook-id"]).sort();
      expect(got).toEqual([...events].sort());
      for (const q of await boxes[i]!.requests()) {
        expect(() => new Webhook(dests[i]!.secret).verify(q.body, q.headers)).not.toThrow();
      }
    }
  });
});

describe("a message with several deliveries (one event's fan-out)", () => {
  /** One message for the deliveries of one event to these destinations, as a fan-out sends it. */
  async function bundle(eventId: string, destinationIds: string[]): Promise<DeliverMessage> {
    const singles = [];
    for (const d of destinationIds) singles.push(await insertDelivery(eventId, d));
    return { ...singles[0]!, deliveries: singles.map((m) => m.deliveries[0]!) };
  }

  it("attempts each; one failing is retried alone by a message of its own, the message is acknowledged", async () => {
    const ok1 = await mailbox();
    const ok2 = await mailbox();
    const bad = await mailbox({ repeat: { status: 500 } });
    const dests = await Promise.all([ok1, bad, ok2].map((b) => createDestination(account, sourceId, { url: b.url })));
    const eventId = await insertEvent(sourceId);
    const msg = await bundle(eventId, dests.map((d) => d.id));
    const r = await runQueue("krafter-deliver", [msg]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(r.retryMessages).toEqual([]);
    for (const b of [ok1, bad, ok2]) expect((await b.requests()).map((q) => q.headers["webhook-id"])).toEqual([eventId]);
    const [d1, dBad, d2] = msg.deliveries.map((d) => d.delivery_id);
    expect(await deliveryRow(d1!)).toMatchObject({ status: "succeeded", attempt_count: 1 });
    expect(await deliveryRow(d2!)).toMatchObject({ status: "succeeded", attempt_count: 1 });
    expect(await deliveryRow(dBad!)).toMatchObject({ status: "pending", attempts_in_run: 1 });
    // The retry carries the failing delivery alone, with its new token.
    const retry = await currentMessage({ ...msg, deliveries: [msg.deliveries[1]!] });
    expect(retry.deliveries[0]!.token).not.toBe(msg.deliveries[1]!.token);
    // The first message again (a duplicate from the queue): nothing is sent twice.
    const again = await runQueue("krafter-deliver", [msg]);
    expect(again.explicitAcks).toEqual(again.ids);
    for (const b of [ok1, bad, ok2]) expect(await b.requests()).toHaveLength(1);
  });

  it("is retried whole when one of its deliveries cannot be attempted now, and then sends only what is left", async () => {
    const ok = await mailbox();
    const later = await mailbox();
    const dests = await Promise.all([ok, later].map((b) => createDestination(account, sourceId, { url: b.url })));
    const eventId = await insertEvent(sourceId);
    const msg = await bundle(eventId, dests.map((d) => d.id));
    // The second delivery is held by another message (a claim still running): busy.
    await runInDurableObject(partition(eventPartition(eventId)), (instance: EventStore) =>
      instance.claim([{ deliveryId: msg.deliveries[1]!.delivery_id, token: msg.deliveries[1]!.token, messageId: "someone-else" }], 1024),
    );
    const first = await runQueue("krafter-deliver", [msg], { ids: ["m-1"] });
    expect(first.explicitAcks).toEqual([]);
    expect(first.retryMessages.map((m) => m.msgId)).toEqual(["m-1"]);
    expect(await ok.requests()).toHaveLength(1);
    expect(await later.requests()).toHaveLength(0);
    // Once the other claim is gone, the same message sends the second and not the first again.
    await runInDurableObject(partition(eventPartition(eventId)), (_i: EventStore, state) => {
      state.storage.sql.exec("UPDATE deliveries SET claimed_until = 0 WHERE id = ?", msg.deliveries[1]!.delivery_id);
    });
    const second = await runQueue("krafter-deliver", [msg], { ids: ["m-1"], attempts: 2 });
    expect(second.explicitAcks).toEqual(["m-1"]);
    expect(await ok.requests()).toHaveLength(1);
    expect(await later.requests()).toHaveLength(1);
  });
});

describe("what the deliver path reads and tells", () => {
  it("a success resets failure_count even when this isolate read the destination before the count rose", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    await runQueue("krafter-deliver", [await insertDelivery(await insertEvent(sourceId), dest.id)]); // cached now, count 0
    const health = servicesFor(env as unknown as Env).health(dest.id);
    await health.exhausted(dest.id);
    await health.exhausted(dest.id);
    expect(await destinationRow(dest.id)).toMatchObject({ failure_count: 2 });
    await runQueue("krafter-deliver", [await insertDelivery(await insertEvent(sourceId), dest.id), await insertDelivery(await insertEvent(sourceId), dest.id)]);
    expect(await destinationRow(dest.id)).toMatchObject({ failure_count: 0 });
  });

  it("uses every deliver queue bound, however many (DELIVER_QUEUE_1 … _N), and stops at the first gap", () => {
    const q = (name: string) => ({ name }) as unknown as Queue<never>;
    const bound = { ...(env as unknown as Env), DELIVER_QUEUE: q("q0"), DELIVER_QUEUE_1: q("q1"), DELIVER_QUEUE_2: q("q2"), DELIVER_QUEUE_3: q("q3"), DELIVER_QUEUE_4: q("q4"), DELIVER_QUEUE_5: q("q5"), DELIVER_QUEUE_7: q("q7") } as Env;
    const queues = deliveryQueues(bound, false);
    const ids = Array.from({ length: 600 }, () => crypto.randomUUID());
    const used = new Set(ids.map((id) => (queues.deliver(id) as unknown as { name: string }).name));
    expect([...used].sort()).toEqual(["q0", "q1", "q2", "q3", "q4", "q5"]);
  });

  it("a destination's messages always go to the same deliver queue, and the four are all used", () => {
    const s = servicesFor(env as unknown as Env);
    const ids = Array.from({ length: 200 }, () => crypto.randomUUID());
    for (const id of ids) expect(s.queues.deliver(id)).toBe(s.queues.deliver(id));
    expect(new Set(ids.map((id) => s.queues.deliver(id))).size).toBe(4);
  });

  it("a change made through the API applies to this isolate's next delivery at once", async () => {
    const box = await mailbox();
    const other = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    await runQueue("krafter-deliver", [await insertDelivery(await insertEvent(sourceId), dest.id)]);
    await call("PATCH", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}`, { key: account.key, body: { url: other.url } });
    await runQueue("krafter-deliver", [await insertDelivery(await insertEvent(sourceId), dest.id)]);
    expect(await box.requests()).toHaveLength(1);
    expect(await other.requests()).toHaveLength(1);
  });
});
