/**
 * The OpenAPI document covers every route the app registers, with its scope, request
 * schema and responses; and what the API really answers matches the documented schemas.
 * (It is validated against the OpenAPI 3.1 schema in test/e2e/openapi.test.ts: the
 * validator compiles code at run time, which workerd forbids.)
 */
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app";
import { Attempt, Destination, DestinationWithSecret, EventDetail, EventSummary, list, one, Source } from "../../src/http/openapi";
import { call, createAccount, createDestination, createSource, json } from "../helpers/api";
import { insertEvent } from "../helpers/delivery";

type Doc = { openapi: string; paths: Record<string, Record<string, any>>; components: any };

async function fetchDoc(): Promise<Doc> {
  const res = await call("GET", "/api/v1/openapi.json");
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/application\/json/);
  return json(res);
}

const toOpenApiPath = (p: string) => p.replace(/:([a-z_]+)/g, "{$1}");

describe("GET /api/v1/openapi.json", () => {
  it("is an OpenAPI 3.1 document listing every route the app registers", async () => {
    const doc = await fetchDoc();
    expect(doc.openapi).toBe("3.1.0");
    const registered = new Set(
      createApp()
        .routes.filter((r) => r.method !== "ALL" && (r.path.startsWith("/api/v1/webhooks") || r.path.startsWith("/in/")))
        .map((r) => `${r.method.toLowerCase()} ${toOpenApiPath(r.path)}`),
    );
    const documented = new Set(Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`)));
    expect([...registered].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((d) => !registered.has(d))).toEqual([]);
    expect(registered.size).toBeGreaterThanOrEqual(17);
  });

  it("gives each API operation its scope, bearer security, summary, tags and error envelope", async () => {
    const doc = await fetchDoc();
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        expect(op.summary, `${method} ${path}`).toEqual(expect.any(String));
        expect(op.tags?.length, `${method} ${path}`).toBeGreaterThan(0);
        if (path.startsWith("/in/")) {
          expect(op.security).toBeUndefined();
          continue;
        }
        const scope = method === "get" ? "webhooks:read" : "webhooks:write";
        expect(op["x-required-scope"], `${method} ${path}`).toBe(scope);
        expect(op.description).toContain(`Required scope: \`${scope}\``);
        expect(op.security).toEqual([{ apiKey: [] }]);
        for (const status of ["401", "403", "500"]) {
          expect(op.responses[status]?.content?.["application/json"]?.schema?.$ref, `${method} ${path} ${status}`).toBe("#/components/schemas/Error");
        }
      }
    }
    expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: "http", scheme: "bearer" });
  });

  it("documents the destinations page as it is written: fields, the secret only on create, 204 on delete", async () => {
    const doc = await fetchDoc();
    const base = "/api/v1/webhooks/sources/{source_id}/destinations";
    const create = doc.paths[base]!.post;
    expect(Object.keys(create.requestBody.content["application/json"].schema.properties).sort()).toEqual(["enabled", "event_filter", "headers", "ordering", "payload_filter", "rate_limit", "secret", "url"]);
    expect(create.requestBody.content["application/json"].schema.required).toEqual(["url"]);
    expect(create.requestBody.content["application/json"].schema.additionalProperties).toBe(false);
    expect(create.responses["201"].content["application/json"].schema.properties.data.$ref).toBe("#/components/schemas/DestinationWithSecret");
    expect(Object.keys(doc.components.schemas.Destination.properties).sort()).toEqual(
      ["created_at", "enabled", "event_filter", "failure_count", "headers", "id", "ordering", "payload_filter", "rate_limit", "source_id", "updated_at", "url"],
    );
    expect(doc.components.schemas.Destination.properties.secret).toBeUndefined();
    expect(doc.components.schemas.DestinationWithSecret.properties.secret).toBeDefined();
    expect(doc.paths[`${base}/{id}`]!.delete.responses["204"]).toBeDefined();
    expect(doc.paths[`${base}/{id}/test`]!.post.responses["422"]).toBeDefined();
    const listParams = doc.paths[base]!.get.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`).sort();
    expect(listParams).toEqual(["path:source_id", "query:cursor", "query:limit"]);
  });
});

describe("responses match the documented schemas", () => {
  it("sources, destinations, events and attempts", async () => {
    const account = await createAccount();
    const src = await call("POST", "/api/v1/webhooks/sources", { key: account.key, body: { name: "doc" } });
    one(Source).parse(await json(src));
    const s = await createSource(account);
    const created = await call("POST", `/api/v1/webhooks/sources/${s.id}/destinations`, { key: account.key, body: { url: "https://hooks.example.com/x" } });
    one(DestinationWithSecret).strict().parse({ data: (await json(created)).data });
    const dest = await createDestination(account, s.id, { url: "https://hooks.example.com/y" });
    const base = `/api/v1/webhooks/sources/${s.id}`;
    const get = async (p: string) => json(await call("GET", p, { key: account.key }));
    list(Source).parse(await get("/api/v1/webhooks/sources"));
    list(Destination).parse(await get(`${base}/destinations`));
    // Exactly the documented fields: no secret sneaks into a read.
    one(Destination.strict()).parse(await get(`${base}/destinations/${dest.id}`));
    const eventId = await insertEvent(s.id);
    list(EventSummary).parse(await get(`${base}/events`));
    one(EventDetail).parse(await get(`${base}/events/${eventId}`));
    list(Attempt).parse(await get(`${base}/destinations/${dest.id}/attempts`));
  });
});
