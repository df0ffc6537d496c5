/**
 * Signing of what Krafter sends, the Standard Webhooks way: `v1,` + base64 of
 * HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the
 * base64-decoded part of a `whsec_` secret. Used by the test endpoint and by every
 * delivery; verifiable by the `standardwebhooks` and `svix` libraries unchanged.
 */
import { base64ToBytes, bytesToBase64, randomBytes } from "./encoding";

const SECRET_PREFIX = "whsec_";
const MIN_SECRET_BYTES = 24;
const MAX_SECRET_BYTES = 64;

/** The key bytes of a `whsec_` secret, or null when it is not one of 24 to 64 bytes. */
export function secretKeyBytes(secret: string): Uint8Array | null {
  if (!secret.startsWith(SECRET_PREFIX)) return null;
  try {
    const bytes = base64ToBytes(secret.slice(SECRET_PREFIX.length));
    return bytes.length >= MIN_SECRET_BYTES && bytes.length <= MAX_SECRET_BYTES ? bytes : null;
  } catch {
    return null;
  }
}

export function generateSecret(): string {
  return SECRET_PREFIX + bytesToBase64(randomBytes(32));
}

/** Imported HMAC keys, settled only (a pending import is never shared between requests). */
const keyCache = new Map<string, CryptoKey>();

async function hmacKey(secret: string): Promise<CryptoKey> {
  const hit = keyCache.get(secret);
  if (hit) return hit;
  const bytes = secretKeyBytes(secret);
  if (!bytes) throw new TypeError("not a whsec_ secret");
  const key = await crypto.subtle.importKey("raw", bytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  // Bounded: a Worker isolate signs for a limited set of destinations at a time.
  if (keyCache.size >= 1000) keyCache.clear();
  keyCache.set(secret, key);
  return key;
}

/** One `v1,<base64>` signature. */
export async function signPayload(secret: string, msgId: string, timestamp: number, body: string): Promise<string> {
  const mac = await crypto.subtle.sign(
    "HMAC",
    await hmacKey(secret),
    new TextEncoder().encode(`${msgId}.${timestamp}.${body}`),
  );
  return `v1,${bytesToBase64(new Uint8Array(mac))}`;
}

interface SignedHeaders {
  "webhook-id": string;
  "webhook-timestamp": string;
  "webhook-signature": string;
}

/**
 * The three Standard Webhooks headers. With more than one secret (a rotation in its
 * grace period) the signatures are space-separated, newest first.
 */
export async function signedHeaders(
  secrets: string[],
  msgId: string,
  timestampSeconds: number,
  body: string,
): Promise<SignedHeaders> {
  const sigs = await Promise.all(secrets.map((s) => signPayload(s, msgId, timestampSeconds, body)));
  return {
    "webhook-id": msgId,
    "webhook-timestamp": String(timestampSeconds),
    "webhook-signature": sigs.join(" "),
  };
}
