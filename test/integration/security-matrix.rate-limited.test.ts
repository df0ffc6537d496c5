/**
 * The security matrix with the API rate limit engaged (issue 21): for every API route,
 * read from the app, with keys that have spent their API_RATE_LIMIT. Who asks comes
 * before how often: no key or an unknown one is 401, a key without the scope 403, an
 * unknown route 404 and a wrong method 405, never 429; the exhausted key itself is 429
 * with Retry-After and the error envelope, touches nothing, and is let through again
 * in the next window. The limiters' clocks are pinned, so no window ends mid-test.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import type { RateLimiter } from "../../src/rate-limiter";
import { addKey, call, createAccount, createDestination, createSource, envWith, mailbox, type Account } from "../helpers/api";
import { insertEvent } from "../helpers/delivery";
import { apiRoutes, fill, isUpgrade, isWrite, validBody, type Fixture, type Route } from "../helpers/routes";

const routes = apiRoutes();
const LIMIT = 2;
const limited = envWith({ API_RATE_LIMIT: String(LIMIT) });
/** A fixed instant in the middle of a window none of the fixture's requests counted in. */
const T = Math.floor(Date.now() / 60_000) * 60_000 + 10 * 60_000 + 30_000;

let fixture: Fixture;
let readOnly: { key: string; keyId: string };
let stranger: Account;
let before: unknown;

const setClock = (keyId: string, t: number) =>
  runInDurableObject((env as unknown as Env).RATE_LIMITER.getByName(`key:${keyId}`), (instance: RateLimiter) => {
    instance.now = () => t;
  });

const name = (r: Route) => `${r.method} ${r.path}`;

async function send(method: string, path: string, authorization: string | null, r?: Route, e: Env = limited) {
  const body = r ? validBody(r) : undefined;
  const res = await call(method, path, {
    env: e,
    headers: { ...(r && isUpgrade(r) ? { upgrade: "websocket" } : {}), ...(authorization === null ? {} : { authorization }) },
    ...(body !== undefined ? { body } : {}),
  });
  if (res.webSocket) {
    res.webSocket.accept();
    res.webSocket.close(1000);
    return { status: res.status, body: null, retryAfter: null };
  }
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, retryAfter: res.headers.get("retry-after") };
}

function expectEnvelope(body: { error?: { code?: unknown; message?: unknown } } | null, code: string) {
  expect(body?.error?.code).toBe(code);
  expect(typeof body?.error?.message).toBe("string");
}

function expectRateLimited(r: { status: number; body: any; retryAfter: string | null }) {
  expect(r.status).toBe(429);
  expectEnvelope(r.body, "rate_limited");
  expect(r.body.error.message).toContain("API_RATE_LIMIT");
  const seconds = Number(r.retryAfter);
  expect(Number.isInteger(seconds) && seconds >= 1 && seconds <= 60).toBe(true);
}

const sourceRow = () => env.DB.prepare("SELECT name, updated_at FROM sources WHERE id = ?").bind(fixture.sourceId).first();

beforeAll(async () => {
  const account = await createAccount();
  const source = await createSource(account, { name: "matrix, rate limited" });
  const box = await mailbox();
  const dest = await createDestination(account, source.id, { url: box.url });
  fixture = { account, sourceId: source.id, destinationId: dest.id, eventId: await insertEvent(source.id) };
  readOnly = await addKey(account.id, ["webhooks:read"]);
  stranger = await createAccount();
  before = await sourceRow();
  // Both keys of the account spend their limit on reads, at a pinned instant.
  for (const k of [{ key: account.key, keyId: account.keyId }, readOnly]) {
    await setClock(k.keyId, T);
    for (let i = 0; i < LIMIT; i++) expect((await send("GET", "/api/v1/webhooks/sources", `Bearer ${k.key}`)).status).toBe(200);
    expectRateLimited(await send("GET", "/api/v1/webhooks/sources", `Bearer ${k.key}`));
  }
});

describe("the rate-limited matrix covers the API", () => {
  it("has every route of the matrix, and none takes PUT (the wrong method below)", () => {
    expect(routes.length).toBeGreaterThanOrEqual(16);
    expect(routes.filter((r) => r.method === "PUT")).toEqual([]);
  });
});

describe.each(routes.map((r) => [name(r), r] as const))("%s, API_RATE_LIMIT spent", (_name, route) => {
  const path = () => fill(route.path, fixture);

  it("no key → 401, not 429", async () => {
    const r = await send(route.method, path(), null, route);
    expect(r.status).toBe(401);
    expectEnvelope(r.body, "unauthorized");
  });

  it("an unknown key → 401, not 429", async () => {
    const r = await send(route.method, path(), "Bearer krf_" + "b".repeat(43), route);
    expect(r.status).toBe(401);
    expectEnvelope(r.body, "unauthorized");
  });

  it(`the spent read-only key → ${isWrite(route) ? "403 naming webhooks:write, not 429" : "429 with Retry-After"}`, async () => {
    const r = await send(route.method, path(), `Bearer ${readOnly.key}`, route);
    if (isWrite(route)) {
      expect(r.status).toBe(403);
      expectEnvelope(r.body, "forbidden");
      expect(r.body.error.message).toContain("webhooks:write");
    } else {
      expectRateLimited(r);
    }
  });

  it("the spent key with the scope → 429 with Retry-After and the envelope, and nothing touched", async () => {
    expectRateLimited(await send(route.method, path(), `Bearer ${fixture.account.key}`, route));
    expect(await sourceRow()).toEqual(before);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM destinations WHERE id = ?").bind(fixture.destinationId).first("n")).toBe(1);
  });

  it("an unknown route → 404 and a wrong method → 405, with the spent key, not 429", async () => {
    const unknown = await send(route.method, path().replace("/api/v1/webhooks/sources", "/api/v1/webhooks/no-such-collection"), `Bearer ${fixture.account.key}`);
    expect(unknown.status).toBe(404);
    expectEnvelope(unknown.body, "not_found");
    const wrong = await send("PUT", path(), `Bearer ${fixture.account.key}`);
    expect(wrong.status).toBe(405);
    expectEnvelope(wrong.body, "method_not_allowed");
  });

  it("another account's key, not limited → 404 under a source, as in the matrix without the limit", async () => {
    const r = await send(route.method, path(), `Bearer ${stranger.key}`, route, env as unknown as Env);
    if (route.path.includes(":source_id")) {
      expect(r.status).toBe(404);
      expectEnvelope(r.body, "not_found");
    } else {
      expect(r.status).toBeLessThan(300);
    }
  });
});

describe("the next window", () => {
  afterAll(async () => {
    await setClock(fixture.account.keyId, Date.now());
    await setClock(readOnly.keyId, Date.now());
  });

  it("lets both keys through again, up to the limit, then 429 again", async () => {
    await setClock(fixture.account.keyId, T + 60_000);
    await setClock(readOnly.keyId, T + 60_000);
    expect((await send("GET", fill("/api/v1/webhooks/sources/:source_id/events", fixture), `Bearer ${readOnly.key}`)).status).toBe(200);
    expect((await send("GET", "/api/v1/webhooks/sources", `Bearer ${fixture.account.key}`)).status).toBe(200);
    const patched = await call("PATCH", fill("/api/v1/webhooks/sources/:source_id", fixture), { key: fixture.account.key, body: { name: "renamed" }, env: limited });
    expect(patched.status).toBe(200);
    expectRateLimited(await send("GET", "/api/v1/webhooks/sources", `Bearer ${fixture.account.key}`));
  });
});
