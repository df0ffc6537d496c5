/**
 * Property-based bad input at every route (fast-check): arbitrary JSON, wrong types,
 * huge strings, unicode, nulls, arrays where objects go, malformed ids, query strings
 * and headers. Whatever arrives: never a 500, always the error envelope when refused,
 * and the account's stored data unchanged after every refused write.
 */
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { call, createAccount, createDestination, createSource, mailbox } from "../helpers/api";
import { insertEvent, storedEvents } from "../helpers/delivery";
import { apiRoutes, fill, isWrite, type Fixture } from "../helpers/routes";

const routes = apiRoutes();
const RUNS = 40;
let fixture: Fixture;

beforeAll(async () => {
  const account = await createAccount();
  const source = await createSource(account, { name: "fuzz", provider: "stripe", signing_secret: "whsec_fuzz_0123456789abcdefghij" });
  const box = await mailbox();
  const dest = await createDestination(account, source.id, { url: box.url, event_filter: ["invoice.*"] });
  fixture = { account, sourceId: source.id, destinationId: dest.id, eventId: await insertEvent(source.id) };
});

/** Everything the account owns, as one string: compared before and after a refused write. */
async function snapshot(): Promise<string> {
  const q = async (sql: string) => JSON.stringify((await env.DB.prepare(sql).bind(fixture.account.id).all()).results);
  return [
    await q("SELECT * FROM sources WHERE account_id = ? ORDER BY id"),
    await q("SELECT d.* FROM destinations d JOIN sources s ON s.id = d.source_id WHERE s.account_id = ? ORDER BY d.id"),
    JSON.stringify((await storedEvents(fixture.sourceId)).map((e) => [e.id, e.status])),
    await q("SELECT id, revoked_at FROM api_keys WHERE account_id = ? ORDER BY id"),
  ].join("\n");
}

interface Outcome {
  status: number;
  body: unknown;
}

function assertWellFormed(o: Outcome, context: string) {
  expect(o.status, context).not.toBe(500);
  expect(o.status, context).toBeLessThan(500);
  if (o.status >= 400) {
    const e = (o.body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    expect(typeof e?.code, context).toBe("string");
    expect(typeof e?.message, context).toBe("string");
  }
}

async function send(method: string, path: string, opts: { raw?: string; headers?: Record<string, string>; key?: string | null } = {}): Promise<Outcome> {
  const res = await call(method, path, {
    key: opts.key === undefined ? fixture.account.key : opts.key,
    ...(opts.raw !== undefined ? { raw: opts.raw } : {}),
    headers: { ...(opts.raw !== undefined ? { "content-type": "application/json" } : {}), ...opts.headers },
  });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

const hostile = fc.oneof(
  fc.jsonValue(),
  fc.array(fc.jsonValue(), { maxLength: 5 }),
  fc.constantFrom(null, 0, -1, 1e308, true, "", [], {}, [{}], "null"),
  fc.string({ unit: "binary", minLength: 1000, maxLength: 5000 }),
  fc.dictionary(
    fc.constantFrom("name", "url", "secret", "event_filter", "enabled", "provider", "signing_secret", "since", "until", "only_failed", "destination_ids", "__proto__", "constructor"),
    fc.oneof(fc.jsonValue(), fc.string({ unit: "grapheme", maxLength: 300 }), fc.constant(null), fc.array(fc.string(), { maxLength: 120 })),
  ),
);

const writes = routes.filter(isWrite).filter((r) => r.method !== "DELETE");

describe("bodies", () => {
  it.each(writes.map((r) => [`${r.method} ${r.path}`, r] as const))("%s: arbitrary JSON never gives a 500 and a refusal changes nothing", async (_n, route) => {
    await fc.assert(
      fc.asyncProperty(hostile, async (value) => {
        const before = await snapshot();
        const o = await send(route.method, fill(route.path, fixture), { raw: JSON.stringify(value) });
        assertWellFormed(o, `${route.method} ${route.path} ${JSON.stringify(value).slice(0, 200)}`);
        if (o.status >= 400) expect(await snapshot()).toBe(before);
      }),
      { numRuns: RUNS },
    );
  });

  it.each(writes.map((r) => [`${r.method} ${r.path}`, r] as const))("%s: text that is not JSON gives 400 invalid_json", async (_n, route) => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ unit: "grapheme", minLength: 1, maxLength: 200 }).filter((t) => {
          try {
            JSON.parse(t);
            return false;
          } catch {
            return true;
          }
        }),
        async (text) => {
          const before = await snapshot();
          const o = await send(route.method, fill(route.path, fixture), { raw: text });
          expect(o.status).toBe(400);
          expect((o.body as { error: { code: string } }).error.code).toBe("invalid_json");
          expect(await snapshot()).toBe(before);
        },
      ),
      { numRuns: 15 },
    );
  });
});

describe("ids, query strings and headers", () => {
  it.each(routes.filter((r) => r.path.includes(":")).map((r) => [`${r.method} ${r.path}`, r] as const))(
    "%s: a malformed id in any position gives 404 (or 405), never a 500",
    async (_n, route) => {
      const params = [...route.path.matchAll(/:([a-z_]+)/g)].map((m) => m[1]!);
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...params),
          fc.oneof(fc.string({ unit: "grapheme", minLength: 1, maxLength: 80 }), fc.uuid(), fc.constantFrom("..", "%2e%2e", "null", "0", "-1", "' OR 1=1 --", "%00")),
          async (param, value) => {
            const before = await snapshot();
            const path = fill(route.path, fixture, { [param]: value });
            const o = await send(route.method, path, { raw: route.method === "GET" || route.method === "DELETE" ? undefined : "{}" });
            assertWellFormed(o, `${route.method} ${path}`);
            if (o.status >= 400) expect(await snapshot()).toBe(before);
          },
        ),
        { numRuns: RUNS },
      );
    },
  );

  it.each(routes.filter((r) => r.method === "GET").map((r) => [`${r.method} ${r.path}`, r] as const))(
    "%s: arbitrary query strings never give a 500",
    async (_n, route) => {
      await fc.assert(
        fc.asyncProperty(
          fc.dictionary(
            fc.oneof(fc.constantFrom("limit", "cursor", "type", "since", "until", "outcome"), fc.string({ maxLength: 20 })),
            fc.oneof(fc.string({ unit: "grapheme", maxLength: 100 }), fc.integer().map(String), fc.constantFrom("", "-1", "1e9", "NaN", "null")),
          ),
          async (query) => {
            const qs = new URLSearchParams(query).toString();
            const o = await send("GET", `${fill(route.path, fixture)}?${qs}`);
            assertWellFormed(o, `GET ${route.path}?${qs}`);
          },
        ),
        { numRuns: RUNS },
      );
    },
  );

  it("arbitrary Authorization and Content-Type headers never give a 500", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        fc.string({ unit: "binary-ascii", maxLength: 200 }).map((s) => s.replace(/[\r\n\0]/g, "")),
        fc.constantFrom("text/plain", "application/xml", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "", "application/merge-patch+json"),
        async (route, authorization, contentType) => {
          const before = await snapshot();
          const o = await send(route.method, fill(route.path, fixture), {
            key: null,
            raw: route.method === "GET" ? undefined : '{"name":"x"}',
            headers: { authorization, ...(contentType ? { "content-type": contentType } : {}) },
          });
          assertWellFormed(o, `${route.method} ${route.path} auth=${JSON.stringify(authorization)}`);
          expect(await snapshot()).toBe(before);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("a body over 64 KiB gives 413 on every write route, and changes nothing", async () => {
    for (const route of writes) {
      const before = await snapshot();
      const o = await send(route.method, fill(route.path, fixture), { raw: JSON.stringify({ name: "x".repeat(70_000) }) });
      expect(o.status, `${route.method} ${route.path}`).toBe(413);
      expect((o.body as { error: { code: string } }).error.code).toBe("payload_too_large");
      expect(await snapshot()).toBe(before);
    }
  });
});
