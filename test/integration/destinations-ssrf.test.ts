/**
 * The SSRF guard through the HTTP API. The test environment allows private destinations
 * (loopback receivers stand in for customers' endpoints), so every request here turns the
 * guard on with `envWith({ ALLOW_PRIVATE_DESTINATIONS: "false" })`. Names are answered by
 * the test DoH endpoint (DOH_URL), programmed with setDns; each test uses its own names.
 */
import { beforeEach, describe, expect, it } from "vitest";
import { call, clientFor, createAccount, createSource, envWith, expectError, json, setDns, type Account } from "../helpers/api";

const PUBLIC_V4 = "93.184.215.14";

let account: Account;
let sourceId: string;
let base: string;

/** A DNS name no other test uses. */
const uniqueName = (label: string) => `${label}-${crypto.randomUUID().slice(0, 8)}.ssrf-test.example.com`;

const guardOn = () => envWith({ ALLOW_PRIVATE_DESTINATIONS: "false" });
const productionGuardOn = () => envWith({ ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "false" });

beforeEach(async () => {
  account = await createAccount();
  sourceId = (await createSource(account)).id;
  base = `/api/v1/webhooks/sources/${sourceId}/destinations`;
});

async function expectUrlRefused(res: Response) {
  expect(res.status).toBe(422);
  const body = await json(res);
  expect(body).toMatchObject({
    error: {
      code: "validation_failed",
      message: expect.any(String),
      details: [{ field: "url", code: expect.any(String), message: expect.any(String) }],
    },
  });
  expect(body.error.details).toHaveLength(1);
  return body.error.details[0] as { field: string; code: string; message: string };
}

async function listUrls(): Promise<string[]> {
  const res = await call("GET", base, { key: account.key });
  expect(res.status).toBe(200);
  return ((await json(res)).data as { url: string }[]).map((d) => d.url);
}

describe("POST destinations with the SSRF guard on", () => {
  it("refuses a loopback literal with 422 on the url field and stores nothing", async () => {
    const res = await call("POST", base, { key: account.key, body: { url: "http://127.0.0.1/x" }, env: guardOn() });
    const detail = await expectUrlRefused(res);
    expect(detail.code).toBe("url_refused");
    expect(detail.message).toMatch(/127\.0\.0\.1/);
    expect(detail.message).toMatch(/loopback/);
    expect(await listUrls()).toEqual([]);
  });

  it("refuses the encodings WHATWG normalises to loopback and metadata addresses", async () => {
    for (const url of ["http://2130706433/x", "http://0x7f.1/x", "http://017700000001/x", "http://[::ffff:127.0.0.1]/x", "http://169.254.169.254/latest/meta-data/", "http://localhost:3000/x"]) {
      const res = await call("POST", base, { key: account.key, body: { url }, env: guardOn() });
      expect(res.status, url).toBe(422);
    }
    expect(await listUrls()).toEqual([]);
  });

  it("refuses a name that resolves to a private address", async () => {
    const name = uniqueName("private");
    await setDns(name, ["10.0.0.5"]);
    const res = await call("POST", base, { key: account.key, body: { url: `https://${name}/hooks` }, env: guardOn() });
    const detail = await expectUrlRefused(res);
    expect(detail.code).toBe("url_refused");
    expect(detail.message).toMatch(/10\.0\.0\.5/);
    expect(await listUrls()).toEqual([]);
  });

  it("refuses a name with one public and one private answer, and a name that does not resolve", async () => {
    const mixed = uniqueName("mixed");
    await setDns(mixed, [PUBLIC_V4, "fd00::7"]);
    await expectUrlRefused(await call("POST", base, { key: account.key, body: { url: `https://${mixed}/` }, env: guardOn() }));
    const missing = uniqueName("nxdomain");
    await expectUrlRefused(await call("POST", base, { key: account.key, body: { url: `https://${missing}/` }, env: guardOn() }));
    expect(await listUrls()).toEqual([]);
  });

  it("accepts a name that resolves to a public address", async () => {
    const name = uniqueName("public");
    await setDns(name, [PUBLIC_V4]);
    const url = `https://${name}/webhooks/stripe`;
    const res = await call("POST", base, { key: account.key, body: { url }, env: guardOn() });
    expect(res.status).toBe(201);
    const body = await json(res);
    expect(body.data).toMatchObject({ url, source_id: sourceId, enabled: true });
    expect(await listUrls()).toEqual([url]);
  });
});

describe("PATCH destinations with the SSRF guard on", () => {
  it("refuses a change of url to a private address and keeps the stored url", async () => {
    const name = uniqueName("patch");
    await setDns(name, [PUBLIC_V4]);
    const oldUrl = `https://${name}/hooks`;
    const created = await call("POST", base, { key: account.key, body: { url: oldUrl }, env: guardOn() });
    expect(created.status).toBe(201);
    const id = (await json(created)).data.id as string;

    const literal = await call("PATCH", `${base}/${id}`, { key: account.key, body: { url: "https://10.0.0.5/hooks" }, env: guardOn() });
    expect((await expectUrlRefused(literal)).message).toMatch(/private/);

    const privateName = uniqueName("patch-private");
    await setDns(privateName, ["192.168.1.20"]);
    const named = await call("PATCH", `${base}/${id}`, {
      key: account.key,
      body: { url: `https://${privateName}/hooks`, enabled: false },
      env: guardOn(),
    });
    await expectUrlRefused(named);

    const res = await call("GET", `${base}/${id}`, { key: account.key });
    expect(res.status).toBe(200);
    // Nothing of a refused PATCH is applied, not even its other fields.
    expect((await json(res)).data).toMatchObject({ id, url: oldUrl, enabled: true });
  });

  it("re-checks at send time: the test endpoint refuses a name that now resolves privately", async () => {
    const name = uniqueName("rebind");
    await setDns(name, [PUBLIC_V4]);
    const created = await call("POST", base, { key: account.key, body: { url: `https://${name}/hooks` }, env: guardOn() });
    expect(created.status).toBe(201);
    const id = (await json(created)).data.id as string;

    await setDns(name, ["127.0.0.1"]);
    const res = await call("POST", `${base}/${id}/test`, { key: account.key, env: guardOn() });
    expect(res.status).toBe(422);
    const body = await json(res);
    expect(body).toMatchObject({ ok: false, error: expect.stringMatching(/refused/i) });
    expect(body.error).toMatch(/127\.0\.0\.1/);
  });
});

describe("production", () => {
  it("refuses http and accepts https to a public name", async () => {
    const name = uniqueName("prod");
    await setDns(name, [PUBLIC_V4]);
    const http = await call("POST", base, { key: account.key, body: { url: `http://${name}/hooks` }, env: productionGuardOn() });
    const detail = await expectUrlRefused(http);
    expect(detail.message).toMatch(/https/);
    expect(await listUrls()).toEqual([]);

    const https = await call("POST", base, { key: account.key, body: { url: `https://${name}/hooks` }, env: productionGuardOn() });
    expect(https.status).toBe(201);
    expect(await listUrls()).toEqual([`https://${name}/hooks`]);
  });

  it("refuses to serve at all with ALLOW_PRIVATE_DESTINATIONS=true", async () => {
    const unsafe = () => envWith({ ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "true" });
    const requests: [string, string, unknown][] = [
      ["POST", base, { url: "https://example.com/hooks" }],
      ["GET", base, undefined],
      ["GET", "/api/v1/webhooks/sources", undefined],
      ["GET", "/", undefined],
    ];
    for (const [method, path, body] of requests) {
      const res = await call(method, path, { key: account.key, body, env: unsafe() });
      expect(res.status, `${method} ${path}`).toBe(500);
      expect((await json(res)).error.code, `${method} ${path}`).toBe("misconfigured");
    }
    expect(await listUrls()).toEqual([]);
  });
});

async function listUrlsOf(a: Account, sourceId: string): Promise<string[]> {
  const res = await clientFor(a).api.v1.webhooks.sources[":source_id"].destinations.$get({ param: { source_id: sourceId }, query: {} });
  return (await res.json()).data.map((d) => d.url);
}

describe("Private destinations (PRODUCT.md)", () => {
  it("ALLOW_PRIVATE_DESTINATIONS=true lets local development forward to http://localhost:3000", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "local" });
    const res = await call("POST", `/api/v1/webhooks/sources/${source.id}/destinations`, {
      key: account.key,
      body: { url: "http://localhost:3000/webhooks" },
      env: envWith({ ENVIRONMENT: "development", ALLOW_PRIVATE_DESTINATIONS: "true" }),
    });
    expect(res.status).toBe(201);
    const refused = await call("POST", `/api/v1/webhooks/sources/${source.id}/destinations`, {
      key: account.key,
      body: { url: "http://localhost:3000/webhooks" },
      env: envWith({ ENVIRONMENT: "development", ALLOW_PRIVATE_DESTINATIONS: "false" }),
    });
    await expectError(refused, 422, "validation_failed");
    expect(await listUrlsOf(account, source.id)).toEqual(["http://localhost:3000/webhooks"]);
  });

  it("ALLOW_PRIVATE_DESTINATIONS=true in production: the Worker refuses to serve (500), nothing stored", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "prod" });
    const unsafe = envWith({ ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "true" });
    const res = await call("POST", `/api/v1/webhooks/sources/${source.id}/destinations`, { key: account.key, body: { url: "http://127.0.0.1:3000/" }, env: unsafe });
    const body = await expectError(res, 500, "misconfigured");
    expect(body.error.request_id).toBeTruthy();
    expect(JSON.stringify(body)).not.toContain("ALLOW_PRIVATE");
    await expectError(await call("GET", `/api/v1/webhooks/sources/${source.id}/destinations`, { key: account.key, env: unsafe }), 500, "misconfigured");
    expect(await listUrlsOf(account, source.id)).toEqual([]);
  });
});

