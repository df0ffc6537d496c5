/**
 * What `krafter listen` sends to the local URL: the same envelope and the same headers a
 * destination gets from the relay (src/delivery/envelope.ts, src/delivery/send.ts,
 * src/security/signing.ts), for plain Node 20+, which cannot import the Worker's
 * TypeScript. test/unit/listen-webhook.test.ts holds these to the Worker's own functions.
 */
import { createHmac, randomBytes } from "node:crypto";

export const SECRET_PREFIX = "whsec_";
/** The destinations' user agent (src/delivery/send.ts USER_AGENT). */
export const USER_AGENT = "Krafter-Webhooks/1.0 (+https://krafter.dev)";

/** A new listener secret: 32 random bytes, as a destination's. */
export function generateSecret() {
  return SECRET_PREFIX + randomBytes(32).toString("base64");
}

export function isSecret(s) {
  if (typeof s !== "string" || !s.startsWith(SECRET_PREFIX)) return false;
  const bytes = Buffer.from(s.slice(SECRET_PREFIX.length), "base64");
  return bytes.length >= 24 && bytes.length <= 64;
}

/**
 * `{"event": type, "data": payload, "source_id": id}` with the payload's JSON text spliced
 * in as received. `payloadJson` is the payload's JSON text as the events API returns it:
 * the raw JSON for a JSON payload, a JSON string for a text one, which is exactly what the
 * relay's envelope holds in either case.
 */
export function envelope(type, payloadJson, sourceId) {
  return `{"event":${JSON.stringify(type)},"data":${payloadJson},"source_id":${JSON.stringify(sourceId)}}`;
}

/**
 * The payload's JSON text inside `GET …/events/:event_id`'s body, byte for byte: the
 * relay writes `{"data":{…,"payload":<payload>}}` with the payload spliced in last
 * (src/http/events.ts), so what precedes it is the rest of `data` serialized again.
 * Should that ever not hold, the parsed payload serialized again (same value, perhaps
 * not the same bytes).
 */
export function payloadJsonOf(detailText) {
  const parsed = JSON.parse(detailText);
  const { payload, ...rest } = parsed.data;
  const prefix = `${JSON.stringify({ data: rest }).slice(0, -2)},"payload":`;
  if (detailText.startsWith(prefix) && detailText.endsWith("}}")) return detailText.slice(prefix.length, -2);
  return JSON.stringify(payload);
}

/** The Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed by the secret's bytes. */
export function sign(secret, id, timestampSeconds, body) {
  const key = Buffer.from(secret.slice(SECRET_PREFIX.length), "base64");
  return `v1,${createHmac("sha256", key).update(`${id}.${timestampSeconds}.${body}`, "utf8").digest("base64")}`;
}

/** The headers of one forward: those of a destination's first attempt. */
export function forwardHeaders(secret, eventId, body, nowMs = Date.now()) {
  const ts = Math.floor(nowMs / 1000);
  return {
    "content-type": "application/json",
    "user-agent": USER_AGENT,
    "krafter-attempt": "1",
    "webhook-id": eventId,
    "webhook-timestamp": String(ts),
    "webhook-signature": sign(secret, eventId, ts, body),
  };
}
