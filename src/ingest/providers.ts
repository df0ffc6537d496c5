/**
 * Provider adapters: how each provider signs its requests, names its events and
 * identifies a delivery (for de-duplication). Verification is constant-time and,
 * where the provider signs a timestamp, refuses signatures older or newer than 300 s.
 */
import type { Provider } from "../db/schema";
import { base64ToBytes, bytesToBase64, hexToBytes, timingSafeEqual } from "../security/encoding";

export const SIGNATURE_TOLERANCE_SECONDS = 300;
export const MAX_TYPE_LENGTH = 255;

export interface IncomingRequest {
  headers: Headers;
  /** The raw body, exactly as received. */
  body: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
  nowSeconds: number;
}

export type Verification = { ok: true } | { ok: false; reason: string };

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
  let key: Uint8Array;
  try {
    key = base64ToBytes(secret.startsWith("whsec_") ? secret.slice(6) : secret);
  } catch {
    key = enc.encode(secret);
  }
  const expected = bytesToBase64(await hmac(key, `${id}.${ts}.${req.body}`));
  const ok = header
    .split(" ")
    .map((s) => s.split(",", 2))
    .some(([v, sig]) => v === "v1" && sig !== undefined && timingSafeEqual(enc.encode(sig), enc.encode(expected)));
  return ok ? { ok: true } : { ok: false, reason: "webhook signature mismatch" };
}

interface Adapter {
  verify(secret: string, req: IncomingRequest): Promise<Verification>;
  eventType(req: IncomingRequest): string | undefined;
  /** The provider's id for this delivery; a second request with the same one is a duplicate. */
  deliveryId(req: IncomingRequest): string | undefined;
}

const generic: Adapter = {
  // A generic source with a secret expects Standard Webhooks signatures: the one open scheme.
  verify: verifyStandard,
  eventType: (r) => field(r.json, "type") ?? field(r.json, "event") ?? r.headers.get("x-event-type") ?? undefined,
  deliveryId: (r) => r.headers.get("idempotency-key") ?? undefined,
};

export const adapters: Record<Provider, Adapter> = {
  generic,
  stripe: {
    verify: verifyStripe,
    eventType: (r) => field(r.json, "type"),
    deliveryId: (r) => field(r.json, "id"),
  },
  github: {
    verify: verifyGithub,
    eventType: (r) => {
      const event = r.headers.get("x-github-event");
      if (!event) return undefined;
      const action = field(r.json, "action");
      return action ? `${event}.${action}` : event;
    },
    deliveryId: (r) => r.headers.get("x-github-delivery") ?? undefined,
  },
  shopify: {
    verify: verifyShopify,
    eventType: (r) => r.headers.get("x-shopify-topic") ?? undefined,
    deliveryId: (r) => r.headers.get("x-shopify-webhook-id") ?? undefined,
  },
  "standard-webhooks": {
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
export function cutAtCodePoint(text: string, max: number): string {
  if (text.length <= max) return text;
  const high = text.charCodeAt(max - 1);
  return text.slice(0, high >= 0xd800 && high <= 0xdbff ? max - 1 : max);
}

export function deliveryIdOf(provider: Provider, req: IncomingRequest): string | undefined {
  const id = adapters[provider].deliveryId(req);
  return id && id.length <= 500 ? id : undefined;
}
