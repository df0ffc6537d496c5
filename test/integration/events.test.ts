/**
 * The event log, the attempt log, redeliver and replay, through the API (the typed
 * client) and the real queues, against real loopback receivers. Ingest and the requests
 * a typed client cannot make (unknown query fields, wrong types) go through call().
 */
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import { addKey, call, clientFor, createAccount, createDestination, createSource, errorOf, eventually, json, mailbox, type Account, type EventDetail } from "../helpers/api";
import { insertEvent } from "../helpers/delivery";

let account: Account;
let source: { id: string; ingest_url: string };
const base = () => `/api/v1/webhooks/sources/${source.id}`;

/** The routes of the test's source, as `who` (the test's account unless told). */
const api = (who: Pick<Account, "key"> = account) => clientFor(who).api.v1.webhooks.sources[":source_id"];
const param = () => ({ source_id: source.id });
const events = (query: { limit?: string; cursor?: string; type?: string; since?: string; until?: string } = {}) => api().events.$get({ param: param(), query });
const eventDetail = async (eventId: string) => {
  const res = await api().events[":event_id"].$get({ param: { ...param(), event_id: eventId } });
  return { status: res.status, body: (await res.json()) as { data: EventDetail } };
};
type AttemptsQuery = Parameters<ReturnType<typeof api>["destinations"][":id"]["attempts"]["$get"]>[0]["query"];
const attempts = async (destinationId: string, query: AttemptsQuery = {}) => (await api().destinations[":id"].attempts.$get({ param: { ...param(), id: destinationId }, query })).json();
const destination = async (id: string) => (await api().destinations[":id"].$get({ param: { ...param(), id } })).json();
const redeliver = (eventId: string, body: { destination_ids?: string[] } = {}, who?: Pick<Account, "key">) =>
  api(who).events[":event_id"].redeliver.$post({ param: { ...param(), event_id: eventId }, json: body });
type ReplayBody = Parameters<ReturnType<typeof api>["destinations"][":id"]["replay"]["$post"]>[0]["json"];
const replay = (destinationId: string, body: ReplayBody) => api().destinations[":id"].replay.$post({ param: { ...param(), id: destinationId }, json: body });

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "events" });
});

async function ingest(body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<string> {
  const res = await call("POST", new URL(source.ingest_url).pathname, {
    raw: JSON.stringify(body),
    headers: { "content-type": "application/json", ...headers },
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { data: { event_id: string } }).data.event_id;
}

/** A GET of a raw path: for the query strings a typed client would not send. */
const getRaw = async (path: string) => {
  const res = await call("GET", path, { key: account.key });
  return { status: res.status, body: await json<{ error: { code: string; details: { field: string }[] } }>(res) };
};

async function waitForRequests(box: Awaited<ReturnType<typeof mailbox>>, n: number, timeoutMs = 20_000) {
  return eventually(async () => {
    const r = await box.requests();
    return r.length >= n ? r : undefined;
  }, timeoutMs, `${n} requests`);
}

describe("GET …/events", () => {
  it("lists events newest first with cursor pagination that neither repeats nor skips while new events arrive", async () => {
    const first = [];
    for (let i = 0; i < 7; i++) first.push(await insertEvent(source.id, { type: `t.${i}` }));
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await events({ limit: "3", ...(cursor ? { cursor } : {}) });
      expect(r.status).toBe(200);
      const body = await r.json();
      seen.push(...body.data.map((e) => e.id));
      cursor = body.next_cursor;
      // New events keep arriving while the client pages.
      await insertEvent(source.id, { type: "late.arrival" });
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...first].reverse());
  });

  it("returns the event shape with RFC 3339 times", async () => {
    const id = await insertEvent(source.id, { type: "invoice.paid" });
    const r = await events();
    expect(await r.json()).toEqual({
      data: [{ id, source_id: source.id, type: "invoice.paid", status: "dispatched", received_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/) }],
      next_cursor: null,
    });
  });

  it("filters by type, since and until", async () => {
    const t0 = Date.now() - 3 * 3600_000;
    const a = await insertEvent(source.id, { type: "invoice.paid", receivedAt: t0 });
    const b = await insertEvent(source.id, { type: "invoice.paid", receivedAt: t0 + 3600_000 });
    const c = await insertEvent(source.id, { type: "customer.created", receivedAt: t0 + 3600_000 + 1000 });
    const d = await insertEvent(source.id, { type: "invoice.paid", receivedAt: t0 + 2 * 3600_000 });
    const ids = async (q: Parameters<typeof events>[0]) => (await (await events(q)).json()).data.map((e) => e.id);
    const iso = (ms: number) => new Date(ms).toISOString();

    expect(await ids({ type: "invoice.paid" })).toEqual([d, b, a]);
    expect(await ids({ since: iso(t0 + 3600_000) })).toEqual([d, c, b]);
    expect(await ids({ until: iso(t0 + 3600_000) })).toEqual([a]);
    expect(await ids({ since: iso(t0 + 1), until: iso(t0 + 2 * 3600_000), type: "invoice.paid" })).toEqual([b]);
    // An offset other than Z is understood.
    expect(await ids({ since: new Date(t0 + 3600_000).toISOString().replace("Z", "+00:00"), type: "customer.created" })).toEqual([c]);
  });

  it.each([
    ["since=yesterday", "since"],
    ["until=2026-13-01T00:00:00Z", "until"],
    ["since=2026-04-26T10:00:00Z&until=2026-04-26T09:00:00Z", "until"],
    ["limit=0", "limit"],
    ["limit=101", "limit"],
    ["cursor=not-a-cursor", "cursor"],
    ["colour=blue", "colour"],
  ])("rejects %s with 422 naming the field", async (q, field) => {
    const r = await getRaw(`${base()}/events?${q}`);
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe("validation_failed");
    expect(r.body.error.details.map((d) => d.field)).toContain(field);
  });
});

describe("GET …/events/:event_id", () => {
  it("shows the payload, the headers kept and each destination's delivery status with its last attempt", async () => {
    const ok = await mailbox();
    const failing = await mailbox({ repeat: { status: 410, body: "gone" } });
    const okDest = await createDestination(account, source.id, { url: ok.url });
    const failDest = await createDestination(account, source.id, { url: failing.url });
    const filtered = await createDestination(account, source.id, { url: ok.url, event_filter: ["customer.*"] });
    const id = await ingest({ type: "invoice.paid", amount: 5 }, { "x-custom": "kept", authorization: "Bearer secret-thing" });

    const detail = await eventually(async () => {
      const r = await eventDetail(id);
      const ds = r.body.data.deliveries;
      return ds.length === 2 && ds.every((d) => d.status !== "pending") ? r.body.data : undefined;
    });
    expect(detail).toMatchObject({ id, source_id: source.id, type: "invoice.paid", status: "dispatched", payload: { type: "invoice.paid", amount: 5 } });
    expect(detail.headers["x-custom"]).toBe("kept");
    expect(detail.headers.authorization).toBeUndefined();
    const byDest = new Map(detail.deliveries.map((d) => [d.destination_id, d]));
    expect(byDest.get(okDest.id)).toMatchObject({ status: "succeeded", attempt_count: 1, last_attempt: { number: 1, outcome: "succeeded", status_code: 200 } });
    expect(byDest.get(failDest.id)).toMatchObject({ status: "failed", attempt_count: 1, last_attempt: { outcome: "failed", status_code: 410 } });
    expect(byDest.has(filtered.id)).toBe(false);
  });

  it("404s an unknown, malformed or other source's event id", async () => {
    const other = await createSource(account, { name: "other" });
    const theirs = await insertEvent(other.id);
    for (const id of [crypto.randomUUID(), "nope", theirs]) {
      const res = await api().events[":event_id"].$get({ param: { ...param(), event_id: id } });
      expect(res.status).toBe(404);
      expect((await errorOf(res)).code).toBe("not_found");
    }
  });
});

describe("GET …/destinations/:id/attempts", () => {
  it("lists attempts newest first, filtered by outcome and time, with pagination", async () => {
    const box = await mailbox({ script: [{ status: 500, body: "down" }, { status: 500, body: "down" }], repeat: { status: 200, body: "up" } });
    const dest = await createDestination(account, source.id, { url: box.url });
    const id = await ingest({ type: "invoice.paid" });
    await waitForRequests(box, 3);
    const all = await eventually(async () => {
      const r = await attempts(dest.id);
      return r.data.length === 3 ? r : undefined;
    });
    expect(all.data.map((a) => a.number)).toEqual([3, 2, 1]);
    expect(all.data[0]).toEqual({
      id: expect.any(String),
      event_id: id,
      destination_id: dest.id,
      number: 3,
      outcome: "succeeded",
      status_code: 200,
      error: null,
      duration_ms: expect.any(Number),
      response_body: "up",
      created_at: expect.stringMatching(/Z$/),
    });
    expect(all.data[2]).toMatchObject({ number: 1, outcome: "failed", status_code: 500, response_body: "down" });

    const failed = await attempts(dest.id, { outcome: "failed" });
    expect(failed.data.map((a) => a.number)).toEqual([2, 1]);
    const page1 = await attempts(dest.id, { limit: "2" });
    const page2 = await attempts(dest.id, { limit: "2", cursor: page1.next_cursor! });
    expect([...page1.data, ...page2.data].map((a) => a.number)).toEqual([3, 2, 1]);
    expect(page2.next_cursor).toBeNull();
    const future = await attempts(dest.id, { since: new Date(Date.now() + 60_000).toISOString() });
    expect(future.data).toEqual([]);
    // Not an outcome: the typed client cannot send it.
    const bad = await getRaw(`${base()}/destinations/${dest.id}/attempts?outcome=maybe`);
    expect(bad.status).toBe(422);
  });
});

describe("POST …/events/:event_id/redeliver", () => {
  it("sends the event again with the same webhook-id to every matching destination", async () => {
    const a = await mailbox();
    const b = await mailbox();
    const destA = await createDestination(account, source.id, { url: a.url });
    await createDestination(account, source.id, { url: b.url, event_filter: ["invoice.*"] });
    await createDestination(account, source.id, { url: b.url, event_filter: ["customer.*"] });
    const id = await ingest({ type: "invoice.paid" });
    await waitForRequests(a, 1);
    await waitForRequests(b, 1);

    const res = await redeliver(id);
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ data: { queued: 2, already_pending: 0 } });
    const again = await waitForRequests(a, 2);
    expect(again.map((r) => r.headers["webhook-id"])).toEqual([id, id]);
    expect(() => new Webhook(destA.secret).verify(again[1]!.body, again[1]!.headers)).not.toThrow();
    expect(again[1]!.body).toBe(again[0]!.body);
    await waitForRequests(b, 2);
  });

  it("redelivers only to the destinations named, and refuses unknown or disabled ones", async () => {
    const a = await mailbox();
    const b = await mailbox();
    const destA = await createDestination(account, source.id, { url: a.url });
    const destB = await createDestination(account, source.id, { url: b.url });
    const disabled = await createDestination(account, source.id, { url: b.url, enabled: false });
    const id = await ingest({ type: "x" });
    await waitForRequests(a, 1);
    await waitForRequests(b, 1);

    const res = await redeliver(id, { destination_ids: [destB.id] });
    expect(await res.json()).toEqual({ data: { queued: 1, already_pending: 0 } });
    await waitForRequests(b, 2);
    expect(await a.requests()).toHaveLength(1);

    const other = await createSource(account, { name: "elsewhere" });
    const foreign = await createDestination(account, other.id, { url: a.url });
    for (const ids of [[crypto.randomUUID()], ["garbage"], [foreign.id], [disabled.id]]) {
      const r = await redeliver(id, { destination_ids: ids });
      expect(r.status).toBe(422);
      expect((await errorOf(r)).details![0]!.field).toBe("destination_ids.0");
    }
    void destA;
  });

  it("needs webhooks:write and hides other accounts' events", async () => {
    const id = await insertEvent(source.id);
    const reader = await addKey(account.id, ["webhooks:read"]);
    const r1 = await redeliver(id, {}, reader);
    expect(r1.status).toBe(403);
    const stranger = await createAccount();
    const r2 = await redeliver(id, {}, stranger);
    expect(r2.status).toBe(404);
  });
});

describe("POST …/destinations/:id/replay", () => {
  it("after an auto-disable, replays exactly the missed events once re-enabled, visible in the attempt log", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const since = new Date(Date.now() - 1000).toISOString();

    const delivered = [];
    for (let i = 0; i < 3; i++) delivered.push(await ingest({ type: "invoice.paid", n: i }));
    await waitForRequests(box, 3);

    // The endpoint goes away: 410 exhausts each forward at once; 10 of them disable it.
    await box.script({ repeat: { status: 410 } });
    const missed = [];
    for (let i = 0; i < 10; i++) missed.push(await ingest({ type: "invoice.paid", n: 100 + i }));
    await eventually(async () => {
      const r = await destination(dest.id);
      return r.data.enabled === false ? r.data : undefined;
    }, 30_000, "auto-disable");
    expect((await destination(dest.id)).data.failure_count).toBe(10);

    // While disabled, events are stored but not sent.
    for (let i = 0; i < 2; i++) missed.push(await ingest({ type: "invoice.paid", n: 200 + i }));
    await new Promise((r) => setTimeout(r, 2500));
    expect(await box.requests()).toHaveLength(13);

    // Replaying a disabled destination is refused.
    const early = await replay(dest.id, { since });
    expect(early.status).toBe(409);

    await box.script({ repeat: { status: 200 } });
    const patch = await api().destinations[":id"].$patch({ param: { ...param(), id: dest.id }, json: { enabled: true } });
    expect((await patch.json()).data).toMatchObject({ enabled: true, failure_count: 10 });

    const res = await replay(dest.id, { since, only_failed: true });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ data: { queued: missed.length, already_pending: 0 } });

    const all = await waitForRequests(box, 13 + missed.length);
    const replayed = all.slice(13).map((r) => r.headers["webhook-id"]).sort();
    expect(replayed).toEqual([...missed].sort());
    for (const r of all.slice(13)) expect(() => new Webhook(dest.secret).verify(r.body, r.headers)).not.toThrow();

    // The first success reset failure_count; the attempt log shows the replayed successes.
    const after = await eventually(async () => {
      const r = await attempts(dest.id, { outcome: "succeeded", limit: "100" });
      return r.data.length === delivered.length + missed.length ? r.data : undefined;
    });
    expect(new Set(after.map((a) => a.event_id))).toEqual(new Set([...delivered, ...missed]));
    // DestinationHealth hears of the success right after the attempt is recorded.
    await eventually(async () => ((await destination(dest.id)).data.failure_count === 0 ? true : undefined), 5000, "failure_count reset");
  });

  it("replays every event of the window, or only failed ones, respecting the destination's filter and until", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url, event_filter: ["invoice.*"] });
    const t0 = Date.now() - 3600_000;
    const a = await insertEvent(source.id, { type: "invoice.paid", receivedAt: t0 });
    await insertEvent(source.id, { type: "customer.created", receivedAt: t0 + 1000 });
    const c = await insertEvent(source.id, { type: "invoice.voided", receivedAt: t0 + 2000 });
    await insertEvent(source.id, { type: "invoice.paid", receivedAt: t0 + 600_000 });

    const res = await replay(dest.id, { since: new Date(t0).toISOString(), until: new Date(t0 + 300_000).toISOString() });
    expect(await res.json()).toEqual({ data: { queued: 2, already_pending: 0 } });
    const got = await waitForRequests(box, 2);
    expect(got.map((r) => r.headers["webhook-id"]).sort()).toEqual([a, c].sort());

    // Now both succeeded: only_failed finds nothing to replay in that window.
    await eventually(async () => ((await attempts(dest.id, { outcome: "succeeded" })).data.length === 2 ? true : undefined));
    const none = await replay(dest.id, { since: new Date(t0).toISOString(), until: new Date(t0 + 300_000).toISOString(), only_failed: true });
    expect(await none.json()).toEqual({ data: { queued: 0, already_pending: 0 } });
  });

  it.each([
    [{}, "since"],
    [{ since: "last week" }, "since"],
    [{ since: "2026-04-26T10:00:00Z", until: "2026-04-26T09:00:00Z" }, "until"],
    [{ since: "2026-04-26T10:00:00Z", only_failed: "yes" }, "only_failed"],
    [{ since: "2026-04-26T10:00:00Z", extra: 1 }, "extra"],
  ])("rejects %j with 422", async (body, field) => {
    // Wrong types and unknown fields: sent raw, as a typed client cannot.
    const dest = await createDestination(account, source.id, { url: "https://hooks.example.com/x" });
    const r = await call("POST", `${base()}/destinations/${dest.id}/replay`, { key: account.key, body });
    expect(r.status).toBe(422);
    expect((await errorOf(r)).details!.map((d) => d.field)).toContain(field);
  });
});
