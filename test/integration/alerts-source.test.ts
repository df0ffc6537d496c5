/**
 * The alerts source (provider krafter): one per account, no ingest URL and no ingest key
 * that takes requests, no signing secret; listed, changed and deleted like any source,
 * with ordinary destinations.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { one, Source } from "../../src/http/openapi";
import { eq } from "drizzle-orm";
import { sources } from "../../src/db/schema";
import { addKey, call, createAccount, createDestination, createSource, db, expect422, expectError, json, mailbox, RFC3339, UUID, type Account } from "../helpers/api";

const SOURCES = "/api/v1/webhooks/sources";
const post = (a: Account, body: unknown) => call("POST", SOURCES, { key: a.key, body });
const alertsBody = { name: "alerts", provider: "krafter" };

async function row(id: string) {
  return env.DB.prepare("SELECT * FROM sources WHERE id = ?").bind(id).first<Record<string, any>>();
}

describe("creating the alerts source", () => {
  it("POST provider krafter: 201, ingest_url null, no signatures", async () => {
    const a = await createAccount();
    const res = await post(a, alertsBody);
    expect(res.status).toBe(201);
    const body = await json(res);
    const { data } = body;
    // As documented: the OpenAPI schema of a source has krafter, and a null ingest_url.
    expect(one(Source).safeParse(body).success).toBe(true);
    expect(Object.keys(data).sort()).toEqual(["created_at", "id", "ingest_url", "name", "provider", "updated_at", "verifies_signatures"]);
    expect(data).toMatchObject({ name: "alerts", provider: "krafter", ingest_url: null, verifies_signatures: false });
    expect(data.id).toMatch(UUID);
    expect(data.created_at).toMatch(RFC3339);
    const stored = await row(data.id);
    expect(stored).toMatchObject({ account_id: a.id, provider: "krafter", signing_secret_ct: null });
    // The column wants a unique key; it is never one an ingest URL could carry.
    expect(stored!.ingest_key).not.toMatch(/^src_/);
  });

  it("a second one is a 409, also when both are asked for at once; another account has its own", async () => {
    const a = await createAccount();
    expect((await post(a, alertsBody)).status).toBe(201);
    await expectError(await post(a, { name: "again", provider: "krafter" }), 409, "conflict");

    const b = await createAccount();
    const statuses = (await Promise.all(Array.from({ length: 6 }, (_, i) => post(b, { name: `race ${i}`, provider: "krafter" })))).map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(5);
    const n = await env.DB.prepare("SELECT count(*) AS n FROM sources WHERE account_id = ? AND provider = 'krafter'").bind(b.id).first<{ n: number }>();
    expect(n!.n).toBe(1);
    // Ordinary sources are as many as ever.
    expect((await post(b, { name: "stripe", provider: "stripe" })).status).toBe(201);
    expect((await post(b, { name: "stripe 2", provider: "stripe" })).status).toBe(201);
  });

  it("takes no signing secret: a string is a 422 on signing_secret, null is none", async () => {
    const a = await createAccount();
    const body = await expect422(await post(a, { ...alertsBody, signing_secret: "whsec_" + btoa("x".repeat(32)) }), "signing_secret");
    expect(body.error.details!.find((d) => d.field === "signing_secret")!.message).toMatch(/krafter/);
    const res = await post(a, { ...alertsBody, signing_secret: null });
    expect(res.status).toBe(201);
    expect((await json(res)).data.verifies_signatures).toBe(false);
  });

  it("can be deleted, and then created again", async () => {
    const a = await createAccount();
    const { data } = await json(await post(a, alertsBody));
    expect((await call("DELETE", `${SOURCES}/${data.id}`, { key: a.key })).status).toBe(204);
    expect((await call("GET", `${SOURCES}/${data.id}`, { key: a.key })).status).toBe(404);
    expect((await post(a, alertsBody)).status).toBe(201);
  });
});

describe("reading and changing it", () => {
  it("is listed and read like any source, its ingest_url null for every key", async () => {
    const a = await createAccount();
    const plain = await createSource(a, { name: "plain" });
    const { data } = await json(await post(a, alertsBody));
    const list = await json(await call("GET", SOURCES, { key: a.key }));
    expect(list.data.map((s: { id: string }) => s.id)).toEqual([data.id, plain.id]);
    expect(list.data[0]).toMatchObject({ provider: "krafter", ingest_url: null });
    for (const key of [a.key, (await addKey(a.id, ["webhooks:read"])).key]) {
      const got = await json(await call("GET", `${SOURCES}/${data.id}`, { key }));
      expect(got.data).toMatchObject({ id: data.id, provider: "krafter", ingest_url: null });
    }
  });

  it("PATCH renames it; its provider stays krafter, and no other source becomes one", async () => {
    const a = await createAccount();
    const { data } = await json(await post(a, alertsBody));
    const renamed = await call("PATCH", `${SOURCES}/${data.id}`, { key: a.key, body: { name: "ops alerts", provider: "krafter", signing_secret: null } });
    expect(renamed.status).toBe(200);
    expect((await json(renamed)).data).toMatchObject({ name: "ops alerts", provider: "krafter", ingest_url: null });

    await expect422(await call("PATCH", `${SOURCES}/${data.id}`, { key: a.key, body: { provider: "generic" } }), "provider");
    await expect422(await call("PATCH", `${SOURCES}/${data.id}`, { key: a.key, body: { signing_secret: "whsec_" + btoa("y".repeat(32)) } }), "signing_secret");
    expect((await row(data.id))!.provider).toBe("krafter");

    const plain = await createSource(a, { name: "plain" });
    await expect422(await call("PATCH", `${SOURCES}/${plain.id}`, { key: a.key, body: { provider: "krafter" } }), "provider");
    expect((await row(plain.id))!.provider).toBe("generic");
  });

  it("has ordinary destinations", async () => {
    const a = await createAccount();
    const { data } = await json(await post(a, alertsBody));
    const box = await mailbox();
    const dest = await createDestination(a, data.id, { url: box.url, event_filter: ["destination.disabled"] });
    expect(dest).toMatchObject({ source_id: data.id, event_filter: ["destination.disabled"], enabled: true, failure_count: 0 });
    expect(dest.secret).toMatch(/^whsec_/);
    const list = await json(await call("GET", `${SOURCES}/${data.id}/destinations`, { key: a.key }));
    expect(list.data.map((d: { id: string }) => d.id)).toEqual([dest.id]);
    const test = await call("POST", `${SOURCES}/${data.id}/destinations/${dest.id}/test`, { key: a.key });
    expect(test.status).toBe(200);
  });
});

describe("ingest to it is impossible", () => {
  it("no ingest URL, its stored key is refused, and so is a key of the right shape", async () => {
    const a = await createAccount();
    const { data } = await json(await post(a, alertsBody));
    const stored = await row(data.id);
    const event = { raw: JSON.stringify({ type: "destination.disabled", data: {} }), headers: { "content-type": "application/json" } };
    expect((await call("POST", `/in/${encodeURIComponent(stored!.ingest_key)}`, event)).status).toBe(404);
    expect((await call("POST", `/in/${stored!.ingest_key}`, event)).status).toBe(404);
    // Even were its key one an ingest URL could carry, a krafter source takes no request.
    const shaped = "src_" + "A".repeat(32);
    await db().update(sources).set({ ingestKey: shaped }).where(eq(sources.id, data.id)).run();
    await expectError(await call("POST", `/in/${shaped}`, event), 404, "not_found");
    const events = await json(await call("GET", `${SOURCES}/${data.id}/events`, { key: a.key }));
    expect(events.data).toEqual([]);
  });
});
