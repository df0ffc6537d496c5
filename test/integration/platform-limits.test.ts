/**
 * What Cloudflare enforces and wrangler dev does not, held by construction and shown here:
 * six connections waiting per invocation (the limit as a constant), memory with 1 MiB
 * payloads (bytes held counted), bound parameters, no duplicate from a late queue, and the
 * forwarded body exactly as the provider sent it.
 */
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { deliverBatch, SLOW_MS, type Incoming } from "../../src/delivery/deliver";
import { CONNECTIONS_PER_INVOCATION, Limiter } from "../../src/delivery/limiter";
import { housekeeping } from "../../src/housekeeping";
import { handleQueue } from "../../src/index";
import { servicesFor, type Services } from "../../src/services";
import type { EventStore } from "../../src/store/event-store";
import { outbox } from "../../src/store/schema";
import { runInDurableObject, createMessageBatch } from "cloudflare:test";
import { call, createAccount, createDestination, createSource, envWith, eventually, json, mailbox, type Account } from "../helpers/api";
import { attemptRows, deliveryRow, eventPartition, insertDelivery, insertEvent, partition, readPartition, runQueue } from "../helpers/delivery";

let account: Account;
let source: { id: string; ingest_url: string };
const MiB = 1024 * 1024;

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "limits" });
});

const incoming = (msgs: Awaited<ReturnType<typeof insertDelivery>>[], prefix: string): Incoming[] => msgs.map((body, i) => ({ id: `${prefix}-${i}`, body }));

describe("six connections per invocation", () => {
  it("a batch with six destinations that never answer still delivers the others on time, never more than six requests open", async () => {
    const patient = servicesFor(envWith({ DELIVERY_TIMEOUT_MS: "10000" }));
    const silent = [];
    for (let i = 0; i < 6; i++) silent.push(await createDestination(account, source.id, { url: (await mailbox({ repeat: { hang: true } })).url }));
    const good = await mailbox();
    const fine = [];
    for (let i = 0; i < 10; i++) fine.push(await createDestination(account, source.id, { url: good.url }));
    const msgs = [];
    for (const d of [...silent, ...fine]) msgs.push(await insertDelivery(await insertEvent(source.id), d.id));
    const batch = incoming(msgs, "six");

    const started = Date.now();
    const handedBack: number[] = [];
    let resolveBack: () => void;
    const back = new Promise<void>((r) => (resolveBack = r));
    const first = new Limiter();
    const firstRun = deliverBatch(patient, batch, (i, what) => {
      if (!what.ack && what.delaySeconds === 0) {
        handedBack.push(i);
        if (handedBack.length === 1) setTimeout(() => resolveBack(), 0);
      }
    }, first);
    await back;
    // Handed back once every connection had waited SLOW_MS: long before the 10 s time limit.
    expect(Date.now() - started).toBeLessThan(SLOW_MS * 3);
    // The queue gives them to another invocation at once (retried with no delay).
    const second = new Limiter();
    const secondRun = deliverBatch(patient, handedBack.map((i) => batch[i]!), () => undefined, second);
    const arrived = await eventually(async () => ((await good.requests()).length >= 10 ? Date.now() : undefined), 5000);
    expect(arrived - started).toBeLessThan(5000);
    const report = await secondRun;
    expect((await good.requests()).map((r) => r.headers["webhook-id"]).sort()).toEqual(msgs.slice(6).map((m) => m.event_id).sort());
    await firstRun;
    // Never more than the platform's limit open at once, in either invocation.
    expect(first.peak).toBeLessThanOrEqual(CONNECTIONS_PER_INVOCATION);
    expect(second.peak).toBeLessThanOrEqual(CONNECTIONS_PER_INVOCATION);
    expect(report.peakConnections).toBeLessThanOrEqual(CONNECTIONS_PER_INVOCATION);
  }, 30_000);
});

describe("a connection is held until the response headers, not the body", () => {
  it("destinations whose bodies trickle for seconds hold no connection once their headers are in: the rest of the batch is delivered meanwhile, nothing handed back", async () => {
    const patient = servicesFor(envWith({ DELIVERY_TIMEOUT_MS: "20000" }));
    // Headers with the first byte after 250 ms, then a byte every 250 ms: 10 s of body, within the 20 s limit.
    const slow = [];
    for (let i = 0; i < 6; i++) slow.push(await createDestination(account, source.id, { url: (await mailbox({ repeat: { trickleMs: 250, body: "x".repeat(40) } })).url }));
    const good = await mailbox();
    const fine = [];
    for (let i = 0; i < 10; i++) fine.push(await createDestination(account, source.id, { url: good.url }));
    const msgs = [];
    for (const d of [...slow, ...fine]) msgs.push(await insertDelivery(await insertEvent(source.id), d.id));
    const handedBack: number[] = [];
    const limiter = new Limiter();
    const run = deliverBatch(patient, incoming(msgs, "trickle"), (i, what) => {
      if (!what.ack && what.delaySeconds === 0) handedBack.push(i);
    }, limiter);

    // All ten arrive in this invocation while the six bodies are still coming.
    await eventually(async () => ((await good.requests()).length >= 10 ? true : undefined), 8000);
    for (const m of msgs.slice(0, 6)) expect(await attemptRows(m.deliveries[0]!.delivery_id)).toEqual([]);
    expect(handedBack).toEqual([]);
    expect(limiter.peak).toBeLessThanOrEqual(CONNECTIONS_PER_INVOCATION);
    await run;
    // The trickled answers were read (their excerpt recorded) once they were done.
    for (const m of msgs.slice(0, 6)) {
      const rows = await attemptRows(m.deliveries[0]!.delivery_id);
      expect(rows).toHaveLength(1);
      expect(rows[0]!.status_code).toBe(200);
      expect(rows[0]!.response_body).toBe("x".repeat(40));
    }
  }, 30_000);
});

describe("a destination whose bodies stall after their headers", () => {
  it("does not hold the batch until its time limit: once its attempts have run SLOW_MS, the rest of its deliveries go back to the queue", async () => {
    const patient = servicesFor(envWith({ DELIVERY_TIMEOUT_MS: "10000" }));
    // Headers and the first byte after 400 ms, then a byte every 400 ms: 16 s of body, past the 10 s limit.
    const stalled = await createDestination(account, source.id, { url: (await mailbox({ repeat: { trickleMs: 400, body: "x".repeat(40) } })).url });
    const msgs = [];
    for (let i = 0; i < 4; i++) msgs.push(await insertDelivery(await insertEvent(source.id), stalled.id));
    const handedBack: number[] = [];
    const run = deliverBatch(patient, incoming(msgs, "stall"), (i, what) => {
      if (!what.ack && what.delaySeconds === 0) handedBack.push(i);
    }, new Limiter());
    // Two run at once (its per-destination share); the other two are handed back, long before the time limit.
    await eventually(async () => (handedBack.length === 2 ? true : undefined), 5000);
    expect(handedBack.sort()).toEqual([2, 3]);
    await run;
  }, 30_000);
});

describe("memory with 1 MiB payloads", () => {
  it("a batch of 50 events of 1 MiB delivers every payload byte for byte, holding under 64 MB at once", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const payloads: string[] = [];
    const msgs = [];
    for (let i = 0; i < 50; i++) {
      const payload = JSON.stringify({ n: i, pad: String.fromCharCode(97 + (i % 26)).repeat(MiB - 30) });
      payloads.push(payload);
      msgs.push(await insertDelivery(await insertEvent(source.id, { payload, type: "big" }), dest.id));
    }
    const acks: number[] = [];
    const report = await deliverBatch(servicesFor(env as unknown as Env), incoming(msgs, "mem"), (i, s) => s.ack && acks.push(i));
    expect(acks).toHaveLength(50);
    expect(report.peakHeldBytes).toBeLessThan(64 * 1000 * 1000);
    const got = await box.requests();
    expect(got).toHaveLength(50);
    const prefix = `{"event":"big","data":`;
    const suffix = `,"source_id":"${source.id}"}`;
    for (const r of got) {
      expect(r.body.startsWith(prefix) && r.body.endsWith(suffix)).toBe(true);
      const data = r.body.slice(prefix.length, -suffix.length);
      expect(payloads).toContain(data);
    }
  }, 120_000);
});

describe("bound parameters", () => {
  it("redeliver naming 100 destinations: 202, each queued", async () => {
    const box = await mailbox();
    const ids = [];
    for (let i = 0; i < 100; i++) ids.push((await createDestination(account, source.id, { url: box.url })).id);
    const eventId = await insertEvent(source.id);
    const res = await call("POST", `/api/v1/webhooks/sources/${source.id}/events/${eventId}/redeliver`, { key: account.key, body: { destination_ids: ids } });
    expect(res.status).toBe(202);
    expect(await json(res)).toEqual({ data: { queued: 100, already_pending: 0 } });
    await eventually(async () => ((await box.requests()).length >= 100 ? true : undefined), 30_000);
  });
});

describe("a late queue", () => {
  it("a delivery whose message waits for minutes is sent once: nothing queues it again meanwhile", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id);
    const msg = await insertDelivery(eventId, dest.id);
    // Ten minutes later, the cron trigger and the partition's alarm have run, the message not yet.
    const later = Date.now() + 10 * 60_000;
    await housekeeping({ ...servicesFor(env as unknown as Env), now: () => later });
    await runInDurableObject(partition(eventPartition(eventId)), async (instance: EventStore) => {
      instance.now = () => later;
      await instance.alarm();
      instance.now = () => Date.now();
    });
    expect(await readPartition(eventPartition(eventId), (db) => db.select().from(outbox).all())).toEqual([]);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await box.requests()).toHaveLength(0);
    // The message arrives at last: one attempt, one request.
    await runQueue("krafter-deliver", [msg]);
    expect(await box.requests()).toHaveLength(1);
    expect(await attemptRows(msg.deliveries[0]!.delivery_id)).toHaveLength(1);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded" });
  });
});

describe("overload", () => {
  it("when storage refuses, the messages are retried and the invocation fails, so the queue's autoscaler backs off", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const msgs = [await insertDelivery(await insertEvent(source.id), dest.id), await insertDelivery(await insertEvent(source.id), dest.id)];
    const real = servicesFor(env as unknown as Env);
    const refusing: Services = { ...real, store: () => ({ claim: () => Promise.reject(new Error("overloaded")) }) as unknown as ReturnType<Services["store"]> };
    const settled: [number, unknown][] = [];
    const report = await deliverBatch(refusing, incoming(msgs, "ovl"), (i, s) => settled.push([i, s]));
    expect(report.ours).toBe(2);
    expect(settled.map(([, s]) => s)).toEqual([{ ack: false, delaySeconds: 5 }, { ack: false, delaySeconds: 5 }]);
    // Through the queue handler: the same retries, and the invocation throws.
    const batch = createMessageBatch("krafter-deliver", msgs.map((body, i) => ({ id: `ovl-q-${i}`, timestamp: new Date(), attempts: 1, body })));
    const broken = { ...(env as unknown as Env), EVENT_STORE: { getByName: () => ({ claim: () => Promise.reject(new Error("overloaded")) }) } } as unknown as Env;
    await expect(handleQueue(batch as MessageBatch<never>, broken)).rejects.toThrow(/overload/);
  });
});

describe("the forwarded body is the one received", () => {
  const bodies: [string, string][] = [
    ["big integers", '{"type":"t","id":12345678901234567890,"neg":-98765432109876543210}'],
    ["1e400 and friends", '{"type":"t","huge":1e400,"tiny":1e-400,"exp":2E+3}'],
    ["1.0 and -0.0", '{"type":"t","one":1.0,"negzero":-0.0,"trailing":10.50}'],
    ["duplicate keys", '{"type":"t","a":1,"a":2,"a":{"a":3}}'],
    ["unicode escapes", '{"type":"t","s":"\\u00e9\\ud83d\\ude00\\u0000\\/","raw":"é😀"}'],
    ["deep nesting", `{"type":"t","d":${"[".repeat(500)}1${"]".repeat(500)}}`],
    ["whitespace as sent", '  {\n\t"type" : "t" ,\r\n "a" : [ 1 , 2 ]\n}  '],
  ];

  it.each(bodies)("%s: the envelope's data is the body's text, and standardwebhooks verifies it", async (_name, raw) => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw, headers: { "content-type": "application/json" } });
    expect(res.status).toBe(202);
    const [req] = await eventually(async () => {
      const r = await box.requests();
      return r.length > 0 ? r : undefined;
    });
    const prefix = `{"event":"t","data":`;
    const suffix = `,"source_id":"${source.id}"}`;
    expect(req!.body.startsWith(prefix)).toBe(true);
    expect(req!.body.endsWith(suffix)).toBe(true);
    expect(req!.body.slice(prefix.length, -suffix.length)).toBe(raw);
    expect(() => new Webhook(dest.secret).verify(req!.body, req!.headers)).not.toThrow();
    // The event log shows the same text.
    const detail = await call("GET", `/api/v1/webhooks/sources/${source.id}/events/${(await json(res)).data.event_id}`, { key: account.key });
    const text = await detail.text();
    expect(text).toContain(`"payload":${raw}}}`);
  });

  it("a leading byte-order mark: JSON behind a BOM is forwarded as the raw text, BOM included", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const raw = '\uFEFF{"type":"invoice.paid","n":1.0}';
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw, headers: { "content-type": "application/json" } });
    expect(res.status).toBe(202);
    const [req] = await eventually(async () => {
      const r = await box.requests();
      return r.length > 0 ? r : undefined;
    });
    const verified = new Webhook(dest.secret).verify(req!.body, req!.headers) as { event: string; data: string };
    // Typed from the JSON behind the BOM, and its data exactly the text received.
    expect(verified.event).toBe("invoice.paid");
    expect(verified.data).toBe(raw);
  });

  it("a type longer than 255 characters is cut on a code point, never inside a surrogate pair", async () => {
    const type = "a".repeat(254) + "😀" + "tail";
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw: JSON.stringify({ type }), headers: { "content-type": "application/json" } });
    const detail = await json(await call("GET", `/api/v1/webhooks/sources/${source.id}/events/${(await json(res)).data.event_id}`, { key: account.key }));
    expect(detail.data.type).toBe("a".repeat(254));
    const fits = "a".repeat(253) + "😀";
    const res2 = await call("POST", new URL(source.ingest_url).pathname, { raw: JSON.stringify({ type: fits + "x" }), headers: { "content-type": "application/json" } });
    const detail2 = await json(await call("GET", `/api/v1/webhooks/sources/${source.id}/events/${(await json(res2)).data.event_id}`, { key: account.key }));
    expect(detail2.data.type).toBe(fits);
  });
});
