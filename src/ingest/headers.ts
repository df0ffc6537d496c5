/**
 * Which request headers an event keeps, for the event log: everything but credentials,
 * signatures and the platform's own, at most 64 headers, names cut at 256 characters and
 * values at 1 KiB (so an event's row stays within config.ts MAX_EVENT_BODY_BYTES' margin).
 */
const DROPPED = new Set([
  "authorization",
  "cookie",
  "proxy-authorization",
  "stripe-signature",
  "x-hub-signature",
  "x-hub-signature-256",
  "x-shopify-hmac-sha256",
  "webhook-signature",
  "x-webhook-signature",
  "x-signature",
  "x-api-key",
]);

/**
 * Any header whose name speaks of a credential is dropped, whatever the provider calls it
 * (api-key, apikey, x-auth, authentication, private-key, x-jwt, x-session, x-hmac,
 * x-passcode, x-amz-credential, …): a pattern, not a list.
 */
const CREDENTIAL = /key|token|secret|passw|passcode|auth|session|signature|sig\b|credential|cookie|jwt|hmac|bearer/i;

export function keptHeaders(headers: Headers): Record<string, string> {
  const kept: Record<string, string> = {};
  let n = 0;
  for (const [name, value] of headers) {
    if (DROPPED.has(name) || name.startsWith("cf-") || name.startsWith("x-forwarded-") || name === "x-real-ip") continue;
    if (CREDENTIAL.test(name)) continue;
    kept[name.slice(0, 256)] = value.slice(0, 1024);
    if (++n >= 64) break;
  }
  return kept;
}
