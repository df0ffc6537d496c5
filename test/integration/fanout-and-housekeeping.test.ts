/**
 * Fan-out (which destinations get an event), the dead-letter consumer, and the cron
 * trigger's sweeps and retention, against the real D1 and Queues.
 */
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import { housekeeping } from "../../src/housekeeping";
import { servicesFor } from "../../src/services";
import { call, createAccount, createDestination, createSource, envWith, eventually, json, mailbox, type Account } from "../helpers/api";
import { attemptRows, deliveryRow, insertDelivery, insertEvent, runQueue } from "../helpers/delivery";

let account: Account;
let source: { id: string; ingest_url: string };

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "fanout" });
});

const deliveriesOf = async (eventId: string) =>
  (
    await env.DB.prepare("SELECT destination_id, status FROM deliveries WHERE event_id = ?").bind(eventId).all<{
      destination_id: string;
      status: string;
    }>()
  ).results;

const eventStatus = async (id: string) =>
  (await env.DB.prepare("SELECT status FROM events WHERE id = ?").bind(id).first<{ status: string }>())?.status;

describe("fan-out", () => {
  it("queues one delivery per enabled destination whose event_filter matches", async () => {
    const box = await mailbox();
    const make = (event_filter: string[], enabled = true) =>
      createDestination(account, source.id, { url: box.url, event_filter, enabled });
    const all = await make([]);
    const exact = await make(["invoice.paid"]);
    const prefix = await make(["invoice.*"]);
    const star = await make(["*"]);
    const other = await make(["customer.created"]);
    const otherPrefix = await make(["charge.*", "invoice.payment_failed"]);
    const disabled = await make([], false);

    const eventId = await insertEvent(source.id, { type: "invoice.paid", status: "pending" });
    const r = await runQueue("krafter-fanout", [{ kind: "fanout", event_id: eventId }]);
    expect(r.explicitAcks).toEqual(r.ids);

    const got = (await deliveriesOf(eventId)).map((d) => d.destination_id).sort();
    expect(got).toEqual([all.id, exact.id, prefix.id, star.id].sort());
    expect(got).not.toContain(other.id);
    expect(got).not.toContain(otherPrefix.id);
    expect(got).not.toContain(disabled.id);
    expect(await eventStatus(eventId)).toBe("dispatched");

    // The deliver messages went through the real queue to the receiver.
    const received = await eventually(async () => {
      const reqs = await box.requests();
      return reqs.length >= 4 ? reqs : undefined;
    });
    expect(received.map((q) => q.headers["webhook-id"])).toEqual([eventId, eventId, eventId, eventId]);
  });

  it("is idempotent: a repeated fan-out message queues nothing twice", async () => {
    const box = await mailbox();
    await createDestination(account, source.id, { url: box.url });
    await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { status: "pending" });
    await runQueue("krafter-fanout", [{ kind: "fanout", event_id: eventId }]);
    await runQueue("krafter-fanout", [{ kind: "fanout", event_id: eventId }, { kind: "fanout", event_id: eventId }]);
    expect(await deliveriesOf(eventId)).toHaveLength(2);
    await eventually(async () => ((await box.requests()).length >= 2 ? true : undefined));
    await new Promise((r) => setTimeout(r, 2500)); // time for any duplicate to arrive
    expect(await box.requests()).toHaveLength(2);
  });

  it("fans out to more than 100 destinations (sendBatch in chunks of 100; the rows bound as one JSON parameter)", async () => {
    const box = await mailbox();
    for (let i = 0; i < 120; i++) await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { status: "pending" });
    await runQueue("krafter-fanout", [{ kind: "fanout", event_id: eventId }]);
    expect(await deliveriesOf(eventId)).toHaveLength(120);
    await eventually(async () => ((await box.requests()).length >= 120 ? true : undefined), 30_000, "120 deliveries");
  });

  it("fans out a batch of events together, each to its own source's matching destinations", async () => {
    const box = await mailbox();
    const other = await createSource(account, { name: "fanout-other" });
    const bare = await createSource(account, { name: "fanout-none" });
    const invoices = await createDestination(account, source.id, { url: box.url, event_filter: ["invoice.*"] });
    const everything = await createDestination(account, source.id, { url: box.url });
    const elsewhere = await createDestination(account, other.id, { url: box.url });

    const paid = await insertEvent(source.id, { type: "invoice.paid", status: "pending" });
    const customer = await insertEvent(source.id, { type: "customer.created", status: "pending" });
    const theirs = await insertEvent(other.id, { type: "charge.succeeded", status: "pending" });
    const nobody = await insertEvent(bare.id, { type: "invoice.paid", status: "pending" });
    const gone = crypto.randomUUID();
    const msgs = [paid, customer, gone, theirs, nobody, paid].map((event_id) => ({ kind: "fanout" as const, event_id }));
    const r = await runQueue("krafter-fanout", msgs);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(r.retryMessages).toEqual([]);

    const targets = async (id: string) => (await deliveriesOf(id)).map((d) => d.destination_id).sort();
    expect(await targets(paid)).toEqual([invoices.id, everything.id].sort());
    expect(await targets(customer)).toEqual([everything.id]);
    expect(await targets(theirs)).toEqual([elsewhere.id]);
    expect(await targets(nobody)).toEqual([]);
    for (const id of [paid, customer, theirs, nobody]) expect(await eventStatus(id)).toBe("dispatched");

    // Four deliveries, each sent once (the repeated message in the batch sends nothing twice).
    const received = await eventually(async () => {
      const reqs = await box.requests();
      return reqs.length >= 4 ? reqs : undefined;
    });
    await new Promise((r) => setTimeout(r, 1500)); // time for any duplicate to arrive
    expect((await box.requests()).map((q) => q.headers["webhook-id"]).sort()).toEqual([paid, paid, customer, theirs].sort());
    expect(received.length).toBe(4);
  });

  it("a batch whose fan-out fails is retried whole, and nothing is half-written", async () => {
    const box = await mailbox();
    await createDestination(account, source.id, { url: box.url });
    const a = await insertEvent(source.id, { status: "pending" });
    const b = await insertEvent(source.id, { status: "pending" });
    // Fault injection: D1 refuses the batch's write.
    const realDb = (env as unknown as Env).DB;
    const failingDb = new Proxy(realDb, {
      get: (target, prop) =>
        prop === "batch"
          ? () => Promise.reject(new Error("D1 unavailable"))
          : typeof Reflect.get(target, prop) === "function"
            ? (Reflect.get(target, prop) as (...args: unknown[]) => unknown).bind(target)
            : Reflect.get(target, prop),
    });
    const r = await runQueue("krafter-fanout", [a, b].map((event_id) => ({ kind: "fanout" as const, event_id })), {
      env: { ...(env as unknown as Env), DB: failingDb } as Env,
    });
    expect(r.explicitAcks).toEqual([]);
    expect(r.retryMessages.map((m) => m.msgId)).toEqual(r.ids);
    expect(await deliveriesOf(a)).toEqual([]);
    expect(await eventStatus(a)).toBe("pending");

    // The queue hands them over again: each goes alone, and is delivered once.
    await runQueue("krafter-fanout", [a, b].map((event_id) => ({ kind: "fanout" as const, event_id })), { attempts: 2 });
    await eventually(async () => ((await box.requests()).length >= 2 ? true : undefined));
    expect((await box.requests()).map((q) => q.headers["webhook-id"]).sort()).toEqual([a, b].sort());
  });

  it("fans out a batch to more deliveries than one insert statement holds (2,100 rows: two statements, one D1 batch)", async () => {
    const box = await mailbox();
    const dests = [];
    for (let i = 0; i < 70; i++) dests.push(await createDestination(account, source.id, { url: box.url }));
    const ids = [];
    for (let i = 0; i < 30; i++) ids.push(await insertEvent(source.id, { status: "pending" }));
    const r = await runQueue("krafter-fanout", ids.map((event_id) => ({ kind: "fanout" as const, event_id })));
    expect(r.explicitAcks).toEqual(r.ids);
    const count = await env.DB.prepare(
      `SELECT count(*) AS n FROM deliveries WHERE event_id IN (${ids.map(() => "?").join(",")})`,
    )
      .bind(...ids)
      .first<number>("n");
    expect(count).toBe(2100);
    for (const id of ids) expect(await eventStatus(id)).toBe("dispatched");
    // Every one of them queued once and delivered.
    await eventually(async () => ((await box.requests()).length >= 2100 ? true : undefined), 90_000, "2,100 deliveries");
    const eventsSeen = new Set((await box.requests()).map((q) => q.headers["webhook-id"]));
    expect(eventsSeen).toEqual(new Set(ids));
    expect((await box.requests()).length).toBe(2100);
  }, 120_000);

  it("drops a fan-out message whose event is gone", async () => {
    const r = await runQueue("krafter-fanout", [{ kind: "fanout", event_id: crypto.randomUUID() }]);
    expect(r.explicitAcks).toEqual(r.ids);
  });
});

describe("dead letters", () => {
  it("records a dead-lettered delivery as failed, with an attempt saying why", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const msg = await insertDelivery(await insertEvent(source.id), dest.id);
    const r = await runQueue("krafter-dead-letter", [msg]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await deliveryRow(msg.delivery_id)).toMatchObject({ status: "failed", attempt_count: 1 });
    const [a] = await attemptRows(msg.delivery_id);
    expect(a).toMatchObject({ outcome: "failed", number: 1 });
    expect(a!.error).toMatch(/dead-lettered/);
  });

  it("marks an event whose fan-out was dead-lettered, so the sweep leaves it and the log shows it", async () => {
    const eventId = await insertEvent(source.id, { status: "pending" });
    await runQueue("krafter-dead-letter", [{ kind: "fanout", event_id: eventId }]);
    expect(await eventStatus(eventId)).toBe("dead_lettered");
  });
});

describe("the cron trigger", () => {
  it("re-queues events whose fan-out never ran, and they are delivered", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const stuck = await insertEvent(source.id, { status: "pending", receivedAt: Date.now() - 10 * 60_000 });
    const fresh = await insertEvent(source.id, { status: "pending" });

    const ctx = createExecutionContext();
    await worker.scheduled!(createScheduledController({ cron: "* * * * *" }), env as unknown as Env, ctx);
    await waitOnExecutionContext(ctx);

    const [req] = await eventually(async () => {
      const reqs = await box.requests();
      return reqs.length > 0 ? reqs : undefined;
    });
    expect(req!.headers["webhook-id"]).toBe(stuck);
    expect(() => new Webhook(dest.secret).verify(req!.body, req!.headers)).not.toThrow();
    // An event younger than SWEEP_AFTER_SECONDS is left to the queue.
    expect(await deliveriesOf(fresh)).toHaveLength(0);
    expect(await eventStatus(fresh)).toBe("pending");
  });

  it("delivers an event whose queue send failed at ingest (202 all the same, then the sweep)", async () => {
    const box = await mailbox();
    await createDestination(account, source.id, { url: box.url });
    const realQueue = (env as unknown as Env).FANOUT_QUEUE;
    // Fault injection: the producer fails; the event is already durable in D1.
    const failingQueue = {
      send: () => Promise.reject(new Error("queue unavailable")),
      sendBatch: realQueue.sendBatch.bind(realQueue),
    } as unknown as Queue;
    const res = await call("POST", new URL(source.ingest_url).pathname, {
      raw: JSON.stringify({ type: "invoice.paid" }),
      headers: { "content-type": "application/json" },
      env: { ...(env as unknown as Env), FANOUT_QUEUE: failingQueue } as Env,
    });
    expect(res.status).toBe(202);
    const { event_id } = (await json(res)).data;
    expect(await eventStatus(event_id)).toBe("pending");

    // Later than SWEEP_AFTER_SECONDS (default 120 s): the sweep picks it up.
    const later = { ...servicesFor(env as unknown as Env), now: () => Date.now() + 10 * 60_000 };
    const report = await housekeeping(later);
    expect(report.events_requeued).toBeGreaterThanOrEqual(1);
    const [req] = await eventually(async () => {
      const reqs = await box.requests();
      return reqs.length > 0 ? reqs : undefined;
    });
    expect(req!.headers["webhook-id"]).toBe(event_id);
  });

  it("re-queues a delivery long past its due time (saved but never attempted)", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const msg = await insertDelivery(await insertEvent(source.id), dest.id);
    await env.DB.prepare("UPDATE deliveries SET next_attempt_at = ? WHERE id = ?").bind(Date.now() - 3600_000, msg.delivery_id).run();
    const report = await housekeeping(servicesFor(env as unknown as Env));
    expect(report.deliveries_requeued).toBeGreaterThanOrEqual(1);
    await eventually(async () => ((await deliveryRow(msg.delivery_id))?.status === "succeeded" ? true : undefined));
    expect(await box.requests()).toHaveLength(1);
  });

  it("purges events older than RETENTION_DAYS with their deliveries and attempts, and leaves the rest", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const day = 86_400_000;
    const old = await insertEvent(source.id, { receivedAt: Date.now() - 31 * day });
    const older = await insertEvent(source.id, { receivedAt: Date.now() - 400 * day });
    const recent = await insertEvent(source.id, { receivedAt: Date.now() - 29 * day });
    const oldDelivery = await insertDelivery(old, dest.id);
    const recentDelivery = await insertDelivery(recent, dest.id);
    await runQueue("krafter-dead-letter", [oldDelivery, recentDelivery]); // gives each an attempt row

    const report = await housekeeping(servicesFor(envWith({ RETENTION_DAYS: "30" })));
    expect(report.events_purged).toBeGreaterThanOrEqual(2);
    const ids = (await env.DB.prepare("SELECT id FROM events WHERE source_id = ?").bind(source.id).all<{ id: string }>()).results.map((r) => r.id);
    expect(ids).toEqual([recent]);
    expect(ids).not.toContain(older);
    expect(await deliveryRow(oldDelivery.delivery_id)).toBeNull();
    expect(await attemptRows(oldDelivery.delivery_id)).toHaveLength(0);
    expect(await deliveryRow(recentDelivery.delivery_id)).not.toBeNull();
    expect(await attemptRows(recentDelivery.delivery_id)).toHaveLength(1);
  });
});

describe("fan-out retried after dying between its insert and its send", () => {
  it("queues the deliveries an earlier run inserted but never queued", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { status: "pending" });
    // What a run that died after its insert leaves behind: a delivery row, no message.
    const orphan = await insertDelivery(eventId, dest.id);
    // A first delivery of the message would queue only what it inserts itself: nothing.
    await runQueue("krafter-fanout", [{ kind: "fanout", event_id: eventId }]);
    await new Promise((r) => setTimeout(r, 2500));
    expect(await box.requests()).toHaveLength(0);
    // The queue hands the message over again (attempts > 1): the orphan is queued.
    await runQueue("krafter-fanout", [{ kind: "fanout", event_id: eventId }], { attempts: 2 });
    await eventually(async () => ((await deliveryRow(orphan.delivery_id))?.status === "succeeded" ? true : undefined));
    expect((await box.requests()).map((r) => r.headers["webhook-id"])).toEqual([eventId]);
  });
});
