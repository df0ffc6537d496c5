/**
 * `POST /in/:ingest_key` against the providers' own signing code: Stripe's SDK, Octokit's
 * webhooks-methods, the Standard Webhooks library, and Shopify's documented HMAC computed
 * here with Web Crypto (Shopify publishes no signing library). Every check reads the partitions directly.
 */
import { SELF, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { sign as githubSign } from "@octokit/webhooks-methods";
import { Webhook } from "standardwebhooks";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import {
  ORIGIN,
  call,
  createAccount,
  createDestination,
  createSource,
  envWith,
  eventually,
  json,
  mailbox,
  type Account,
} from "../helpers/api";
import { storedEvents } from "../helpers/delivery";
import { SOURCE_CACHE_TTL_MS } from "../../src/ingest/sources";
import { sha256Hex } from "../../src/security/encoding";

const MiB = 1024 * 1024;
const stripe = new Stripe("sk_test_x");

type Provider = "stripe" | "github" | "shopify" | "standard-webhooks" | "generic";

const pathOf = (src: { ingest_url: string }) => new URL(src.ingest_url).pathname;

/** The events stored for a source, read from its partitions. */
const rowsFor = storedEvents;

async function post(src: { ingest_url: string }, raw: string, headers: Record<string, string> = {}) {
  return call("POST", pathOf(src), { raw, headers });
}

/** Asserts the error envelope, its status and code, and returns it. */
async function expectError(res: Response, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type") ?? "").toMatch(/application\/json/);
  const body = await json(res);
  expect(body).toEqual({ error: { code, message: expect.any(String) } });
  expect(body.error.message.length).toBeGreaterThan(0);
  return body;
}

/** Asserts a 202 `{data:{event_id}}` and returns the event id. */
async function expectAccepted(res: Response): Promise<string> {
  expect(res.status).toBe(202);
  const body = await json(res);
  expect(body).toEqual({ data: { event_id: expect.any(String) } });
  return body.data.event_id as string;
}

const nowSec = () => Math.floor(Date.now() / 1000);
const rand = (prefix: string) => `${prefix}_${crypto.randomUUID().replace(/-/g, "")}`;

function whsec(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}

/** Shopify's documented scheme: base64(HMAC-SHA256(app secret, raw body)). Independent of src/. */
async function shopifyHmac(secret: string, payload: string): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(payload)));
  return btoa(String.fromCharCode(...mac));
}

/** How one provider signs, names and identifies a delivery. */
interface ProviderCase {
  provider: Exclude<Provider, "generic">;
  newSecret(): string;
  /** A body for delivery `id`. */
  body(id: string): string;
  /** The event type Krafter must store for `body(id)` sent with `headers(…)`. */
  expectedType: string;
  /** Every header the provider sends: signature, id, timestamp, topic. */
  headers(o: { secret: string; payload: string; id: string; timestamp?: number }): Promise<Record<string, string>>;
  /** The signature header(s), removed for the "missing signature" test. */
  signatureHeaders: string[];
  /** Whether the provider signs a timestamp (300 s tolerance). */
  timestamped: boolean;
}

const cases: ProviderCase[] = [
  {
    provider: "stripe",
    newSecret: () => rand("whsec"),
    body: (id) => JSON.stringify({ id, object: "event", type: "invoice.paid", data: { object: { id: "in_1", amount_paid: 4200 } } }, null, 2),
    expectedType: "invoice.paid",
    async headers({ secret, payload, timestamp }) {
      // The worker build of the SDK (chosen in workerd) only signs asynchronously.
      const sig = await stripe.webhooks.generateTestHeaderStringAsync({ payload, secret, ...(timestamp !== undefined ? { timestamp } : {}) });
      return { "content-type": "application/json; charset=utf-8", "stripe-signature": sig };
    },
    signatureHeaders: ["stripe-signature"],
    timestamped: true,
  },
  {
    provider: "github",
    newSecret: () => rand("gh"),
    body: () => JSON.stringify({ action: "opened", issue: { number: 7, title: "Crash on ümlauts ✓" }, repository: { full_name: "o/r" } }),
    expectedType: "issues.opened",
    async headers({ secret, payload, id }) {
      return {
        "content-type": "application/json",
        "x-github-event": "issues",
        "x-github-delivery": id,
        "x-github-hook-id": "123",
        "x-hub-signature-256": await githubSign(secret, payload),
      };
    },
    signatureHeaders: ["x-hub-signature-256"],
    timestamped: false,
  },
  {
    provider: "shopify",
    newSecret: () => rand("shpss"),
    body: () => JSON.stringify({ id: 820982911946154500, email: "jon@example.com", total_price: "199.00" }),
    expectedType: "orders/create",
    async headers({ secret, payload, id }) {
      return {
        "content-type": "application/json",
        "x-shopify-topic": "orders/create",
        "x-shopify-shop-domain": "example.myshopify.com",
        "x-shopify-webhook-id": id,
        "x-shopify-hmac-sha256": await shopifyHmac(secret, payload),
      };
    },
    signatureHeaders: ["x-shopify-hmac-sha256"],
    timestamped: false,
  },
  {
    provider: "standard-webhooks",
    newSecret: whsec,
    body: () => JSON.stringify({ type: "user.created", timestamp: "2024-01-01T00:00:00Z", data: { id: "u_1" } }),
    expectedType: "user.created",
    async headers({ secret, payload, id, timestamp }) {
      const ts = timestamp ?? nowSec();
      return {
        "content-type": "application/json",
        "webhook-id": id,
        "webhook-timestamp": String(ts),
        "webhook-signature": new Webhook(secret).sign(id, new Date(ts * 1000), payload),
      };
    },
    signatureHeaders: ["webhook-signature"],
    timestamped: true,
  },
];

async function signedSource(account: Account, provider: Provider, secret: string) {
  return createSource(account, { name: `${provider} source`, provider, signing_secret: secret });
}

describe.each(cases)("ingest from $provider", (p) => {
  it("accepts a valid signature: 202, the event stored byte for byte with its type and no signature header", async () => {
    const a = await createAccount();
    const secret = p.newSecret();
    const src = await signedSource(a, p.provider, secret);
    const id = rand("evt");
    const payload = p.body(id);
    const headers = await p.headers({ secret, payload, id });
    const res = await post(src, payload, headers);
    const eventId = await expectAccepted(res);

    const rows = await rowsFor(src.id);
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(row.id).toBe(eventId);
    expect(row.type).toBe(p.expectedType);
    expect(row.payload).toBe(payload);
    expect(new TextEncoder().encode(row.payload)).toEqual(new TextEncoder().encode(payload));
    expect(["pending", "dispatched"]).toContain(row.status);
    const kept = row.headers;
    for (const h of p.signatureHeaders) expect(kept).not.toHaveProperty(h);
    for (const name of Object.keys(kept)) expect(name).not.toMatch(/signature|hmac/i);
    for (const value of Object.values(kept)) expect(value).not.toBe(headers[p.signatureHeaders[0]!]);
    // Non-secret provider headers are kept for the event log.
    expect(kept["content-type"]).toBe(headers["content-type"]);
  });

  it("refuses a tampered body (signature of another body): 401, nothing stored", async () => {
    const a = await createAccount();
    const secret = p.newSecret();
    const src = await signedSource(a, p.provider, secret);
    const id = rand("evt");
    const signed = p.body(id);
    const headers = await p.headers({ secret, payload: signed, id });
    const tampered = signed.replace(/}$/, ', "extra": true}');
    expect(tampered).not.toBe(signed);
    await expectError(await post(src, tampered, headers), 401, "unauthorized");
    // One byte of whitespace is enough.
    await expectError(await post(src, `${signed} `, headers), 401, "unauthorized");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("refuses a request without its signature header: 401, nothing stored", async () => {
    const a = await createAccount();
    const secret = p.newSecret();
    const src = await signedSource(a, p.provider, secret);
    const id = rand("evt");
    const payload = p.body(id);
    const headers = await p.headers({ secret, payload, id });
    for (const h of p.signatureHeaders) delete headers[h];
    await expectError(await post(src, payload, headers), 401, "unauthorized");
    // An empty signature header is as good as none.
    await expectError(await post(src, payload, { ...headers, [p.signatureHeaders[0]!]: "" }), 401, "unauthorized");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("refuses a signature made with another secret: 401, nothing stored", async () => {
    const a = await createAccount();
    const src = await signedSource(a, p.provider, p.newSecret());
    const id = rand("evt");
    const payload = p.body(id);
    const headers = await p.headers({ secret: p.newSecret(), payload, id });
    await expectError(await post(src, payload, headers), 401, "unauthorized");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("a source of this provider without a signing secret accepts unsigned requests", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "unsigned", provider: p.provider });
    const id = rand("evt");
    const payload = p.body(id);
    const headers = await p.headers({ secret: p.newSecret(), payload, id });
    for (const h of p.signatureHeaders) delete headers[h];
    const eventId = await expectAccepted(await post(src, payload, headers));
    const rows = await rowsFor(src.id);
    expect(rows.map((r) => [r.id, r.type, r.payload])).toEqual([[eventId, p.expectedType, payload]]);
  });

  if (p.timestamped) {
    it("refuses a timestamp more than 300 s old or in the future: 401, nothing stored; accepts one within", async () => {
      const a = await createAccount();
      const secret = p.newSecret();
      const src = await signedSource(a, p.provider, secret);
      for (const offset of [-330, -3600, 330, 86_400]) {
        const id = rand("evt");
        const payload = p.body(id);
        const headers = await p.headers({ secret, payload, id, timestamp: nowSec() + offset });
        await expectError(await post(src, payload, headers), 401, "unauthorized");
      }
      expect(await rowsFor(src.id)).toEqual([]);
      // Well inside the tolerance on both sides: accepted.
      for (const offset of [-240, 240]) {
        const id = rand("evt");
        const payload = p.body(id);
        const headers = await p.headers({ secret, payload, id, timestamp: nowSec() + offset });
        await expectAccepted(await post(src, payload, headers));
      }
      expect(await rowsFor(src.id)).toHaveLength(2);
    });
  }
});

describe("provider specifics", () => {
  it("GitHub: an event without an action is typed by X-GitHub-Event alone", async () => {
    const a = await createAccount();
    const secret = "gh-secret-of-16-chars";
    const src = await signedSource(a, "github", secret);
    const payload = JSON.stringify({ ref: "refs/heads/main", before: "0".repeat(40), commits: [] });
    const res = await post(src, payload, {
      "x-github-event": "push",
      "x-github-delivery": crypto.randomUUID(),
      "x-hub-signature-256": await githubSign(secret, payload),
    });
    const eventId = await expectAccepted(res);
    const rows = await rowsFor(src.id);
    expect(rows.map((r) => [r.id, r.type])).toEqual([[eventId, "push"]]);
  });

  it("GitHub: the legacy SHA-1 header alone is not accepted", async () => {
    const a = await createAccount();
    const src = await signedSource(a, "github", "gh-secret-of-16-chars");
    const payload = JSON.stringify({ zen: "Keep it logically awesome." });
    const res = await post(src, payload, { "x-github-event": "ping", "x-hub-signature": "sha1=" + "0".repeat(40) });
    await expectError(res, 401, "unauthorized");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("Stripe: a malformed Stripe-Signature header is a 401, not a 500", async () => {
    const a = await createAccount();
    const src = await signedSource(a, "stripe", rand("whsec"));
    const payload = JSON.stringify({ id: "evt_1", type: "charge.succeeded" });
    for (const sig of ["garbage", "t=abc,v1=zz", `t=${nowSec()}`, `v1=${"a".repeat(64)}`, `t=${"9".repeat(400)},v1=${"a".repeat(64)}`]) {
      await expectError(await post(src, payload, { "stripe-signature": sig }), 401, "unauthorized");
    }
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("Standard Webhooks: a missing webhook-id or webhook-timestamp is a 401, malformed signatures too", async () => {
    const a = await createAccount();
    const secret = whsec();
    const src = await signedSource(a, "standard-webhooks", secret);
    const payload = JSON.stringify({ type: "user.created" });
    const id = rand("msg");
    const ts = nowSec();
    const signature = new Webhook(secret).sign(id, new Date(ts * 1000), payload);
    const full = { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": signature };
    for (const drop of ["webhook-id", "webhook-timestamp"] as const) {
      const h: Record<string, string> = { ...full };
      delete h[drop];
      await expectError(await post(src, payload, h), 401, "unauthorized");
    }
    for (const bad of ["v1,!!!", "v2," + signature.slice(3), "v1", "not-a-signature"]) {
      await expectError(await post(src, payload, { ...full, "webhook-signature": bad }), 401, "unauthorized");
    }
    await expectError(await post(src, payload, { ...full, "webhook-timestamp": "soon" }), 401, "unauthorized");
    expect(await rowsFor(src.id)).toEqual([]);
    // Several signatures (a rotation): any valid v1 one is enough.
    const eventId = await expectAccepted(await post(src, payload, { ...full, "webhook-signature": `v1,AAAA ${signature}` }));
    expect((await rowsFor(src.id)).map((r) => r.id)).toEqual([eventId]);
  });

  it("Shopify: a signature that is not base64 is a 401, not a 500", async () => {
    const a = await createAccount();
    const src = await signedSource(a, "shopify", "shpss_0123456789abcdef");
    const payload = JSON.stringify({ id: 1 });
    await expectError(await post(src, payload, { "x-shopify-topic": "orders/create", "x-shopify-hmac-sha256": "@@not base64@@" }), 401, "unauthorized");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("a generic source with a signing secret verifies Standard Webhooks signatures", async () => {
    const a = await createAccount();
    const secret = whsec();
    const src = await signedSource(a, "generic", secret);
    const payload = JSON.stringify({ type: "thing.happened" });
    const id = rand("msg");
    const ts = nowSec();
    const good = { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": new Webhook(secret).sign(id, new Date(ts * 1000), payload) };
    await expectError(await post(src, payload), 401, "unauthorized");
    await expectError(await post(src, payload + " ", good), 401, "unauthorized");
    expect(await rowsFor(src.id)).toEqual([]);
    const eventId = await expectAccepted(await post(src, payload, good));
    expect((await rowsFor(src.id)).map((r) => [r.id, r.type])).toEqual([[eventId, "thing.happened"]]);
  });

  it("verifies the signature over the exact bytes: a body with a byte-order mark and non-ASCII text", async () => {
    const a = await createAccount();
    const secret = rand("whsec");
    const src = await signedSource(a, "stripe", secret);
    const id = rand("evt");
    const payload = `\uFEFF${JSON.stringify({ id, type: "customer.created", data: { name: "Zoë 🚀 日本" } })}`;
    const sig = await stripe.webhooks.generateTestHeaderStringAsync({ payload, secret });
    const eventId = await expectAccepted(await post(src, payload, { "stripe-signature": sig }));
    const rows = await rowsFor(src.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.id).toBe(eventId);
    expect(new TextEncoder().encode(rows[0]!.payload)).toEqual(new TextEncoder().encode(payload));
    expect(rows[0]!.payload.charCodeAt(0)).toBe(0xfeff);
    // The type and the delivery id are still read from the JSON after the BOM.
    expect(rows[0]!.type).toBe("customer.created");
    expect(rows[0]!.dedupe_key).toBe(id);
  });
});

describe("generic sources", () => {
  const typeCases: { name: string; raw: string; headers?: Record<string, string>; type: string }[] = [
    { name: "body.type", raw: JSON.stringify({ type: "order.paid", event: "ignored" }), headers: { "x-event-type": "ignored" }, type: "order.paid" },
    { name: "body.event when no type", raw: JSON.stringify({ event: "order.shipped" }), headers: { "x-event-type": "ignored" }, type: "order.shipped" },
    { name: "body.event when type is not a string", raw: JSON.stringify({ type: 42, event: "order.refunded" }), type: "order.refunded" },
    { name: "the x-event-type header when the body has neither", raw: JSON.stringify({ data: 1 }), headers: { "x-event-type": "order.cancelled" }, type: "order.cancelled" },
    { name: "unknown when there is nothing", raw: JSON.stringify({ data: 1 }), type: "unknown" },
    { name: "unknown for a JSON array", raw: JSON.stringify([{ type: "nope" }]), type: "unknown" },
    { name: "unknown for an empty body", raw: "", type: "unknown" },
  ];
  for (const t of typeCases) {
    it(`types the event by ${t.name}`, async () => {
      const a = await createAccount();
      const src = await createSource(a, { name: "generic" });
      const eventId = await expectAccepted(await post(src, t.raw, { "content-type": "application/json", ...t.headers }));
      const rows = await rowsFor(src.id);
      expect(rows.map((r) => [r.id, r.type, r.payload])).toEqual([[eventId, t.type, t.raw]]);
    });
  }

  it("cuts an event type at 255 characters", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "generic" });
    const eventId = await expectAccepted(await post(src, JSON.stringify({ type: "t".repeat(300) })));
    expect((await rowsFor(src.id)).map((r) => [r.id, r.type])).toEqual([[eventId, "t".repeat(255)]]);
  });

  it("accepts a non-JSON body and stores it as is", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "generic", provider: "generic" });
    const raw = "hello=world&x=1\r\n  not json {\n\ttrailing spaces   ";
    const eventId = await expectAccepted(await post(src, raw, { "content-type": "text/plain", "x-event-type": "form.submitted" }));
    const rows = await rowsFor(src.id);
    expect(rows.map((r) => [r.id, r.type, r.payload])).toEqual([[eventId, "form.submitted", raw]]);
    const plain = await expectAccepted(await post(src, "just text", { "content-type": "text/plain" }));
    const row = (await rowsFor(src.id)).find((r) => r.id === plain);
    expect([row?.type, row?.payload]).toEqual(["unknown", "just text"]);
  });

  it("keeps the request headers except credentials and signatures", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "generic" });
    const eventId = await expectAccepted(
      await post(src, "{}", {
        "content-type": "application/json",
        "user-agent": "Provider/1.0",
        "x-custom": "kept",
        authorization: "Bearer secret-token",
        cookie: "session=abc",
        "x-api-key": "k",
        "webhook-signature": "v1,abc",
      }),
    );
    const kept = (await rowsFor(src.id)).find((r) => r.id === eventId)!.headers;
    expect(kept["x-custom"]).toBe("kept");
    expect(kept["user-agent"]).toBe("Provider/1.0");
    for (const h of ["authorization", "cookie", "x-api-key", "webhook-signature"]) expect(kept).not.toHaveProperty(h);
  });
});

// ---- duplicates ----

interface DedupeCase {
  provider: Provider;
  secret?: string;
  /** Its scheme signs only the body, so a signed source dedupes on the body's hash (the delivery id header is not signed). */
  signedBody?: boolean;
  /** Headers and body of delivery `deliveryId`, signed with `secret` when there is one. */
  request(deliveryId: string, secret: string | undefined): Promise<{ raw: string; headers: Record<string, string> }>;
}

const dedupeCases: DedupeCase[] = [
  {
    provider: "stripe",
    secret: rand("whsec"),
    async request(id, secret) {
      const raw = JSON.stringify({ id, type: "invoice.paid" });
      return { raw, headers: { "stripe-signature": await stripe.webhooks.generateTestHeaderStringAsync({ payload: raw, secret: secret! }) } };
    },
  },
  {
    provider: "github",
    secret: "gh-dedupe-secret-123",
    signedBody: true,
    async request(id, secret) {
      // GitHub's bodies differ from delivery to delivery (a redelivery resends the same one).
      const raw = JSON.stringify({ action: "created", comment: { id: 1, node_id: id } });
      return { raw, headers: { "x-github-event": "issue_comment", "x-github-delivery": id, "x-hub-signature-256": await githubSign(secret!, raw) } };
    },
  },
  {
    provider: "shopify",
    secret: "shpss_dedupe_secret_123",
    signedBody: true,
    async request(id, secret) {
      const raw = JSON.stringify({ id: 1, total_price: "1.00", admin_graphql_api_id: id });
      return { raw, headers: { "x-shopify-topic": "orders/paid", "x-shopify-webhook-id": id, "x-shopify-hmac-sha256": await shopifyHmac(secret!, raw) } };
    },
  },
  {
    provider: "standard-webhooks",
    secret: whsec(),
    async request(id, secret) {
      const raw = JSON.stringify({ type: "user.updated" });
      const ts = nowSec();
      return { raw, headers: { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": new Webhook(secret!).sign(id, new Date(ts * 1000), raw) } };
    },
  },
  {
    provider: "generic",
    async request(id) {
      return { raw: JSON.stringify({ type: "order.paid" }), headers: { "content-type": "application/json", "idempotency-key": id } };
    },
  },
];

describe.each(dedupeCases)("duplicates from $provider", (d) => {
  it("the same delivery id twice: 202 then 200 with the same event id, one row, one forward", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "dedupe", provider: d.provider, ...(d.secret ? { signing_secret: d.secret } : {}) });
    const box = await mailbox();
    await createDestination(a, src.id, { url: box.url });
    const deliveryId = rand("dlv");

    const first = await d.request(deliveryId, d.secret);
    const eventId = await expectAccepted(await post(src, first.raw, first.headers));

    // The provider retries the same delivery (freshly signed, as providers do).
    const again = await d.request(deliveryId, d.secret);
    const res = await post(src, again.raw, again.headers);
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body.data.event_id).toBe(eventId);

    const rows = await rowsFor(src.id);
    expect(rows.map((r) => r.id)).toEqual([eventId]);
    expect(rows[0]!.dedupe_key).toBe(d.signedBody ? `sha256:${await sha256Hex(first.raw)}` : deliveryId);

    // A different delivery id is a new event.
    const other = await d.request(rand("dlv"), d.secret);
    const otherId = await expectAccepted(await post(src, other.raw, other.headers));
    expect(otherId).not.toBe(eventId);

    const forwardsOf = async (id: string) => (await box.requests()).filter((r) => r.headers["webhook-id"] === id);
    await eventually(async () => ((await forwardsOf(eventId)).length > 0 ? true : undefined), 15_000, "the first forward");
    // Long enough for a second fan-out, had there been one, to reach the mailbox.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await forwardsOf(eventId)).toHaveLength(1);
    await eventually(async () => ((await forwardsOf(otherId)).length === 1 ? true : undefined), 15_000, "the other forward");
  });
});

describe("what a signed source dedupes on (security review)", () => {
  it("a generic source with a Standard Webhooks secret dedupes on the signed webhook-id, not the unsigned Idempotency-Key", async () => {
    const a = await createAccount();
    const secret = whsec();
    const src = await signedSource(a, "generic", secret);
    const raw = JSON.stringify({ type: "order.paid" });
    const id = rand("msg");
    const ts = nowSec();
    const signed = { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": new Webhook(secret).sign(id, new Date(ts * 1000), raw) };
    const first = await expectAccepted(await post(src, raw, { ...signed, "idempotency-key": "one" }));
    // The same signed request, replayed with another Idempotency-Key: still the same event.
    const again = await post(src, raw, { ...signed, "idempotency-key": "two" });
    expect(again.status).toBe(200);
    expect((await json(again)).data.event_id).toBe(first);
    expect((await rowsFor(src.id)).map((r) => r.dedupe_key)).toEqual([id]);
  });

  it("a captured GitHub delivery replayed with a fresh X-GitHub-Delivery is a duplicate: GitHub signs the body only", async () => {
    const a = await createAccount();
    const secret = "gh-secret-of-16-chars";
    const src = await signedSource(a, "github", secret);
    const raw = JSON.stringify({ action: "opened", issue: { id: 7 } });
    const headers = { "x-github-event": "issues", "x-hub-signature-256": await githubSign(secret, raw) };
    const first = await expectAccepted(await post(src, raw, { ...headers, "x-github-delivery": crypto.randomUUID() }));
    const replay = await post(src, raw, { ...headers, "x-github-delivery": crypto.randomUUID() });
    expect(replay.status).toBe(200);
    expect((await json(replay)).data.event_id).toBe(first);
  });
});

describe("signing secrets that fit their provider (security review)", () => {
  it.each([
    ["stripe", "whsec_", "whsec_abcdefghijklmnopqrstuvwx"],
    ["stripe", "sk_test_abcdefghijklmnopqrstuvwxyz", "whsec_0123456789abcdefghijklmn"],
    ["github", "s", "sixteen-chars-ok"],
    ["github", "fifteen-chars!!", "sixteen-chars-ok"],
    ["shopify", "short", "shpss_0123456789ab"],
    ["standard-webhooks", "whsec_", whsec()],
    ["standard-webhooks", `whsec_${btoa("x".repeat(23))}`, `whsec_${btoa("x".repeat(24))}`],
    ["generic", "whsec_", whsec()],
    ["generic", "not-a-whsec-secret-at-all", whsec()],
  ] as const)("%s: refuses %j with a 422 naming signing_secret, accepts %j", async (provider, bad, good) => {
    const a = await createAccount();
    const refused = await call("POST", "/api/v1/webhooks/sources", { key: a.key, body: { name: "x", provider, signing_secret: bad } });
    expect(refused.status).toBe(422);
    const body = await json(refused);
    expect(body.error.details.map((d: { field: string }) => d.field)).toEqual(["signing_secret"]);
    expect(body.error.details[0].code).toBe("invalid_signing_secret");
    expect(JSON.stringify(body)).not.toContain(bad.length > 6 ? bad : "\u0000");
    const ok = await call("POST", "/api/v1/webhooks/sources", { key: a.key, body: { name: "x", provider, signing_secret: good } });
    expect(ok.status).toBe(201);
  });

  it("PATCH: a new secret must fit the provider, and so must the current one when only the provider changes", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "x", provider: "github", signing_secret: "sixteen-chars-ok" });
    const path = `/api/v1/webhooks/sources/${src.id}`;
    expect((await call("PATCH", path, { key: a.key, body: { signing_secret: "whsec_" } })).status).toBe(422);
    // github → standard-webhooks with the GitHub secret kept: it cannot verify that scheme.
    const switched = await call("PATCH", path, { key: a.key, body: { provider: "standard-webhooks" } });
    expect(switched.status).toBe(422);
    expect((await json(switched)).error.details[0].field).toBe("signing_secret");
    // With a secret of the new scheme, or none: fine.
    expect((await call("PATCH", path, { key: a.key, body: { provider: "standard-webhooks", signing_secret: whsec() } })).status).toBe(200);
    expect((await call("PATCH", path, { key: a.key, body: { provider: "stripe", signing_secret: null } })).status).toBe(200);
    // Nothing was left half-changed by the refusals: the last PATCH holds.
    expect((await json(await call("GET", path, { key: a.key }))).data).toMatchObject({ provider: "stripe", verifies_signatures: false });
  });
});

describe("duplicates and signatures", () => {
  it("a known delivery id with a bad signature is still a 401 (the event id is not disclosed)", async () => {
    const a = await createAccount();
    const secret = "gh-secret-of-16-chars";
    const src = await signedSource(a, "github", secret);
    const raw = JSON.stringify({ action: "opened" });
    const deliveryId = crypto.randomUUID();
    const headers = { "x-github-event": "issues", "x-github-delivery": deliveryId, "x-hub-signature-256": await githubSign(secret, raw) };
    await expectAccepted(await post(src, raw, headers));
    await expectError(await post(src, raw, { ...headers, "x-hub-signature-256": await githubSign("wrong", raw) }), 401, "unauthorized");
    expect(await rowsFor(src.id)).toHaveLength(1);
  });

  it("the same delivery id sent twice at once: one 202, one 200, both with the same event id, one row", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "race" });
    const key = rand("idem");
    const [r1, r2] = await Promise.all([post(src, "{}", { "idempotency-key": key }), post(src, "{}", { "idempotency-key": key })]);
    expect([r1.status, r2.status].sort()).toEqual([200, 202]);
    const [b1, b2] = [await json(r1), await json(r2)];
    expect(b1.data.event_id).toBe(b2.data.event_id);
    expect((await rowsFor(src.id)).map((r) => r.id)).toEqual([b1.data.event_id]);
  });

  it("the same delivery id on two sources is two events", async () => {
    const a = await createAccount();
    const s1 = await createSource(a, { name: "one" });
    const s2 = await createSource(a, { name: "two" });
    const key = rand("idem");
    const e1 = await expectAccepted(await post(s1, "{}", { "idempotency-key": key }));
    const e2 = await expectAccepted(await post(s2, "{}", { "idempotency-key": key }));
    expect(e1).not.toBe(e2);
  });
});

// ---- limits and errors ----

/** Sends a request built here (e.g. with a streamed body) through the Worker. */
async function send(req: Request): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await worker.fetch(req as Request<unknown, IncomingRequestCfProperties>, env as unknown as Env, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

function streamOf(total: number, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(chunk, total - sent);
      sent += n;
      controller.enqueue(new Uint8Array(n).fill(0x61));
    },
  });
}

describe("limits and errors", () => {
  it("a body of 1 MiB + 1 byte is a 413 payload_too_large, nothing stored", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "big" });
    const res = await post(src, "a".repeat(MiB + 1), { "content-type": "text/plain" });
    await expectError(res, 413, "payload_too_large");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("the limit follows MAX_BODY_BYTES", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "small" });
    const small = envWith({ MAX_BODY_BYTES: "2048" });
    await expectError(await call("POST", pathOf(src), { raw: "a".repeat(2049), env: small }), 413, "payload_too_large");
    expect(await rowsFor(src.id)).toEqual([]);
    await expectAccepted(await call("POST", pathOf(src), { raw: "a".repeat(2048), env: small }));
  });

  it("a declared content-length over 1 MiB is a 413 too", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "big" });
    const req = new Request(`${ORIGIN}${pathOf(src)}`, {
      method: "POST",
      headers: { "content-length": String(MiB + 1) },
      body: new Uint8Array(MiB + 1).fill(0x62),
    });
    await expectError(await send(req), 413, "payload_too_large");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("a streamed body (no content-length) over 1 MiB is a 413, nothing stored", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "streamed" });
    const req = new Request(`${ORIGIN}${pathOf(src)}`, { method: "POST", body: streamOf(MiB + 1), duplex: "half" } as RequestInit);
    expect(req.headers.get("content-length")).toBeNull();
    await expectError(await send(req), 413, "payload_too_large");
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("a streamed body that never ends is refused once past the limit, not read whole", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "endless" });
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled += 64 * 1024;
        controller.enqueue(new Uint8Array(64 * 1024).fill(0x61));
      },
    });
    const req = new Request(`${ORIGIN}${pathOf(src)}`, { method: "POST", body: endless, duplex: "half" } as RequestInit);
    await expectError(await send(req), 413, "payload_too_large");
    // Read up to the limit and one chunk past it (and what the stream queued meanwhile): never more.
    expect(pulled).toBeGreaterThan(MiB);
    expect(pulled).toBeLessThanOrEqual(MiB + 4 * 64 * 1024);
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("a streamed body of exactly 1 MiB is accepted", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "streamed" });
    const req = new Request(`${ORIGIN}${pathOf(src)}`, { method: "POST", body: streamOf(MiB, 100_000), duplex: "half" } as RequestInit);
    const eventId = await expectAccepted(await send(req));
    const rows = await rowsFor(src.id);
    expect(rows.map((r) => [r.id, new TextEncoder().encode(r.payload).length])).toEqual([[eventId, MiB]]);
  });

  it("a body of exactly 1 MiB is accepted and stored whole", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "edge" });
    const raw = JSON.stringify({ type: "big.one", pad: "" }).replace('""', `"${"x".repeat(MiB - JSON.stringify({ type: "big.one", pad: "" }).length)}"`);
    expect(new TextEncoder().encode(raw).length).toBe(MiB);
    const eventId = await expectAccepted(await post(src, raw, { "content-type": "application/json" }));
    const rows = await rowsFor(src.id);
    expect(rows.map((r) => [r.id, r.type, r.payload === raw])).toEqual([[eventId, "big.one", true]]);
  });

  it("an unknown, well-formed ingest key is a 404", async () => {
    const key = `src_${"A".repeat(16)}${"b-_9".repeat(4)}`;
    expect(key).toMatch(/^src_[A-Za-z0-9_-]{32}$/);
    await expectError(await call("POST", `/in/${key}`, { raw: "{}" }), 404, "not_found");
  });

  it("a malformed ingest key is a 404", async () => {
    for (const path of ["/in/abc", "/in/src_short", `/in/src_${"a".repeat(33)}`, `/in/src_${"a".repeat(31)}!`, "/in/"]) {
      await expectError(await call("POST", path, { raw: "{}" }), 404, "not_found");
    }
  });

  it("a source id is not an ingest key", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "x" });
    expect(pathOf(src)).not.toContain(src.id);
    await expectError(await call("POST", `/in/${src.id}`, { raw: "{}" }), 404, "not_found");
  });

  it("GET, PUT, DELETE and PATCH on an ingest URL are a 405 with Allow: POST", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "x" });
    for (const method of ["GET", "PUT", "DELETE", "PATCH"]) {
      const res = await call(method, pathOf(src), method === "GET" || method === "DELETE" ? {} : { raw: "{}" });
      await expectError(res, 405, "method_not_allowed");
      expect(res.headers.get("allow") ?? "").toMatch(/\bPOST\b/);
    }
    expect(await rowsFor(src.id)).toEqual([]);
  });

  it("an ingest URL of a deleted source is a 404", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "gone" });
    const del = await call("DELETE", `/api/v1/webhooks/sources/${src.id}`, { key: a.key });
    expect(del.status).toBe(204);
    await expectError(await post(src, "{}"), 404, "not_found");
  });

  it("a source deleted elsewhere (another isolate's cache) stops taking events within SOURCE_CACHE_TTL_MS", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "cached" });
    expect((await post(src, "{}")).status).toBe(202);
    // Deleted behind this isolate's back, as another isolate's DELETE would be.
    const gone = Date.now();
    await env.DB.prepare("DELETE FROM sources WHERE id = ?").bind(src.id).run();
    // Within the stated staleness it is still served from the cache (its partition exists)...
    expect((await post(src, "{}")).status).toBe(202);
    // ...and never after it.
    await new Promise((r) => setTimeout(r, Math.max(0, gone + SOURCE_CACHE_TTL_MS + 50 - Date.now())));
    await expectError(await post(src, "{}"), 404, "not_found");
  });

  it("requests that arrive together on cold caches are each their own request: all 202, all stored", async () => {
    // SELF.fetch makes each call a request of its own, as the network does; the source
    // and route caches must not hand one request's pending I/O to another.
    const a = await createAccount();
    const src = await createSource(a, { name: "cold" });
    const bodies = Array.from({ length: 32 }, (_, i) => JSON.stringify({ i }));
    const res = await Promise.all(bodies.map((raw) => SELF.fetch(src.ingest_url, { method: "POST", body: raw, headers: { "content-type": "application/json" } })));
    expect(res.map((r) => r.status)).toEqual(bodies.map(() => 202));
    const ids = await Promise.all(res.map(async (r) => ((await r.json()) as { data: { event_id: string } }).data.event_id));
    const rows = await rowsFor(src.id);
    expect(new Set(rows.map((r) => r.id))).toEqual(new Set(ids));
  });

  it("a new signing secret applies at once on the isolate that set it", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "rotating", provider: "github" });
    expect((await post(src, "{}", { "x-github-event": "ping" })).status).toBe(202);
    const patch = await call("PATCH", `/api/v1/webhooks/sources/${src.id}`, { key: a.key, body: { signing_secret: "a-new-github-secret" } });
    expect(patch.status).toBe(200);
    await expectError(await post(src, "{}", { "x-github-event": "ping" }), 401, "unauthorized");
  });

  it("needs no API key, and an Authorization header is neither required nor stored", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "x" });
    const eventId = await expectAccepted(await call("POST", pathOf(src), { raw: "{}", key: a.key }));
    const row = (await rowsFor(src.id)).find((r) => r.id === eventId)!;
    expect(row.headers).not.toContain(a.key);
  });
});

describe("ingest: encoding", () => {
  it("refuses a body that is not valid UTF-8 with 415 and stores nothing, rather than altering it", async () => {
    const { env } = await import("cloudflare:workers");
    const { createAccount, createSource, call } = await import("../helpers/api");
    const account = await createAccount();
    const src = await createSource(account, { name: "latin1" });
    const bytes = new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe9, 0x22, 0x7d]); // {"a":"<0xE9>"}
    const res = await call("POST", new URL(src.ingest_url).pathname, { raw: new TextDecoder("latin1").decode(bytes), headers: { "content-type": "application/json" } });
    // The helper sends text; send the raw bytes directly through the Worker too.
    const worker = (await import("../../src/index")).default;
    const { createExecutionContext } = await import("cloudflare:test");
    const raw = await worker.fetch(
      new Request(src.ingest_url, { method: "POST", body: bytes, headers: { "content-type": "application/json" } }) as Request<unknown, IncomingRequestCfProperties>,
      env as never,
      createExecutionContext(),
    );
    expect(raw.status).toBe(415);
    expect(((await raw.json()) as { error: { code: string } }).error.code).toBe("unsupported_media_type");
    // Text that is valid UTF-8 (é re-encoded by the helper) is accepted.
    expect(res.status).toBe(202);
    const rows = await rowsFor(src.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.payload).toBe('{"a":"é"}');
  });
});
