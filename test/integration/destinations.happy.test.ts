/**
 * Destinations: what works. One test per sentence of shared/spec/destinations-api.md
 * (named after it), then PRODUCT.md's decisions where the page is silent. Errors and
 * access control are in destinations.error / destinations.security; the test endpoint
 * in destinations.test-endpoint.
 */
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { bytesToBase64 } from "../../src/security/encoding";
import {
  addKey,
  call,
  clientFor,
  createAccount,
  createDestination,
  createSource,
  destinationsApi,
  envWith,
  errorOf,
  type EventDetail,
  eventually,
  mailbox,
  setDestination,
  setDns,
  type Account,
  type DestinationInput,
  RFC3339,
  UUID,
} from "../helpers/api";
import type { Env } from "../../src/config";
import { countFor, deliveriesOf, insertAttempt, insertDelivery, insertEvent, runRemovals, storedEvents } from "../helpers/delivery";

/** The reference page's fields, and PRODUCT.md's second round: payload_filter and headers. */
const READ_KEYS = ["created_at", "enabled", "event_filter", "failure_count", "headers", "id", "ordering", "payload_filter", "rate_limit", "source_id", "updated_at", "url"];
const CREATE_KEYS = [...READ_KEYS, "secret"].sort();

const secretOf = (bytes: number) => "whsec_" + bytesToBase64(crypto.getRandomValues(new Uint8Array(bytes)));

async function fresh() {
  const account = await createAccount();
  const source = await createSource(account, { name: "stripe prod" });
  return { account, source };
}

type Who = Pick<Account, "key">;
type DestinationPatch = Parameters<ReturnType<typeof destinationsApi>[":id"]["$patch"]>[0]["json"];

// Through the typed client: every body below is checked by the compiler.
const dests = (a: Who, e?: Env) => destinationsApi(clientFor(a, e ? { env: e } : {}));
const post = (a: Who, sourceId: string, body: DestinationInput, e?: Env) => dests(a, e).$post({ param: { source_id: sourceId }, json: body });
const get = (a: Who, sourceId: string, id: string) => dests(a)[":id"].$get({ param: { source_id: sourceId, id } });
const patch = (a: Who, sourceId: string, id: string, body: DestinationPatch) => dests(a)[":id"].$patch({ param: { source_id: sourceId, id }, json: body });
const del = (a: Who, sourceId: string, id: string) => dests(a)[":id"].$delete({ param: { source_id: sourceId, id } });
const list = (a: Who, sourceId: string, query: { limit?: string; cursor?: string } = {}) => dests(a).$get({ param: { source_id: sourceId }, query });
const testIt = (a: Who, sourceId: string, id: string) => dests(a)[":id"].test.$post({ param: { source_id: sourceId, id } });

/** The stored row, as D1 keeps it (0/1 booleans, JSON text): these tests check the stored form. */
interface StoredDestination {
  id: string;
  source_id: string;
  url: string;
  secret_ct: string;
  previous_secret_ct: string | null;
  secret_rotated_at: number | null;
  event_filter: string;
  enabled: number;
  failure_count: number;
  created_at: number;
  updated_at: number;
}

async function row(id: string) {
  return env.DB.prepare("SELECT * FROM destinations WHERE id = ?").bind(id).first<StoredDestination>();
}

async function count(sql: string, ...args: unknown[]) {
  return (await env.DB.prepare(sql).bind(...args).first<{ n: number }>())!.n;
}

/** Ingest takes a provider's raw body: through call(), not the typed client. */
async function ingest(ingestUrl: string, type: string, extra: Record<string, unknown> = {}) {
  const res = await call("POST", new URL(ingestUrl).pathname, {
    raw: JSON.stringify({ type, ...extra }),
    headers: { "content-type": "application/json" },
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { data: { event_id: string } }).data.event_id;
}

async function listAll(a: Account, sourceId: string, limit: number) {
  const ids: string[] = [];
  const pages: number[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 50; i++) {
    const res = await list(a, sourceId, { limit: String(limit), ...(cursor ? { cursor } : {}) });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(Object.keys(body).sort()).toEqual(["data", "next_cursor"]);
    pages.push(body.data.length);
    ids.push(...body.data.map((d: { id: string }) => d.id));
    cursor = body.next_cursor;
    if (cursor === null) break;
    expect(typeof cursor).toBe("string");
  }
  return { ids, pages };
}

function expectRfc3339NearNow(value: string) {
  expect(value).toMatch(RFC3339);
  expect(Math.abs(Date.parse(value) - Date.now())).toBeLessThan(60_000);
}

describe("Destinations — destinations-api.md, sentence by sentence", () => {
  it("A destination is one of your own URLs that should receive forwarded events for a source.", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    expect(dest.url).toBe(box.url);
    expect(dest.source_id).toBe(source.id);
    const stored = await row(dest.id);
    expect(stored!.source_id).toBe(source.id);
    expect(stored!.url).toBe(box.url);

    await ingest(source.ingest_url, "invoice.paid", { id: "in_1" });
    const reqs = await eventually(async () => {
      const r = await box.requests();
      return r.length ? r : undefined;
    });
    expect(JSON.parse(reqs[0]!.body)).toMatchObject({ event: "invoice.paid", source_id: source.id });
  });

  it("Each source can have many destinations, optionally filtered by event type.", async () => {
    const { account, source } = await fresh();
    const filters = [[], ["invoice.paid"], ["invoice.*", "customer.created"]];
    const made = [];
    for (const f of filters) made.push(await createDestination(account, source.id, { url: "https://example.com/h", event_filter: f }));
    const res = await list(account, source.id);
    expect(res.status).toBe(200);
    const { data } = await res.json();
    expect(data).toHaveLength(3);
    const byId = new Map(data.map((d) => [d.id, d.event_filter]));
    made.forEach((d, i) => expect(byId.get(d.id)).toEqual(filters[i]));
    expect(await count("SELECT count(*) AS n FROM destinations WHERE source_id = ?", source.id)).toBe(3);
  });

  it("Base URL: https://app.krafter.dev/api/v1", async () => {
    const { account, source } = await fresh();
    const ok = await post(account, source.id, { url: "https://example.com/h" });
    expect(ok.status).toBe(201);
    const outside = await call("POST", `/webhooks/sources/${source.id}/destinations`, { key: account.key, body: { url: "https://example.com/h" } });
    expect(outside.status).toBe(404);
    expect((await errorOf(outside)).code).toBe("not_found");
    expect(await count("SELECT count(*) AS n FROM destinations WHERE source_id = ?", source.id)).toBe(1);
  });

  it("Create a destination POST /webhooks/sources/:source_id/destinationsRequired scope: webhooks:write", async () => {
    const { account, source } = await fresh();
    const writer = await addKey(account.id, ["webhooks:write"]);
    const res = await post(writer, source.id, { url: "https://example.com/w" });
    expect(res.status).toBe(201);
    const { data } = await res.json();
    expect(await row(data.id)).not.toBeNull();

    const reader = await addKey(account.id, ["webhooks:read"]);
    const denied = await post(reader, source.id, { url: "https://example.com/r" });
    expect(denied.status).toBe(403);
    expect((await errorOf(denied)).message).toContain("webhooks:write");
    expect(await count("SELECT count(*) AS n FROM destinations WHERE source_id = ?", source.id)).toBe(1);
  });

  it("url | string | Yes | — | HTTPS URL.", async () => {
    const { account, source } = await fresh();
    const name = `hooks-${crypto.randomUUID()}.example.com`;
    await setDns(name, ["93.184.215.14"]);
    const guarded = envWith({ ALLOW_PRIVATE_DESTINATIONS: "false" });
    const url = `https://${name}/webhooks/stripe?x=1`;
    const res = await post(account, source.id, { url }, guarded);
    expect(res.status).toBe(201);
    const { data } = await res.json();
    expect(data.url).toBe(url);
    expect((await row(data.id))!.url).toBe(url);
    // And in production, where only https is accepted.
    const prod = envWith({ ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "false" });
    const res2 = await post(account, source.id, { url }, prod);
    expect(res2.status).toBe(201);
  });

  it("secret | string | No | auto | If omitted, a whsec_… secret is generated.", async () => {
    const { account, source } = await fresh();
    const a = await createDestination(account, source.id, { url: "https://example.com/a" });
    const b = await createDestination(account, source.id, { url: "https://example.com/b" });
    for (const d of [a, b]) {
      expect(d.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
      expect(atob(d.secret.slice("whsec_".length))).toHaveLength(32);
    }
    expect(a.secret).not.toBe(b.secret);
  });

  it("event_filter | array of strings | No | [] | Event types to forward.", async () => {
    const { account, source } = await fresh();
    const res = await post(account, source.id, { url: "https://example.com/h", event_filter: ["invoice.paid", "charge.refunded"] });
    expect(res.status).toBe(201);
    const { data } = await res.json();
    expect(data.event_filter).toEqual(["invoice.paid", "charge.refunded"]);
    expect(JSON.parse((await row(data.id))!.event_filter)).toEqual(["invoice.paid", "charge.refunded"]);
    const omitted = await (await post(account, source.id, { url: "https://example.com/h" })).json();
    expect(omitted.data.event_filter).toEqual([]);
    expect((await row(omitted.data.id))!.event_filter).toBe("[]");
  });

  it("Empty array = forward everything.", async () => {
    const { account, source } = await fresh();
    const all = await mailbox();
    const star = await mailbox();
    const exact = await mailbox();
    const prefix = await mailbox();
    const dAll = await createDestination(account, source.id, { url: all.url, event_filter: [] });
    const dStar = await createDestination(account, source.id, { url: star.url, event_filter: ["*"] });
    const dExact = await createDestination(account, source.id, { url: exact.url, event_filter: ["invoice.paid"] });
    const dPrefix = await createDestination(account, source.id, { url: prefix.url, event_filter: ["invoice.*"] });

    const customer = await ingest(source.ingest_url, "customer.created");
    const invoice = await ingest(source.ingest_url, "invoice.paid");
    const events = async (box: Awaited<ReturnType<typeof mailbox>>) =>
      (await box.requests()).map((r) => JSON.parse(r.body).event).sort();
    await eventually(async () => ((await events(all)).length === 2 ? true : undefined), 15_000, "the unfiltered destination");
    await eventually(async () => ((await events(star)).length === 2 ? true : undefined), 15_000, "the * destination");
    await eventually(async () => ((await events(exact)).length === 1 ? true : undefined), 15_000, "the exact destination");
    await eventually(async () => ((await events(prefix)).length === 1 ? true : undefined), 15_000, "the prefix destination");
    expect(await events(all)).toEqual(["customer.created", "invoice.paid"]);
    expect(await events(star)).toEqual(["customer.created", "invoice.paid"]);
    expect(await events(exact)).toEqual(["invoice.paid"]);
    expect(await events(prefix)).toEqual(["invoice.paid"]);
    // Fan-out is settled for both events: the filtered destinations got no delivery for customer.created.
    const targets = async (eventId: string) => (await deliveriesOf(source.id, eventId)).map((r) => r.destination_id).sort();
    expect(await targets(customer)).toEqual([dAll.id, dStar.id].sort());
    expect(await targets(invoice)).toEqual([dAll.id, dStar.id, dExact.id, dPrefix.id].sort());
  });

  it("enabled | boolean | No | true | Disabled destinations are skipped during fan-out.", async () => {
    const { account, source } = await fresh();
    const on = await mailbox();
    const off = await mailbox();
    const dOn = await createDestination(account, source.id, { url: on.url });
    const dOff = await createDestination(account, source.id, { url: off.url, enabled: false });
    expect(dOn.enabled).toBe(true);
    expect(dOff.enabled).toBe(false);
    expect((await row(dOn.id))!.enabled).toBe(1);
    expect((await row(dOff.id))!.enabled).toBe(0);

    const eventId = await ingest(source.ingest_url, "invoice.paid");
    await eventually(async () => ((await on.requests()).length === 1 ? true : undefined), 15_000, "the enabled destination");
    expect(await off.requests()).toHaveLength(0);
    const deliveries = await deliveriesOf(source.id, eventId);
    expect(deliveries.filter((x) => x.destination_id === dOff.id)).toHaveLength(0);
    expect(deliveries.filter((x) => x.destination_id === dOn.id)).toHaveLength(1);
  });

  it("Response — 201 Created", async () => {
    const { account, source } = await fresh();
    const res = await post(account, source.id, { url: "https://api.your-app.com/webhooks/stripe", event_filter: ["invoice.paid"] });
    expect(res.status).toBe(201);
    const body = await res.json();
    expect(Object.keys(body)).toEqual(["data"]);
    expect(Object.keys(body.data).sort()).toEqual(CREATE_KEYS);
    const d = body.data;
    expect(d.id).toMatch(UUID);
    expect(d.source_id).toBe(source.id);
    expect(d.url).toBe("https://api.your-app.com/webhooks/stripe");
    expect(d.event_filter).toEqual(["invoice.paid"]);
    expect(d.enabled).toBe(true);
    expect(d.failure_count).toBe(0);
    expect(d.secret).toMatch(/^whsec_/);
    expectRfc3339NearNow(d.created_at);
    expectRfc3339NearNow(d.updated_at);
    expect(d.updated_at).toBe(d.created_at);
    const stored = await row(d.id);
    expect(new Date(stored!.created_at).toISOString().replace(/\.\d{3}Z$/, "Z")).toBe(d.created_at);
  });

  it("The secret field is returned only on this POST response.", async () => {
    const { account, source } = await fresh();
    const created = await (await post(account, source.id, { url: "https://example.com/h" })).json();
    expect(created.data.secret).toMatch(/^whsec_/);
    const secret: string = created.data.secret;
    const id = created.data.id;
    const responses = [
      await get(account, source.id, id),
      await list(account, source.id),
      await patch(account, source.id, id, { enabled: false }),
      await patch(account, source.id, id, { url: "https://example.com/other" }),
    ];
    for (const res of responses) {
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).not.toContain(secret);
      expect(text).not.toContain(secret.slice("whsec_".length));
      expect(text).not.toContain('"secret"');
    }
  });

  it("All read endpoints (list / get / update) omit it.", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const one = await (await get(account, source.id, d.id)).json();
    expect(Object.keys(one.data).sort()).toEqual(READ_KEYS);
    const listed = await (await list(account, source.id)).json();
    expect(listed.data).toHaveLength(1);
    expect(Object.keys(listed.data[0]!).sort()).toEqual(READ_KEYS);
    const upd = await (await patch(account, source.id, d.id, { event_filter: ["a.b"] })).json();
    expect(Object.keys(upd.data).sort()).toEqual(READ_KEYS);
  });

  it("Save it now or rotate by PATCHing a new secret.", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const rotated = secretOf(32);
    const before = (await row(d.id))!.secret_ct;
    const res = await patch(account, source.id, d.id, { secret: rotated });
    expect(res.status).toBe(200);
    const after = await row(d.id);
    expect(after!.secret_ct).not.toBe(before);
    expect(after!.previous_secret_ct).toBe(before);
    expect(typeof after!.secret_rotated_at).toBe("number");
    // The new secret signs from now on.
    expect((await testIt(account, source.id, d.id)).status).toBe(200);
    const [req] = await box.requests();
    expect(() => new Webhook(rotated).verify(req!.body, req!.headers)).not.toThrow();
  });

  it("List destinations GET /webhooks/sources/:source_id/destinationsRequired scope: webhooks:read", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const reader = await addKey(account.id, ["webhooks:read"]);
    const res = await list(reader, source.id);
    expect(res.status).toBe(200);
    expect((await res.json()).data.map((x) => x.id)).toEqual([d.id]);
  });

  it('{ "data": [ /* destination objects, no `secret` field */ ] }', async () => {
    const { account, source } = await fresh();
    const d1 = await createDestination(account, source.id, { url: "https://example.com/1" });
    const d2 = await createDestination(account, source.id, { url: "https://example.com/2", event_filter: ["x.y"], enabled: false });
    const res = await list(account, source.id);
    const body = await res.json();
    expect(Object.keys(body).sort()).toEqual(["data", "next_cursor"]);
    expect(body.next_cursor).toBeNull();
    expect(body.data).toHaveLength(2);
    for (const item of body.data) {
      expect(Object.keys(item).sort()).toEqual(READ_KEYS);
      expect(item).not.toHaveProperty("secret");
    }
    const got = new Map(body.data.map((x) => [x.id, x]));
    const { secret: _s1, ...r1 } = d1;
    const { secret: _s2, ...r2 } = d2;
    expect(got.get(d1.id)).toEqual(r1);
    expect(got.get(d2.id)).toEqual(r2);
  });

  it("Get a destination GET /webhooks/sources/:source_id/destinations/:idRequired scope: webhooks:read", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const reader = await addKey(account.id, ["webhooks:read"]);
    const res = await get(reader, source.id, d.id);
    expect(res.status).toBe(200);
    expect((await res.json()).data.id).toBe(d.id);
  });

  it("Returns the destination object without secret.", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h", event_filter: ["a.*"] });
    const res = await get(account, source.id, d.id);
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(Object.keys(body)).toEqual(["data"]);
    const { secret: _secret, ...rest } = d;
    expect(body.data).toStrictEqual(rest);
  });

  it("Update a destination PATCH /webhooks/sources/:source_id/destinations/:idRequired scope: webhooks:write", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const writer = await addKey(account.id, ["webhooks:write"]);
    const res = await patch(writer, source.id, d.id, { enabled: false });
    expect(res.status).toBe(200);
    expect((await row(d.id))!.enabled).toBe(0);
    const reader = await addKey(account.id, ["webhooks:read"]);
    const denied = await patch(reader, source.id, d.id, { enabled: true });
    expect(denied.status).toBe(403);
    expect((await row(d.id))!.enabled).toBe(0);
  });

  it("Accepts the same body as create.", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const secret = secretOf(48);
    const body = { url: "https://example.com/new", secret, event_filter: ["invoice.*", "invoice.*", "charge.paid"], enabled: false };
    const res = await patch(account, source.id, d.id, body);
    expect(res.status).toBe(200);
    const { data } = await res.json();
    expect(Object.keys(data).sort()).toEqual(READ_KEYS);
    expect(data).toMatchObject({ id: d.id, source_id: source.id, url: "https://example.com/new", event_filter: ["invoice.*", "charge.paid"], enabled: false, failure_count: 0 });
    const stored = await row(d.id);
    expect(stored).toMatchObject({ url: "https://example.com/new", event_filter: '["invoice.*","charge.paid"]', enabled: 0 });
    expect((await (await get(account, source.id, d.id)).json()).data).toStrictEqual(data);
  });

  it("To rotate the secret, send a new secret value.", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const oldSecret = d.secret;
    const newSecret = secretOf(32);
    const res = await patch(account, source.id, d.id, { secret: newSecret });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain(newSecret);
    expect(text).not.toContain(oldSecret);

    const t = await testIt(account, source.id, d.id);
    expect(t.status).toBe(200);
    const [req] = await box.requests();
    const sigs = req!.headers["webhook-signature"]!.split(" ");
    expect(sigs).toHaveLength(2);
    for (const s of sigs) expect(s).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    // Both verify with the independent library: receivers can roll over.
    expect(new Webhook(newSecret).verify(req!.body, req!.headers)).toMatchObject({ event: "test" });
    expect(new Webhook(oldSecret).verify(req!.body, req!.headers)).toMatchObject({ event: "test" });
    // Newest first, and each signature belongs to exactly one of them.
    expect(() => new Webhook(newSecret).verify(req!.body, { ...req!.headers, "webhook-signature": sigs[0]! })).not.toThrow();
    expect(() => new Webhook(oldSecret).verify(req!.body, { ...req!.headers, "webhook-signature": sigs[1]! })).not.toThrow();
    expect(() => new Webhook(oldSecret).verify(req!.body, { ...req!.headers, "webhook-signature": sigs[0]! })).toThrow();
  });

  it("The response does not echo the new secret back — provide a value you already have.", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const newSecret = secretOf(64);
    const res = await patch(account, source.id, d.id, { secret: newSecret });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(Object.keys(body.data).sort()).toEqual(READ_KEYS);
    expect(JSON.stringify(body)).not.toContain(newSecret.slice("whsec_".length));
  });

  it("Delete a destination DELETE /webhooks/sources/:source_id/destinations/:idRequired scope: webhooks:write", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const reader = await addKey(account.id, ["webhooks:read"]);
    const denied = await del(reader, source.id, d.id);
    expect(denied.status).toBe(403);
    expect(await row(d.id)).not.toBeNull();
    const writer = await addKey(account.id, ["webhooks:write"]);
    const res = await del(writer, source.id, d.id);
    expect(res.status).toBe(204);
    expect(await row(d.id)).toBeNull();
  });

  it("Returns 204 No Content.", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const keep = await createDestination(account, source.id, { url: "https://example.com/keep" });
    const res = await del(account, source.id, d.id);
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    const again = await get(account, source.id, d.id);
    expect(again.status).toBe(404);
    expect((await errorOf(again)).code).toBe("not_found");
    const second = await del(account, source.id, d.id);
    expect(second.status).toBe(404);
    const listed = await (await list(account, source.id)).json();
    expect(listed.data.map((x) => x.id)).toEqual([keep.id]);
    expect(await row(d.id)).toBeNull();
    expect(await row(keep.id)).not.toBeNull();
  });

  it("Cascades to all delivery attempts.", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/gone" });
    const other = await createDestination(account, source.id, { url: "https://example.com/stays" });
    const eventId = await insertEvent(source.id);
    for (const destId of [d.id, other.id]) {
      const msg = await insertDelivery(eventId, destId, { status: "failed", attemptCount: 2 });
      for (const n of [1, 2]) await insertAttempt(msg, n);
    }
    expect(await countFor(source.id, "attempts", d.id)).toBe(2);

    const res = await del(account, source.id, d.id);
    expect(res.status).toBe(204);
    expect(await count("SELECT count(*) AS n FROM destinations WHERE id = ?", d.id)).toBe(0);
    // Hidden at once: its attempt log is gone, the event shows no delivery to it.
    expect((await dests(account)[":id"].attempts.$get({ param: { source_id: source.id, id: d.id }, query: {} })).status).toBe(404);
    const event = clientFor(account).api.v1.webhooks.sources[":source_id"].events[":event_id"];
    const detail = (await (await event.$get({ param: { source_id: source.id, event_id: eventId } })).json()) as { data: EventDetail };
    expect(detail.data.deliveries.map((x) => x.destination_id)).toEqual([other.id]);
    // Removed from the partitions in the background.
    await runRemovals(source.id);
    expect(await countFor(source.id, "attempts", d.id)).toBe(0);
    expect(await countFor(source.id, "deliveries", d.id)).toBe(0);
    // Only that destination's: the event and the other destination's attempts stay.
    expect(await countFor(source.id, "attempts", other.id)).toBe(2);
    expect(await countFor(source.id, "deliveries", other.id)).toBe(1);
    expect((await storedEvents(source.id)).map((e) => e.id)).toEqual([eventId]);
  });
});

describe("Destinations — what disabling and deleting do to queued retries (PRODUCT.md)", () => {
  async function firstAttempt() {
    const { account, source } = await fresh();
    const box = await mailbox({ repeat: { status: 500, body: "down" } });
    const d = await createDestination(account, source.id, { url: box.url });
    const eventId = await ingest(source.ingest_url, "invoice.paid");
    await eventually(async () => ((await box.requests()).length >= 1 ? true : undefined), 15_000, "the first attempt");
    return { account, source, box, d, eventId };
  }

  it("a destination disabled while a retry is queued: the retry is cancelled, recorded, not sent", async () => {
    const { account, source, box, d, eventId } = await firstAttempt();
    expect((await patch(account, source.id, d.id, { enabled: false })).status).toBe(200);
    const sentBefore = (await box.requests()).length;
    const delivery = await eventually(async () => {
      const r = (await deliveriesOf(source.id, eventId)).find((x) => x.destination_id === d.id);
      return r && r.status !== "pending" ? r : undefined;
    }, 15_000, "the delivery to settle");
    expect(delivery.status).toBe("cancelled");
    expect(await countFor(source.id, "attempts", d.id, { outcome: "cancelled" })).toBe(1);
    expect((await box.requests()).length).toBe(sentBefore);
    // Cancelled, not exhausted: no failure counted.
    expect((await row(d.id))!.failure_count).toBe(0);
  });

  it("a destination deleted while a retry is queued: nothing more is sent", async () => {
    const { account, source, box, d } = await firstAttempt();
    expect((await del(account, source.id, d.id)).status).toBe(204);
    const sentBefore = (await box.requests()).length;
    // The test schedule retries after 1 s: wait past three of them.
    await new Promise((r) => setTimeout(r, 3500));
    expect((await box.requests()).length).toBe(sentBefore);
    await runRemovals(source.id);
    expect(await countFor(source.id, "deliveries", d.id)).toBe(0);
  });
});

describe("Destinations — Auto-disable (destinations-api.md)", () => {
  async function goneDestination() {
    const { account, source } = await fresh();
    // 410 Gone ends a forward at once: each event is one exhausted forward.
    const box = await mailbox({ repeat: { status: 410, body: "gone" } });
    const d = await createDestination(account, source.id, { url: box.url });
    return { account, source, box, d };
  }

  async function exhaust(ingestUrl: string, n: number, prefix: string) {
    for (let i = 0; i < n; i++) await ingest(ingestUrl, `${prefix}.${i}`);
  }

  it("failure_count is incremented every time a forwarding attempt exhausts retries.", async () => {
    const { account, source } = await fresh();
    // 500s are retried on the test schedule (1,1,1): 4 attempts, one exhausted forward.
    const box = await mailbox({ repeat: { status: 500, body: "down" } });
    const d = await createDestination(account, source.id, { url: box.url });
    await ingest(source.ingest_url, "invoice.paid");
    await eventually(async () => ((await row(d.id))!.failure_count === 1 ? true : undefined), 25_000, "failure_count 1");
    expect(await countFor(source.id, "attempts", d.id)).toBe(4);
    expect((await box.requests()).length).toBe(4);
    expect((await (await get(account, source.id, d.id)).json()).data.failure_count).toBe(1);

    // A second exhausted forward: 2, not 5 (attempts are not counted, exhausted forwards are).
    await box.script({ repeat: { status: 410 } });
    await ingest(source.ingest_url, "invoice.paid");
    await eventually(async () => ((await row(d.id))!.failure_count === 2 ? true : undefined), 15_000, "failure_count 2");
    expect((await (await get(account, source.id, d.id)).json()).data).toMatchObject({ failure_count: 2, enabled: true });
  });

  it("After 10 consecutive failures the destination is flipped to enabled: false automatically.", async () => {
    const { account, source, d } = await goneDestination();
    await exhaust(source.ingest_url, 9, "nine");
    await eventually(async () => ((await row(d.id))!.failure_count === 9 ? true : undefined), 20_000, "failure_count 9");
    expect((await row(d.id))!.enabled).toBe(1);

    await ingest(source.ingest_url, "tenth");
    await eventually(async () => ((await row(d.id))!.failure_count === 10 ? true : undefined), 15_000, "failure_count 10");
    const stored = await row(d.id);
    expect(stored!.enabled).toBe(0);
    expect((await (await get(account, source.id, d.id)).json()).data).toMatchObject({ enabled: false, failure_count: 10 });
  });

  it("Re-enable by sending a PATCH with enabled: true; this also resets failure_count to 0 on the first successful delivery thereafter.", async () => {
    const { account, source, box, d } = await goneDestination();
    await exhaust(source.ingest_url, 10, "fail");
    await eventually(async () => ((await row(d.id))!.enabled === 0 ? true : undefined), 25_000, "auto-disable");

    const res = await patch(account, source.id, d.id, { enabled: true });
    expect(res.status).toBe(200);
    expect((await res.json()).data).toMatchObject({ enabled: true, failure_count: 10 });
    expect((await row(d.id))!).toMatchObject({ enabled: 1, failure_count: 10 });

    await box.script({ repeat: { status: 200 } });
    await ingest(source.ingest_url, "recovered");
    await eventually(async () => ((await row(d.id))!.failure_count === 0 ? true : undefined), 15_000, "failure_count reset");
    expect((await (await get(account, source.id, d.id)).json()).data).toMatchObject({ enabled: true, failure_count: 0 });
  });
});

describe("Destinations — PRODUCT.md's decisions", () => {
  it("fields and types are exactly id, source_id, url, event_filter, payload_filter, headers, rate_limit, ordering, enabled, failure_count, created_at, updated_at", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const { data } = await (await get(account, source.id, d.id)).json();
    expect(Object.keys(data).sort()).toEqual(READ_KEYS);
    expect(typeof data.id).toBe("string");
    expect(data.id).toMatch(UUID);
    expect(typeof data.source_id).toBe("string");
    expect(typeof data.url).toBe("string");
    expect(Array.isArray(data.event_filter)).toBe(true);
    expect(data.payload_filter).toBeNull();
    expect(data.headers).toEqual({});
    expect(data.rate_limit).toBeNull();
    expect(data.ordering).toBe("none");
    expect(typeof data.enabled).toBe("boolean");
    expect(Number.isInteger(data.failure_count)).toBe(true);
    expectRfc3339NearNow(data.created_at);
    expectRfc3339NearNow(data.updated_at);
  });

  it("a given secret of 24 to 64 bytes is accepted and returned once", async () => {
    const { account, source } = await fresh();
    for (const n of [24, 32, 64]) {
      const secret = secretOf(n);
      const res = await post(account, source.id, { url: "https://example.com/h", secret });
      expect(res.status).toBe(201);
      expect((await res.json()).data.secret).toBe(secret);
    }
  });

  it("event_filter is de-duplicated; `*` and a trailing `.*` are accepted", async () => {
    const { account, source } = await fresh();
    const res = await post(account, source.id, {
      url: "https://example.com/h",
      event_filter: ["invoice.paid", "*", "invoice.*", "invoice.paid", "*", "a".repeat(255)],
    });
    expect(res.status).toBe(201);
    const { data } = await res.json();
    expect(data.event_filter).toEqual(["invoice.paid", "*", "invoice.*", "a".repeat(255)]);
    expect(JSON.parse((await row(data.id))!.event_filter)).toEqual(data.event_filter);
    const hundred = Array.from({ length: 100 }, (_, i) => `type.${i}`);
    const max = await post(account, source.id, { url: "https://example.com/h", event_filter: hundred });
    expect(max.status).toBe(201);
    expect((await max.json()).data.event_filter).toEqual(hundred);
  });

  it("enabled defaults to true and can be created false", async () => {
    const { account, source } = await fresh();
    expect((await createDestination(account, source.id, { url: "https://example.com/h" })).enabled).toBe(true);
    expect((await createDestination(account, source.id, { url: "https://example.com/h", enabled: false })).enabled).toBe(false);
  });

  it("http is accepted outside production", async () => {
    const { account, source } = await fresh();
    const res = await post(account, source.id, { url: "http://example.com/plain" });
    expect(res.status).toBe(201);
    expect((await res.json()).data.url).toBe("http://example.com/plain");
    // With the SSRF guard on, too, for a public name.
    const name = `plain-${crypto.randomUUID()}.example.com`;
    await setDns(name, ["93.184.215.14"]);
    const guarded = await post(account, source.id, { url: `http://${name}/x` }, envWith({ ALLOW_PRIVATE_DESTINATIONS: "false" }));
    expect(guarded.status).toBe(201);
  });

  it("a URL of exactly 2048 characters is accepted", async () => {
    const { account, source } = await fresh();
    const prefix = "https://example.com/";
    const url = prefix + "a".repeat(2048 - prefix.length);
    expect(url).toHaveLength(2048);
    const res = await post(account, source.id, { url });
    expect(res.status).toBe(201);
    expect((await res.json()).data.url).toBe(url);
  });

  it("the list is newest first, default limit 50, max 100", async () => {
    const { account, source } = await fresh();
    const ids: string[] = [];
    for (let i = 0; i < 51; i++) ids.push((await createDestination(account, source.id, { url: `https://example.com/${i}` })).id);
    const first = await (await list(account, source.id)).json();
    expect(first.data).toHaveLength(50);
    expect(first.data.map((d) => d.id)).toEqual(ids.slice(1).reverse());
    expect(typeof first.next_cursor).toBe("string");
    const rest = await (await list(account, source.id, { cursor: first.next_cursor! })).json();
    expect(rest.data.map((d) => d.id)).toEqual([ids[0]]);
    expect(rest.next_cursor).toBeNull();
    const max = await (await list(account, source.id, { limit: "100" })).json();
    expect(max.data.map((d) => d.id)).toEqual([...ids].reverse());
    expect(max.next_cursor).toBeNull();
    const created = first.data.map((d) => Date.parse(d.created_at));
    for (let i = 1; i < created.length; i++) expect(created[i]).toBeLessThanOrEqual(created[i - 1]!);
  });

  it("cursor pagination neither repeats nor skips (7 destinations, limit 3)", async () => {
    const { account, source } = await fresh();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await createDestination(account, source.id, { url: `https://example.com/${i}` })).id);
    // Another source's destinations never leak into this list.
    const other = await createSource(account, { name: "other" });
    await createDestination(account, other.id, { url: "https://example.com/other" });
    const { ids: seen, pages } = await listAll(account, source.id, 3);
    expect(pages).toEqual([3, 3, 1]);
    expect(seen).toEqual([...ids].reverse());
    expect(new Set(seen).size).toBe(7);
  });

  it("a page boundary stays put when destinations are added meanwhile", async () => {
    const { account, source } = await fresh();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createDestination(account, source.id, { url: `https://example.com/${i}` })).id);
    const p1 = await (await list(account, source.id, { limit: "2" })).json();
    await createDestination(account, source.id, { url: "https://example.com/new" });
    const p2 = await (await list(account, source.id, { limit: "2", cursor: p1.next_cursor! })).json();
    const p3 = await (await list(account, source.id, { limit: "2", cursor: p2.next_cursor! })).json();
    expect([...p1.data, ...p2.data, ...p3.data].map((d) => d.id)).toEqual([...ids].reverse());
    expect(p3.next_cursor).toBeNull();
  });

  it("PATCH accepts any subset and leaves the rest as it was", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h", event_filter: ["a.b"] });
    const { secret: _secret, ...start } = d;
    const ctBefore = (await row(d.id))!.secret_ct;

    const cases: [DestinationPatch, Partial<typeof start>][] = [
      [{}, {}],
      [{ url: "https://example.com/u2" }, { url: "https://example.com/u2" }],
      [{ event_filter: [] }, { event_filter: [] }],
      [{ enabled: false }, { enabled: false }],
      [{ enabled: true, event_filter: ["x.*"] }, { enabled: true, event_filter: ["x.*"] }],
    ];
    let expected = { ...start };
    for (const [body, change] of cases) {
      const res = await patch(account, source.id, d.id, body);
      expect(res.status).toBe(200);
      expected = { ...expected, ...change };
      const { data } = await res.json();
      const { updated_at, ...rest } = data;
      const { updated_at: _u, ...exp } = expected;
      expect(rest).toStrictEqual(exp);
      expect(updated_at).toMatch(RFC3339);
      expect(Date.parse(updated_at)).toBeGreaterThanOrEqual(Date.parse(data.created_at));
    }
    // None of these touched the secret.
    expect((await row(d.id))!.secret_ct).toBe(ctBefore);
    expect((await row(d.id))!.previous_secret_ct).toBeNull();
  });

  it("PATCH enabled:true does not reset failure_count", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    await setDestination(d.id, { failureCount: 7, enabled: false });
    const res = await patch(account, source.id, d.id, { enabled: true });
    expect(res.status).toBe(200);
    expect((await res.json()).data).toMatchObject({ enabled: true, failure_count: 7 });
    expect((await row(d.id))!).toMatchObject({ enabled: 1, failure_count: 7 });
    expect((await (await get(account, source.id, d.id)).json()).data.failure_count).toBe(7);
  });

  it("a re-enabled destination that fails once more is disabled again", async () => {
    const { account, source } = await fresh();
    const box = await mailbox({ repeat: { status: 410 } });
    const d = await createDestination(account, source.id, { url: box.url });
    for (let i = 0; i < 10; i++) await ingest(source.ingest_url, `f.${i}`);
    await eventually(async () => ((await row(d.id))!.enabled === 0 ? true : undefined), 25_000, "auto-disable");
    expect((await patch(account, source.id, d.id, { enabled: true })).status).toBe(200);
    await ingest(source.ingest_url, "once.more");
    await eventually(async () => ((await row(d.id))!.failure_count === 11 ? true : undefined), 15_000, "failure_count 11");
    expect((await row(d.id))!.enabled).toBe(0);
  });

  it("a PATCH to the same secret keeps one signature", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const secret = secretOf(32);
    const d = await createDestination(account, source.id, { url: box.url, secret });
    expect((await patch(account, source.id, d.id, { secret })).status).toBe(200);
    expect((await testIt(account, source.id, d.id)).status).toBe(200);
    const [req] = await box.requests();
    expect(req!.headers["webhook-signature"]!.split(" ")).toHaveLength(1);
    expect(() => new Webhook(secret).verify(req!.body, req!.headers)).not.toThrow();
  });

  it("after the 24 h grace, only the new secret signs", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const newSecret = secretOf(32);
    expect((await patch(account, source.id, d.id, { secret: newSecret })).status).toBe(200);
    await setDestination(d.id, { secretRotatedAt: Date.now() - 24 * 3600 * 1000 - 1000 });
    expect((await testIt(account, source.id, d.id)).status).toBe(200);
    const [req] = await box.requests();
    expect(req!.headers["webhook-signature"]!.split(" ")).toHaveLength(1);
    expect(() => new Webhook(newSecret).verify(req!.body, req!.headers)).not.toThrow();
    expect(() => new Webhook(d.secret).verify(req!.body, req!.headers)).toThrow();
  });
});
