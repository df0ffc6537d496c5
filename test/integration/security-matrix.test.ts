/**
 * Who may do what, on every API route: routes are read from the app (test/helpers/routes.ts),
 * so a new route is in this matrix as soon as it exists. Every route × {no key, malformed
 * keys, a revoked key, a read-only key, a write-only key, a key without a known scope,
 * another account's key, the right key}: the right status and error envelope every time,
 * and every refusal leaves the caller's world exactly as it was (the account's sources,
 * the source's destinations, the event's deliveries, and nothing sent to the mailbox).
 *
 * All refusals run first, against one fixture; the right key's successes run after them
 * (each DELETE on resources of its own), so nothing a success queues can show up as harm.
 */
import { asc, eq } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import { destinations, sources } from "../../src/db/schema";
import { addKey, call, createAccount, createDestination, createSource, db, mailbox, revokeKey, type Account } from "../helpers/api";
import { deliveriesOf, insertEvent } from "../helpers/delivery";
import { allApiRoutes, apiRoutes, fill, isUpgrade, isWrite, PUBLIC_ROUTES, validBody, type Fixture, type Route } from "../helpers/routes";

const routes = apiRoutes();

let fixture: Fixture;
let box: Awaited<ReturnType<typeof mailbox>>;
let readOnly: string;
let writeOnly: string;
let noScope: string;
let revoked: string;

/** A well-formed key that no account has. */
const UNKNOWN_KEY = "krf_" + "A".repeat(43);

/** Authorization headers that must all be refused as no key at all (401). */
function malformed(key: string): Record<string, string>[] {
  return [
    ...[
      "Bearer",
      "Bearer ",
      "Bearer nope",
      "Bearer krf_",
      "Bearer krf_short",
      "Bearer krf_tooshort",
      `Bearer ${key.toUpperCase()}`,
      `Bearer ${key}=`,
      `Bearer ${key}x`,
      `Bearer ${key.slice(0, -1)}`,
      `Bearer ${key} ${key}`,
      `Bearer sk_live_${key.slice(4)}`,
      `Bearer ${key.replace("krf_", "KRF_")}`,
      `Bearer ${"krf_" + "-".repeat(43)}`,
      `Bearer ${UNKNOWN_KEY}`,
      `Bearer krf_${"b".repeat(43)}`,
      `Token ${key}`,
      `Basic ${btoa(`${key}:`)}`,
      `Basic ${btoa("user:pass")}`,
      key, // no scheme
      "krf_" + "a".repeat(43),
    ].map((authorization) => ({ authorization })),
    { "x-api-key": key },
  ];
}

beforeAll(async () => {
  const account = await createAccount();
  const source = await createSource(account, { name: "matrix", provider: "stripe", signing_secret: "whsec_matrix_secret_0123456789ab" });
  box = await mailbox();
  const dest = await createDestination(account, source.id, { url: box.url, event_filter: ["invoice.paid"] });
  fixture = { account, sourceId: source.id, destinationId: dest.id, eventId: await insertEvent(source.id) };
  readOnly = (await addKey(account.id, ["webhooks:read"])).key;
  writeOnly = (await addKey(account.id, ["webhooks:write"])).key;
  noScope = (await addKey(account.id, [])).key;
  const r = await addKey(account.id, ["webhooks:read", "webhooks:write"]);
  // It works before it is revoked.
  expect((await call("GET", "/api/v1/webhooks/sources", { key: r.key })).status).toBe(200);
  await revokeKey(r.keyId);
  revoked = r.key;
});

const name = (r: Route) => `${r.method} ${r.path}`;

/** Calls a route with a valid body for it, as `headers` (no authorization unless given). */
async function send(r: Route, headers: Record<string, string>, path = fill(r.path, fixture)) {
  const body = validBody(r);
  const res = await call(r.method, path, {
    headers: { ...(isUpgrade(r) ? { upgrade: "websocket" } : {}), ...headers },
    ...(body !== undefined ? { body } : {}),
  });
  if (res.webSocket) {
    res.webSocket.accept();
    res.webSocket.close(1000);
    return { status: res.status, text: "", body: null, requestId: res.headers.get("x-request-id") };
  }
  const text = await res.text();
  return { status: res.status, text, body: text ? (JSON.parse(text) as Record<string, any>) : null, requestId: res.headers.get("x-request-id") };
}

const as = (key: string) => ({ authorization: `Bearer ${key}` });

function expectEnvelope(r: { body: Record<string, any> | null; requestId: string | null }, code: string) {
  expect(r.body?.error?.code).toBe(code);
  expect(typeof r.body?.error?.message).toBe("string");
  expect(r.requestId).toBeTruthy();
}

/** Everything a refused request could have touched. */
async function world() {
  const d1 = db();
  return {
    sources: await d1.select().from(sources).where(eq(sources.accountId, fixture.account.id)).orderBy(asc(sources.id)).all(),
    destinations: await d1.select().from(destinations).where(eq(destinations.sourceId, fixture.sourceId)).orderBy(asc(destinations.id)).all(),
    deliveries: await deliveriesOf(fixture.sourceId, fixture.eventId),
    sent: (await box.requests()).length,
  };
}

/** Runs a refusal and checks that it changed nothing. */
async function unharmed<T>(refuse: () => Promise<T>): Promise<T> {
  const before = await world();
  const out = await refuse();
  expect(await world()).toStrictEqual(before);
  return out;
}

describe("the matrix covers the API", () => {
  it("has the routes of the reference page and PRODUCT.md", () => {
    const names = routes.map(name);
    for (const expected of [
      "POST /api/v1/webhooks/sources",
      "GET /api/v1/webhooks/sources",
      "GET /api/v1/webhooks/sources/:source_id",
      "PATCH /api/v1/webhooks/sources/:source_id",
      "DELETE /api/v1/webhooks/sources/:source_id",
      "POST /api/v1/webhooks/sources/:source_id/destinations",
      "GET /api/v1/webhooks/sources/:source_id/destinations",
      "GET /api/v1/webhooks/sources/:source_id/destinations/:id",
      "PATCH /api/v1/webhooks/sources/:source_id/destinations/:id",
      "DELETE /api/v1/webhooks/sources/:source_id/destinations/:id",
      "POST /api/v1/webhooks/sources/:source_id/destinations/:id/test",
    ]) {
      expect(names).toContain(expected);
    }
    expect(routes.length).toBeGreaterThanOrEqual(16);
  });

  it("every API route but the public ones requires a scope: reads webhooks:read, writes webhooks:write", () => {
    for (const r of allApiRoutes()) {
      if (PUBLIC_ROUTES.has(name(r))) {
        expect(r.scope, name(r)).toBeUndefined();
        continue;
      }
      expect(r.scope, `${name(r)} has no requireScope()`).toBe(isWrite(r) ? "webhooks:write" : "webhooks:read");
    }
  });

  it("the public API routes answer without a key", async () => {
    for (const key of PUBLIC_ROUTES) {
      const [method, path] = key.split(" ");
      expect((await call(method!, path!)).status, key).toBe(200);
    }
  });
});

describe.each(routes.map((r) => [name(r), r] as const))("%s, refused", (_name, route) => {
  it("no key → 401 asking for a Bearer key, nothing changed", async () => {
    const r = await unharmed(() => send(route, {}));
    expect(r.status).toBe(401);
    expectEnvelope(r, "unauthorized");
    expect(r.body!.error.message).toMatch(/Bearer/);
  });

  it("malformed or unknown keys → 401, nothing changed", async () => {
    await unharmed(async () => {
      for (const headers of malformed(fixture.account.key)) {
        const r = await send(route, headers);
        expect(r.status, JSON.stringify(headers)).toBe(401);
        expectEnvelope(r, "unauthorized");
      }
    });
  });

  it("revoked key → 401, the same answer as an unknown key, nothing changed", async () => {
    const r = await unharmed(() => send(route, as(revoked)));
    expect(r.status).toBe(401);
    expectEnvelope(r, "unauthorized");
    expect(r.body!.error.message).not.toMatch(/revoked/i);
    expect(r.body).toStrictEqual((await send(route, as(UNKNOWN_KEY))).body);
  });

  if (isWrite(route)) {
    it("read-only key → 403 naming webhooks:write, nothing changed", async () => {
      const r = await unharmed(() => send(route, as(readOnly)));
      expect(r.status).toBe(403);
      expectEnvelope(r, "forbidden");
      expect(r.body!.error.message).toContain("webhooks:write");
    });
  } else {
    it("read-only key → success", async () => {
      expect((await send(route, as(readOnly))).status).toBe(isUpgrade(route) ? 101 : 200);
    });

    it("write-only key → success (write implies read)", async () => {
      expect((await send(route, as(writeOnly))).status).toBe(isUpgrade(route) ? 101 : 200);
    });
  }

  it("a key with no known scope → 403, nothing changed", async () => {
    const r = await unharmed(() => send(route, as(noScope)));
    expect(r.status).toBe(403);
    expectEnvelope(r, "forbidden");
  });

  if (route.path.includes(":source_id")) {
    it("another account's key → 404 revealing nothing, the same 404 as an id that does not exist, nothing changed", async () => {
      const stranger = await createAccount();
      const r = await unharmed(() => send(route, as(stranger.key)));
      expect(r.status).toBe(404);
      expectEnvelope(r, "not_found");
      for (const id of [fixture.sourceId, fixture.destinationId, fixture.eventId]) expect(r.text).not.toContain(id);
      const ghost = await send(route, as(fixture.account.key), fill(route.path, { ...fixture, sourceId: crypto.randomUUID() }));
      expect(ghost.status).toBe(404);
      expect(r.body).toStrictEqual(ghost.body);
    });
  } else {
    it("another account's key sees and touches only its own", async () => {
      const stranger: Account = await createAccount();
      const r = await unharmed(() => send(route, as(stranger.key)));
      expect(r.status).toBeGreaterThanOrEqual(200);
      expect(r.status).toBeLessThan(300);
      expect(r.text).not.toContain(fixture.sourceId);
      const theirs = await db().select().from(sources).where(eq(sources.accountId, stranger.id)).all();
      if (route.method === "GET") expect(r.body!.data).toEqual([]);
      else expect(theirs.map((s) => s.id)).toEqual([r.body!.data.id]);
    });
  }
});

/** What a success must have done, beyond its status, for the routes where it is visible at once. */
const effects: Record<string, (r: Awaited<ReturnType<typeof send>>, sentBefore: { test: number }) => Promise<void>> = {
  "POST /api/v1/webhooks/sources": async (r) => {
    const row = await db().select().from(sources).where(eq(sources.id, r.body!.data.id)).get();
    expect(row).toMatchObject({ accountId: fixture.account.id, name: "matrix" });
  },
  "GET /api/v1/webhooks/sources": async (r) => expect(r.text).toContain(fixture.sourceId),
  "GET /api/v1/webhooks/sources/:source_id": async (r) => expect(r.body!.data.id).toBe(fixture.sourceId),
  "PATCH /api/v1/webhooks/sources/:source_id": async () => {
    expect(await db().select().from(sources).where(eq(sources.id, fixture.sourceId)).get()).toMatchObject({ name: "renamed" });
  },
  "POST /api/v1/webhooks/sources/:source_id/destinations": async (r) => {
    const row = await db().select().from(destinations).where(eq(destinations.id, r.body!.data.id)).get();
    expect(row).toMatchObject({ sourceId: fixture.sourceId, url: "https://hooks.example.com/matrix" });
  },
  "GET /api/v1/webhooks/sources/:source_id/destinations": async (r) => expect(r.text).toContain(fixture.destinationId),
  "GET /api/v1/webhooks/sources/:source_id/destinations/:id": async (r) => expect(r.body!.data.id).toBe(fixture.destinationId),
  "PATCH /api/v1/webhooks/sources/:source_id/destinations/:id": async () => {
    expect(await db().select().from(destinations).where(eq(destinations.id, fixture.destinationId)).get()).toMatchObject({ enabled: true });
  },
  "POST /api/v1/webhooks/sources/:source_id/destinations/:id/test": async (_r, before) => {
    expect(await testRequests()).toBe(before.test + 1);
  },
};

/** Requests of the test endpoint the mailbox got (redeliver and replay may add deliveries meanwhile). */
const testRequests = async () => (await box.requests()).filter((q) => (JSON.parse(q.body) as { event?: string }).event === "test").length;

describe.each(routes.map((r) => [name(r), r] as const))("%s, allowed", (_name, route) => {
  it("the right key → success", async () => {
    // Destructive routes run against fresh resources of their own; afterwards they are gone.
    if (route.method === "DELETE") {
      const own = await createSource(fixture.account, { name: "to delete" });
      const d = await createDestination(fixture.account, own.id, { url: "https://hooks.example.com/del" });
      const path = fill(route.path, { sourceId: own.id, destinationId: d.id, eventId: fixture.eventId });
      const res = await call("DELETE", path, { key: fixture.account.key });
      expect(res.status).toBe(204);
      expect(res.headers.get("x-request-id")).toBeTruthy();
      expect((await call("GET", path, { key: fixture.account.key })).status).toBe(404);
      return;
    }
    const before = { test: await testRequests() };
    const r = await send(route, as(fixture.account.key));
    if (isUpgrade(route)) return expect(r.status).toBe(101);
    expect(r.status).toBeGreaterThanOrEqual(200);
    expect(r.status).toBeLessThan(300);
    expect(r.requestId).toBeTruthy();
    await effects[name(route)]?.(r, before);
  });
});
