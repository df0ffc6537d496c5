/**
 * `GET …/sources/:source_id/listen` and the ListenHub inside workerd: the same key, scope
 * and tenancy checks as the API before any upgrade; events pushed to connected listeners
 * once stored, in order, with the envelope a destination gets; the partitions' one flag,
 * so ingest with nobody listening makes no call to the hub (but a partition's first
 * question); a revoked key cut off before the next push; listener results touching no
 * destination, delivery, attempt or failure_count.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { envelope } from "../../src/delivery/envelope";
import { ListenHub } from "../../src/listen/hub";
import { CLOSE, type ListenState } from "../../src/listen/protocol";
import { EventStore } from "../../src/store/event-store";
import { partitionName } from "../../src/store/ids";
import { addKey, call, createAccount, createDestination, createSource, envWith, eventually, expectError, json, mailbox, revokeKey } from "../helpers/api";
import { countFor, destinationRow, partitionsOf, readPartition } from "../helpers/delivery";

const listenPath = (sourceId: string) => `/api/v1/webhooks/sources/${sourceId}/listen`;
const hubOf = (sourceId: string) => env.LISTEN_HUB.getByName(sourceId);

interface Frame {
  type: string;
  [k: string]: unknown;
}

interface Listener {
  ws: WebSocket;
  frames: Frame[];
  closed: { code: number; reason: string } | null;
  events(): Frame[];
  close(): void;
}

const open: Listener[] = [];
const spies: { mockRestore(): void }[] = [];
afterEach(() => {
  for (const l of open.splice(0)) l.close();
  for (const s of spies.splice(0)) s.mockRestore();
});

/** Connects a listener as the CLI would (Authorization and Upgrade), and waits for "ready". */
async function listen(sourceId: string, key: string): Promise<Listener> {
  const res = await call("GET", listenPath(sourceId), { key, headers: { upgrade: "websocket" } });
  if (res.status !== 101) throw new Error(`listen: ${res.status} ${await res.text()}`);
  const ws = res.webSocket!;
  const l: Listener = {
    ws,
    frames: [],
    closed: null,
    events: () => l.frames.filter((f) => f.type === "event"),
    close: () => {
      try {
        ws.close(1000, "done");
      } catch {
        /* closed */
      }
    },
  };
  ws.addEventListener("message", (m) => {
    if (typeof m.data === "string" && m.data !== "pong") l.frames.push(JSON.parse(m.data) as Frame);
  });
  ws.addEventListener("close", (c) => {
    l.closed = { code: c.code, reason: c.reason };
  });
  ws.accept();
  open.push(l);
  await eventually(async () => (l.frames[0]?.type === "ready" ? true : undefined), 5_000, "ready");
  return l;
}

const ingestPath = (src: { ingest_url: string }) => new URL(src.ingest_url).pathname;

async function ingest(src: { ingest_url: string }, body: unknown, opts: { raw?: string; shards?: number; status?: number } = {}): Promise<string> {
  const res = await call("POST", ingestPath(src), {
    raw: opts.raw ?? JSON.stringify(body),
    headers: { "content-type": "application/json" },
    ...(opts.shards ? { env: envWith({ EVENT_SHARDS: String(opts.shards) }) } : {}),
  });
  expect(res.status).toBe(opts.status ?? 202);
  return (await json(res)).data.event_id as string;
}

/** Counts the calls partitions make to this source's hub from now on (a spy on the class's methods). */
function spyOnHub(sourceId: string): { subscribe: number; push: number } {
  const counts = { subscribe: 0, push: 0 };
  for (const m of ["subscribe", "push"] as const) {
    const original = ListenHub.prototype[m] as (...a: unknown[]) => Promise<ListenState>;
    const spy = vi.spyOn(ListenHub.prototype, m).mockImplementation(function (this: ListenHub, ...a: unknown[]) {
      if ((this as unknown as { sourceId: string }).sourceId === sourceId) counts[m]++;
      return original.apply(this, a);
    } as never);
    spies.push(spy);
  }
  return counts;
}

/** The listen flag a partition keeps, read from its own storage. */
const flagOf = (sourceId: string, day: number, shard = 0) =>
  readPartition({ sourceId, day, shard }, (_db, _i, state) => state.storage.kv.get<ListenState>("listen") ?? null);

const today = () => Math.floor(Date.now() / 86_400_000);

describe("GET …/listen: who may listen", () => {
  it("refuses before any upgrade: no key, malformed and revoked keys 401; another account's source 404; no hub socket made", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const stranger = await createAccount();
    const revoked = await addKey(owner.id, ["webhooks:read"]);
    await revokeKey(revoked.keyId);
    const up = { upgrade: "websocket" };
    const cases: [string | null, Record<string, string>, number, string][] = [
      [null, up, 401, "unauthorized"],
      [null, { ...up, authorization: "Bearer krf_nope" }, 401, "unauthorized"],
      [revoked.key, up, 401, "unauthorized"],
      [stranger.key, up, 404, "not_found"],
    ];
    for (const [key, headers, status, code] of cases) {
      const res = await call("GET", listenPath(src.id), { key, headers });
      expect(res.webSocket).toBeNull();
      await expectError(res, status, code);
    }
    // A malformed source id, and an unknown one.
    await expectError(await call("GET", listenPath("nope"), { key: owner.key, headers: up }), 404, "not_found");
    await expectError(await call("GET", listenPath(crypto.randomUUID()), { key: owner.key, headers: up }), 404, "not_found");
    expect(await runInDurableObject(hubOf(src.id), (_h, state) => state.getWebSockets().length)).toBe(0);
  });

  it("a key without webhooks:read is refused 403 (the scope the route declares)", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const noScope = await addKey(owner.id, [] as never[]);
    await expectError(await call("GET", listenPath(src.id), { key: noScope.key, headers: { upgrade: "websocket" } }), 403, "forbidden");
  });

  it("without an Upgrade header: 400 in the envelope, saying so", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const body = await expectError(await call("GET", listenPath(src.id), { key: owner.key }), 400, "bad_request");
    expect(body.error.message).toMatch(/WebSocket/);
    // Unknown query parameters are refused like everywhere else.
    await expectError(await call("GET", `${listenPath(src.id)}?x=1`, { key: owner.key, headers: { upgrade: "websocket" } }), 422, "validation_failed");
  });

  it("a read-only key listens: 101, then ready with the source", async () => {
    const owner = await createAccount();
    const src = await createSource(owner, { name: "Stripé prod" });
    const reader = await addKey(owner.id, ["webhooks:read"]);
    const l = await listen(src.id, reader.key);
    expect(l.frames[0]).toEqual({ type: "ready", source_id: src.id, name: "Stripé prod", now: expect.any(Number) });
    expect(await runInDurableObject(hubOf(src.id), (_h, state) => state.getWebSockets().length)).toBe(1);
  });
});

describe("events pushed to listeners", () => {
  it("every stored event, in order, with the envelope a destination gets; duplicates are not pushed again", async () => {
    const owner = await createAccount();
    const src = await createSource(owner, { name: "push", provider: "stripe" });
    const l = await listen(src.id, owner.key);
    const ids: string[] = [];
    const raws: string[] = [];
    for (let i = 0; i < 5; i++) {
      const raw = `{"id":"evt_${i}","type":"invoice.paid","n":${i},"big":12345678901234567890}`;
      raws.push(raw);
      ids.push(await ingest(src, null, { raw }));
    }
    // The provider retries evt_0: a duplicate, stored once, pushed once.
    expect(await ingest(src, null, { raw: raws[0]!, status: 200 })).toBe(ids[0]);
    const events = await eventually(async () => (l.events().length >= 5 ? l.events() : undefined), 10_000, "5 events");
    await new Promise((r) => setTimeout(r, 200));
    expect(l.events()).toHaveLength(5);
    expect(events.map((e) => e.id)).toEqual(ids);
    for (const [i, e] of events.entries()) {
      expect(e).toEqual({ type: "event", id: ids[i], event_type: "invoice.paid", received_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT.*Z$/), body: envelope("invoice.paid", raws[i]!, true, src.id) });
    }
    // The payload as sent, byte for byte (the big integer too).
    expect(events[0]!.body).toContain('"big":12345678901234567890');
  });

  it("two listeners on a source each get every event; a text payload is a JSON string as for destinations", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const a = await listen(src.id, owner.key);
    const b = await listen(src.id, owner.key);
    const res = await call("POST", ingestPath(src), { raw: "plain text ✓", headers: { "content-type": "text/plain" } });
    expect(res.status).toBe(202);
    const id = (await json(res)).data.event_id;
    for (const l of [a, b]) {
      const [e] = await eventually(async () => (l.events().length ? l.events() : undefined), 10_000, "the event");
      expect(e!.id).toBe(id);
      expect(JSON.parse(e!.body as string).data).toBe("plain text ✓");
    }
  });

  it("across shards: partitions created while someone listens ask the hub once and push", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const l = await listen(src.id, owner.key);
    const ids = new Set<string>();
    for (let i = 0; i < 16; i++) ids.add(await ingest(src, { type: "t", i }, { shards: 4 }));
    await eventually(async () => (l.events().length >= 16 ? true : undefined), 10_000, "16 events");
    expect(new Set(l.events().map((e) => e.id))).toEqual(ids);
    expect((await partitionsOf(src.id)).length).toBeGreaterThan(1);
  });

  it("an event too large for one frame comes as a reference: its id, and body null", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const l = await listen(src.id, owner.key);
    const id = await ingest(src, { type: "big", blob: "x".repeat(1_000_100) });
    const [e] = await eventually(async () => (l.events().length ? l.events() : undefined), 10_000, "the reference");
    expect(e).toMatchObject({ type: "event", id, event_type: "big", body: null });
  });
});

describe("nobody listening costs one flag", () => {
  it("ingest with no listener makes no call to the hub but the partition's first question; a listener turns it on, leaving turns it off", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const calls = spyOnHub(src.id);
    await ingest(src, { type: "a" });
    await eventually(async () => ((await flagOf(src.id, today())) !== null ? true : undefined), 5_000, "the first question");
    expect(await flagOf(src.id, today())).toEqual({ on: false, epoch: 0 });
    expect(calls).toEqual({ subscribe: 1, push: 0 });
    for (let i = 0; i < 20; i++) await ingest(src, { type: "b", i });
    await new Promise((r) => setTimeout(r, 200));
    expect(calls).toEqual({ subscribe: 1, push: 0 });

    // The first listener turns the partition on before "ready": the next event is pushed.
    const l = await listen(src.id, owner.key);
    expect(await flagOf(src.id, today())).toEqual({ on: true, epoch: 1 });
    const id = await ingest(src, { type: "c" });
    await eventually(async () => (l.events().length ? true : undefined), 5_000, "the push");
    expect(l.events().map((e) => e.id)).toEqual([id]);
    expect(calls.push).toBe(1);

    // It leaves: the next push hears nobody is there, and the partition stops asking.
    l.close();
    await eventually(async () => ((await runInDurableObject(hubOf(src.id), (_h, s) => s.getWebSockets().filter((w) => w.readyState === 1).length)) === 0 ? true : undefined), 5_000, "the close");
    await ingest(src, { type: "d" });
    await eventually(async () => ((await flagOf(src.id, today()))?.on === false ? true : undefined), 5_000, "off");
    expect(await flagOf(src.id, today())).toEqual({ on: false, epoch: 1 });
    const pushes = calls.push;
    for (let i = 0; i < 10; i++) await ingest(src, { type: "e", i });
    await new Promise((r) => setTimeout(r, 200));
    expect(calls.push).toBe(pushes);
    expect(calls.subscribe).toBe(1);

    // A new listener: a new epoch, on again.
    const again = await listen(src.id, owner.key);
    expect(await flagOf(src.id, today())).toEqual({ on: true, epoch: 2 });
    const next = await ingest(src, { type: "f" });
    await eventually(async () => (again.events().some((e) => e.id === next) ? true : undefined), 5_000, "the push after reconnecting");
  });

  it("a listener is not told ready while a partition could not be told: 500, no socket left, the next try works", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    await ingest(src, { type: "a" });
    const spy = vi.spyOn(EventStore.prototype, "listeners").mockRejectedValueOnce(new Error("overloaded"));
    spies.push(spy);
    await expectError(await call("GET", listenPath(src.id), { key: owner.key, headers: { upgrade: "websocket" } }), 500, "internal_error");
    expect(await runInDurableObject(hubOf(src.id), (_h, s) => s.getWebSockets().filter((w) => w.readyState === 1).length)).toBe(0);
    const l = await listen(src.id, owner.key);
    expect((await flagOf(src.id, today()))?.on).toBe(true);
    const id = await ingest(src, { type: "b" });
    await eventually(async () => (l.events().some((e) => e.id === id) ? true : undefined), 5_000, "the push");
  });

  it("an older word does not undo a newer one (epochs), and within an epoch off is final", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    await ingest(src, { type: "a" });
    const ref = { sourceId: src.id, day: today(), shard: 0 };
    const stub = env.EVENT_STORE.getByName(partitionName(ref));
    await eventually(async () => ((await flagOf(src.id, ref.day)) !== null ? true : undefined), 5_000, "the flag");
    expect(await stub.listeners({ on: true, epoch: 3 })).toBe(true);
    await stub.listeners({ on: false, epoch: 2 });
    expect(await flagOf(src.id, ref.day)).toEqual({ on: true, epoch: 3 });
    await stub.listeners({ on: false, epoch: 3 });
    await stub.listeners({ on: true, epoch: 3 });
    expect(await flagOf(src.id, ref.day)).toEqual({ on: false, epoch: 3 });
    // A partition that holds nothing is not brought to life by the hub.
    expect(await env.EVENT_STORE.getByName(partitionName({ ...ref, shard: 7 })).listeners({ on: true, epoch: 9 })).toBe(false);
  });
});

describe("what a listener does not touch, and when it is cut off", () => {
  it("its results change no destination, delivery, attempt or failure_count", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const box = await mailbox();
    const dest = await createDestination(owner, src.id, { url: box.url });
    const l = await listen(src.id, owner.key);
    const id = await ingest(src, { type: "x" });
    await eventually(async () => (l.events().length ? true : undefined), 5_000, "the push");
    // The destination's own delivery first, settled: what follows can only be the listener's doing.
    await eventually(async () => ((await box.requests()).length === 1 && (await countFor(src.id, "attempts", dest.id)) === 1 ? true : undefined), 10_000, "the destination's delivery");
    const before = { deliveries: await countFor(src.id, "deliveries", dest.id), attempts: await countFor(src.id, "attempts", dest.id), row: await destinationRow(dest.id) };
    for (let i = 0; i < 5; i++) l.ws.send(JSON.stringify({ type: "result", event_id: id, status: 500, duration_ms: 3, error: "local server down" }));
    l.ws.send("ping");
    l.ws.send("not json");
    await new Promise((r) => setTimeout(r, 300));
    expect(before.deliveries).toBe(1);
    expect(await countFor(src.id, "deliveries", dest.id)).toBe(before.deliveries);
    expect(await countFor(src.id, "attempts", dest.id)).toBe(before.attempts);
    expect(await destinationRow(dest.id)).toEqual(before.row);
    expect(before.row!.failure_count).toBe(0);
    expect(await box.requests()).toHaveLength(1);
    expect(l.closed).toBeNull();
  });

  it("a key revoked while listening is cut off (4401) before the next push; a deleted source's listeners get 4404", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    const k = await addKey(owner.id, ["webhooks:read"]);
    const revokedOne = await listen(src.id, k.key);
    const stays = await listen(src.id, owner.key);
    await revokeKey(k.keyId);
    // The hub looks again every 30 s; here, now.
    await runInDurableObject(hubOf(src.id), (hub: ListenHub) => void ((hub as unknown as { checkedAt: number }).checkedAt = 0));
    const id = await ingest(src, { type: "after revocation" });
    await eventually(async () => (stays.events().length ? true : undefined), 5_000, "the push to the other");
    await eventually(async () => (revokedOne.closed ? true : undefined), 5_000, "the close");
    expect(revokedOne.closed!.code).toBe(CLOSE.keyRevoked);
    expect(revokedOne.events()).toEqual([]);
    expect(stays.events().map((e) => e.id)).toEqual([id]);

    const del = await call("DELETE", `/api/v1/webhooks/sources/${src.id}`, { key: owner.key });
    expect(del.status).toBe(204);
    await runInDurableObject(hubOf(src.id), (hub: ListenHub) => void ((hub as unknown as { checkedAt: number }).checkedAt = 0));
    await hubOf(src.id).push(partitionName({ sourceId: src.id, day: today(), shard: 0 }), [{ id: "x", type: "t", receivedAt: Date.now(), body: "{}" }]);
    await eventually(async () => (stays.closed ? true : undefined), 5_000, "the close");
    expect(stays.closed!.code).toBe(CLOSE.sourceGone);
    expect(stays.events()).toHaveLength(1);
  });
});

