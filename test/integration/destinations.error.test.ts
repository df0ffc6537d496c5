/**
 * Destinations: every way a request can be wrong, and the envelope each one gets.
 * Every failure is `{error:{code,message,details?}}`, never a 500, and changes nothing.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bytesToBase64 } from "../../src/security/encoding";
import {
  call, createAccount, createDestination, createSource, envWith, json, mailbox, setDns, type Account, expectError, expect422, destinationsPath as base } from "../helpers/api";

const b64 = (n: number) => bytesToBase64(crypto.getRandomValues(new Uint8Array(n)));
const guarded = () => envWith({ ALLOW_PRIVATE_DESTINATIONS: "false" });
const production = () => envWith({ ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "false" });




async function fresh() {
  const account = await createAccount();
  const source = await createSource(account, { name: "errors" });
  return { account, source };
}

async function countFor(sourceId: string) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM destinations WHERE source_id = ?").bind(sourceId).first<{ n: number }>())!.n;
}

async function row(id: string) {
  return env.DB.prepare("SELECT * FROM destinations WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

const post = (a: Account, sourceId: string, body: unknown, e?: ReturnType<typeof envWith>) =>
  call("POST", base(sourceId), { key: a.key, body, ...(e ? { env: e } : {}) });

describe("Create: validation of each field (422, details name the field, nothing stored)", () => {
  const url = "https://example.com/h";
  const cases: [string, unknown, string][] = [
    ["url missing", {}, "url"],
    ["url not a string", { url: 123 }, "url"],
    ["url null", { url: null }, "url"],
    ["url empty", { url: "" }, "url"],
    ["url relative", { url: "/webhooks/stripe" }, "url"],
    ["url without scheme", { url: "example.com/hook" }, "url"],
    ["url ftp", { url: "ftp://example.com/hook" }, "url"],
    ["url javascript:", { url: "javascript:alert(1)" }, "url"],
    ["url with user:pass@", { url: "https://user:pass@example.com/hook" }, "url"],
    ["url with user@", { url: "https://user@example.com/hook" }, "url"],
    ["url longer than 2048", { url: "https://example.com/" + "a".repeat(2029) }, "url"],
    ["url far longer than 2048", { url: "https://example.com/" + "a".repeat(10_000) }, "url"],
    ["secret of 23 bytes", { url, secret: "whsec_" + b64(23) }, "secret"],
    ["secret of 65 bytes", { url, secret: "whsec_" + b64(65) }, "secret"],
    ["secret in bad base64", { url, secret: "whsec_" + "!@#$%^&*()".repeat(4) }, "secret"],
    ["secret without the prefix", { url, secret: b64(32) }, "secret"],
    ["secret with another prefix", { url, secret: "sk_" + b64(32) }, "secret"],
    ["secret empty", { url, secret: "" }, "secret"],
    ["secret only the prefix", { url, secret: "whsec_" }, "secret"],
    ["secret not a string", { url, secret: 42 }, "secret"],
    ["secret null", { url, secret: null }, "secret"],
    ["event_filter not an array", { url, event_filter: "invoice.paid" }, "event_filter"],
    ["event_filter null", { url, event_filter: null }, "event_filter"],
    ["event_filter with a number", { url, event_filter: [1] }, "event_filter.0"],
    ["event_filter `inv*ice`", { url, event_filter: ["inv*ice"] }, "event_filter.0"],
    ["event_filter `*.paid`", { url, event_filter: ["ok.type", "*.paid"] }, "event_filter.1"],
    ["event_filter `invoice.*.paid`", { url, event_filter: ["invoice.*.paid"] }, "event_filter.0"],
    ["event_filter `.*`", { url, event_filter: [".*"] }, "event_filter.0"],
    ["event_filter empty string", { url, event_filter: [""] }, "event_filter.0"],
    ["event_filter entry of 256 chars", { url, event_filter: ["a".repeat(256)] }, "event_filter.0"],
    ["event_filter entry with a space", { url, event_filter: ["invoice paid"] }, "event_filter.0"],
    ["event_filter of 101 entries", { url, event_filter: Array.from({ length: 101 }, (_, i) => `t.${i}`) }, "event_filter"],
    ["enabled a string", { url, enabled: "true" }, "enabled"],
    ["enabled a number", { url, enabled: 1 }, "enabled"],
    ["enabled null", { url, enabled: null }, "enabled"],
  ];
  for (const [what, body, field] of cases) {
    it(`${what} → 422 on ${field}`, async () => {
      const { account, source } = await fresh();
      const res = await expect422(await post(account, source.id, body), field);
      const given = (body as { url?: unknown }).url;
      if (field === "url" && typeof given === "string") expect(res.error.details!.find((d) => d.field === "url")!.code).toBe("invalid_url");
      expect(await countFor(source.id)).toBe(0);
    });
  }

  it("an unknown field → 422 with a detail naming it", async () => {
    const { account, source } = await fresh();
    const body = await expect422(await post(account, source.id, { url, name: "x", secrets: "y" }), "name", "secrets");
    expect(body.error.details!.find((d) => d.field === "name")!.code).toBe("unknown_field");
    expect(await countFor(source.id)).toBe(0);
  });

  it("a body that is not an object → 422", async () => {
    const { account, source } = await fresh();
    for (const raw of ["[]", '"https://example.com"', "null", "42", "true"]) {
      const res = await call("POST", base(source.id), { key: account.key, raw, headers: { "content-type": "application/json" } });
      await expectError(res, 422, "validation_failed");
    }
    expect(await countFor(source.id)).toBe(0);
  });

  it("every invalid field is listed, one detail each", async () => {
    const { account, source } = await fresh();
    const body = await expect422(
      await post(account, source.id, { url: "nope", secret: "nope", event_filter: "nope", enabled: "nope" }),
      "url",
      "secret",
      "event_filter",
      "enabled",
    );
    expect(body.error.details!.length).toBeGreaterThanOrEqual(4);
  });
});

describe("Create: the URL rules of the page", () => {
  it("HTTP is rejected in production.", async () => {
    const { account, source } = await fresh();
    const name = `prod-${crypto.randomUUID()}.example.com`;
    await setDns(name, ["93.184.215.14"]);
    const body = await expect422(await post(account, source.id, { url: `http://${name}/hook` }, production()), "url");
    expect(body.error.details![0]!.message).toMatch(/https/);
    expect(await countFor(source.id)).toBe(0);
    // The same URL over https is fine there.
    expect((await post(account, source.id, { url: `https://${name}/hook` }, production())).status).toBe(201);
  });

  it("HTTP is rejected in production on PATCH too", async () => {
    const { account, source } = await fresh();
    const name = `prod-${crypto.randomUUID()}.example.com`;
    await setDns(name, ["93.184.215.14"]);
    const created = await json(await post(account, source.id, { url: `https://${name}/hook` }, production()));
    const res = await call("PATCH", `${base(source.id)}/${created.data.id}`, {
      key: account.key,
      body: { url: `http://${name}/hook` },
      env: production(),
    });
    await expect422(res, "url");
    expect((await row(created.data.id))!.url).toBe(`https://${name}/hook`);
  });

  const refused = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/hook",
    "http://localhost/hook",
    "http://api.localhost/hook",
    "http://printer.local/hook",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://017700000001/hook",
    "http://[::1]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://224.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://192.0.2.10/hook",
  ];
  it("SSRF-checked: private/link-local/loopback addresses fail.", async () => {
    const { account, source } = await fresh();
    for (const url of refused) {
      const body = await expect422(await post(account, source.id, { url }, guarded()), "url");
      expect(body.error.details!.find((d) => d.field === "url")!.code, url).toBe("url_refused");
    }
    expect(await countFor(source.id)).toBe(0);
  });

  it("SSRF-checked: a name that resolves to a private address fails", async () => {
    const { account, source } = await fresh();
    const priv = `private-${crypto.randomUUID()}.example.com`;
    const mixed = `mixed-${crypto.randomUUID()}.example.com`;
    const v6 = `v6-${crypto.randomUUID()}.example.com`;
    const none = `none-${crypto.randomUUID()}.example.com`;
    await setDns(priv, ["10.1.2.3"]);
    await setDns(mixed, ["93.184.215.14", "169.254.169.254"]);
    await setDns(v6, ["::1"]);
    for (const host of [priv, mixed, v6, none]) {
      await expect422(await post(account, source.id, { url: `https://${host}/hook` }, guarded()), "url");
    }
    expect(await countFor(source.id)).toBe(0);
  });

  it("SSRF-checked at every URL change: PATCH to a private address fails and changes nothing", async () => {
    const { account, source } = await fresh();
    const name = `ok-${crypto.randomUUID()}.example.com`;
    await setDns(name, ["93.184.215.14"]);
    const created = await json(await post(account, source.id, { url: `https://${name}/hook` }, guarded()));
    expect(created.data.url).toBe(`https://${name}/hook`);
    const before = await row(created.data.id);
    for (const url of ["http://127.0.0.1/x", "http://169.254.169.254/", "http://[::1]/"]) {
      const res = await call("PATCH", `${base(source.id)}/${created.data.id}`, { key: account.key, body: { url }, env: guarded() });
      await expect422(res, "url");
    }
    expect(await row(created.data.id)).toStrictEqual(before);
  });
});

describe("Update: validation", () => {
  const cases: [string, unknown, string][] = [
    ["an unknown field", { colour: "red" }, "colour"],
    ["a field of the response", { failure_count: 0 }, "failure_count"],
    ["id", { id: "x" }, "id"],
    ["url relative", { url: "/rel" }, "url"],
    ["url null", { url: null }, "url"],
    ["url with credentials", { url: "https://a:b@example.com/" }, "url"],
    ["url longer than 2048", { url: "https://example.com/" + "a".repeat(2029) }, "url"],
    ["secret of 23 bytes", { secret: "whsec_" + b64(23) }, "secret"],
    ["secret of 65 bytes", { secret: "whsec_" + b64(65) }, "secret"],
    ["secret without prefix", { secret: b64(32) }, "secret"],
    ["secret null", { secret: null }, "secret"],
    ["event_filter `*.paid`", { event_filter: ["*.paid"] }, "event_filter.0"],
    ["event_filter of 101", { event_filter: Array.from({ length: 101 }, (_, i) => `t${i}`) }, "event_filter"],
    ["enabled a string", { enabled: "false" }, "enabled"],
  ];
  for (const [what, body, field] of cases) {
    it(`PATCH with ${what} → 422 on ${field}, nothing changed`, async () => {
      const { account, source } = await fresh();
      const d = await createDestination(account, source.id, { url: "https://example.com/h" });
      const before = await row(d.id);
      const res = await call("PATCH", `${base(source.id)}/${d.id}`, { key: account.key, body });
      const env = await expect422(res, field);
      if (field === Object.keys(body as object)[0] && !["url", "secret", "event_filter", "enabled"].includes(field)) {
        expect(env.error.details!.find((d) => d.field === field)!.code).toBe("unknown_field");
      }
      expect(await row(d.id)).toStrictEqual(before);
    });
  }

  it("PATCH with a valid field and an unknown one changes nothing", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const before = await row(d.id);
    await expect422(await call("PATCH", `${base(source.id)}/${d.id}`, { key: account.key, body: { enabled: false, bogus: 1 } }), "bogus");
    expect(await row(d.id)).toStrictEqual(before);
  });
});

describe("List: ?limit= and ?cursor=", () => {
  for (const limit of ["0", "101", "-1", "abc", "1.5", "1e9", "", "0x10", "1e1"]) {
    it(`limit=${JSON.stringify(limit)} → 422 on limit`, async () => {
      const { account, source } = await fresh();
      await expect422(await call("GET", `${base(source.id)}?limit=${limit}`, { key: account.key }), "limit");
    });
  }
  for (const cursor of ["garbage", "!!!", btoa("not-a-uuid"), "x".repeat(500)]) {
    it(`cursor=${cursor.slice(0, 20)} → 422 on cursor`, async () => {
      const { account, source } = await fresh();
      await expect422(await call("GET", `${base(source.id)}?cursor=${encodeURIComponent(cursor)}`, { key: account.key }), "cursor");
    });
  }
});

describe("Malformed requests", () => {
  it("bad JSON → 400 invalid_json on POST and PATCH, nothing stored", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const before = await row(d.id);
    for (const raw of ["{", '{"url": }', "{'url': 'x'}", '{"url":"https://example.com/h",}']) {
      const headers = { "content-type": "application/json" };
      await expectError(await call("POST", base(source.id), { key: account.key, raw, headers }), 400, "invalid_json");
      await expectError(await call("PATCH", `${base(source.id)}/${d.id}`, { key: account.key, raw, headers }), 400, "invalid_json");
    }
    expect(await countFor(source.id)).toBe(1);
    expect(await row(d.id)).toStrictEqual(before);
  });

  it("a body that is not JSON by content type → 415", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const raw = JSON.stringify({ url: "https://example.com/x" });
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp"]) {
      const headers = { "content-type": type };
      await expectError(await call("POST", base(source.id), { key: account.key, raw, headers }), 415, "unsupported_media_type");
      await expectError(await call("PATCH", `${base(source.id)}/${d.id}`, { key: account.key, raw, headers }), 415, "unsupported_media_type");
    }
    // No content type at all.
    await expectError(await call("POST", base(source.id), { key: account.key, raw }), 415, "unsupported_media_type");
    expect(await countFor(source.id)).toBe(1);
  });

  it("application/json with a charset is fine", async () => {
    const { account, source } = await fresh();
    const res = await call("POST", base(source.id), {
      key: account.key,
      raw: JSON.stringify({ url: "https://example.com/x" }),
      headers: { "content-type": "application/json; charset=utf-8" },
    });
    expect(res.status).toBe(201);
  });

  it("a body over 64 KiB → 413, nothing stored", async () => {
    const { account, source } = await fresh();
    const big = { url: "https://example.com/h", event_filter: Array.from({ length: 100 }, (_, i) => `${i}.` + "a".repeat(700)) };
    expect(JSON.stringify(big).length).toBeGreaterThan(64 * 1024);
    await expectError(await post(account, source.id, big), 413, "payload_too_large");
    const huge = JSON.stringify({ url: "https://example.com/" + "a".repeat(70_000) });
    const res = await call("POST", base(source.id), { key: account.key, raw: huge, headers: { "content-type": "application/json" } });
    await expectError(res, 413, "payload_too_large");
    expect(await countFor(source.id)).toBe(0);
  });

  it("a body over 64 KiB without content-length (streamed) → 413", async () => {
    const { account, source } = await fresh();
    const chunk = new TextEncoder().encode("a".repeat(16 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === 0) controller.enqueue(new TextEncoder().encode('{"url":"https://example.com/'));
        if (sent >= 6) {
          controller.enqueue(new TextEncoder().encode('"}'));
          controller.close();
          return;
        }
        controller.enqueue(chunk);
        sent++;
      },
    });
    const worker = (await import("../../src/index")).default;
    const { createExecutionContext, waitOnExecutionContext } = await import("cloudflare:test");
    const ctx = createExecutionContext();
    const req = new Request(`https://krafter.test${base(source.id)}`, {
      method: "POST",
      headers: { authorization: `Bearer ${account.key}`, "content-type": "application/json" },
      body: stream,
      // @ts-expect-error: streaming request bodies need duplex in some runtimes
      duplex: "half",
    });
    const res = await worker.fetch(req as any, env as any, ctx);
    await waitOnExecutionContext(ctx);
    await expectError(res, 413, "payload_too_large");
    expect(await countFor(source.id)).toBe(0);
  });
});

describe("Test endpoint: its (empty) body", () => {
  it("no body, an empty body or {} are fine", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const path = `${base(source.id)}/${d.id}/test`;
    expect((await call("POST", path, { key: account.key })).status).toBe(200);
    expect((await call("POST", path, { key: account.key, raw: "", headers: { "content-type": "application/json" } })).status).toBe(200);
    expect((await call("POST", path, { key: account.key, body: {} })).status).toBe(200);
    expect(await box.requests()).toHaveLength(3);
  });

  it("a body that is not JSON → 400 invalid_json, nothing sent", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    for (const raw of ["{", " ", "not json", '{"a":}']) {
      const res = await call("POST", `${base(source.id)}/${d.id}/test`, { key: account.key, raw, headers: { "content-type": "application/json" } });
      await expectError(res, 400, "invalid_json");
    }
    expect(await box.requests()).toHaveLength(0);
  });

  it("a field → 422 naming it, a non-object → 422, nothing sent", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const path = `${base(source.id)}/${d.id}/test`;
    const body = await expect422(await call("POST", path, { key: account.key, body: { event: "invoice.paid" } }), "event");
    expect(body.error.details![0]!.code).toBe("unknown_field");
    for (const raw of ["[]", "null", "1", '"x"']) {
      await expectError(await call("POST", path, { key: account.key, raw, headers: { "content-type": "application/json" } }), 422, "validation_failed");
    }
    await expectError(await call("POST", path, { key: account.key, raw: "{}", headers: { "content-type": "text/plain" } }), 415, "unsupported_media_type");
    expect(await box.requests()).toHaveLength(0);
  });
});

describe("Unknown and malformed ids → 404 (never revealing anything)", () => {
  const malformed = ["abc", "123", "00000000-0000-0000-0000-00000000000", "not-a-uuid-at-all-really-not-one", "%20", "..%2F..%2Fsources"];

  it("malformed source ids → 404 on every route", async () => {
    const { account } = await fresh();
    for (const id of malformed) {
      await expectError(await call("GET", base(id), { key: account.key }), 404, "not_found");
      await expectError(await call("POST", base(id), { key: account.key, body: { url: "https://example.com/h" } }), 404, "not_found");
      const d = crypto.randomUUID();
      await expectError(await call("GET", `${base(id)}/${d}`, { key: account.key }), 404, "not_found");
      await expectError(await call("PATCH", `${base(id)}/${d}`, { key: account.key, body: {} }), 404, "not_found");
      await expectError(await call("DELETE", `${base(id)}/${d}`, { key: account.key }), 404, "not_found");
      await expectError(await call("POST", `${base(id)}/${d}/test`, { key: account.key }), 404, "not_found");
    }
  });

  it("an upper-case version of a real id → 404", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    await expectError(await call("GET", `${base(source.id.toUpperCase())}/${d.id}`, { key: account.key }), 404, "not_found");
    await expectError(await call("GET", `${base(source.id)}/${d.id.toUpperCase()}`, { key: account.key }), 404, "not_found");
  });

  it("malformed destination ids → 404 on every route with an id", async () => {
    const { account, source } = await fresh();
    for (const id of malformed) {
      await expectError(await call("GET", `${base(source.id)}/${id}`, { key: account.key }), 404, "not_found");
      await expectError(await call("PATCH", `${base(source.id)}/${id}`, { key: account.key, body: { enabled: false } }), 404, "not_found");
      await expectError(await call("DELETE", `${base(source.id)}/${id}`, { key: account.key }), 404, "not_found");
      await expectError(await call("POST", `${base(source.id)}/${id}/test`, { key: account.key }), 404, "not_found");
    }
  });

  it("unknown source and destination ids → 404", async () => {
    const { account, source } = await fresh();
    const ghost = crypto.randomUUID();
    await expectError(await call("GET", base(ghost), { key: account.key }), 404, "not_found");
    await expectError(await call("POST", base(ghost), { key: account.key, body: { url: "https://example.com/h" } }), 404, "not_found");
    await expectError(await call("GET", `${base(source.id)}/${ghost}`, { key: account.key }), 404, "not_found");
    await expectError(await call("PATCH", `${base(source.id)}/${ghost}`, { key: account.key, body: {} }), 404, "not_found");
    await expectError(await call("DELETE", `${base(source.id)}/${ghost}`, { key: account.key }), 404, "not_found");
    await expectError(await call("POST", `${base(source.id)}/${ghost}/test`, { key: account.key }), 404, "not_found");
  });

  it("a destination addressed under another source of the same account → 404, unharmed", async () => {
    const { account, source } = await fresh();
    const other = await createSource(account, { name: "other" });
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const before = await row(d.id);
    await expectError(await call("GET", `${base(other.id)}/${d.id}`, { key: account.key }), 404, "not_found");
    await expectError(await call("PATCH", `${base(other.id)}/${d.id}`, { key: account.key, body: { enabled: false } }), 404, "not_found");
    await expectError(await call("DELETE", `${base(other.id)}/${d.id}`, { key: account.key }), 404, "not_found");
    await expectError(await call("POST", `${base(other.id)}/${d.id}/test`, { key: account.key }), 404, "not_found");
    const list = await json(await call("GET", base(other.id), { key: account.key }));
    expect(list.data).toEqual([]);
    expect(await row(d.id)).toStrictEqual(before);
    expect(await box.requests()).toHaveLength(0);
  });

  it("an unknown route under the API → 404 in the envelope", async () => {
    const { account, source } = await fresh();
    await expectError(await call("GET", `${base(source.id)}/${crypto.randomUUID()}/nothing`, { key: account.key }), 404, "not_found");
  });

  it("an invalid body gets the same answer for an unknown source and another account's source (no oracle)", async () => {
    const { account } = await fresh();
    const stranger = await fresh();
    const unknown = await call("POST", base(crypto.randomUUID()), { key: account.key, body: { url: 5 } });
    const theirs = await call("POST", base(stranger.source.id), { key: account.key, body: { url: 5 } });
    expect(unknown.status).toBe(theirs.status);
    const a = await expectError(unknown, unknown.status, unknown.status === 404 ? "not_found" : "validation_failed");
    const b = await expectError(theirs, theirs.status, theirs.status === 404 ? "not_found" : "validation_failed");
    expect(a).toStrictEqual(b);
    expect(await countFor(stranger.source.id)).toBe(0);
  });
});

describe("Wrong method → 405 with Allow", () => {
  async function expect405(res: Response, allowed: string[]) {
    const allow = res.headers.get("allow");
    await expectError(res, 405, "method_not_allowed");
    expect(allow).toBeTruthy();
    const methods = allow!.split(",").map((m) => m.trim());
    for (const m of allowed) expect(methods).toContain(m);
    expect(methods).not.toContain("PUT");
  }

  it("on the collection", async () => {
    const { account, source } = await fresh();
    await expect405(await call("PUT", base(source.id), { key: account.key, body: { url: "https://example.com/h" } }), ["GET", "POST"]);
    await expect405(await call("DELETE", base(source.id), { key: account.key }), ["GET", "POST"]);
    await expect405(await call("PATCH", base(source.id), { key: account.key, body: {} }), ["GET", "POST"]);
    expect(await countFor(source.id)).toBe(0);
  });

  it("on one destination", async () => {
    const { account, source } = await fresh();
    const d = await createDestination(account, source.id, { url: "https://example.com/h" });
    const before = await row(d.id);
    await expect405(await call("PUT", `${base(source.id)}/${d.id}`, { key: account.key, body: { url: "https://example.com/x" } }), ["GET", "PATCH", "DELETE"]);
    await expect405(await call("POST", `${base(source.id)}/${d.id}`, { key: account.key, body: {} }), ["GET", "PATCH", "DELETE"]);
    expect(await row(d.id)).toStrictEqual(before);
  });

  it("on the test endpoint", async () => {
    const { account, source } = await fresh();
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    await expect405(await call("GET", `${base(source.id)}/${d.id}/test`, { key: account.key }), ["POST"]);
    await expect405(await call("DELETE", `${base(source.id)}/${d.id}/test`, { key: account.key }), ["POST"]);
    expect(await box.requests()).toHaveLength(0);
  });
});
