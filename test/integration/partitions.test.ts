/**
 * Where events live: partitions (EventStore Durable Objects) per source, UTC day and
 * shard. Routing of ids, dedupe across shards and across midnight, lists merged across
 * shards and days, replay and redeliver across partitions, retention by whole partition,
 * background removal after a delete, a partition evicted mid-batch, and D1 holding no
 * event, delivery or attempt.
 */
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { deliverBatch } from "../../src/delivery/deliver";
import { carryOutRemoval } from "../../src/delivery/removal";
import type { WorkMessage } from "../../src/delivery/messages";
import { servicesFor, type Services } from "../../src/services";
import type { EventStore } from "../../src/store/event-store";
import { MAX_DAY_SHARDS } from "../../src/store/shards";
import { DAY_MS, dayOf, dayStart, partitionOf, readId, shardOfKey, type PartitionRef } from "../../src/store/ids";
import { call, createAccount, createDestination, createSource, db, eventually, json, mailbox, type Account } from "../helpers/api";
import {
  attemptRows,
  deliveriesOf,
  eventPartition,
  inPartition,
  insertDelivery,
  insertEvent,
  partition,
  partitionsOf,
  readPartition,
  runPartitionAlarm,
  runQueue,
  storedEvents,
} from "../helpers/delivery";
import { attempts, deliveries, events, outbox } from "../../src/store/schema";
import { and, eq, getTableColumns, getTableName } from "drizzle-orm";
import { partitions } from "../../src/db/schema";

let account: Account;
let source: { id: string; ingest_url: string };
const workerEnv = env as unknown as Env;

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "partitions" });
});

const base = () => `/api/v1/webhooks/sources/${source.id}`;
const get = async (path: string) => json(await call("GET", path, { key: account.key }));
const ingestTo = (ref: PartitionRef, event: { key: string | null; at: number; type?: string }, shards: number) =>
  partition(ref).ingest(
    { type: event.type ?? "invoice.paid", dedupeKey: event.key, payload: '{"a":1}', payloadIsJson: true, headers: {}, receivedAt: event.at },
    shards,
  );

/** Doubles a day's shard count `times` times, as a growing partition does. */
async function split(sourceId: string, day: number, times: number): Promise<number> {
  let n = 1;
  const ref = { sourceId, day, shard: 0 };
  await inPartition(ref, () => undefined);
  for (let i = 0; i < times; i++) n = await partition(ref).split();
  return n;
}

const send = (key: string, type = "t") =>
  call("POST", new URL(source.ingest_url).pathname, { raw: JSON.stringify({ type }), headers: { "content-type": "application/json", "idempotency-key": key } });

describe("routing", () => {
  it("a quiet source's day has one partition; once the day's count doubles, each delivery id goes to the shard it names", async () => {
    const today = dayOf(Date.now());
    const first = (await json(await send("before-split"))).data.event_id as string;
    expect(readId(first)!.shard).toBe(0);
    expect(await split(source.id, today, 2)).toBe(4);
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const res = await send(`key-${i}`);
      expect(res.status).toBe(202);
      const id = (await json(res)).data.event_id as string;
      expect(readId(id)!.shard).toBe(shardOfKey(`key-${i}`, 4));
      expect(dayOf(readId(id)!.ms)).toBe(today);
      ids.push(id);
    }
    expect(new Set(ids.map((id) => readId(id)!.shard)).size).toBeGreaterThan(1);
    // Each event is found through its id alone.
    for (const id of [first, ...ids]) expect((await get(`${base()}/events/${id}`)).data.id).toBe(id);
    // D1 knows the day's count and which shards exist, in one row for the day.
    const rows = (await env.DB.prepare("SELECT day, shards, base_shards FROM partitions WHERE source_id = ?").bind(source.id).all()).results;
    expect(rows).toEqual([{ day: today, shards: 4, base_shards: 1 }]);
    expect((await partitionsOf(source.id)).map((p) => p.shard).sort()).toEqual([...new Set([0, ...ids.map((id) => readId(id)!.shard)])].sort());
  });

  it("dedupes across a split: an event stored before the day's count doubled is found by a duplicate routed after", async () => {
    const today = dayOf(Date.now());
    const keys = Array.from({ length: 8 }, (_, i) => `evt_${i}_${crypto.randomUUID()}`);
    const before = await Promise.all(keys.map(async (k) => (await json(await send(k))).data.event_id as string));
    expect(before.every((id) => readId(id)!.shard === 0)).toBe(true);
    await split(source.id, today, 3);
    // Some of these keys now belong to shards 1 to 7: each duplicate still answers 200 with the first id.
    expect(keys.some((k) => shardOfKey(k, 8) !== 0)).toBe(true);
    const again = await Promise.all(keys.map(async (k) => {
      const res = await send(k);
      expect(res.status).toBe(200);
      return (await json(res)).data.event_id as string;
    }));
    expect(again).toEqual(before);
    expect((await storedEvents(source.id)).map((e) => e.id).sort()).toEqual([...before].sort());
    // The old shard knows it now: a key that belongs elsewhere is sent on, never stored there,
    // even by a router that still thinks the day has one shard.
    const elsewhere = Array.from({ length: 50 }, (_, i) => `new-${i}`).find((k) => shardOfKey(k, 8) !== 0)!;
    const answer = await partition({ sourceId: source.id, day: today, shard: 0 }).ingest(
      { type: "t", dedupeKey: elsewhere, payload: "{}", payloadIsJson: true, headers: {}, receivedAt: Date.now() },
      1,
    );
    expect(answer).toEqual({ kind: "moved", shards: 8 });
  });

  it("a partition growing fast enough to pass PARTITION_SPLIT_BYTES by the end of its day raises the day's count to what it needs", async () => {
    const today = dayOf(Date.now());
    await send("first");
    const ref = { sourceId: source.id, day: today, shard: 0 };
    const counts = await runInDurableObject(partition(ref), async (instance: EventStore) => {
      const store = instance as unknown as { s: Services; considerSplit(): Promise<void> };
      const real = store.s;
      store.s = { ...real, config: { ...real.config, partitionSplitBytes: 64 * 1024 } };
      const t0 = Date.now();
      instance.now = () => t0;
      await store.considerSplit(); // the first look: where it starts from
      for (let i = 0; i < 50; i++) {
        await instance.ingest({ type: "t", dedupeKey: null, payload: "x".repeat(2000), payloadIsJson: false, headers: {}, receivedAt: t0 }, 1);
      }
      instance.now = () => t0 + 5_000;
      await store.considerSplit(); // too soon to judge a rate
      const early = (await env.DB.prepare("SELECT shards FROM partitions WHERE source_id = ?").bind(source.id).first<number>("shards"))!;
      instance.now = () => t0 + 31_000;
      await store.considerSplit(); // ~100 KB in 31 s, but a burst of seconds is not a day's rate
      const burst = (await env.DB.prepare("SELECT shards FROM partitions WHERE source_id = ?").bind(source.id).first<number>("shards"))!;
      instance.now = () => t0 + 301_000;
      await store.considerSplit(); // judged over 5 minutes: far past 64 KB by midnight, whatever the count
      store.s = real;
      return { early, burst, late: (await env.DB.prepare("SELECT shards FROM partitions WHERE source_id = ?").bind(source.id).first<number>("shards"))! };
    });
    expect(counts).toEqual({ early: 1, burst: 1, late: MAX_DAY_SHARDS });
  });

  it("dedupes across shards: the same delivery id always finds its first event; different ones are different events", async () => {
    await split(source.id, dayOf(Date.now()), 2);
    const first = await Promise.all(["a", "b", "c", "d", "e", "f"].map(async (k) => (await json(await send(k))).data.event_id as string));
    const again = await Promise.all(["a", "b", "c", "d", "e", "f"].map(async (k) => {
      const res = await send(k);
      expect(res.status).toBe(200);
      return (await json(res)).data.event_id as string;
    }));
    expect(again).toEqual(first);
    expect(new Set(first).size).toBe(6);
    expect((await storedEvents(source.id)).map((e) => e.id).sort()).toEqual([...first].sort());
  });

  it("dedupes across midnight: a duplicate one second after 00:00 UTC of an event from one second before it is a duplicate", async () => {
    const day = dayOf(Date.now()) - 1;
    const midnight = dayStart(day + 1);
    const key = `evt_${crypto.randomUUID()}`;
    const before = await ingestTo({ sourceId: source.id, day, shard: 0 }, { key, at: midnight - 1000 }, 1);
    expect(before.kind).toBe("stored");
    const after = await ingestTo({ sourceId: source.id, day: day + 1, shard: 0 }, { key, at: midnight + 1000 }, 1);
    expect(after).toEqual({ kind: "duplicate", eventId: (before as { eventId: string }).eventId });
    // Another key after midnight is a new event, in the new day's partition.
    const other = await ingestTo({ sourceId: source.id, day: day + 1, shard: 0 }, { key: `${key}-2`, at: midnight + 2000 }, 1);
    expect(other.kind).toBe("stored");
    expect(partitionOf(source.id, (other as { eventId: string }).eventId)!.day).toBe(day + 1);
    // The day before has been asked for its keys: it takes no new events (a late clock goes to the next day).
    expect(await ingestTo({ sourceId: source.id, day, shard: 0 }, { key: "late", at: midnight - 1 }, 1)).toEqual({ kind: "sealed" });
  });

  it("dedupes across midnight after the day before split: the new day starts with half its count, and finds the key where it went", async () => {
    const day = dayOf(Date.now()) - 1;
    expect(await split(source.id, day, 2)).toBe(4);
    const key = ["k1", "k2", "k3", "k4", "k5", "k6"].map((k) => `${k}-${crypto.randomUUID()}`).find((k) => shardOfKey(k, 4) >= 2)!;
    const before = await ingestTo({ sourceId: source.id, day, shard: shardOfKey(key, 4) }, { key, at: dayStart(day + 1) - 1000 }, 4);
    expect(before.kind).toBe("stored");
    // Today starts at 2 shards: the key's shard today is not the one it had yesterday.
    const todayShard = shardOfKey(key, 2);
    expect(todayShard).not.toBe(shardOfKey(key, 4));
    const after = await ingestTo({ sourceId: source.id, day: day + 1, shard: todayShard }, { key, at: dayStart(day + 1) + 1000 }, 2);
    expect(after).toEqual({ kind: "duplicate", eventId: (before as { eventId: string }).eventId });
    const rows = (await env.DB.prepare("SELECT day, shards, base_shards FROM partitions WHERE source_id = ? ORDER BY day").bind(source.id).all()).results;
    expect(rows).toEqual([{ day, shards: 4, base_shards: 1 }, { day: day + 1, shards: 2, base_shards: 2 }]);
  });

  it("an event id that names no partition of this source, or another source's event, is a 404", async () => {
    const other = await createSource(account, { name: "other" });
    const theirs = await insertEvent(other.id);
    expect((await call("GET", `${base()}/events/${theirs}`, { key: account.key })).status).toBe(404);
    expect((await call("GET", `${base()}/events/${crypto.randomUUID()}`, { key: account.key })).status).toBe(404);
    expect((await call("GET", `/api/v1/webhooks/sources/${other.id}/events/${theirs}`, { key: account.key })).status).toBe(200);
  });
});

describe("lists across shards and days", () => {
  it("merge every shard of every day, newest first, with cursors that neither repeat nor skip", async () => {
    const today = dayOf(Date.now());
    const seeded: string[] = [];
    for (const day of [today - 2, today - 1, today]) {
      for (const shard of [0, 1, 2, 3]) {
        for (let i = 0; i < 3; i++) {
          const at = Math.min(dayStart(day) + 3_600_000 * (1 + i) + shard * 1000, Date.now() - 1000);
          seeded.push(await insertEvent(source.id, { receivedAt: at, shard, type: i === 0 ? "invoice.paid" : "customer.created" }));
        }
      }
    }
    const want = [...seeded].sort().reverse();
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await get(`${base()}/events?limit=7${cursor ? `&cursor=${cursor}` : ""}`);
      seen.push(...page.data.map((e: { id: string }) => e.id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor && pages < 20);
    expect(seen).toEqual(want);
    expect(pages).toBe(Math.ceil(36 / 7));

    // A type filter and a window, across the same partitions.
    const paid = await get(`${base()}/events?type=invoice.paid&limit=100`);
    expect(paid.data.map((e: { id: string }) => e.id)).toEqual(want.filter((id) => seeded.indexOf(id) % 3 === 0));
    const since = new Date(dayStart(today - 1)).toISOString();
    const until = new Date(dayStart(today)).toISOString();
    const yesterday = await get(`${base()}/events?since=${since}&until=${until}&limit=100`);
    expect(yesterday.data.map((e: { id: string }) => e.id)).toEqual(want.filter((id) => dayOf(readId(id)!.ms) === today - 1));
  });

  it("a destination's attempts made on different days and shards list newest first, page by page", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const today = dayOf(Date.now());
    const made: string[] = [];
    for (const [day, shard] of [[today - 1, 0], [today - 1, 2], [today, 1], [today, 3]] as const) {
      const eventId = await insertEvent(source.id, { receivedAt: dayStart(day) + 60_000, shard });
      const msg = await insertDelivery(eventId, dest.id);
      await runQueue("krafter-dead-letter", [msg]); // one failed attempt each, made now: today's partitions
      made.push(...(await attemptRows(msg.deliveries[0]!.delivery_id)).map((a) => a.id));
    }
    const first = await get(`${base()}/destinations/${dest.id}/attempts?limit=3`);
    const second = await get(`${base()}/destinations/${dest.id}/attempts?limit=3&cursor=${first.next_cursor}`);
    expect([...first.data, ...second.data].map((a: { id: string }) => a.id)).toEqual([...made].sort().reverse());
    expect(second.next_cursor).toBeNull();
  });
});

describe("a day of many shards", () => {
  it("up to 256 shards a day; a page reads at most 300 partitions and continues below the last day it read, skipping nothing", async () => {
    const today = dayOf(Date.now());
    const newest = await insertEvent(source.id, { shard: 200, receivedAt: Date.now() - 1000 });
    const oldest = await insertEvent(source.id, { shard: 255, receivedAt: dayStart(today - 3) + 60_000 });
    expect(await partitionsOf(source.id)).toEqual([
      { sourceId: source.id, day: today - 3, shard: 255 },
      { sourceId: source.id, day: today, shard: 200 },
    ]);
    // Two busy days between them whose 128 shards hold nothing of this filter, and 100 more shards on the oldest day.
    const mask = (shards: number[]) => Array.from({ length: 256 }, (_, i) => (shards.includes(i) ? "1" : "0")).join("");
    const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
    const d1 = db();
    await d1.batch([
      d1.insert(partitions).values([today - 1, today - 2].map((day) => ({ sourceId: source.id, day, shards: 128, baseShards: 128, mask: mask(range(0, 128)), createdAt: Date.now() }))),
      d1.update(partitions).set({ shards: 256, mask: mask([...range(0, 100), 255]) }).where(and(eq(partitions.sourceId, source.id), eq(partitions.day, today - 3))),
    ]);
    // 1 + 128 + 128 partitions fit the page's budget; the oldest day's 101 do not.
    const first = await get(`${base()}/events?limit=10`);
    expect(first.data.map((e: { id: string }) => e.id)).toEqual([newest]);
    expect(first.next_cursor).not.toBeNull();
    const second = await get(`${base()}/events?limit=10&cursor=${first.next_cursor}`);
    expect(second.data.map((e: { id: string }) => e.id)).toEqual([oldest]);
    expect(second.next_cursor).toBeNull();
  });
});

describe("replay and redeliver across partitions", () => {
  it("replay queues the window's events from every partition, once; while they are pending, again queues nothing", async () => {
    // Answers 500 after a delay: the deliveries stay pending (retried) while we replay again.
    const box = await mailbox({ repeat: { status: 500, delayMs: 200 } });
    const dest = await createDestination(account, source.id, { url: box.url });
    const today = dayOf(Date.now());
    const ids = [];
    for (const [day, shard] of [[today - 1, 0], [today - 1, 3], [today, 1], [today, 2]] as const) {
      ids.push(await insertEvent(source.id, { receivedAt: Math.min(dayStart(day) + 3_600_000, Date.now() - 1000), shard }));
    }
    const body = { since: new Date(dayStart(today - 1)).toISOString() };
    const first = await call("POST", `${base()}/destinations/${dest.id}/replay`, { key: account.key, body });
    expect(first.status).toBe(202);
    expect(await json(first)).toEqual({ data: { queued: 4, already_pending: 0 } });
    const second = await call("POST", `${base()}/destinations/${dest.id}/replay`, { key: account.key, body });
    expect(await json(second)).toEqual({ data: { queued: 0, already_pending: 4 } });
    const got = await eventually(async () => {
      const reqs = await box.requests();
      return new Set(reqs.map((r) => r.headers["webhook-id"])).size >= 4 ? reqs : undefined;
    });
    expect(new Set(got.map((r) => r.headers["webhook-id"]))).toEqual(new Set(ids));
  });

  it("redeliver finds an older day's event by its id, and does not queue a copy while one is pending", async () => {
    const box = await mailbox({ repeat: { status: 500, delayMs: 200 } });
    await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id, { receivedAt: Date.now() - 2 * DAY_MS, shard: 2 });
    const path = `${base()}/events/${eventId}/redeliver`;
    expect(await json(await call("POST", path, { key: account.key, body: {} }))).toEqual({ data: { queued: 1, already_pending: 0 } });
    expect(await json(await call("POST", path, { key: account.key, body: {} }))).toEqual({ data: { queued: 0, already_pending: 1 } });
    await eventually(async () => ((await box.requests()).length >= 1 ? true : undefined));
    expect((await box.requests())[0]!.headers["webhook-id"]).toBe(eventId);
  });
});

describe("retention", () => {
  it("drops a partition whole once its day is older than RETENTION_DAYS, under an injected clock; a younger one stays", async () => {
    const old = await insertEvent(source.id, { receivedAt: Date.now() - 5 * DAY_MS });
    const young = await insertEvent(source.id, { receivedAt: Date.now() - 1 * DAY_MS });
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    await insertDelivery(old, dest.id);
    // 30 days after the old partition's day: past retention for it, not for the younger one.
    const later = dayStart(eventPartition(old).day + 1 + 30) + 1;
    for (const id of [old, young]) {
      await runInDurableObject(partition(eventPartition(id)), async (instance: EventStore) => {
        instance.now = () => later;
        await instance.alarm();
      });
    }
    const tables = (ref: PartitionRef) =>
      readPartition(ref, (_db, _i, state) => state.storage.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'").one().n);
    expect(await tables(eventPartition(old))).toBe(0);
    expect(await tables(eventPartition(young))).toBeGreaterThan(0);
    expect((await storedEvents(source.id)).map((e) => e.id)).toEqual([young]);
    expect((await call("GET", `${base()}/events/${old}`, { key: account.key })).status).toBe(404);
    // Its bookkeeping row went with it.
    const days = (await env.DB.prepare("SELECT day FROM partitions WHERE source_id = ?").bind(source.id).all<{ day: number }>()).results.map((r) => r.day);
    expect(days).toEqual([eventPartition(young).day]);
  });

  it("sets the drop when the partition is first written, for the end of its day plus RETENTION_DAYS", async () => {
    const id = await insertEvent(source.id);
    const alarm = await runInDurableObject(partition(eventPartition(id)), (_i, state) => state.storage.getAlarm());
    expect(alarm).toBe(dayStart(eventPartition(id).day + 1 + 30));
  });
});

describe("removal after a delete", () => {
  async function removalMessages(sourceId: string): Promise<WorkMessage[]> {
    const { results } = await env.DB.prepare("SELECT id, source_id, destination_id, partitions FROM removals WHERE source_id = ?").bind(sourceId).all<{
      id: string;
      source_id: string;
      destination_id: string | null;
      partitions: string;
    }>();
    return results.map((r) => ({ kind: "removal", removal_id: r.id, chunk: 0, source_id: r.source_id, destination_id: r.destination_id, partitions: JSON.parse(r.partitions) }));
  }

  it("a destination's deliveries and attempts leave every partition in the background, even when the first try fails", async () => {
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const keep = await createDestination(account, source.id, { url: "https://hooks.example.com/y" });
    const today = dayOf(Date.now());
    const events = [await insertEvent(source.id, { receivedAt: dayStart(today - 1) + 1000, shard: 1 }), await insertEvent(source.id, { shard: 3 })];
    for (const e of events) for (const d of [dest, keep]) await runQueue("krafter-dead-letter", [await insertDelivery(e, d.id)]);
    expect((await call("DELETE", `${base()}/destinations/${dest.id}`, { key: account.key })).status).toBe(204);
    const [msg] = await removalMessages(source.id);
    expect(msg!.partitions).toHaveLength(3); // yesterday's shard 1, today's shards 1 (its attempt) and 3

    // The first try fails (a partition unreachable): the job stays, nothing is lost.
    const real = servicesFor(workerEnv);
    let failures = 1;
    const flaky: Services = {
      ...real,
      store: (ref) => {
        if (failures-- > 0) throw new Error("partition unreachable");
        return real.store(ref);
      },
    };
    await expect(carryOutRemoval(flaky, msg!)).rejects.toThrow();
    expect(await removalMessages(source.id)).toHaveLength(1);
    // The queue's retry carries it out.
    const r = await runQueue("krafter-work", [msg!]);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await removalMessages(source.id)).toEqual([]);
    for (const e of events) {
      expect((await deliveriesOf(source.id, e)).map((d) => d.destination_id)).toEqual([keep.id]);
    }
    const left = await get(`${base()}/destinations/${keep.id}/attempts`);
    expect(left.data).toHaveLength(2);
  });

  it("a destination with more deliveries and attempts than one chunk leaves a partition whole, chunk after chunk along the ids; the others' rows stay", async () => {
    const ref: PartitionRef = { sourceId: source.id, day: dayOf(Date.now()), shard: 0 };
    const gone = "dst_gone";
    const kept = "dst_kept";
    // 12,000 rows of the removed destination (more than two chunks of 5,000) between 3,000 of another.
    const counts = await inPartition(ref, async (_db, instance, state) => {
      const sql = state.storage.sql;
      const now = Date.now();
      for (let i = 0; i < 15_000; i++) {
        const id = `0${String(i).padStart(6, "0")}`;
        const destination = i % 5 === 4 ? kept : gone;
        sql.exec("INSERT INTO deliveries (id, event_id, destination_id, status, token, claimed_until, attempt_count, attempts_in_run, created_at, updated_at) VALUES (?, ?, ?, 'succeeded', 't', 0, 1, 1, ?, ?)", id, `e${id}`, destination, now, now);
        sql.exec("INSERT INTO attempts (id, delivery_id, event_id, destination_id, number, outcome, duration_ms, created_at) VALUES (?, ?, ?, ?, 1, 'succeeded', 5, ?)", `a${id}`, id, `e${id}`, destination, now);
      }
      expect(await instance.purgeDestination(gone)).toBe(true);
      const left = (table: string) => sql.exec<{ destination_id: string; n: number }>(`SELECT destination_id, count(*) AS n FROM ${table} GROUP BY destination_id`).toArray();
      return { deliveries: left("deliveries"), attempts: left("attempts") };
    });
    expect(counts.deliveries).toEqual([{ destination_id: kept, n: 3_000 }]);
    expect(counts.attempts).toEqual([{ destination_id: kept, n: 3_000 }]);
  });

  it("a source's partitions are dropped whole; the removal is recorded in the same D1 batch as the delete", async () => {
    await insertEvent(source.id, { shard: 0 });
    await insertEvent(source.id, { shard: 5 });
    const parts = await partitionsOf(source.id);
    expect(parts).toHaveLength(2);
    expect((await call("DELETE", base(), { key: account.key })).status).toBe(204);
    const [msg] = await removalMessages(source.id);
    expect(msg!.partitions.map(([, shard]) => shard).sort()).toEqual([0, 5]);
    await runQueue("krafter-work", [msg!]);
    for (const ref of parts) {
      expect(await readPartition(ref, (_db, instance) => instance["registration"])).toBeUndefined();
    }
    expect(await removalMessages(source.id)).toEqual([]);
  });
});

describe("a partition evicted", () => {
  it("its alarm is set to drain within a second before ingest answers, and goes back to the drop once nothing is left", async () => {
    const box = await mailbox();
    await createDestination(account, source.id, { url: box.url });
    const before = Date.now();
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw: "{}", headers: { "content-type": "application/json" } });
    expect(res.status).toBe(202);
    const ref = partitionOf(source.id, (await json(res)).data.event_id as string)!;
    // The 202 came after the alarm was durable: an object that stopped now would still drain.
    const alarm = await runInDurableObject(partition(ref), (_i: EventStore, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
    expect(alarm!).toBeGreaterThanOrEqual(before);
    expect(alarm!).toBeLessThanOrEqual(Date.now() + 1_000);
    await eventually(async () => ((await box.requests()).length === 1 ? true : undefined));
    // The alarm fires, finds nothing to drain, and sets the next look for lost messages
    // (deliveries were queued), within 30 minutes...
    await runInDurableObject(partition(ref), (instance: EventStore) => instance.alarm());
    const state = () =>
      runInDurableObject(partition(ref), async (_i: EventStore, st) => ({ alarm: await st.storage.getAlarm(), dropAt: st.storage.kv.get<number>("drop_at"), recoverAt: st.storage.kv.get<number>("recover_at") }));
    const next = await state();
    expect(next.alarm).toBe(next.recoverAt);
    expect(next.alarm!).toBeLessThanOrEqual(Date.now() + 30 * 60_000 + 1_000);
    // ...which finds nothing pending, and sets the retention drop.
    await runInDurableObject(partition(ref), (instance: EventStore) => {
      const t = next.recoverAt! + 1;
      instance.now = () => t;
      return instance.alarm();
    });
    const dropAt = await state();
    expect(dropAt.recoverAt).toBeUndefined();
    expect(dropAt.alarm).toBe(dropAt.dropAt);
    expect(dropAt.alarm!).toBeGreaterThan(Date.now() + DAY_MS);
  });

  it("between ingest and fan-out, and again between claim and record: nothing is lost, nothing sent twice", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const events = [];
    for (let i = 0; i < 5; i++) events.push(await insertEvent(source.id, { status: "pending" }));
    const ref = eventPartition(events[0]!);
    await evictDurableObject(partition(ref));
    // Restarted by its alarm: the pending events are fanned out.
    await runInDurableObject(partition(ref), (instance: EventStore) => instance.alarm());
    await eventually(async () => ((await box.requests()).length >= 5 ? true : undefined));

    // A deliver batch whose partition is evicted after the claim, before the record.
    const msgs = [];
    for (let i = 0; i < 5; i++) msgs.push(await insertDelivery(await insertEvent(source.id), dest.id));
    const real = servicesFor(workerEnv);
    const evicting: Services = {
      ...real,
      store: (r) => {
        const stub = real.store(r);
        return new Proxy(stub, {
          get: (target, prop) =>
            prop === "record"
              ? async (...args: Parameters<typeof target.record>) => {
                  await evictDurableObject(stub);
                  return target.record(...args);
                }
              : Reflect.get(target, prop),
        });
      },
    };
    const acks: number[] = [];
    await deliverBatch(evicting, msgs.map((body, i) => ({ id: `m-${i}`, body })), (i, s) => s.ack && acks.push(i));
    expect(acks.sort()).toEqual([0, 1, 2, 3, 4]);
    for (const m of msgs) expect((await attemptRows(m.deliveries[0]!.delivery_id)).map((a) => a.outcome)).toEqual(["succeeded"]);
    expect((await box.requests()).length).toBe(10);
  });
});

describe("a delivery whose message was lost", () => {
  it("is queued again with a new token once it is 30 minutes past due and claimed by no one; the lost message, if it comes, sends nothing", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const eventId = await insertEvent(source.id);
    const lost = await insertDelivery(eventId, dest.id); // its message never reaches the queue
    const onTime = await insertDelivery(await insertEvent(source.id), dest.id);
    const ref = eventPartition(eventId);
    await inPartition(ref, async (db, instance) => {
      const store = instance as unknown as { kvPut(k: string, v: unknown): void };
      const t = Date.now() + 31 * 60_000;
      store.kvPut("recover_at", t - 60_000);
      instance.now = () => t;
      // The other one is due later (its retry is scheduled): merely late is not lost.
      await db.update(deliveries).set({ nextAttemptAt: t - 60_000 }).where(eq(deliveries.id, onTime.deliveries[0]!.delivery_id)).run();
    });
    expect(await runPartitionAlarm(ref)).toBe(true);
    const rows = await readPartition(ref, (db) => db.select({ id: deliveries.id, token: deliveries.token }).from(deliveries).all());
    const tokenOf = (id: string) => rows.find((r) => r.id === id)!.token;
    expect(tokenOf(lost.deliveries[0]!.delivery_id)).not.toBe(lost.deliveries[0]!.token);
    expect(tokenOf(onTime.deliveries[0]!.delivery_id)).toBe(onTime.deliveries[0]!.token);
    // The new message goes through the queue and delivers it, once.
    await eventually(async () => ((await box.requests()).some((r) => r.headers["webhook-id"] === eventId) ? true : undefined), 20_000, "the recovered delivery");
    // The lost one turns up after all: stale, dropped, nothing sent.
    const before = (await box.requests()).length;
    const late = await runQueue("krafter-deliver", [lost]);
    expect(late.explicitAcks).toEqual(late.ids);
    expect((await box.requests()).length).toBe(before);
  });
});

describe("a partition's tables", () => {
  const today = () => ({ sourceId: source.id, day: dayOf(Date.now()), shard: 0 });

  it("have the columns src/store/schema.ts declares; deliveries and attempts are WITHOUT ROWID, events keep their rowid", async () => {
    const shape = await inPartition(today(), (_db, _i, state) => {
      const out: Record<string, { columns: string[]; withoutRowid: boolean }> = {};
      for (const t of [events, deliveries, attempts, outbox]) {
        const name = getTableName(t);
        const sql = state.storage.sql.exec("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", name).one().sql as string;
        const columns = state.storage.sql.exec(`PRAGMA table_info("${name}")`).toArray().map((c) => c.name as string);
        out[name] = { columns: columns.sort(), withoutRowid: /WITHOUT ROWID\s*$/i.test(sql) };
      }
      return out;
    });
    const declared = (t: typeof events | typeof deliveries | typeof attempts | typeof outbox) => Object.values(getTableColumns(t)).map((c) => c.name).sort();
    expect(shape).toEqual({
      events: { columns: declared(events), withoutRowid: false },
      deliveries: { columns: declared(deliveries), withoutRowid: true },
      attempts: { columns: declared(attempts), withoutRowid: true },
      outbox: { columns: declared(outbox), withoutRowid: false },
    });
  });

  it("a delivery's insert writes 2 rows (itself, its index by event), an attempt's 3 (itself, its two indexes by destination)", async () => {
    const written = await inPartition(today(), (_db, _i, state) => {
      const sql = state.storage.sql;
      const delivery = sql.exec(
        "INSERT INTO deliveries (id, event_id, destination_id, token, created_at, updated_at) VALUES ('dlv_1', 'evt_1', 'dst_1', 't', 0, 0)",
      ).rowsWritten;
      const attempt = sql.exec(
        "INSERT INTO attempts (id, delivery_id, event_id, destination_id, number, outcome, duration_ms, created_at) VALUES ('att_1', 'dlv_1', 'evt_1', 'dst_1', 1, 'succeeded', 5, 0)",
      ).rowsWritten;
      return { delivery, attempt };
    });
    expect(written).toEqual({ delivery: 2, attempt: 3 });
  });
});

describe("D1 does not grow with traffic", () => {
  it("2,000 events of 2 KB leave no event, delivery or attempt in D1, and one bookkeeping row", async () => {
    const box = await mailbox();
    await createDestination(account, source.id, { url: box.url });
    const tables = async () =>
      (await env.DB.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%' AND name NOT LIKE 'd1_%' ORDER BY name").all<{ name: string }>()).results.map((r) => r.name);
    const counts = async () => {
      const out: Record<string, number> = {};
      for (const t of await tables()) out[t] = (await env.DB.prepare(`SELECT count(*) AS n FROM "${t}"`).first<number>("n"))!;
      return out;
    };
    expect(await tables()).toEqual(["accounts", "api_keys", "destinations", "partitions", "removals", "sources"]);
    const before = await counts();
    const path = new URL(source.ingest_url).pathname;
    const pad = "x".repeat(2048 - 40);
    for (let i = 0; i < 2000; i += 50) {
      const batch = Array.from({ length: 50 }, (_, j) => call("POST", path, { raw: JSON.stringify({ type: "invoice.paid", n: i + j, pad }), headers: { "content-type": "application/json" } }));
      for (const res of await Promise.all(batch)) expect(res.status).toBe(202);
    }
    await eventually(async () => ((await box.requests()).length >= 2000 ? true : undefined), 120_000, "2,000 deliveries");
    const after = await counts();
    // Only the bookkeeping row of today's partition is new.
    expect(after).toEqual({ ...before, partitions: before.partitions! + 1 });
  }, 180_000);
});
