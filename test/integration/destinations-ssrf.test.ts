/**
 * The SSRF guard through the HTTP API, driven by the one table of cases
 * (test/helpers/ssrf-cases.ts; the unit test drives the same table against the guard
 * itself). Every URL, in each of the three configurations, is tried on create (POST), on
 * a change of url (PATCH) and, when refused, at send time by the test endpoint, for a
 * destination whose stored url was set behind the API's back. Every address a name may
 * resolve to is tried on create. Names are answered by the loopback receiver's DoH
 * endpoint (DOH_URL) with the table's DNS; a name the table says cannot be resolved is
 * asked of a DoH endpoint that fails.
 *
 * The test environment allows private destinations (loopback receivers stand in for
 * customers' endpoints): the guarded configurations turn the guard on per request.
 */
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { beforeAll, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { destinations } from "../../src/db/schema";
import { call, clientFor, createAccount, createDestination, createSource, db, destinationsApi, envWith, errorOf, expectError, setDestination, setDns, type Account } from "../helpers/api";
import { countFor } from "../helpers/delivery";
import { ADDRESS_CASES, DNS, label, MODES, nameFor, PUBLIC_V4, URL_CASES, type Mode, type Reason } from "../helpers/ssrf-cases";

/** The bindings of each configuration; `dohFails`: the resolver cannot be asked. */
function envFor(mode: Mode, dohFails = false): Env {
  const guard = mode === "production" ? { ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "false" } : mode === "guarded" ? { ALLOW_PRIVATE_DESTINATIONS: "false" } : {};
  return envWith({ ...guard, ...(dohFails ? { DOH_URL: `${env.RECEIVER_ORIGIN}/no-such-dns-endpoint` } : {}) });
}

function hostOf(url: string): string | undefined {
  try {
    return new URL(url).hostname.replace(/\.+$/, "");
  } catch {
    return undefined;
  }
}

const unresolvable = (url: string) => {
  const host = hostOf(url);
  return host !== undefined && DNS[host] === "servfail";
};

beforeAll(async () => {
  for (const [name, answers] of Object.entries(DNS)) if (answers !== "servfail") await setDns(name, answers);
  for (const [i, c] of ADDRESS_CASES.entries()) await setDns(nameFor(i), [c.address]);
});

/** A refused create or change: 422, one detail on url with the table's code and reason. */
async function expectRefused(res: { status: number; json(): Promise<unknown> }, want: Reason, where: string) {
  expect(res.status, where).toBe(422);
  const error = await errorOf(res);
  expect(error.code, where).toBe("validation_failed");
  expect(error.details, where).toHaveLength(1);
  expect(error.details![0], where).toMatchObject({ field: "url", code: want.code });
  expect(error.details![0]!.message, where).toMatch(want.why);
}

const storedRow = async (id: string) => db().select().from(destinations).where(eq(destinations.id, id)).get();

async function listUrls(a: Account, sourceId: string): Promise<string[]> {
  const res = await clientFor(a).api.v1.webhooks.sources[":source_id"].destinations.$get({ param: { source_id: sourceId }, query: {} });
  expect(res.status).toBe(200);
  return (await res.json()).data.map((d) => d.url);
}

describe("every URL of the table, in every configuration: create, change, and the test endpoint's re-check", () => {
  it.each(URL_CASES.map((c) => [label(c.url), c] as const))("%s", async (_name, c) => {
    const account = await createAccount();
    const source = await createSource(account, { name: "ssrf" });
    // Made with the guard off: the destination PATCHed, and the one tested with the case's URL stored.
    const target = await createDestination(account, source.id, { url: "https://hooks.example.com/target" });
    const probe = await createDestination(account, source.id, { url: "https://hooks.example.com/probe" });
    let created = 0;
    for (const mode of MODES) {
      const want = c.expect[mode];
      const d = destinationsApi(clientFor(account, { env: envFor(mode, unresolvable(c.url)) }));
      const param = { source_id: source.id };

      const post = await d.$post({ param, json: { url: c.url } });
      const before = await storedRow(target.id);
      const patch = await d[":id"].$patch({ param: { ...param, id: target.id }, json: { url: c.url, enabled: false } });
      if (want === "allowed") {
        expect(post.status, `${mode}: POST`).toBe(201);
        expect((await post.json()).data.url).toBe(new URL(c.url).href);
        created++;
        expect(patch.status, `${mode}: PATCH`).toBe(200);
        expect((await patch.json()).data).toMatchObject({ url: new URL(c.url).href, enabled: false });
        continue;
      }
      await expectRefused(post, want, `${mode}: POST`);
      await expectRefused(patch, want, `${mode}: PATCH`);
      // Nothing of a refused PATCH is applied, not even its other fields.
      expect(await storedRow(target.id)).toStrictEqual(before);

      // At send time: the stored URL is checked again, refused for the same reason, nothing attempted.
      await setDestination(probe.id, { url: c.url });
      const sent = await d[":id"].test.$post({ param: { ...param, id: probe.id } });
      expect(sent.status, `${mode}: test`).toBe(422);
      const body = await sent.json();
      expect(Object.keys(body).sort()).toEqual(["error", "ok"]);
      expect(body.ok).toBe(false);
      expect("error" in body && body.error, `${mode}: test`).toMatch(/^URL refused: /);
      expect("error" in body && body.error, `${mode}: test`).toMatch(want.why);
    }
    // Only what was allowed was stored.
    expect(await listUrls(account, source.id)).toHaveLength(2 + created);
    expect(await countFor(source.id, "attempts", probe.id)).toBe(0);
  });
});

describe("every address of the table, as a name's answer, in production", () => {
  let account: Account;
  let sourceId: string;
  beforeAll(async () => {
    account = await createAccount();
    sourceId = (await createSource(account, { name: "addresses" })).id;
  });

  it.each(ADDRESS_CASES.map((c, i) => [JSON.stringify(c.address), c, i] as const))("%s", async (_name, c, i) => {
    const url = `https://${nameFor(i)}/hooks`;
    const res = await destinationsApi(clientFor(account, { env: envFor("production") })).$post({ param: { source_id: sourceId }, json: { url } });
    if (c.refused === null) {
      expect(res.status).toBe(201);
      return;
    }
    const error = await errorOf(res);
    expect(res.status).toBe(422);
    expect(error.details).toEqual([{ field: "url", code: "url_refused", message: expect.stringContaining(`resolves to ${c.address}, which `) }]);
    expect(error.details![0]!.message).toMatch(c.refused);
  });
});

describe("DNS rebinding", () => {
  it("a name public at create and loopback at send: the test endpoint refuses it, nothing attempted, nothing counted", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "rebinding" });
    const name = `rebind-${crypto.randomUUID().slice(0, 8)}.ssrf-test.example.com`;
    await setDns(name, [PUBLIC_V4]);
    const guarded = envFor("guarded");
    const dest = await createDestination(account, source.id, { url: `http://${name}/hook` }, { env: guarded });

    // The name now points at loopback: the send is refused, nothing is attempted.
    await setDns(name, ["127.0.0.1"]);
    const res = await destinationsApi(clientFor(account, { env: guarded }))[":id"].test.$post({ param: { source_id: source.id, id: dest.id } });
    expect(res.status).toBe(422);
    const body = await res.json();
    expect(Object.keys(body).sort()).toEqual(["error", "ok"]);
    expect(body.ok).toBe(false);
    const error = "error" in body ? body.error : "";
    expect(error).toMatch(/refused/i);
    expect(error).toContain("127.0.0.1");
    expect(await countFor(source.id, "attempts", dest.id)).toBe(0);
    expect((await storedRow(dest.id))!.failureCount).toBe(0);
  });
});

describe("Private destinations (PRODUCT.md)", () => {
  it("ALLOW_PRIVATE_DESTINATIONS=true lets local development forward to http://localhost:3000", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "local" });
    const dev = (allow: string) => destinationsApi(clientFor(account, { env: envWith({ ENVIRONMENT: "development", ALLOW_PRIVATE_DESTINATIONS: allow }) }));
    const res = await dev("true").$post({ param: { source_id: source.id }, json: { url: "http://localhost:3000/webhooks" } });
    expect(res.status).toBe(201);
    const refused = await dev("false").$post({ param: { source_id: source.id }, json: { url: "http://localhost:3000/webhooks" } });
    await expectError(refused, 422, "validation_failed");
    expect(await listUrls(account, source.id)).toEqual(["http://localhost:3000/webhooks"]);
  });

  it("ALLOW_PRIVATE_DESTINATIONS=true in production: the Worker refuses to serve anything (500), nothing stored", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "prod" });
    const unsafe = envWith({ ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "true" });
    const base = `/api/v1/webhooks/sources/${source.id}/destinations`;
    const body = await expectError(await call("POST", base, { key: account.key, body: { url: "http://127.0.0.1:3000/" }, env: unsafe }), 500, "misconfigured");
    expect(body.error.request_id).toBeTruthy();
    expect(JSON.stringify(body)).not.toContain("ALLOW_PRIVATE");
    const requests: [string, string, unknown][] = [
      ["POST", base, { url: "https://example.com/hooks" }],
      ["GET", base, undefined],
      ["GET", "/api/v1/webhooks/sources", undefined],
      ["GET", "/", undefined],
    ];
    for (const [method, path, b] of requests) {
      await expectError(await call(method, path, { key: account.key, body: b, env: unsafe }), 500, "misconfigured");
    }
    expect(await listUrls(account, source.id)).toEqual([]);
  });
});
