/**
 * Fan-out: each partition turns its events into deliveries (one per enabled destination
 * whose event_filter matches) and their deliver messages, through its outbox, right after
 * the ingest and again from its alarm until the queue has them. Against the real
 * partitions, D1 and Queues; the deliveries arrive at real loopback receivers.
 */
import { createExecutionContext, createScheduledController, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import { housekeeping } from "../../src/housekeeping";
import { servicesFor, type Services } from "../../src/services";
import type { EventStore } from "../../src/store/event-store";
import { dayOf, partitionOf } from "../../src/store/ids";
import { outbox } from "../../src/store/schema";
import type { DeliverMessage } from "../../src/delivery/messages";
import { call, createAccount, createDestination, createSource, eventually, json, mailbox, type Account } from "../helpers/api";
import {
  attemptRows,
  deliveriesOf,
  deliveryRow,
  eventPartition,
  eventStatus,
  inPartition,
  insertDelivery,
  insertEvent,
  partition,
  readPartition,
  runPartitionAlarm,
  runQueue,
} from "../helpers/delivery";

let account: Account;
let source: { id: string; ingest_url: string };

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "fanout" });
});

const settle = (ms = 1500) => new Promise((r) => setTimeout(r, ms));

describe("fan-out in the partition", () => {
  it("queues one delivery per enabled destination whose event_filter matches", async () => {
    const box = await mailbox();
    const make = (event_filter: string[], enabled = true) => createDestination(account, source.id, { url: box.url, event_filter, enabled });
    const all = await make([]);
    const exact = await make(["invoice.paid"]);
    const prefix = await make(["invoice.*"]);
    const star = await make(["*"]);
    const other = await make(["customer.created"]);
    const otherPrefix = await make(["charge.*", "invoice.payment_failed"]);
    const disabled = await make([], false);

    const eventId = await insertEvent(source.id, { type: "invoice.paid", status: "pending" });
    expect(await runPartitionAlarm(eventPartition(eventId))).toBe(true);

    const got = (await deliveriesOf(source.id, eventId)).map((d) => d.destination_id).sort();
    expect(got).toEqual([all.id, exact.id, prefix.id, star.id].sort());
    for (const d of [other, otherPrefix, disabled]) expect(got).not.toContain(d.id);
    expect(await eventStatus(source.id, eventId)).toBe("dispatched");

    // The deliver messages went through the real queue to the receiver.
    const received = await eventually(async () => {
      const reqs = await box.requests();
      return reqs.length >= 4 ? reqs : undefined;
    });
    expect(received.map((q) => q.headers["webhook-id"])).toEqual([eventId, eventId, eventId, eventId]);
  });

  it("happens right after the ingest, without waiting for the alarm", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw: JSON.stringify({ type: "invoice.paid" }), headers: { "content-type": "application/json" } });
    expect(res.status).toBe(202);
    const { event_id } = (await json(res)).data;
    const [req] = await eventually(async () => {
      const reqs = await box.requests();
      return reqs.length > 0 ? reqs : undefined;
    }, 5000);
    expect(req!.headers["webhook-id"]).toBe(event_id);
    expect(() => new Webhook(dest.secret).verify(req!.body, req!.headers)).not.toThrow();
  });

  it("is idempotent: a second drain queues nothing twice", async () => {
    const box = await mailbox();
    await createDestination(account, source.id, { url: box.url });
    await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { status: "pending" });
    await runPartitionAlarm(eventPartition(eventId));
    await runPartitionAlarm(eventPartition(eventId));
    expect(await deliveriesOf(source.id, eventId)).toHaveLength(2);
    await eventually(async () => ((await box.requests()).length >= 2 ? true : undefined));
    await settle(2500); // time for any duplicate to arrive
    expect(await box.requests()).toHaveLength(2);
  });

  it("fans out to more than 100 destinations (sendBatch in chunks of 100)", async () => {
    const box = await mailbox();
    for (let i = 0; i < 120; i++) await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { status: "pending" });
    await runPartitionAlarm(eventPartition(eventId));
    expect(await deliveriesOf(source.id, eventId)).toHaveLength(120);
    await eventually(async () => ((await box.requests()).length >= 120 ? true : undefined), 30_000, "120 deliveries");
  });

  it("sends one message per event whatever its number of destinations (100 deliveries at most in one)", async () => {
    const box = await mailbox();
    for (let i = 0; i < 103; i++) await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { status: "pending" });
    const sent = await runInDurableObject(partition(eventPartition(eventId)), async (instance: EventStore) => {
      const store = instance as unknown as { s: Services };
      const real = store.s;
      const bodies: DeliverMessage[] = [];
      // Records what the partition sends, and sends it.
      store.s = {
        ...real,
        queues: {
          ...real.queues,
          deliver: (key) => {
            const q = real.queues.deliver(key);
            return { sendBatch: (batch: { body: DeliverMessage }[]) => (bodies.push(...batch.map((m) => m.body)), q.sendBatch(batch)) } as unknown as Queue<DeliverMessage>;
          },
        },
      };
      await instance.alarm();
      store.s = real;
      return bodies;
    });
    expect(sent.map((m) => m.deliveries.length).sort((a, b) => a - b)).toEqual([3, 100]);
    for (const m of sent) expect(m.event_id).toBe(eventId);
    const ids = sent.flatMap((m) => m.deliveries.map((d) => d.delivery_id));
    expect(new Set(ids).size).toBe(103);
    expect(new Set(ids)).toEqual(new Set((await deliveriesOf(source.id, eventId)).map((d) => d.id)));
    await eventually(async () => ((await box.requests()).length >= 103 ? true : undefined), 30_000, "103 deliveries");
  });

  it("fans out the events of a round together, each to its matching destinations", async () => {
    const box = await mailbox();
    const invoices = await createDestination(account, source.id, { url: box.url, event_filter: ["invoice.*"] });
    const everything = await createDestination(account, source.id, { url: box.url });
    const paid = await insertEvent(source.id, { type: "invoice.paid", status: "pending" });
    const customer = await insertEvent(source.id, { type: "customer.created", status: "pending" });
    await runPartitionAlarm(eventPartition(paid));
    const targets = async (id: string) => (await deliveriesOf(source.id, id)).map((d) => d.destination_id).sort();
    expect(await targets(paid)).toEqual([invoices.id, everything.id].sort());
    expect(await targets(customer)).toEqual([everything.id]);
    await eventually(async () => ((await box.requests()).length >= 3 ? true : undefined));
    await settle();
    expect((await box.requests()).map((q) => q.headers["webhook-id"]).sort()).toEqual([paid, paid, customer].sort());
  });

  it("fans out to a destination created a moment ago, though the partition had read the destinations before", async () => {
    const first = await mailbox();
    await createDestination(account, source.id, { url: first.url });
    const path = new URL(source.ingest_url).pathname;
    const send = async () => (await json(await call("POST", path, { raw: JSON.stringify({ type: "ping" }), headers: { "content-type": "application/json" } }))).data.event_id as string;
    const a = await send();
    await eventually(async () => ((await first.requests()).length >= 1 ? true : undefined));
    const second = await mailbox();
    await createDestination(account, source.id, { url: second.url });
    const b = await send();
    // Same day and shard (EVENT_SHARDS=1 in tests): the partition that cached the first list.
    expect(partitionOf(source.id, a)).toEqual(partitionOf(source.id, b));
    const got = await eventually(async () => {
      const reqs = await second.requests();
      return reqs.length >= 1 ? reqs : undefined;
    });
    expect(got.map((r) => r.headers["webhook-id"])).toEqual([b]);
  });

  it("a queue refusing the messages loses nothing: the outbox keeps them, the alarm comes back within seconds and sends each once", async () => {
    const box = await mailbox();
    await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { status: "pending" });
    const ref = eventPartition(eventId);
    const refused = await runInDurableObject(partition(ref), async (instance: EventStore, state) => {
      const store = instance as unknown as { s: Services };
      const real = store.s;
      // Fault injection: the deliver queue refuses every send.
      store.s = { ...real, queues: { ...real.queues, deliver: () => ({ sendBatch: () => Promise.reject(new Error("queue unavailable")) }) as unknown as Queue<never> } };
      await instance.alarm();
      const kept = state.storage.sql.exec("SELECT count(*) AS n FROM outbox").one().n;
      const alarm = await state.storage.getAlarm();
      store.s = real;
      return { kept, alarm };
    });
    expect(refused.kept).toBe(1);
    expect(await deliveriesOf(source.id, eventId)).toHaveLength(1);
    expect(await box.requests()).toHaveLength(0);
    // Retried within seconds (not at the retention alarm, days away), by the alarm itself.
    expect(refused.alarm! - Date.now()).toBeLessThan(10_000);
    await eventually(async () => ((await box.requests()).length >= 1 ? true : undefined));
    await settle(2000);
    expect((await box.requests()).map((q) => q.headers["webhook-id"])).toEqual([eventId]);
    expect(await readPartition(ref, (db) => db.select().from(outbox).all())).toEqual([]);
  });

  it("a delivery written with its message but never sent (a crash in between) is sent by the next drain", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id);
    const msg = await insertDelivery(eventId, dest.id);
    await inPartition(eventPartition(eventId), (db) =>
      db.insert(outbox).values({ kind: "deliver", queueKey: dest.id, body: msg, delaySeconds: 0, createdAt: Date.now() }).run(),
    );
    await runPartitionAlarm(eventPartition(eventId));
    await eventually(async () => ((await deliveryRow(msg.deliveries[0]!.delivery_id))?.status === "succeeded" ? true : undefined));
    expect(await box.requests()).toHaveLength(1);
  });

  it("fans out a round to more deliveries than one send holds (70 destinations × 30 events: 2,100)", async () => {
    const box = await mailbox();
    for (let i = 0; i < 70; i++) await createDestination(account, source.id, { url: box.url });
    const ids = [];
    for (let i = 0; i < 30; i++) ids.push(await insertEvent(source.id, { status: "pending" }));
    await runPartitionAlarm(eventPartition(ids[0]!));
    let count = 0;
    for (const id of ids) {
      count += (await deliveriesOf(source.id, id)).length;
      expect(await eventStatus(source.id, id)).toBe("dispatched");
    }
    expect(count).toBe(2100);
    await eventually(async () => ((await box.requests()).length >= 2100 ? true : undefined), 90_000, "2,100 deliveries");
    expect(new Set((await box.requests()).map((q) => q.headers["webhook-id"]))).toEqual(new Set(ids));
    expect((await box.requests()).length).toBe(2100);
  }, 120_000);
});

describe("dead letters", () => {
  it("records a dead-lettered delivery as failed, with an attempt saying why", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const msg = await insertDelivery(await insertEvent(source.id), dest.id);
    const r = await runQueue("krafter-dead-letter", [msg]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "failed", attempt_count: 1 });
    const [a] = await attemptRows(msg.deliveries[0]!.delivery_id);
    expect(a).toMatchObject({ outcome: "failed", number: 1 });
    expect(a!.error).toMatch(/dead-lettered/);
  });

  it("leaves a delivery alone when the dead letter is an older message of it", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const msg = await insertDelivery(await insertEvent(source.id), dest.id);
    await runQueue("krafter-dead-letter", [{ ...msg, deliveries: [{ ...msg.deliveries[0]!, token: crypto.randomUUID() }] }]);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempt_count: 0 });
    expect(await attemptRows(msg.deliveries[0]!.delivery_id)).toEqual([]);
  });
});

describe("the cron trigger", () => {
  it("deletes the bookkeeping rows of days past retention, and nothing younger", async () => {
    const s = servicesFor(env as unknown as Env);
    const today = dayOf(Date.now());
    const old = await insertEvent(source.id, { receivedAt: Date.now() - 40 * 86_400_000 });
    const recent = await insertEvent(source.id, { receivedAt: Date.now() - 2 * 86_400_000 });
    const ctx = createExecutionContext();
    await worker.scheduled!(createScheduledController({ cron: "* * * * *" }), env as unknown as Env, ctx);
    await waitOnExecutionContext(ctx);
    const days = (await env.DB.prepare("SELECT day FROM partitions WHERE source_id = ? ORDER BY day").bind(source.id).all<{ day: number }>()).results.map((r) => r.day);
    expect(days).toEqual([eventPartition(recent).day]);
    expect(eventPartition(old).day).toBeLessThan(today - 30);
    // Once done, nothing is left to do.
    expect(await housekeeping(s)).toEqual({ removals_requeued: 0, partition_rows_expired: 0 });
  });
});
