/**
 * POST /webhooks/sources/:source_id/destinations/:id/test against real loopback
 * receivers: what is sent, how it is signed, and how each kind of answer is reported.
 */
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import {
  addKey,
  call,
  createAccount,
  createDestination,
  createSource,
  envWith,
  json,
  mailbox,
  setDestination,
  type Account,
  RFC3339,
  destinationsPath as base,
} from "../helpers/api";
import { countFor } from "../helpers/delivery";


async function setup(spec: Parameters<typeof mailbox>[0] = {}) {
  const account = await createAccount();
  const source = await createSource(account, { name: "test endpoint" });
  const box = await mailbox(spec);
  const dest = await createDestination(account, source.id, { url: box.url });
  return { account, source, box, dest };
}

const test = (a: Account, sourceId: string, id: string, e?: ReturnType<typeof envWith>) =>
  call("POST", `${base(sourceId)}/${id}/test`, { key: a.key, ...(e ? { env: e } : {}) });

async function destRow(id: string) {
  return env.DB.prepare("SELECT * FROM destinations WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

/** Attempts recorded for a destination, across its source's partitions. */
async function attemptCount(sourceId: string, id: string) {
  return countFor(sourceId, "attempts", id);
}

describe("Test a destination (destinations-api.md)", () => {
  it("Test a destination POST /webhooks/sources/:source_id/destinations/:id/testRequired scope: webhooks:write", async () => {
    const { account, source, box, dest } = await setup();
    const reader = await addKey(account.id, ["webhooks:read"]);
    const denied = await call("POST", `${base(source.id)}/${dest.id}/test`, { key: reader.key });
    expect(denied.status).toBe(403);
    const body = await json(denied);
    expect(body.error.code).toBe("forbidden");
    expect(body.error.message).toContain("webhooks:write");
    expect(await box.requests()).toHaveLength(0);

    const ok = await test(account, source.id, dest.id);
    expect(ok.status).toBe(200);
    expect(await box.requests()).toHaveLength(1);
  });

  it("Sends a synthetic signed POST to the destination URL with this body:", async () => {
    const { account, source, box, dest } = await setup();
    const before = Date.now();
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    const reqs = await box.requests();
    expect(reqs).toHaveLength(1);
    const req = reqs[0]!;
    expect(req.method).toBe("POST");
    expect(req.path).toBe(new URL(box.url).pathname);

    // The body: exactly the page's object, nothing more.
    const sent = JSON.parse(req.body);
    expect(Object.keys(sent).sort()).toEqual(["data", "event", "source_id"]);
    expect(Object.keys(sent.data).sort()).toEqual(["message", "timestamp"]);
    expect(sent).toStrictEqual({
      event: "test",
      data: { message: "Test delivery from Krafter", timestamp: expect.stringMatching(RFC3339) },
      source_id: source.id,
    });
    const ts = Date.parse(sent.data.timestamp);
    expect(ts).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 - 1000);
    expect(ts).toBeLessThanOrEqual(Date.now() + 1000);

    // Signed: the standardwebhooks library verifies it with the secret from the 201.
    expect(new Webhook(dest.secret).verify(req.body, req.headers)).toStrictEqual(sent);
    expect(() => new Webhook("whsec_" + btoa("x".repeat(32))).verify(req.body, req.headers)).toThrow();

    // The headers.
    expect(req.headers["content-type"]).toMatch(/^application\/json/);
    expect(req.headers["webhook-id"]).toMatch(/\S/);
    expect(req.headers["webhook-timestamp"]).toMatch(/^\d+$/);
    expect(Math.abs(Number(req.headers["webhook-timestamp"]) - Date.now() / 1000)).toBeLessThan(60);
    expect(req.headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(req.headers["user-agent"]).toContain("Krafter");
  });

  // "The URL is re-checked for SSRF safety at send time.": for every URL of the SSRF table
  // and for a name rebound to loopback, in destinations-ssrf.test.ts.

  it('Response — 200: { "ok": true, "status": 200 }', async () => {
    const { account, source, dest } = await setup({ repeat: { status: 200, body: "thanks" } });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    expect(await json(res)).toStrictEqual({ ok: true, status: 200 });
  });

  it('Response on transport error or 5xx — 422: { "ok": false, "error": "..." }', async () => {
    const { account, source, dest } = await setup({ repeat: { status: 500, body: "boom" } });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(422);
    const body = await json(res);
    expect(Object.keys(body).sort()).toEqual(["error", "ok"]);
    expect(body.ok).toBe(false);
    expect(typeof body.error).toBe("string");
    expect(body.error).toContain("500");
  });
});

describe("Test endpoint: PRODUCT.md's decisions", () => {
  it("a 2xx other than 200 is ok:true with that status", async () => {
    const { account, source, dest } = await setup({ repeat: { status: 204 } });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    expect(await json(res)).toStrictEqual({ ok: true, status: 204 });
  });

  it("a 404 is 200 {ok:false,status:404}", async () => {
    const { account, source, box, dest } = await setup({ repeat: { status: 404, body: "nope" } });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    expect(await json(res)).toStrictEqual({ ok: false, status: 404 });
    expect(await box.requests()).toHaveLength(1);
  });

  it("a 503 is 422 {ok:false,error}", async () => {
    const { account, source, dest } = await setup({ repeat: { status: 503 } });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(422);
    const body = await json(res);
    expect(body).toStrictEqual({ ok: false, error: expect.any(String) });
    expect(body.error).toContain("503");
  });

  it("a closed port is a transport error: 422 {ok:false,error}", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "closed" });
    const dest = await createDestination(account, source.id, { url: "http://127.0.0.1:9/closed" });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(422);
    const body = await json(res);
    expect(body).toStrictEqual({ ok: false, error: expect.any(String) });
    expect(body.error.length).toBeGreaterThan(0);
  });

  it("a connection reset mid-response is a transport error: 422", async () => {
    const { account, source, box, dest } = await setup({ repeat: { status: 200, reset: true } });
    const res = await test(account, source.id, dest.id);
    // The status line arrived, the body did not: the exchange failed, not the receiver.
    expect(res.status).toBe(422);
    const body = await json(res);
    expect(body).toStrictEqual({ ok: false, error: expect.any(String) });
    expect(body.error).toMatch(/transport error/);
    expect(await box.requests()).toHaveLength(1);
  });

  it("a server that never answers times out: 422 with an error naming the timeout", async () => {
    const { account, source, box, dest } = await setup({ repeat: { hang: true } });
    const started = Date.now();
    const res = await test(account, source.id, dest.id);
    const took = Date.now() - started;
    expect(res.status).toBe(422);
    const body = await json(res);
    expect(body).toStrictEqual({ ok: false, error: expect.any(String) });
    expect(body.error).toMatch(/time(d)? ?out/i);
    // TEST_TIMEOUT_MS=2000 in the test env.
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(10_000);
    expect(await box.requests()).toHaveLength(1);
  });

  it("a redirect is not followed: 200 {ok:false,status:302}, one request only", async () => {
    const { account, source, box, dest } = await setup({
      repeat: { status: 302, headers: { Location: "http://169.254.169.254/latest/meta-data/" } },
    });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    expect(await json(res)).toStrictEqual({ ok: false, status: 302 });
    expect(await box.requests()).toHaveLength(1);
  });

  it("a redirect back to the same receiver is not followed either", async () => {
    const { account, source, box, dest } = await setup();
    await box.script({ script: [{ status: 307, headers: { Location: box.url + "?again=1" } }], repeat: { status: 200 } });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    expect(await json(res)).toStrictEqual({ ok: false, status: 307 });
    expect(await box.requests()).toHaveLength(1);
  });

  it("a failing test call does not touch failure_count, enabled, or the attempt log", async () => {
    const { account, source, dest } = await setup({ repeat: { status: 500 } });
    await setDestination(dest.id, { failureCount: 3 });
    const before = await destRow(dest.id);
    for (let i = 0; i < 2; i++) {
      const res = await test(account, source.id, dest.id);
      expect(res.status).toBe(422);
    }
    const after = await destRow(dest.id);
    expect(after!.failure_count).toBe(3);
    expect(after!.enabled).toBe(1);
    expect(after).toStrictEqual(before);
    expect(await attemptCount(source.id, dest.id)).toBe(0);
    const got = await json(await call("GET", `${base(source.id)}/${dest.id}`, { key: account.key }));
    expect(got.data.failure_count).toBe(3);
  });

  it("a succeeding test call does not reset failure_count either", async () => {
    const { account, source, dest } = await setup();
    await setDestination(dest.id, { failureCount: 4 });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    expect((await destRow(dest.id))!.failure_count).toBe(4);
    expect(await attemptCount(source.id, dest.id)).toBe(0);
  });

  it("a disabled destination can still be tested", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "disabled" });
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url, enabled: false });
    const res = await test(account, source.id, dest.id);
    expect(res.status).toBe(200);
    expect(await json(res)).toStrictEqual({ ok: true, status: 200 });
    expect(await box.requests()).toHaveLength(1);
  });

  it("the test body is signed with the given secret when one was set at create", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "given secret" });
    const box = await mailbox();
    const secret = "whsec_" + btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(40))));
    const dest = await createDestination(account, source.id, { url: box.url, secret });
    expect(dest.secret).toBe(secret);
    expect((await test(account, source.id, dest.id)).status).toBe(200);
    const [req] = await box.requests();
    expect(new Webhook(secret).verify(req!.body, req!.headers)).toMatchObject({ event: "test", source_id: source.id });
  });

  it("each test call is a new message: a fresh webhook-id", async () => {
    const { account, source, box, dest } = await setup();
    await test(account, source.id, dest.id);
    await test(account, source.id, dest.id);
    const reqs = await box.requests();
    expect(reqs).toHaveLength(2);
    expect(reqs[0]!.headers["webhook-id"]).not.toBe(reqs[1]!.headers["webhook-id"]);
  });

  it("an unknown destination is 404 and nothing is sent", async () => {
    const { account, source, box } = await setup();
    const res = await test(account, source.id, crypto.randomUUID());
    expect(res.status).toBe(404);
    expect((await json(res)).error.code).toBe("not_found");
    expect(await box.requests()).toHaveLength(0);
  });
});
