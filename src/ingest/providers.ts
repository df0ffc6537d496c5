/**
 * Provider adapters: how each provider signs its requests, names its events and
 * identifies a delivery (for de-duplication). Verification is constant-time and,
 * where the provider signs a timestamp, refuses signatures older or newer than 300 s.
 */
import { providers, type Provider } from "../db/schema";
import { base64ToBytes, bytesToBase64, hexToBytes, sha256Hex, timingSafeEqual } from "../security/encoding";
import { secretKeyBytes } from "../security/signing";

const SIGNATURE_TOLERANCE_SECONDS = 300;
const MAX_TYPE_LENGTH = 255;

/**
 * The alerts source's provider (src/alerts): Krafter itself feeds that source, so it has
 * no adapter, no ingest URL and no signing secret. The column is plain text in D1, so it
 * needs no migration; `Provider` stays the list of providers that send requests.
 */
export const ALERTS_PROVIDER = "krafter";
/** What a source's `provider` may be: a provider that sends requests, or krafter. */
export const sourceProviders = [...providers, ALERTS_PROVIDER] as const;
export type SourceProvider = (typeof sourceProviders)[number];

/** Whether requests may be sent to a source of this provider (the alerts source takes none). */
export function takesRequests(provider: SourceProvider): provider is Provider {
  return provider !== ALERTS_PROVIDER;
}

export interface IncomingRequest {
  headers: Headers;
  /** The raw body, exactly as received. */
  body: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
  nowSeconds: number;
}

type Verification = { ok: true } | { ok: false; reason: string };

const enc = new TextEncoder();

async function hmac(key: Uint8Array, message: string): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, enc.encode(message)));
}

const field = (json: unknown, key: string): string | undefined => {
  if (json && typeof json === "object" && !Array.isArray(json)) {
    const v = (json as Record<string, unknown>)[key];
    if (typeof v === "string" && v.length > 0) return v;
  }
  return undefined;
};

const withinTolerance = (ts: number, now: number) => Math.abs(now - ts) <= SIGNATURE_TOLERANCE_SECONDS;

/** Stripe: `Stripe-Signature: t=…,v1=<hex>[,v1=…]` over `{t}.{body}`, keyed by the secret string. */
async function verifyStripe(secret: string, req: IncomingRequest): Promise<Verification> {
  const header = req.headers.get("stripe-signature");
  if (!header) return { ok: false, reason: "missing Stripe-Signature header" };
  let t: number | undefined;
  const v1: Uint8Array[] = [];
  for (const part of header.split(",")) {
    const [k, v] = part.trim().split("=", 2);
    if (k === "t" && v && /^\d+$/.test(v)) t = Number(v);
    if (k === "v1" && v) {
      const bytes = hexToBytes(v);
      if (bytes) v1.push(bytes);
    }
  }
  if (t === undefined || v1.length === 0) return { ok: false, reason: "malformed Stripe-Signature header" };
  if (!withinTolerance(t, req.nowSeconds)) return { ok: false, reason: "Stripe-Signature timestamp outside the tolerance" };
  const expected = await hmac(enc.encode(secret), `${t}.${req.body}`);
  return v1.some((sig) => timingSafeEqual(sig, expected)) ? { ok: true } : { ok: false, reason: "Stripe signature mismatch" };
}

/** GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body. */
async function verifyGithub(secret: string, req: IncomingRequest): Promise<Verification> {
  const header = req.headers.get("x-hub-signature-256");
  if (!header) return { ok: false, reason: "missing X-Hub-Signature-256 header" };
  const sig = header.startsWith("sha256=") ? hexToBytes(header.slice(7)) : null;
  if (!sig) return { ok: false, reason: "malformed X-Hub-Signature-256 header" };
  const expected = await hmac(enc.encode(secret), req.body);
  return timingSafeEqual(sig, expected) ? { ok: true } : { ok: false, reason: "GitHub signature mismatch" };
}

/** Shopify: `X-Shopify-Hmac-Sha256: <base64>` over the body. */
async function verifyShopify(secret: string, req: IncomingRequest): Promise<Verification> {
  const header = req.headers.get("x-shopify-hmac-sha256");
  if (!header) return { ok: false, reason: "missing X-Shopify-Hmac-Sha256 header" };
  let sig: Uint8Array;
  try {
    sig = base64ToBytes(header.trim());
  } catch {
    return { ok: false, reason: "malformed X-Shopify-Hmac-Sha256 header" };
  }
  const expected = await hmac(enc.encode(secret), req.body);
  return timingSafeEqual(sig, expected) ? { ok: true } : { ok: false, reason: "Shopify signature mismatch" };
}

/** Standard Webhooks: `webhook-signature: v1,<base64> …` over `{id}.{timestamp}.{body}`, keyed by the whsec_ bytes. */
async function verifyStandard(secret: string, req: IncomingRequest): Promise<Verification> {
  const id = req.headers.get("webhook-id");
  const ts = req.headers.get("webhook-timestamp");
  const header = req.headers.get("webhook-signature");
  if (!id || !ts || !header) return { ok: false, reason: "missing webhook-id, webhook-timestamp or webhook-signature header" };
  if (!/^\d+$/.test(ts)) return { ok: false, reason: "malformed webhook-timestamp header" };
  if (!withinTolerance(Number(ts), req.nowSeconds)) return { ok: false, reason: "webhook-timestamp outside the tolerance" };
  // Sources accept only valid Standard Webhooks secrets (invalidSecret), so this decodes.
  const key = secretKeyBytes(secret);
  if (!key) return { ok: false, reason: "the source's signing secret is not a Standard Webhooks secret" };
  const expected = bytesToBase64(await hmac(key, `${id}.${ts}.${req.body}`));
  const ok = header
    .split(" ")
    .map((s) => s.split(",", 2))
    .some(([v, sig]) => v === "v1" && sig !== undefined && timingSafeEqual(enc.encode(sig), enc.encode(expected)));
  return ok ? { ok: true } : { ok: false, reason: "webhook signature mismatch" };
}

interface Adapter {
  /** Why a signing secret cannot be this provider's, or null. */
  invalidSecret(secret: string): string | null;
  verify(secret: string, req: IncomingRequest): Promise<Verification>;
  eventType(req: IncomingRequest): string | undefined;
  /**
   * The provider's id for this delivery; a second request with the same one is a
   * duplicate. `signed`: the request's signature was verified, so prefer what it covers.
   */
  deliveryId(req: IncomingRequest, signed: boolean): string | undefined | Promise<string | undefined>;
}

/**
 * Secrets, per scheme. A Standard Webhooks secret is `whsec_` + base64 of 24 to 64 bytes
 * (the same rule as destinations'); Stripe's endpoint secrets are `whsec_` + at least
 * 24 URL-safe characters; GitHub's and Shopify's are shared strings, of at least 16
 * characters here (an empty or one-byte HMAC key verifies nothing worth the name).
 */
const MIN_SHARED_SECRET = 16;
const standardSecret = (secret: string) => (secretKeyBytes(secret) ? null : "must be whsec_ followed by the base64 of 24 to 64 bytes (a Standard Webhooks secret)");
const sharedSecret = (secret: string) =>
  secret.length < MIN_SHARED_SECRET ? `must be at least ${MIN_SHARED_SECRET} characters` : /[\s\u0000-\u001f]/.test(secret) ? "must not contain whitespace or control characters" : null;

const generic: Adapter = {
  // A generic source with a secret expects Standard Webhooks signatures: the one open scheme.
  invalidSecret: standardSecret,
  verify: verifyStandard,
  eventType: (r) => field(r.json, "type") ?? field(r.json, "event") ?? r.headers.get("x-event-type") ?? undefined,
  // With a secret, the signed webhook-id identifies the delivery; without one, Idempotency-Key.
  deliveryId: (r, signed) => (signed ? r.headers.get("webhook-id") : r.headers.get("idempotency-key")) ?? undefined,
};

/** GitHub and Shopify sign the body only: with a secret, the delivery is identified by what is signed. */
const signedBody = async (r: IncomingRequest) => `sha256:${await sha256Hex(r.body)}`;

export const adapters: Record<Provider, Adapter> = {
  generic,
  stripe: {
    invalidSecret: (secret) => (/^whsec_[A-Za-z0-9+/=_-]{24,}$/.test(secret) ? null : "must be Stripe's endpoint secret: whsec_ followed by at least 24 letters, digits or base64 characters"),
    verify: verifyStripe,
    eventType: (r) => field(r.json, "type"),
    deliveryId: (r) => field(r.json, "id"),
  },
  github: {
    invalidSecret: sharedSecret,
    verify: verifyGithub,
    eventType: (r) => {
      const event = r.headers.get("x-github-event");
      if (!event) return undefined;
      const action = field(r.json, "action");
      return action ? `${event}.${action}` : event;
    },
    deliveryId: (r, signed) => (signed ? signedBody(r) : (r.headers.get("x-github-delivery") ?? undefined)),
  },
  shopify: {
    invalidSecret: sharedSecret,
    verify: verifyShopify,
    eventType: (r) => r.headers.get("x-shopify-topic") ?? undefined,
    deliveryId: (r, signed) => (signed ? signedBody(r) : (r.headers.get("x-shopify-webhook-id") ?? undefined)),
  },
  "standard-webhooks": {
    invalidSecret: standardSecret,
    verify: verifyStandard,
    eventType: (r) => field(r.json, "type"),
    deliveryId: (r) => r.headers.get("webhook-id") ?? undefined,
  },
};

/** The event type to store: the provider's, else `unknown`, at most 255 characters. */
export function eventTypeOf(provider: Provider, req: IncomingRequest): string {
  const t = adapters[provider].eventType(req);
  return t && t.trim() !== "" ? cutAtCodePoint(t, MAX_TYPE_LENGTH) : "unknown";
}

/** At most `max` UTF-16 units, never half of a surrogate pair. */
function cutAtCodePoint(text: string, max: number): string {
  if (text.length <= max) return text;
  const high = text.charCodeAt(max - 1);
  return text.slice(0, high >= 0xd800 && high <= 0xdbff ? max - 1 : max);
}

export async function deliveryIdOf(provider: Provider, req: IncomingRequest, signed: boolean): Promise<string | undefined> {
  const id = await adapters[provider].deliveryId(req, signed);
  return id && id.length <= 500 ? id : undefined;
}

/** Why a signing secret cannot be the provider's, or null. */
export function invalidSigningSecret(provider: SourceProvider, secret: string): string | null {
  if (!takesRequests(provider)) return "no signing_secret applies: Krafter feeds this source itself and it takes no requests (send null or leave it out)";
  return adapters[provider].invalidSecret(secret);
}
