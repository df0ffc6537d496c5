/**
 * Sources: what works (PRODUCT.md "Sources"), through the typed client. Errors are in
 * sources.error; access control in the security matrix (security-matrix.test.ts) and
 * api-keys.security.
 */
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { krafterClient } from "../../src/client";
import { sources } from "../../src/db/schema";
import { bytesToBase64 } from "../../src/security/encoding";
import { addKey, call, clientFor, createAccount, createDestination, createSource, db, workerFetch, type Account, type SourceInput, RFC3339, UUID } from "../helpers/api";
import { countFor, insertAttempt, insertDelivery, insertEvent, partitionsOf, readPartition, runRemovals, storedEvents } from "../helpers/delivery";

// Ingest takes a provider's raw body, so it goes through call(), not the typed client.
const KEYS = ["created_at", "id", "ingest_url", "name", "provider", "updated_at", "verifies_signatures"];
const PROVIDERS = ["generic", "stripe", "github", "shopify", "standard-webhooks"] as const;
const INGEST_URL = /^https:\/\/krafter\.test\/in\/src_[A-Za-z0-9_-]{32}$/;

const whsec = (n = 32) => "whsec_" + bytesToBase64(crypto.getRandomValues(new Uint8Array(n)));

/** The stored row, through drizzle. */
async function row(id: string) {
  return (await db().select().from(sources).where(eq(sources.id, id)).get()) ?? null;
}

async function count(sql: string, ...args: unknown[]) {
  return (await env.DB.prepare(sql).bind(...args).first<{ n: number }>())!.n;
}

type SourcePatch = Parameters<ReturnType<typeof clientFor>["api"]["v1"]["webhooks"]["sources"][":source_id"]["$patch"]>[0]["json"];

const api = (a: Pick<Account, "key">) => clientFor(a).api.v1.webhooks.sources;
const post = (a: Account, body: SourceInput) => api(a).$post({ json: body });
const get = (a: Account, id: string) => api(a)[":source_id"].$get({ param: { source_id: id } });
const patch = (a: Pick<Account, "key">, id: string, body: SourcePatch) => api(a)[":source_id"].$patch({ param: { source_id: id }, json: body });
const list = (a: Account, query: { limit?: string; cursor?: string } = {}) => api(a).$get({ query });
/** A source as the API shows it. */
type SourceData = Awaited<ReturnType<Awaited<ReturnType<typeof get>>["json"]>>["data"];

function expectSourceShape(data: SourceData) {
  expect(Object.keys(data).sort()).toEqual(KEYS);
  expect(data.id).toMatch(UUID);
  expect(typeof data.name).toBe("string");
  expect(PROVIDERS).toContain(data.provider);
  expect(data.ingest_url).toMatch(INGEST_URL);
  expect(typeof data.verifies_signatures).toBe("boolean");
  expect(data.created_at).toMatch(RFC3339);
  expect(data.updated_at).toMatch(RFC3339);
  expect(Math.abs(Date.parse(data.created_at) - Date.now())).toBeLessThan(60_000);
}

describe("Create", () => {
  for (const provider of PROVIDERS) {
    it(`creates a source with provider ${provider}`, async () => {
      const a = await createAccount();
      const res = await post(a, { name: `my ${provider}`, provider });
      expect(res.status).toBe(201);
      const body = await res.json();
      expect(Object.keys(body)).toEqual(["data"]);
      expectSourceShape(body.data);
      expect(body.data).toMatchObject({ name: `my ${provider}`, provider, verifies_signatures: false });
      expect(body.data.updated_at).toBe(body.data.created_at);
      const stored = await row(body.data.id);
      expect(stored).toMatchObject({ accountId: a.id, name: `my ${provider}`, provider, signingSecretCiphertext: null });
      expect(body.data.ingest_url).toBe(`https://krafter.test/in/${stored!.ingestKey}`);
    });
  }

  it("the provider defaults to generic", async () => {
    const a = await createAccount();
    const { data } = await (await post(a, { name: "plain" })).json();
    expect(data.provider).toBe("generic");
    expect((await row(data.id))!.provider).toBe("generic");
  });

  it("the name is trimmed; 200 characters is the most", async () => {
    const a = await createAccount();
    expect((await (await post(a, { name: "  padded  " })).json()).data.name).toBe("padded");
    const long = "n".repeat(200);
    const res = await post(a, { name: long });
    expect(res.status).toBe(201);
    expect((await res.json()).data.name).toBe(long);
    expect((await (await post(a, { name: "Ünïcødé 🪝 source" })).json()).data.name).toBe("Ünïcødé 🪝 source");
  });

  it("ingest_url is the request's origin + /in/src_…, an unguessable key that is not the id", async () => {
    const a = await createAccount();
    const one = await createSource(a, { name: "one" });
    const two = await createSource(a, { name: "two" });
    expect(one.ingest_url).toMatch(INGEST_URL);
    expect(one.ingest_url).not.toContain(one.id);
    expect(one.ingest_url).not.toBe(two.ingest_url);
    // 32 base64url characters: 192 random bits.
    expect(new URL(one.ingest_url).pathname.slice("/in/src_".length)).toHaveLength(32);

    // Another origin (as `wrangler dev` on localhost would be): the URL follows it.
    const local = krafterClient("http://localhost:8787", a.key, { fetch: workerFetch() });
    const res = await local.api.v1.webhooks.sources[":source_id"].$get({ param: { source_id: one.id } });
    expect(res.status).toBe(200);
    const { data } = await res.json();
    expect(data.ingest_url).toBe(`http://localhost:8787${new URL(one.ingest_url).pathname}`);
  });

  it("the ingest_url accepts events", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "live" });
    const res = await call("POST", new URL(s.ingest_url).pathname, {
      raw: JSON.stringify({ type: "ping" }),
      headers: { "content-type": "application/json" },
    });
    expect(res.status).toBe(202);
    expect(await storedEvents(s.id)).toHaveLength(1);
  });

  it("verifies_signatures is true exactly when a signing_secret is set", async () => {
    const a = await createAccount();
    const signed = await (await post(a, { name: "signed", provider: "stripe", signing_secret: "whsec_stripe_test_0123456789abcdef" })).json();
    expect(signed.data.verifies_signatures).toBe(true);
    expect((await row(signed.data.id))!.signingSecretCiphertext).not.toBeNull();
    const unsigned = await (await post(a, { name: "unsigned", provider: "stripe" })).json();
    expect(unsigned.data.verifies_signatures).toBe(false);
    const nulled = await (await post(a, { name: "nulled", provider: "stripe", signing_secret: null })).json();
    expect(nulled.data.verifies_signatures).toBe(false);
    expect((await row(nulled.data.id))!.signingSecretCiphertext).toBeNull();
  });

  it("signing_secret is never in any response", async () => {
    const a = await createAccount();
    const secret = whsec();
    const created = await post(a, { name: "secretive", provider: "standard-webhooks", signing_secret: secret });
    const createdText = await created.text();
    const id = (JSON.parse(createdText) as { data: SourceData }).data.id;
    const texts = [
      createdText,
      await (await get(a, id)).text(),
      await (await list(a)).text(),
      await (await patch(a, id, { name: "renamed" })).text(),
      await (await patch(a, id, { signing_secret: whsec() })).text(),
    ];
    for (const t of texts) {
      expect(t).not.toContain(secret);
      expect(t).not.toContain(secret.slice("whsec_".length));
      expect(t).not.toContain("signing_secret");
      const data = (JSON.parse(t) as { data: SourceData | SourceData[] }).data;
      for (const item of Array.isArray(data) ? data : [data]) expect(item.verifies_signatures).toBe(true);
    }
  });

  it("the signing_secret is what ingest verifies with", async () => {
    const a = await createAccount();
    const secret = whsec();
    const s = await createSource(a, { name: "sw", provider: "standard-webhooks", signing_secret: secret });
    const path = new URL(s.ingest_url).pathname;
    const body = JSON.stringify({ type: "user.created", data: { id: 1 } });
    const msgId = `msg_${crypto.randomUUID()}`;
    const signature = new Webhook(secret).sign(msgId, new Date(), body);
    const headers = {
      "content-type": "application/json",
      "webhook-id": msgId,
      "webhook-timestamp": String(Math.floor(Date.now() / 1000)),
      "webhook-signature": signature,
    };
    expect((await call("POST", path, { raw: body, headers })).status).toBe(202);
    const forged = new Webhook(whsec()).sign(msgId + "x", new Date(), body);
    expect((await call("POST", path, { raw: body, headers: { ...headers, "webhook-id": msgId + "x", "webhook-signature": forged } })).status).toBe(401);
  });
});

describe("Read", () => {
  it("GET one returns exactly what the create returned", async () => {
    const a = await createAccount();
    const created = await (await post(a, { name: "one", provider: "github", signing_secret: "gh-secret-of-16-chars" })).json();
    const res = await get(a, created.data.id);
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(Object.keys(body)).toEqual(["data"]);
    expect(body.data).toStrictEqual(created.data);
  });

  it("the list is {data, next_cursor}, newest first, only the caller's own", async () => {
    const a = await createAccount();
    const b = await createAccount();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await createSource(a, { name: `a${i}` })).id);
    await createSource(b, { name: "not yours" });
    const res = await list(a);
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(Object.keys(body).sort()).toEqual(["data", "next_cursor"]);
    expect(body.next_cursor).toBeNull();
    expect(body.data.map((s) => s.id)).toEqual([...ids].reverse());
    for (const s of body.data) expectSourceShape(s);
  });

  it("cursor pagination neither repeats nor skips (7 sources, limit 3)", async () => {
    const a = await createAccount();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await createSource(a, { name: `s${i}` })).id);
    const seen: string[] = [];
    const pages: number[] = [];
    let cursor: string | null = null;
    do {
      const res = await list(a, { limit: "3", ...(cursor ? { cursor } : {}) });
      expect(res.status).toBe(200);
      const body = await res.json();
      pages.push(body.data.length);
      seen.push(...body.data.map((s) => s.id));
      cursor = body.next_cursor;
    } while (cursor !== null && pages.length < 10);
    expect(pages).toEqual([3, 3, 1]);
    expect(seen).toEqual([...ids].reverse());
  });

  it("default limit 50, max 100", async () => {
    const a = await createAccount();
    for (let i = 0; i < 51; i++) await createSource(a, { name: `s${i}` });
    const first = await (await list(a)).json();
    expect(first.data).toHaveLength(50);
    expect(first.next_cursor).toEqual(expect.any(String));
    const all = await (await list(a, { limit: "100" })).json();
    expect(all.data).toHaveLength(51);
    expect(all.next_cursor).toBeNull();
  });
});

describe("Update", () => {
  it("PATCH name", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "before", provider: "shopify" });
    const res = await patch(a, s.id, { name: "after" });
    expect(res.status).toBe(200);
    const { data } = await res.json();
    expectSourceShape(data);
    expect(data).toMatchObject({ id: s.id, name: "after", provider: "shopify", ingest_url: s.ingest_url });
    expect((await row(s.id))!.name).toBe("after");
    expect((await (await get(a, s.id)).json()).data).toStrictEqual(data);
  });

  it("PATCH provider", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "switch" });
    const { data } = await (await patch(a, s.id, { provider: "stripe" })).json();
    expect(data).toMatchObject({ name: "switch", provider: "stripe" });
    expect((await row(s.id))!.provider).toBe("stripe");
  });

  it("PATCH signing_secret: set, replace, then null removes it", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "sig", provider: "github" });
    const set = await (await patch(a, s.id, { signing_secret: "first-secret-0123" })).json();
    expect(set.data.verifies_signatures).toBe(true);
    const ct1 = (await row(s.id))!.signingSecretCiphertext;
    expect(ct1).toMatch(/^v1\./);
    const replaced = await (await patch(a, s.id, { signing_secret: "second-secret-0123" })).json();
    expect(replaced.data.verifies_signatures).toBe(true);
    expect((await row(s.id))!.signingSecretCiphertext).not.toBe(ct1);
    const removed = await (await patch(a, s.id, { signing_secret: null })).json();
    expect(removed.data.verifies_signatures).toBe(false);
    expect((await row(s.id))!.signingSecretCiphertext).toBeNull();
    expect((await (await get(a, s.id)).json()).data.verifies_signatures).toBe(false);
  });

  it("PATCH of one field leaves the others, the ingest URL and the secret alone", async () => {
    const a = await createAccount();
    const created = await (await post(a, { name: "keep", provider: "stripe", signing_secret: "whsec_keep_0123456789abcdefghij" })).json();
    const before = await row(created.data.id);
    const { data } = await (await patch(a, created.data.id, { name: "kept" })).json();
    const after = await row(created.data.id);
    expect(after).toMatchObject({ ...before, name: "kept", updatedAt: expect.any(Number) });
    expect(after!.signingSecretCiphertext).toBe(before!.signingSecretCiphertext);
    expect(after!.ingestKey).toBe(before!.ingestKey);
    expect(data.ingest_url).toBe(created.data.ingest_url);
    expect(data.verifies_signatures).toBe(true);
    expect(data.created_at).toBe(created.data.created_at);
  });

  it("an empty PATCH changes nothing but is fine", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "noop" });
    const res = await patch(a, s.id, {});
    expect(res.status).toBe(200);
    expect((await res.json()).data).toMatchObject({ id: s.id, name: "noop", provider: "generic" });
  });

  it("a write-only key may update", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "w" });
    const w = await addKey(a.id, ["webhooks:write"]);
    expect((await patch(w, s.id, { name: "w2" })).status).toBe(200);
    expect((await row(s.id))!.name).toBe("w2");
  });
});

describe("Delete", () => {
  it("DELETE → 204, then GET → 404 and the ingest URL is gone", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "bye" });
    const del = () => api(a)[":source_id"].$delete({ param: { source_id: s.id } });
    const res = await del();
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    const again = await get(a, s.id);
    expect(again.status).toBe(404);
    expect(((await again.json()) as unknown as { error: { code: string } }).error.code).toBe("not_found");
    expect((await del()).status).toBe(404);
    expect(await row(s.id)).toBeNull();
    const ingest = await call("POST", new URL(s.ingest_url).pathname, { raw: "{}", headers: { "content-type": "application/json" } });
    expect(ingest.status).toBe(404);
  });

  it("DELETE cascades to its destinations, events, deliveries and attempts, and only to its own", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "doomed" });
    const keep = await createSource(a, { name: "kept" });
    const seed = async (sourceId: string) => {
      const d = await createDestination(a, sourceId, { url: "https://example.com/h" });
      const eventId = await insertEvent(sourceId, { type: "x.y", dedupeKey: `dk-${sourceId}` });
      const msg = await insertDelivery(eventId, d.id, { status: "succeeded", attemptCount: 1 });
      await insertAttempt(msg, 1, "succeeded");
      return { d, eventId, deliveryId: msg.deliveries[0]!.delivery_id };
    };
    const doomed = await seed(s.id);
    const kept = await seed(keep.id);
    const parts = await partitionsOf(s.id);
    const tally = async (x: { d: { id: string }; eventId: string; deliveryId: string }, sourceId: string, where = parts) => [
      await count("SELECT count(*) AS n FROM destinations WHERE source_id = ?", sourceId),
      (await Promise.all(where.map((ref) => readPartition(ref, (_db, _i, state) => state.storage.sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 'events'").one().n)))).reduce((m: number, n) => m + Number(n), 0),
      await countFor(sourceId, "deliveries", x.d.id),
      await countFor(sourceId, "attempts", x.d.id),
    ];
    expect(await tally(doomed, s.id)).toEqual([1, 1, 1, 1]);

    expect((await api(a)[":source_id"].$delete({ param: { source_id: s.id } })).status).toBe(204);
    // Hidden at once (the source is gone: its events answer 404), removed in the background.
    expect((await api(a)[":source_id"].events[":event_id"].$get({ param: { source_id: s.id, event_id: doomed.eventId } })).status).toBe(404);
    expect(await count("SELECT count(*) AS n FROM partitions WHERE source_id = ?", s.id)).toBe(0);
    await runRemovals(s.id);
    // Its partitions are dropped whole: not even their tables are left.
    expect(await tally(doomed, s.id)).toEqual([0, 0, 0, 0]);
    expect(await tally(kept, keep.id, await partitionsOf(keep.id))).toEqual([1, 1, 1, 1]);
    expect((await get(a, keep.id)).status).toBe(200);
  });
});
