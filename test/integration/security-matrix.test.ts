/**
 * Every API route × {no key, malformed key, revoked key, read-only key, another
 * account's key, the right key}: the right status every time. Routes are read from the
 * app, so a new route is in this matrix as soon as it exists.
 */
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { addKey, call, createAccount, createDestination, createSource, mailbox, type Account } from "../helpers/api";
import { insertEvent } from "../helpers/delivery";
import { allApiRoutes, apiRoutes, fill, isUpgrade, isWrite, PUBLIC_ROUTES, validBody, type Fixture, type Route } from "../helpers/routes";

const routes = apiRoutes();

let fixture: Fixture;
let readOnly: string;
let revoked: string;
let stranger: Account;

beforeAll(async () => {
  const account = await createAccount();
  const source = await createSource(account, { name: "matrix" });
  const box = await mailbox();
  const dest = await createDestination(account, source.id, { url: box.url });
  fixture = { account, sourceId: source.id, destinationId: dest.id, eventId: await insertEvent(source.id) };
  readOnly = (await addKey(account.id, ["webhooks:read"])).key;
  const r = await addKey(account.id, ["webhooks:read", "webhooks:write"]);
  await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?").bind(Date.now(), r.keyId).run();
  revoked = r.key;
  stranger = await createAccount();
});

const name = (r: Route) => `${r.method} ${r.path}`;

async function send(r: Route, authorization: string | null) {
  const body = validBody(r);
  const res = await call(r.method, fill(r.path, fixture), {
    headers: { ...(isUpgrade(r) ? { upgrade: "websocket" } : {}), ...(authorization === null ? {} : { authorization }) },
    ...(body !== undefined ? { body } : {}),
  });
  if (res.webSocket) {
    res.webSocket.accept();
    res.webSocket.close(1000);
    return { status: res.status, body: null };
  }
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

function expectEnvelope(body: { error?: { code?: unknown; message?: unknown } } | null, code: string) {
  expect(body?.error?.code).toBe(code);
  expect(typeof body?.error?.message).toBe("string");
}

describe("the matrix covers the API", () => {
  it("has the routes of the reference page and PRODUCT.md", () => {
    const names = routes.map(name);
    for (const expected of [
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

describe.each(routes.map((r) => [name(r), r] as const))("%s", (_name, route) => {
  it("no key → 401", async () => {
    const r = await send(route, null);
    expect(r.status).toBe(401);
    expectEnvelope(r.body, "unauthorized");
  });

  it.each(["Bearer nope", "Basic dXNlcjpwYXNz", "Bearer krf_short", "krf_" + "a".repeat(43), "Bearer " + "krf_" + "b".repeat(43)])(
    "malformed or unknown key %s → 401",
    async (authorization) => {
      const r = await send(route, authorization);
      expect(r.status).toBe(401);
      expectEnvelope(r.body, "unauthorized");
    },
  );

  it("revoked key → 401", async () => {
    const r = await send(route, `Bearer ${revoked}`);
    expect(r.status).toBe(401);
    expectEnvelope(r.body, "unauthorized");
  });

  it(`read-only key → ${isWrite(route) ? "403 naming webhooks:write" : "success"}`, async () => {
    const r = await send(route, `Bearer ${readOnly}`);
    if (isWrite(route)) {
      expect(r.status).toBe(403);
      expectEnvelope(r.body, "forbidden");
      expect(r.body.error.message).toContain("webhooks:write");
    } else {
      expect(r.status).toBe(isUpgrade(route) ? 101 : 200);
    }
  });

  it("another account's key → 404 for anything under a source, and nothing of ours touched", async () => {
    const before = await env.DB.prepare("SELECT name, updated_at FROM sources WHERE id = ?").bind(fixture.sourceId).first();
    const r = await send(route, `Bearer ${stranger.key}`);
    if (route.path.includes(":source_id")) {
      expect(r.status).toBe(404);
      expectEnvelope(r.body, "not_found");
    } else {
      // The collection itself: the stranger sees (or creates in) their own account only.
      expect(r.status).toBeLessThan(300);
      if (route.method === "GET") expect(r.body.data.map((s: { id: string }) => s.id)).not.toContain(fixture.sourceId);
    }
    expect(await env.DB.prepare("SELECT name, updated_at FROM sources WHERE id = ?").bind(fixture.sourceId).first()).toEqual(before);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM destinations WHERE id = ?").bind(fixture.destinationId).first("n")).toBe(1);
  });

  it("the right key → success", async () => {
    // Destructive routes run against their own fresh resources.
    if (route.method === "DELETE") {
      const own = await createSource(fixture.account, { name: "to delete" });
      const d = await createDestination(fixture.account, own.id, { url: "https://hooks.example.com/del" });
      const res = await call("DELETE", fill(route.path, { sourceId: own.id, destinationId: d.id, eventId: fixture.eventId }), { key: fixture.account.key });
      expect(res.status).toBe(204);
      return;
    }
    const r = await send(route, `Bearer ${fixture.account.key}`);
    if (isUpgrade(route)) return expect(r.status).toBe(101);
    expect(r.status).toBeGreaterThanOrEqual(200);
    expect(r.status).toBeLessThan(300);
  });
});
