/**
 * The findings of the security review, one test each (each failed before its fix):
 * rotation grace kept by a PATCH of the current secret, our resolver's outage never spent
 * against a destination, credential-like headers dropped by pattern, a deeply nested
 * event still viewable, ingest URLs hidden from read-only keys, authentication before
 * body checks, request ids that are ours, and destination URLs stored normalized.
 */
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { addKey, call, createAccount, createDestination, createSource, envWith, expectError, json, mailbox, setDns, type Account } from "../helpers/api";
import { attemptRows, deliveryRow, destinationRow, insertDelivery, insertEvent, runQueue, storedEvents } from "../helpers/delivery";

let account: Account;
let source: { id: string; ingest_url: string };
const base = () => `/api/v1/webhooks/sources/${source.id}`;

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "review" });
});

const secretOf = () => "whsec_" + btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));

describe("rotation", () => {
  it("after s1 → s2 → s3, PATCHing s3 again keeps s2 signing through its grace", async () => {
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const [s2, s3] = [secretOf(), secretOf()];
    for (const secret of [s2, s3, s3]) {
      expect((await call("PATCH", `${base()}/destinations/${d.id}`, { key: account.key, body: { secret } })).status).toBe(200);
    }
    expect((await call("POST", `${base()}/destinations/${d.id}/test`, { key: account.key })).status).toBe(200);
    const [req] = await box.requests();
    expect(req!.headers["webhook-signature"]!.split(" ")).toHaveLength(2);
    expect(() => new Webhook(s3).verify(req!.body, req!.headers)).not.toThrow();
    expect(() => new Webhook(s2).verify(req!.body, req!.headers)).not.toThrow();
  });
});

describe("our own failures", () => {
  it("a resolver outage spends no retry and counts nothing against the destination: the message is retried as ours", async () => {
    const name = `hooks-${crypto.randomUUID().slice(0, 8)}.example.com`;
    await setDns(name, ["93.184.215.14"]);
    const strict = envWith({ ALLOW_PRIVATE_DESTINATIONS: "false" });
    const res = await call("POST", `${base()}/destinations`, { key: account.key, body: { url: `http://${name}/hook` }, env: strict });
    expect(res.status).toBe(201);
    const dest = (await json(res)).data;
    // The resolver is down: its endpoint answers 500 to every question.
    const down = envWith({ ALLOW_PRIVATE_DESTINATIONS: "false", DOH_URL: `${env.RECEIVER_ORIGIN}/no-such-resolver` });
    for (let i = 0; i < 12; i++) {
      const msg = await insertDelivery(await insertEvent(source.id), dest.id);
      const r = await runQueue("krafter-deliver", [msg], { env: down });
      expect(r.explicitAcks).toEqual([]);
      expect(r.retryMessages).toHaveLength(1);
      expect(await attemptRows(msg.deliveries[0]!.delivery_id)).toEqual([]);
      expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 0, attempt_count: 0 });
    }
    expect(await destinationRow(dest.id)).toEqual({ enabled: 1, failure_count: 0 });
  });
});

describe("headers kept for the event log", () => {
  it("drops every header whose name speaks of a credential, by pattern", async () => {
    const credentialish = ["api-key", "apikey", "x-auth", "authentication", "private-key", "x-jwt", "x-session", "x-hmac", "x-passcode", "x-amz-credential", "x-my-token", "x-secret-thing", "proxy-authorization", "cookie"];
    const headers: Record<string, string> = { "content-type": "application/json", "x-request-source": "billing", "user-agent": "Stripe/1.0" };
    for (const h of credentialish) headers[h] = `value-of-${h}`;
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw: '{"type":"t"}', headers });
    expect(res.status).toBe(202);
    const [event] = await storedEvents(source.id);
    for (const h of credentialish) expect(event!.headers).not.toHaveProperty(h);
    expect(JSON.stringify(event!.headers)).not.toContain("value-of-");
    expect(event!.headers).toMatchObject({ "x-request-source": "billing", "user-agent": "Stripe/1.0" });
  });
});

describe("the event log", () => {
  it("shows an event nested 10,000 levels deep (20 KB), payload as received", async () => {
    const raw = `{"type":"deep","d":${"[".repeat(10_000)}${"]".repeat(10_000)}}`;
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw, headers: { "content-type": "application/json" } });
    expect(res.status).toBe(202);
    const detail = await call("GET", `${base()}/events/${(await json(res)).data.event_id}`, { key: account.key });
    expect(detail.status).toBe(200);
    expect(await detail.text()).toContain(`"payload":${raw}}}`);
  });
});

describe("read-only keys", () => {
  it("see every source but not its ingest URL (a capability to inject events)", async () => {
    const reader = await addKey(account.id, ["webhooks:read"]);
    const one = await json(await call("GET", base(), { key: reader.key }));
    expect(one.data.ingest_url).toBeNull();
    const list = await json(await call("GET", "/api/v1/webhooks/sources", { key: reader.key }));
    expect(list.data.map((s: { ingest_url: string | null }) => s.ingest_url)).toEqual([null]);
    expect(JSON.stringify([one, list])).not.toContain(new URL(source.ingest_url).pathname);
    // A key that may write sees it.
    expect((await json(await call("GET", base(), { key: account.key }))).data.ingest_url).toBe(source.ingest_url);
  });
});

describe("which error wins", () => {
  it("without a key, a body of the wrong type or size is a 401, not a 415 or 413", async () => {
    await expectError(await call("POST", "/api/v1/webhooks/sources", { raw: "hello", headers: { "content-type": "text/plain" } }), 401, "unauthorized");
    await expectError(await call("POST", "/api/v1/webhooks/sources", { raw: "x".repeat(70_000), headers: { "content-type": "application/json" } }), 401, "unauthorized");
    // A read-only key: 403 before the body is looked at.
    const reader = await addKey(account.id, ["webhooks:read"]);
    await expectError(await call("POST", "/api/v1/webhooks/sources", { key: reader.key, raw: "hello", headers: { "content-type": "text/plain" } }), 403, "forbidden");
    // With the right key, the body checks.
    await expectError(await call("POST", "/api/v1/webhooks/sources", { key: account.key, raw: "hello", headers: { "content-type": "text/plain" } }), 415, "unsupported_media_type");
  });
});

describe("request ids", () => {
  it("are always ours: a client's X-Request-Id is neither echoed nor taken", async () => {
    const res = await call("GET", "/", { headers: { "x-request-id": "injected-id" } });
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers.get("x-request-id")).not.toBe("injected-id");
  });
});

describe("destination URLs", () => {
  it("are stored and shown normalized, as they are sent to", async () => {
    const res = await call("POST", `${base()}/destinations`, { key: account.key, body: { url: "HTTPS://Hooks.EXAMPLE.com:443/Path?q=1" } });
    expect(res.status).toBe(201);
    expect((await json(res)).data.url).toBe("https://hooks.example.com/Path?q=1");
    const row = await (env as unknown as Env).DB.prepare("SELECT url FROM destinations WHERE source_id = ?").bind(source.id).first<{ url: string }>();
    expect(row!.url).toBe("https://hooks.example.com/Path?q=1");
  });
});
