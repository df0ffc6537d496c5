/**
 * EventStore: one SQLite-backed Durable Object per partition (source, UTC day, shard),
 * named `source/day/shard` (src/store/ids.ts). It holds the events that source received
 * that day in that shard, their deliveries, the attempts made that day for deliveries of
 * this shard, and an outbox of queue messages not yet sent. Nothing of it lives in D1
 * but one bookkeeping row per source and day (src/db/partitions.ts).
 *
 * - ingest: dedupe and insert in one call; the event's fan-out is queued in the same
 *   transaction (it is `pending`), and carried out by the object itself right after
 *   (`drain`), retried by its alarm until done.
 * - fan-out (drain): the source's enabled destinations, `targetsFor` each event, one
 *   delivery row per target and one deliver message (outbox) for them all, atomically.
 * - claim / record: the deliver consumer claims the deliveries of its messages, attempts
 *   them, and records the attempts and the deliveries' new state, a batch per call.
 * - retention: the alarm drops the whole partition (`deleteAll`) once its day is older
 *   than RETENTION_DAYS, whatever it holds.
 */
import { DurableObject } from "cloudflare:workers";
import { and, eq, sql, type Column } from "drizzle-orm";
import { drizzle } from "drizzle-orm/durable-sqlite";
import { migrate } from "drizzle-orm/durable-sqlite/migrator";
import migrations from "../../drizzle/store/migrations.js";
import type { Env } from "../config";
import type { Lane } from "../delivery/gate";
import { deliverMessage, MAX_DELIVERIES_PER_MESSAGE, queueKeyOf, sendAll, type DeliverMessage } from "../delivery/messages";
import { parsedPayload, targetsFor } from "../delivery/targets";
import { ListenFeed } from "../listen/feed";
import type { ListenState } from "../listen/protocol";
import { log } from "../log";
import { meter, meteredSql } from "../meter";
import { servicesFor, type Services } from "../services";
import { targetsOf } from "../db/destinations";
import { growShards, lookupChain, registerPartition, removePartitionBit, type Registration } from "../db/partitions";
import { dayStart, DAY_MS, IdMaker, parsePartitionName, partitionName, shardOfKey, type PartitionRef } from "./ids";
import { isPowerOfTwo, MAX_DAY_SHARDS, neededShards } from "./shards";
import { attemptsPage, deliveriesOfEvent, destinationRows, eventsPage, hotStatements, pendingEvents, replayPage, type HotStatements, type PartitionDb } from "./queries";
import * as schema from "./schema";
import { attempts, deliveries, events } from "./schema";
import type {
  AttemptRow,
  ClaimItem,
  ClaimResponse,
  ClaimResult,
  DeliverySummary,
  EventDetail,
  EventSummary,
  IdRange,
  IngestRequest,
  IngestResult,
  RecordRequest,
  RecoveryResult,
  ReplayQuery,
  TargetDestination,
} from "./types";

/** Events fanned out per drain round, and outbox rows sent per round. */
const DRAIN_EVENTS = 100;
const FLUSH_ROWS = 500;
/** A failed drain (D1 or the queue refusing) is retried by the alarm after this, doubling up to the cap. */
const DRAIN_RETRY_MS = 1_000;
const DRAIN_RETRY_MAX_MS = 300_000;
/** The destinations of the source are read again after this, or at once when the API says they changed. */
const TARGETS_TTL_MS = 60_000;
/** INGEST_RATE_LIMIT counts over windows of this length. */
const INGEST_WINDOW_MS = 10_000;
/** The longest a gate holds a delivery back in one go (the queue's longest delay). */
const MAX_HOLD_SECONDS = 86_400;
/** Rows deleted per transaction when a destination's data is removed. */
const PURGE_CHUNK = 5_000;
/** Events read per step of a replay's selection. */
const REPLAY_PAGE = 1_000;

type Db = PartitionDb;

const KV = {
  registration: "registration",
  sealed: "sealed",
  dropAt: "drop_at",
  shards: "shards",
  recoverAt: "recover_at",
} as const;

/** How often a partition with pending deliveries looks for lost messages, and how late a delivery must be to count as lost. */
const RECOVER_EVERY_MS = 30 * 60_000;
const LOST_AFTER_MS = 30 * 60_000;
const RECOVER_BATCH = 1_000;

/** Inserts between two looks at the partition's growth, and the least time between them. */
const SPLIT_CHECK_EVERY = 64;
const SPLIT_WINDOW_MS = 10_000;
/** The growth of the file is judged over at least this long. */
const SIZE_WINDOW_MS = 5 * 60_000;
export class EventStore extends DurableObject<Env> {
  private readonly db: Db;
  /** The per-event, per-delivery and per-attempt statements, built once. */
  private readonly q: HotStatements;
  private readonly ref: PartitionRef;
  private readonly ids: IdMaker;
  private readonly s: Services;
  /** The clock: tests replace it to move the partition through its retention. */
  now: () => number = () => Date.now();
  private draining: Promise<void> | null = null;
  private drainAgain = false;
  private drainFailures = 0;
  private targets: { epoch: number; at: number; list: TargetDestination[] } | null = null;
  private targetsEpoch = 0;
  private inserts = 0;
  /** The alarm's time when known to be a drain retry no later than that: a mirror, so a busy partition does not set its alarm on every write. */
  private alarmBy: number | null = null;
  /** Set while an alarm runs: the alarm it was is gone, whatever getAlarm says. */
  private alarmSpent = false;
  private growth: { at: number; size: number; inserts: number } | null = null;
  private sizeSample: { at: number; size: number } | null = null;
  /** `krafter listen`: new events to the source's ListenHub, only while someone listens (listen/feed.ts). */
  private readonly listen: ListenFeed;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const ref = parsePartitionName(ctx.id.name ?? "");
    if (!ref) throw new Error("an EventStore is named source/day/shard");
    this.ref = ref;
    this.ids = new IdMaker(ref.shard);
    this.s = servicesFor(env);
    this.listen = new ListenFeed(ctx, this.s, ref);
    if (this.s.config.meter) meteredSql(ctx.storage);
    this.db = drizzle(ctx.storage, { schema });
    this.q = hotStatements(this.db);
    // Only a partition that holds something has tables: a stray call to one that was
    // dropped (or never written) must not bring it back as empty storage.
    if (this.registration) ctx.blockConcurrencyWhile(() => migrate(this.db, migrations));
  }

  /**
   * This object's few settings (registration, shard count, sealed, drop time), read from
   * its storage once and then from memory: only this object writes them, so the copy
   * stays true (and deleteAll forgets it with them).
   */
  private readonly kvMemo = new Map<string, unknown>();

  private kvGet<T>(key: string): T | undefined {
    if (this.kvMemo.has(key)) return this.kvMemo.get(key) as T | undefined;
    const value = this.ctx.storage.kv.get<T>(key);
    this.kvMemo.set(key, value);
    return value;
  }

  private kvPut(key: string, value: unknown): void {
    this.ctx.storage.kv.put(key, value);
    this.kvMemo.set(key, value);
  }

  private get registration(): Registration | undefined {
    return this.kvGet<Registration>(KV.registration);
  }

  /** First write: the tables, the bookkeeping row in D1, the retention alarm. */
  private async register(): Promise<Registration | "source_gone"> {
    const existing = this.registration;
    if (existing) return existing;
    const reg = await registerPartition(this.s, this.ref, this.now());
    if (reg === "source_gone") return reg;
    if (this.registration) return this.registration; // a concurrent first write got here first
    await migrate(this.db, migrations);
    const dropAt = dayStart(this.ref.day + 1 + this.s.config.retentionDays);
    this.kvPut(KV.dropAt, dropAt);
    this.kvPut(KV.shards, reg.today.shards);
    this.kvPut(KV.registration, reg);
    await this.armAlarm();
    return reg;
  }

  /** The day's shard count as this partition knows it: at least what routers and other partitions told it. */
  private get shards(): number {
    return this.kvGet<number>(KV.shards) ?? 1;
  }

  private learnShards(n: number): void {
    if (isPowerOfTwo(n) && n <= MAX_DAY_SHARDS && n > this.shards) this.kvPut(KV.shards, n);
  }

  /** Whether an event with this key belongs here now; if not, the count it belongs under. */
  private misplaced(key: string | null): number | null {
    const n = this.shards;
    return key !== null && shardOfKey(key, n) !== this.ref.shard ? n : null;
  }

  // ---- ingest -------------------------------------------------------------------------

  /**
   * Stores one event (or finds it a duplicate) and guarantees its fan-out. `shards` is
   * the day's count as the router knows it. With a delivery id, the shards the key went
   * to before the day's count grew, and the day before's, are asked too: the dedupe
   * window spans splits and midnight.
   */
  async ingest(req: IngestRequest, shards: number): Promise<IngestResult> {
    if (this.kvGet<boolean>(KV.sealed)) return { kind: "sealed" };
    const reg = await this.register();
    if (reg === "source_gone") return { kind: "source_gone" };
    this.learnShards(shards);
    const key = req.dedupeKey;
    let moved = this.misplaced(key);
    if (moved !== null) return { kind: "moved", shards: moved };
    // INGEST_RATE_LIMIT per source per 10 s, shared out over the shards the router spreads
    // the source's events on (a router that still thinks fewer sends each more of them).
    const limited = this.overRate(shards);
    if (limited !== null) return { kind: "rate_limited", retryAfterSeconds: limited };

    if (key !== null) {
      const first = this.eventIdByKey(key);
      if (first) return { kind: "duplicate", eventId: first };
      const chain = lookupChain(this.ref, reg, this.shards, key);
      // The shards the key went to earlier today learn the count, and refuse it from now on.
      for (const ref of chain.today) {
        const found = await this.s.store(ref).lookupKey(key, { shards: this.shards });
        if (found) return { kind: "duplicate", eventId: found };
      }
      // The day before's take no new event once asked.
      for (const ref of chain.previous) {
        const found = await this.s.store(ref).lookupKey(key, { seal: true });
        if (found) return { kind: "duplicate", eventId: found };
      }
      // While we asked, this partition may have been sealed or told of a larger count.
      if (this.kvGet<boolean>(KV.sealed)) return { kind: "sealed" };
      moved = this.misplaced(key);
      if (moved !== null) return { kind: "moved", shards: moved };
    }
    const id = this.idAt(req.receivedAt);
    // With the source's destinations at hand, the fan-out is written with the event, in
    // one transaction; otherwise the event is left pending for the drain to fan out.
    const targets = this.freshTargets();
    const now = this.now();
    let queued = 0;
    const inserted = this.ctx.storage.transactionSync(() => {
      const row = this.q.insertEvent.get({
        id,
        type: req.type,
        dedupeKey: key,
        payload: req.payload,
        payloadIsJson: req.payloadIsJson,
        headers: req.headers,
        status: targets ? "dispatched" : "pending",
        receivedAt: req.receivedAt,
      });
      if (row && targets) {
        queued = this.queueDeliveries(id, targetsFor(targets, { type: req.type, payload: () => parsedPayload(req.payload, req.payloadIsJson) }), now);
      }
      return row;
    });
    if (!inserted) {
      // A concurrent request with the same key won the insert while we looked elsewhere.
      return { kind: "duplicate", eventId: this.eventIdByKey(key!)! };
    }
    // Work left: the fan-out (pending) or the messages of the deliveries just written.
    if (!targets || queued > 0) await this.workWritten();
    if (++this.inserts % SPLIT_CHECK_EVERY === 0) this.ctx.waitUntil(this.considerSplit());
    this.listen.stored(id, req);
    return { kind: "stored", eventId: id };
  }

  private window = { start: 0, n: 0 };

  /** Seconds to wait when this ingest is over the partition's share of the source's limit; null when it may go. */
  private overRate(shards: number): number | null {
    const now = this.now();
    const share = Math.max(1, Math.ceil(this.s.config.ingestRateLimit / Math.max(1, shards)));
    if (now - this.window.start >= INGEST_WINDOW_MS) this.window = { start: now - (now % INGEST_WINDOW_MS), n: 0 };
    if (this.window.n >= share) return Math.max(1, Math.ceil((this.window.start + INGEST_WINDOW_MS - now) / 1000));
    this.window.n++;
    return null;
  }

  /** An id at `ms`, kept within this partition's day. */
  private idAt(ms: number): string {
    const start = dayStart(this.ref.day);
    return this.ids.next(Math.min(Math.max(ms, start), start + DAY_MS - 1));
  }

  /** An event's payload parsed as JSON, for a payload filter (once per event by targetsFor). */
  private parsedPayload(id: string): { json: unknown } | undefined {
    const e = this.q.payloadOf.get({ id });
    return e ? parsedPayload(e.payload, e.payloadIsJson) : undefined;
  }

  private eventIdByKey(key: string): string | undefined {
    return this.q.eventIdByKey.get({ key })?.id;
  }

  /**
   * Whether this partition holds an event with this provider delivery id. Asked by a
   * later day's partitions (`seal`: from then on this one takes no new event, so a key it
   * does not hold now it never will), or by this day's after the count grew (`shards`:
   * from then on it refuses the keys that belong elsewhere under that count).
   */
  async lookupKey(key: string, opts: { seal?: boolean; shards?: number }): Promise<string | null> {
    if (!this.registration) return null;
    if (opts.seal && !this.kvGet<boolean>(KV.sealed)) this.kvPut(KV.sealed, true);
    if (opts.shards !== undefined) this.learnShards(opts.shards);
    return this.eventIdByKey(key) ?? null;
  }

  /**
   * Raises the day's shard count when this partition, at the rate it has grown over the
   * last SPLIT_WINDOW_MS, would pass PARTITION_SPLIT_BYTES by the end of its day, or
   * takes more than PARTITION_INGEST_RATE ingests a second: straight to the count needed
   * (neededShards), not one doubling per look. The keys that belong to the new shards go
   * there from then on (ingest answers "moved").
   */
  private async considerSplit(): Promise<void> {
    const now = this.now();
    const size = this.ctx.storage.sql.databaseSize;
    const last = this.growth;
    if (!last || now - last.at < SPLIT_WINDOW_MS) {
      if (!last) {
        this.growth = { at: now, size, inserts: this.inserts };
        this.sizeSample = { at: now, size };
      }
      return;
    }
    this.growth = { at: now, size, inserts: this.inserts };
    // The rate of ingests is judged over the last look's window; the growth of the file only
    // over SIZE_WINDOW_MS at least, so a burst of seconds is not taken for a whole day's rate.
    const sample = this.sizeSample ?? { at: now, size };
    const sizeJudged = now - sample.at >= SIZE_WINDOW_MS;
    if (sizeJudged || !this.sizeSample) this.sizeSample = { at: now, size };
    const want = neededShards({
      shards: this.shards,
      size,
      bytesPerMs: sizeJudged ? Math.max(0, size - sample.size) / (now - sample.at) : 0,
      insertsPerSec: ((this.inserts - last.inserts) * 1000) / (now - last.at),
      msLeft: Math.max(0, dayStart(this.ref.day + 1) - now),
      splitBytes: this.s.config.partitionSplitBytes,
    });
    if (want > this.shards) await this.split(want);
  }

  /** Raises the day's shard count to `to` (default: double), once however many partitions ask at the same time. */
  async split(to?: number): Promise<number> {
    const from = this.shards;
    if (from >= MAX_DAY_SHARDS) return from;
    try {
      const now = await growShards(this.s, this.ref, to ?? from * 2);
      this.learnShards(now);
      log("info", "partition_split", { partition: partitionName(this.ref), shards: now });
      return now;
    } catch (err) {
      log("error", "partition_split_failed", { partition: partitionName(this.ref), error: errorName(err) });
      return from;
    }
  }

  /** The source's ListenHub says whether anyone listens; false when this partition holds nothing (dropped, or never written). */
  async listeners(state: ListenState): Promise<boolean> {
    if (!this.registration) return false;
    this.listen.learn(state);
    return true;
  }

  // ---- fan-out ------------------------------------------------------------------------

  /** The API changed this source's destinations: read them again before the next fan-out. */
  async invalidateTargets(): Promise<void> {
    this.targetsEpoch++;
  }

  /** The source's destinations if read within TARGETS_TTL_MS and not changed since, else null. */
  private freshTargets(): TargetDestination[] | null {
    const t = this.targets;
    return t && t.epoch === this.targetsEpoch && this.now() - t.at < TARGETS_TTL_MS ? t.list : null;
  }

  private async loadTargets(): Promise<TargetDestination[]> {
    const fresh = this.freshTargets();
    if (fresh) return fresh;
    const now = this.now();
    const epoch = this.targetsEpoch;
    const list = await targetsOf(this.s, this.ref.sourceId);
    this.targets = { epoch, at: now, list };
    return list;
  }

  /**
   * Work was just written (an event to fan out, a message in the outbox): its drain starts
   * now, off the caller's path, and the alarm is set to retry it within DRAIN_RETRY_MS,
   * before the caller hears back, so an object that stops first (evicted, restarted,
   * failing) still drains it.
   */
  private async workWritten(): Promise<void> {
    const at = this.now() + DRAIN_RETRY_MS;
    if (this.alarmBy === null || this.alarmBy > at) {
      const current = await this.ctx.storage.getAlarm();
      if (current === null || current > at) {
        await this.ctx.storage.setAlarm(at);
        this.alarmBy = at;
      } else this.alarmBy = current;
    }
    this.scheduleDrain();
  }

  /** Fan-out and outbox, now and off the caller's path; a single one runs at a time. */
  private scheduleDrain(): void {
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = this.drain().finally(() => {
      this.draining = null;
    });
    this.ctx.waitUntil(this.draining);
  }

  private async drain(): Promise<void> {
    try {
      do {
        this.drainAgain = false;
        while (await this.fanoutRound()) {
          /* another round while events wait */
        }
        await this.flushOutbox();
      } while (this.drainAgain);
      this.drainFailures = 0;
    } catch (err) {
      this.drainFailures++;
      log("error", "partition_drain_failed", { partition: partitionName(this.ref), failures: this.drainFailures, error: errorName(err) });
    }
    try {
      await this.armAlarm();
    } catch (err) {
      // The object is going away (evicted, reset): the alarm already set brings it back.
      log("warn", "partition_alarm_not_set", { partition: partitionName(this.ref), error: errorName(err) });
    }
  }

  /** One round of fan-out: up to DRAIN_EVENTS pending events. Returns whether it did any. */
  private async fanoutRound(): Promise<boolean> {
    const pending = pendingEvents(this.db, DRAIN_EVENTS).all();
    if (pending.length === 0) return false;
    const targets = await this.loadTargets();
    const now = this.now();
    this.ctx.storage.transactionSync(() => {
      for (const e of pending) {
        // Still pending: a concurrent round may have taken it while we read D1.
        if (!this.q.markDispatched.get({ id: e.id })) continue;
        this.queueDeliveries(e.id, targetsFor(targets, { type: e.type, payload: () => this.parsedPayload(e.id) }), now);
      }
    });
    return true;
  }

  /**
   * An event's deliveries to these destinations, new (none may exist yet) or put back to
   * pending (`existing`, by destination), with one message for them all in the outbox;
   * inside the caller's transaction. Returns how many were queued.
   */
  private queueDeliveries(eventId: string, destinationIds: string[], now: number, existing?: Map<string, string>): number {
    const items: { deliveryId: string; destinationId: string; token: string }[] = [];
    for (const destinationId of destinationIds) {
      const token = newToken();
      const known = existing?.get(destinationId);
      if (known !== undefined) {
        this.db
          .update(deliveries)
          .set({ status: "pending", token, claimedBy: null, claimedUntil: 0, attemptsInRun: 0, nextAttemptAt: now, updatedAt: now })
          .where(eq(deliveries.id, known))
          .run();
        items.push({ deliveryId: known, destinationId, token });
      } else {
        const deliveryId = this.idAt(now);
        this.q.insertDelivery.run({ id: deliveryId, eventId, destinationId, token, now });
        items.push({ deliveryId, destinationId, token });
      }
    }
    for (let i = 0; i < items.length; i += MAX_DELIVERIES_PER_MESSAGE) {
      this.enqueue(deliverMessage(this.ref, eventId, items.slice(i, i + MAX_DELIVERIES_PER_MESSAGE)), 0, now);
    }
    return items.length;
  }

  private enqueue(msg: DeliverMessage, delaySeconds: number, now: number, lane: Lane | undefined = "shared"): void {
    this.q.insertOutbox.run({ queueKey: queueKeyOf(msg, lane), body: msg, delaySeconds, now });
    // Deliveries are in the queue: look for any whose message was lost, in a while.
    if (this.kvGet<number>(KV.recoverAt) === undefined) this.kvPut(KV.recoverAt, now + RECOVER_EVERY_MS);
  }

  /**
   * Deliveries whose message was lost: pending, claimed by no one, and due more than
   * LOST_AFTER_MS ago. A message is only ever late by a queue's backlog, so such a
   * delivery's message is taken as lost and a new one is queued with a new token: if the
   * old one still comes, it is stale and dropped, so nothing is sent twice. Runs from the
   * alarm at most every RECOVER_EVERY_MS while deliveries may be pending, reading the
   * pending ones (no index: the scan happens twice an hour, not per delivery).
   */
  private recoverLost(now: number): void {
    const rows = this.db
      .select({ id: deliveries.id, eventId: deliveries.eventId, destinationId: deliveries.destinationId, due: deliveries.nextAttemptAt, createdAt: deliveries.createdAt, claimedUntil: deliveries.claimedUntil })
      .from(deliveries)
      .where(eq(deliveries.status, "pending"))
      .all();
    const lost = rows.filter((d) => d.claimedUntil < now && (d.due ?? d.createdAt) < now - LOST_AFTER_MS).slice(0, RECOVER_BATCH);
    if (lost.length > 0) {
      this.ctx.storage.transactionSync(() => {
        for (const d of lost) {
          const token = newToken();
          this.q.hold.run({ id: d.id, token, nextAttemptAt: now, now });
          this.enqueue(deliverMessage(this.ref, d.eventId, [{ deliveryId: d.id, destinationId: d.destinationId, token }]), 0, now);
        }
      });
      log("warn", "deliveries_recovered", { partition: partitionName(this.ref), count: lost.length });
    }
    // Look again while any are pending (sooner if there were more than one batch).
    if (rows.length === 0) {
      this.ctx.storage.kv.delete(KV.recoverAt);
      this.kvMemo.set(KV.recoverAt, undefined);
    } else this.kvPut(KV.recoverAt, now + (lost.length === RECOVER_BATCH ? 60_000 : RECOVER_EVERY_MS));
  }

  /** Sends what the outbox holds, oldest first, and forgets each message once the queue has it. */
  private async flushOutbox(): Promise<void> {
    for (;;) {
      const rows = this.q.outboxHead.all({ limit: FLUSH_ROWS });
      if (rows.length === 0) return;
      const byQueue = new Map<Queue<DeliverMessage>, { body: DeliverMessage; delaySeconds: number }[]>();
      for (const r of rows) {
        const q = this.s.queues.deliver(r.queueKey);
        const list = byQueue.get(q) ?? [];
        list.push({ body: r.body, delaySeconds: r.delaySeconds });
        byQueue.set(q, list);
      }
      for (const [q, msgs] of byQueue) await sendAll(q, msgs);
      // The lowest seqs, read in order: exactly the rows up to the last one sent.
      this.q.outboxSent.run({ seq: rows[rows.length - 1]!.seq });
      if (rows.length < FLUSH_ROWS) return;
    }
  }

  // ---- claim and record ---------------------------------------------------------------

  /**
   * Claims deliveries for attempts: each for the message asking, until the attempt's
   * time limit has passed. A message whose token is not the delivery's current one is
   * stale; a delivery another message holds is busy. Payloads are returned up to
   * `budgetBytes` in all (at least one): the rest is deferred to a later call.
   */
  async claim(items: ClaimItem[], budgetBytes: number): Promise<ClaimResponse> {
    if (!this.registration) return { results: items.map((i) => ({ kind: "drop", deliveryId: i.deliveryId, reason: "gone" })), events: [] };
    const now = this.now();
    const until = now + this.s.config.deliveryTimeoutMs + 60_000;
    const results: ClaimResult[] = [];
    const loaded = new Map<string, ClaimResponse["events"][number]>();
    let bytes = 0;
    for (const item of items) {
      const d = this.q.deliveryState.get({ id: item.deliveryId });
      if (!d) results.push({ kind: "drop", deliveryId: item.deliveryId, reason: "gone" });
      else if (d.token !== item.token) results.push({ kind: "drop", deliveryId: d.id, reason: "stale" });
      else if (d.status !== "pending") results.push({ kind: "drop", deliveryId: d.id, reason: "settled" });
      else if (d.claimedUntil > now && d.claimedBy !== item.messageId) results.push({ kind: "busy", deliveryId: d.id, retryInMs: d.claimedUntil - now });
      else {
        let event = loaded.get(d.eventId);
        if (!event) {
          const size = this.q.payloadBytes.get({ id: d.eventId });
          if (!size) {
            results.push({ kind: "drop", deliveryId: d.id, reason: "gone" });
            continue;
          }
          if (loaded.size > 0 && bytes + size.n > budgetBytes) {
            results.push({ kind: "deferred", deliveryId: d.id });
            continue;
          }
          bytes += size.n;
          event = this.q.eventForAttempt.get({ id: d.eventId })!;
          loaded.set(d.eventId, event);
        }
        this.q.claim.run({ id: d.id, by: item.messageId, until });
        results.push({ kind: "claimed", deliveryId: d.id, eventId: d.eventId, destinationId: d.destinationId, attemptCount: d.attemptCount, attemptsInRun: d.attemptsInRun });
      }
    }
    return { results, events: [...loaded.values()] };
  }

  /**
   * Writes attempts (made on this partition's day) and the new state of deliveries (of
   * this partition) in one transaction. A settlement counts only while its message still
   * holds the claim with the current token; it returns whether each did. A retry puts a
   * new token on the delivery and its next message in the outbox, with its delay.
   */
  async record(req: RecordRequest): Promise<boolean[]> {
    if (!this.registration) {
      // An attempt of an older event on a day this shard has not written yet.
      if (req.settlements.length > 0 || req.attempts.length === 0) return req.settlements.map(() => false);
      const reg = await this.register();
      if (reg === "source_gone") return [];
    }
    const now = this.now();
    let queued = false;
    const settled = this.ctx.storage.transactionSync(() => {
      for (const a of req.attempts) this.q.insertAttempt.run({ ...a });
      return req.settlements.map((st) => {
        const d = this.q.deliveryState.get({ id: st.deliveryId });
        if (!d || d.token !== st.token || d.claimedBy !== st.messageId || d.status !== "pending") return false;
        const retry = st.retryAfterSeconds !== undefined;
        const token = retry ? newToken() : d.token;
        this.q.settle.run({
          id: d.id,
          status: st.status,
          token,
          attemptCount: d.attemptCount + 1,
          attemptsInRun: d.attemptsInRun + 1,
          nextAttemptAt: retry ? st.attempt.createdAt + st.retryAfterSeconds! * 1000 : null,
          lastAttemptId: st.attempt.id,
          lastAttemptAt: st.attempt.createdAt,
          lastOutcome: st.attempt.outcome,
          lastStatusCode: st.attempt.statusCode,
          lastError: st.attempt.error,
          lastDurationMs: st.attempt.durationMs,
          now,
        });
        if (retry) {
          this.enqueue(deliverMessage(this.ref, d.eventId, [{ deliveryId: d.id, destinationId: d.destinationId, token }]), st.retryAfterSeconds!, now);
          queued = true;
        }
        return true;
      });
    });
    if (queued) await this.workWritten();
    return settled;
  }

  /**
   * Deliveries the destination's gate holds back (its rate limit, its in-flight cap, its
   * open circuit): each goes back to the queue after its wait, as a new message with a
   * new token, without an attempt, a retry spent or a count. Only while the message asking
   * still holds the claim; returns whether each was held.
   */
  async hold(items: { deliveryId: string; token: string; newToken?: string; messageId: string; waitSeconds: number; lane?: Lane | undefined }[]): Promise<boolean[]> {
    if (!this.registration) return items.map(() => false);
    const now = this.now();
    let queued = false;
    const held = this.ctx.storage.transactionSync(() =>
      items.map((it) => {
        const d = this.q.deliveryState.get({ id: it.deliveryId });
        if (!d || d.token !== it.token || d.claimedBy !== it.messageId || d.status !== "pending") return false;
        // The new token may come from the gate's side (a fifo line sends the next message itself).
        const token = it.newToken ?? newToken();
        const wait = Math.max(0, Math.min(Math.round(it.waitSeconds), MAX_HOLD_SECONDS));
        this.q.hold.run({ id: d.id, token, nextAttemptAt: now + wait * 1000, now });
        this.enqueue(deliverMessage(this.ref, d.eventId, [{ deliveryId: d.id, destinationId: d.destinationId, token }]), wait, now, it.lane);
        queued = true;
        return true;
      }),
    );
    if (queued) await this.workWritten();
    return held;
  }

  /** A delivery's status, or null when this partition has none such (a fifo line asks about a head that went quiet). */
  async deliveryStatus(deliveryId: string): Promise<schema.DeliveryStatus | null> {
    if (!this.registration) return null;
    return this.q.deliveryState.get({ id: deliveryId })?.status ?? null;
  }

  /**
   * A deliver message that reached the dead-letter queue: if it is still its delivery's
   * current one, the delivery fails, with an attempt saying why.
   */
  async deadLetter(
    deliveryId: string,
    token: string,
    a: { id: string; error: string; createdAt: number; sameDay: boolean },
  ): Promise<{ attempt: AttemptRow; sameDay: boolean } | null> {
    if (!this.registration) return null;
    const d = this.db.select().from(deliveries).where(eq(deliveries.id, deliveryId)).get();
    if (!d || d.token !== token || d.status !== "pending") return null;
    const attempt: AttemptRow = {
      id: a.id,
      deliveryId,
      eventId: d.eventId,
      destinationId: d.destinationId,
      number: d.attemptCount + 1,
      outcome: "failed",
      statusCode: null,
      error: a.error,
      durationMs: 0,
      responseBody: null,
      createdAt: a.createdAt,
    };
    this.db.transaction((tx) => {
      if (a.sameDay) tx.insert(attempts).values(attempt).onConflictDoNothing().run();
      tx.update(deliveries)
        .set({
          status: "failed",
          claimedBy: null,
          claimedUntil: 0,
          attemptCount: d.attemptCount + 1,
          attemptsInRun: d.attemptsInRun + 1,
          nextAttemptAt: null,
          lastAttemptId: attempt.id,
          lastAttemptAt: attempt.createdAt,
          lastOutcome: "failed",
          lastStatusCode: null,
          lastError: attempt.error,
          lastDurationMs: 0,
          updatedAt: this.now(),
        })
        .where(eq(deliveries.id, deliveryId))
        .run();
    });
    return { attempt, sameDay: a.sameDay };
  }

  // ---- reads --------------------------------------------------------------------------

  /** Events newest first within an id range, optionally of one type. */
  async listEvents(range: IdRange & { type?: string | undefined }): Promise<EventSummary[]> {
    if (!this.registration) return [];
    return eventsPage(this.db, range).all();
  }

  /** One event with its payload, headers and each delivery's state and last attempt. */
  async getEvent(id: string): Promise<EventDetail | null> {
    if (!this.registration) return null;
    const e = this.db.select().from(events).where(eq(events.id, id)).get();
    if (!e) return null;
    const rows = deliveriesOfEvent(this.db, id).all();
    const summaries: DeliverySummary[] = rows.map((d) => ({
      id: d.id,
      destinationId: d.destinationId,
      status: d.status,
      attemptCount: d.attemptCount,
      lastAttempt:
        d.lastAttemptId === null
          ? null
          : {
              id: d.lastAttemptId,
              number: d.attemptCount,
              outcome: d.lastOutcome!,
              statusCode: d.lastStatusCode,
              error: d.lastError,
              durationMs: d.lastDurationMs ?? 0,
              createdAt: d.lastAttemptAt!,
            },
    }));
    return {
      id: e.id,
      type: e.type,
      status: e.status,
      receivedAt: e.receivedAt,
      payload: e.payload,
      payloadIsJson: e.payloadIsJson,
      headers: e.headers,
      deliveries: summaries,
    };
  }

  /** A destination's attempts made on this day, newest first. */
  async listAttempts(destinationId: string, range: IdRange & { outcome?: AttemptRow["outcome"] | undefined; eventId?: string | undefined }): Promise<AttemptRow[]> {
    if (!this.registration) return [];
    return attemptsPage(this.db, destinationId, range).all();
  }

  // ---- recovery -----------------------------------------------------------------------

  /**
   * Queues an event again: to the destinations named, or to those of `targets` that
   * match it. A delivery already pending is left as it is (counted, not queued twice);
   * any other goes back to pending at the start of the retry schedule, with the same
   * event id (so the same webhook-id). Null when the event is not here.
   */
  async redeliver(eventId: string, targets: TargetDestination[], named: boolean): Promise<RecoveryResult | null> {
    if (!this.registration) return null;
    const e = this.db.select({ id: events.id, type: events.type }).from(events).where(eq(events.id, eventId)).get();
    if (!e) return null;
    const ids = named ? targets.map((t) => t.id) : targetsFor(targets, { type: e.type, payload: () => this.parsedPayload(e.id) });
    const result = this.requeue([e.id], ids);
    if (result.queued > 0) await this.workWritten();
    return result;
  }

  /** Puts these events' deliveries to these destinations back in line, in one transaction. */
  private requeue(eventIds: string[], destinationIds: string[]): RecoveryResult {
    const now = this.now();
    const result: RecoveryResult = { queued: 0, alreadyPending: 0 };
    this.db.transaction((tx) => {
      for (const eventId of eventIds) {
        const toQueue: string[] = [];
        const existing = new Map<string, string>();
        for (const destinationId of destinationIds) {
          const d = tx
            .select({ id: deliveries.id, status: deliveries.status })
            .from(deliveries)
            .where(and(eq(deliveries.eventId, eventId), eq(deliveries.destinationId, destinationId)))
            .get();
          if (d?.status === "pending") {
            result.alreadyPending++;
            continue;
          }
          if (d) existing.set(destinationId, d.id);
          toQueue.push(destinationId);
        }
        result.queued += this.queueDeliveries(eventId, toQueue, now, existing);
      }
      // An event still waiting for its first fan-out has its deliveries now.
      tx.update(events).set({ status: "dispatched" }).where(and(inJson(events.id, eventIds), eq(events.status, "pending"))).run();
    });
    return result;
  }

  /** The events of a replay window here, oldest first, split into those to queue and those already pending. */
  private replaySelection(q: ReplayQuery, limit: number): { toQueue: string[]; alreadyPending: number } {
    const toQueue: string[] = [];
    let alreadyPending = 0;
    let after: string | undefined;
    for (;;) {
      const rows = replayPage(this.db, q.destination.id, q.low, q.high, after, REPLAY_PAGE).all();
      for (const r of rows) {
        if (targetsFor([q.destination], { type: r.type, payload: () => this.parsedPayload(r.id) }).length === 0) continue;
        if (r.status === "pending") alreadyPending++;
        else if (!q.onlyFailed || r.status === null || r.status === "failed" || r.status === "cancelled") {
          toQueue.push(r.id);
          if (toQueue.length > limit) return { toQueue, alreadyPending };
        }
      }
      if (rows.length < REPLAY_PAGE) return { toQueue, alreadyPending };
      after = rows[rows.length - 1]!.id;
    }
  }

  /** How many events a replay would queue here (stopping past `limit`), and how many are already pending. */
  async replayCount(q: ReplayQuery, limit: number): Promise<RecoveryResult> {
    if (!this.registration) return { queued: 0, alreadyPending: 0 };
    const { toQueue, alreadyPending } = this.replaySelection(q, limit);
    return { queued: toQueue.length, alreadyPending };
  }

  /** Queues the events of a replay window here to one destination, oldest first. */
  async replay(q: ReplayQuery): Promise<RecoveryResult> {
    if (!this.registration) return { queued: 0, alreadyPending: 0 };
    const { toQueue, alreadyPending } = this.replaySelection(q, Number.MAX_SAFE_INTEGER);
    const result = this.requeue(toQueue, [q.destination.id]);
    if (result.queued > 0) await this.workWritten();
    return { queued: result.queued, alreadyPending: alreadyPending + result.alreadyPending };
  }

  // ---- removal and retention ----------------------------------------------------------

  /**
   * Removes what belongs to a deleted destination, a chunk at a time: returns true when
   * nothing of it is left.
   */
  async purgeDestination(destinationId: string): Promise<boolean> {
    if (!this.registration) return true;
    // Its messages still in the outbox are sent all the same: they find no delivery and are dropped.
    for (const table of [deliveries, attempts] as const) {
      let after = "";
      for (let i = 0; i < 10; i++) {
        const ids = destinationRows(this.db, table, destinationId, after, PURGE_CHUNK).all();
        if (ids.length === 0) break;
        this.db.delete(table).where(inJson(table.id, ids.map((r) => r.id))).run();
        after = ids[ids.length - 1]!.id;
        if (ids.length === PURGE_CHUNK && i === 9) return false;
      }
    }
    return true;
  }

  /** Drops the whole partition: its data, its alarm, its D1 bookkeeping bit. */
  async drop(): Promise<void> {
    const wasRegistered = this.registration !== undefined;
    const started = Date.now();
    await this.ctx.storage.deleteAll();
    this.kvMemo.clear();
    const durationMs = Date.now() - started;
    this.targets = null;
    if (wasRegistered) await removePartitionBit(this.s, this.ref);
    log("info", "partition_dropped", { partition: partitionName(this.ref), duration_ms: durationMs });
  }

  override async alarm(): Promise<void> {
    if (this.s.config.meter) meter.doAlarms++;
    const dropAt = this.kvGet<number>(KV.dropAt);
    if (dropAt !== undefined && this.now() >= dropAt) return this.drop();
    const recoverAt = this.kvGet<number>(KV.recoverAt);
    if (recoverAt !== undefined && this.now() >= recoverAt) this.recoverLost(this.now());
    // This alarm is spent: the drain sets the next one (a retry, or the drop).
    this.alarmBy = null;
    this.alarmSpent = true;
    if (!this.draining) this.scheduleDrain();
    await this.draining;
  }

  /**
   * The next alarm after a drain: a retry while work is left (backing off while drains
   * fail), else the retention drop. A drain retry set by a write since is left to fire:
   * it finds nothing and sets the drop, one alarm instead of a setAlarm per write.
   */
  private async armAlarm(): Promise<void> {
    const dropAt = this.kvGet<number>(KV.dropAt);
    if (dropAt === undefined) return;
    const workLeft = this.q.anyOutbox.get() !== undefined || this.q.anyPending.get() !== undefined;
    const current = this.alarmSpent ? null : await this.ctx.storage.getAlarm();
    this.alarmSpent = false;
    if (workLeft) {
      const retryIn = Math.min(DRAIN_RETRY_MS * 2 ** Math.max(0, this.drainFailures - 1), DRAIN_RETRY_MAX_MS);
      const at = Math.min(this.now() + retryIn, dropAt);
      if (current !== at) await this.ctx.storage.setAlarm(at);
      this.alarmBy = at;
    } else {
      // The next look for lost messages, or the drop.
      const at = Math.min(this.kvGet<number>(KV.recoverAt) ?? dropAt, dropAt);
      if (current === null || current > at) await this.ctx.storage.setAlarm(at);
      this.alarmBy = null;
    }
  }
}

/** `column IN (…)` with the list as one JSON parameter: SQLite in a Durable Object binds at most 100. */
function inJson(column: Column, values: string[]) {
  return sql`${column} IN (SELECT value FROM json_each(${JSON.stringify(values)}))`;
}

function newToken(): string {
  return crypto.randomUUID();
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : "unknown";
}
