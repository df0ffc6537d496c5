/**
 * Sources: every validation rule and malformed request, each answered with the error
 * envelope `{error:{code,message,details?}}`, never a 500, and storing nothing.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, createAccount, createSource, json, type Account, expectError, expect422 } from "../helpers/api";

const SOURCES = "/api/v1/webhooks/sources";




async function countOf(a: Account) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM sources WHERE account_id = ?").bind(a.id).first<{ n: number }>())!.n;
}

async function row(id: string) {
  return env.DB.prepare("SELECT * FROM sources WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

describe("Create: validation (422 naming the field, nothing stored)", () => {
  const cases: [string, unknown, string][] = [
    ["name missing", {}, "name"],
    ["name missing, other fields fine", { provider: "stripe" }, "name"],
    ["name empty", { name: "" }, "name"],
    ["name only spaces", { name: "    " }, "name"],
    ["name of 201 characters", { name: "n".repeat(201) }, "name"],
    ["name a number", { name: 123 }, "name"],
    ["name null", { name: null }, "name"],
    ["name an array", { name: ["a"] }, "name"],
    ["name an object", { name: { first: "a" } }, "name"],
    ["name a boolean", { name: true }, "name"],
    ["provider unknown", { name: "x", provider: "paypal" }, "provider"],
    ["provider in the wrong case", { name: "x", provider: "Stripe" }, "provider"],
    ["provider empty", { name: "x", provider: "" }, "provider"],
    ["provider a number", { name: "x", provider: 1 }, "provider"],
    ["provider null", { name: "x", provider: null }, "provider"],
    ["signing_secret empty", { name: "x", signing_secret: "" }, "signing_secret"],
    ["signing_secret a number", { name: "x", signing_secret: 1234 }, "signing_secret"],
    ["signing_secret an object", { name: "x", signing_secret: { v: "s" } }, "signing_secret"],
    ["signing_secret over 1024 characters", { name: "x", signing_secret: "s".repeat(1025) }, "signing_secret"],
    ["an unknown field", { name: "x", url: "https://example.com" }, "url"],
    ["a response field", { name: "x", ingest_url: "https://evil.example.com/in/src_x" }, "ingest_url"],
    ["id", { name: "x", id: crypto.randomUUID() }, "id"],
    ["verifies_signatures", { name: "x", verifies_signatures: true }, "verifies_signatures"],
  ];
  for (const [what, body, field] of cases) {
    it(`${what} → 422 on ${field}`, async () => {
      const a = await createAccount();
      const res = await expect422(await call("POST", SOURCES, { key: a.key, body }), field);
      const known = ["name", "provider", "signing_secret"];
      if (!known.includes(field)) expect(res.error.details!.find((d) => d.field === field)!.code).toBe("unknown_field");
      expect(await countOf(a)).toBe(0);
    });
  }

  it("every invalid field is listed", async () => {
    const a = await createAccount();
    const body = await expect422(
      await call("POST", SOURCES, { key: a.key, body: { name: "", provider: "nope", signing_secret: 5, extra: 1 } }),
      "name",
      "provider",
      "signing_secret",
      "extra",
    );
    expect(body.error.details!.length).toBeGreaterThanOrEqual(4);
    expect(await countOf(a)).toBe(0);
  });

  it("a body that is not an object → 422", async () => {
    const a = await createAccount();
    for (const raw of ["[]", '"name"', "null", "7", "false", '[{"name":"x"}]']) {
      const res = await call("POST", SOURCES, { key: a.key, raw, headers: { "content-type": "application/json" } });
      await expectError(res, 422, "validation_failed");
    }
    expect(await countOf(a)).toBe(0);
  });

  it("no body at all → 422 (name is required), or 415, never a 500", async () => {
    const a = await createAccount();
    const res = await call("POST", SOURCES, { key: a.key });
    await expect422(res, "name");
    const empty = await call("POST", SOURCES, { key: a.key, raw: "", headers: { "content-type": "application/json" } });
    expect(empty.status).not.toBe(500);
    expect([400, 422]).toContain(empty.status);
    await expectError(empty, empty.status, empty.status === 400 ? "invalid_json" : "validation_failed");
    expect(await countOf(a)).toBe(0);
  });
});

describe("Update: validation (422, nothing changed)", () => {
  const cases: [string, unknown, string][] = [
    ["name empty", { name: "" }, "name"],
    ["name of 201 characters", { name: "n".repeat(201) }, "name"],
    ["name null", { name: null }, "name"],
    ["name a number", { name: 5 }, "name"],
    ["provider unknown", { provider: "paypal" }, "provider"],
    ["provider null", { provider: null }, "provider"],
    ["signing_secret empty", { signing_secret: "" }, "signing_secret"],
    ["signing_secret a number", { signing_secret: 9 }, "signing_secret"],
    ["an unknown field", { colour: "blue" }, "colour"],
    ["ingest_url", { ingest_url: "https://krafter.test/in/src_mine" }, "ingest_url"],
    ["a valid field with an unknown one", { name: "fine", nope: true }, "nope"],
  ];
  for (const [what, body, field] of cases) {
    it(`PATCH with ${what} → 422 on ${field}`, async () => {
      const a = await createAccount();
      const s = await createSource(a, { name: "unchanged", provider: "github", signing_secret: "gh-secret-of-16-chars" });
      const before = await row(s.id);
      await expect422(await call("PATCH", `${SOURCES}/${s.id}`, { key: a.key, body }), field);
      expect(await row(s.id)).toStrictEqual(before);
    });
  }
});

describe("List: ?limit= and ?cursor=", () => {
  for (const limit of ["0", "101", "-1", "abc", "2.5", "", "0x10", "1e1", "%2010", "+5", "007000"]) {
    it(`limit=${JSON.stringify(limit)} → 422 on limit`, async () => {
      const a = await createAccount();
      await expect422(await call("GET", `${SOURCES}?limit=${limit}`, { key: a.key }), "limit");
    });
  }
  for (const cursor of ["nope", "%%%", btoa("abc"), "a".repeat(300)]) {
    it(`cursor=${cursor.slice(0, 12)} → 422 on cursor`, async () => {
      const a = await createAccount();
      await expect422(await call("GET", `${SOURCES}?cursor=${encodeURIComponent(cursor)}`, { key: a.key }), "cursor");
    });
  }
  it("limit=1 and limit=100 are fine", async () => {
    const a = await createAccount();
    await createSource(a, { name: "a" });
    await createSource(a, { name: "b" });
    const one = await json(await call("GET", `${SOURCES}?limit=1`, { key: a.key }));
    expect(one.data).toHaveLength(1);
    expect(one.next_cursor).toEqual(expect.any(String));
    expect((await call("GET", `${SOURCES}?limit=100`, { key: a.key })).status).toBe(200);
  });
});

describe("Malformed requests", () => {
  it("bad JSON → 400 invalid_json (POST and PATCH), nothing stored or changed", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "json" });
    const before = await row(s.id);
    const headers = { "content-type": "application/json" };
    for (const raw of ["{", '{"name":', "{name: 'x'}", '{"name":"x",}', "\u0000", '{"name":"x"}}']) {
      await expectError(await call("POST", SOURCES, { key: a.key, raw, headers }), 400, "invalid_json");
      await expectError(await call("PATCH", `${SOURCES}/${s.id}`, { key: a.key, raw, headers }), 400, "invalid_json");
    }
    expect(await countOf(a)).toBe(1);
    expect(await row(s.id)).toStrictEqual(before);
  });

  it("wrong content-type → 415 (POST and PATCH)", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "ct" });
    const raw = JSON.stringify({ name: "x" });
    for (const type of ["text/plain", "text/json", "application/xml", "application/x-www-form-urlencoded"]) {
      await expectError(await call("POST", SOURCES, { key: a.key, raw, headers: { "content-type": type } }), 415, "unsupported_media_type");
      await expectError(
        await call("PATCH", `${SOURCES}/${s.id}`, { key: a.key, raw, headers: { "content-type": type } }),
        415,
        "unsupported_media_type",
      );
    }
    await expectError(await call("POST", SOURCES, { key: a.key, raw }), 415, "unsupported_media_type");
    expect(await countOf(a)).toBe(1);
    expect((await row(s.id))!.name).toBe("ct");
  });

  it("a body over 64 KiB → 413, nothing stored", async () => {
    const a = await createAccount();
    const raw = JSON.stringify({ name: "x", signing_secret: "s".repeat(65 * 1024) });
    await expectError(await call("POST", SOURCES, { key: a.key, raw, headers: { "content-type": "application/json" } }), 413, "payload_too_large");
    const s = await createSource(a, { name: "patched" });
    await expectError(
      await call("PATCH", `${SOURCES}/${s.id}`, { key: a.key, raw, headers: { "content-type": "application/json" } }),
      413,
      "payload_too_large",
    );
    expect(await countOf(a)).toBe(1);
    expect((await row(s.id))!.signing_secret_ct).toBeNull();
  });

  it("a body of just under 64 KiB is read and validated (422, not 413)", async () => {
    const a = await createAccount();
    const raw = JSON.stringify({ name: "x", signing_secret: "s".repeat(60 * 1024) });
    await expect422(await call("POST", SOURCES, { key: a.key, raw, headers: { "content-type": "application/json" } }), "signing_secret");
  });
});

describe("Ids", () => {
  const malformed = ["abc", "1", "00000000-0000-0000-0000-0000000000000", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "%27%20OR%201%3D1--", "src_abc"];

  it("malformed ids → 404 on GET, PATCH and DELETE", async () => {
    const a = await createAccount();
    for (const id of malformed) {
      await expectError(await call("GET", `${SOURCES}/${id}`, { key: a.key }), 404, "not_found");
      await expectError(await call("PATCH", `${SOURCES}/${id}`, { key: a.key, body: { name: "x" } }), 404, "not_found");
      await expectError(await call("DELETE", `${SOURCES}/${id}`, { key: a.key }), 404, "not_found");
    }
  });

  it("an upper-cased real id → 404", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "case" });
    await expectError(await call("GET", `${SOURCES}/${s.id.toUpperCase()}`, { key: a.key }), 404, "not_found");
    await expectError(await call("DELETE", `${SOURCES}/${s.id.toUpperCase()}`, { key: a.key }), 404, "not_found");
    expect(await row(s.id)).not.toBeNull();
  });

  it("unknown ids → 404 on GET, PATCH and DELETE", async () => {
    const a = await createAccount();
    const ghost = crypto.randomUUID();
    await expectError(await call("GET", `${SOURCES}/${ghost}`, { key: a.key }), 404, "not_found");
    await expectError(await call("PATCH", `${SOURCES}/${ghost}`, { key: a.key, body: { name: "x" } }), 404, "not_found");
    await expectError(await call("DELETE", `${SOURCES}/${ghost}`, { key: a.key }), 404, "not_found");
  });

  it("the ingest key is not an id", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "k" });
    const key = new URL(s.ingest_url).pathname.slice("/in/".length);
    await expectError(await call("GET", `${SOURCES}/${key}`, { key: a.key }), 404, "not_found");
  });

  it("an unknown route → 404 in the envelope", async () => {
    const a = await createAccount();
    await expectError(await call("GET", "/api/v1/webhooks/nothing", { key: a.key }), 404, "not_found");
    await expectError(await call("GET", "/api/v2/webhooks/sources", { key: a.key }), 404, "not_found");
  });
});

describe("Wrong method → 405 with Allow", () => {
  async function expect405(res: Response, allowed: string[], notAllowed: string) {
    const allow = res.headers.get("allow");
    await expectError(res, 405, "method_not_allowed");
    const methods = (allow ?? "").split(",").map((m) => m.trim());
    for (const m of allowed) expect(methods).toContain(m);
    expect(methods).not.toContain(notAllowed);
  }

  it("on the collection", async () => {
    const a = await createAccount();
    await expect405(await call("PUT", SOURCES, { key: a.key, body: { name: "x" } }), ["GET", "POST"], "PUT");
    await expect405(await call("DELETE", SOURCES, { key: a.key }), ["GET", "POST"], "DELETE");
    await expect405(await call("PATCH", SOURCES, { key: a.key, body: { name: "x" } }), ["GET", "POST"], "PATCH");
    expect(await countOf(a)).toBe(0);
  });

  it("on one source", async () => {
    const a = await createAccount();
    const s = await createSource(a, { name: "one" });
    const before = await row(s.id);
    await expect405(await call("PUT", `${SOURCES}/${s.id}`, { key: a.key, body: { name: "x" } }), ["GET", "PATCH", "DELETE"], "PUT");
    await expect405(await call("POST", `${SOURCES}/${s.id}`, { key: a.key, body: { name: "x" } }), ["GET", "PATCH", "DELETE"], "POST");
    expect(await row(s.id)).toStrictEqual(before);
  });

  it("without a key it is still a 405 (the route does not exist for that method)", async () => {
    const res = await call("PUT", SOURCES, { body: { name: "x" } });
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBeTruthy();
  });
});
