/**
 * `POST /in/:ingest_key`: where providers send events. No API key: the unguessable
 * ingest key is the capability. The request is answered as soon as the event is
 * durable in its partition, which fans it out itself (its outbox, drained right after
 * and retried by its alarm): forwarding never happens here.
 *
 * The hot path is: the source from the isolate's cache (ingest/sources.ts), the
 * signature check (in memory), one call to the partition (dedupe and insert together).
 */
import { Hono } from "hono";
import { describeRoute, resolver } from "hono-openapi";
import { z } from "zod";
import { ErrorEnvelope } from "../http/openapi";
import type { AppEnv } from "../http/context";
import { ApiError, notFound } from "../http/errors";
import { log } from "../log";
import { secretContext } from "../security/secrets";
import { adapters, deliveryIdOf, eventTypeOf, type IncomingRequest } from "./providers";
import { keptHeaders } from "./headers";
import { ingestRouted } from "./router";
import { forgetIngestSource, sourceForIngest } from "./sources";
import { countStored, overStoredQuota, storedSize } from "./stored-bytes";
import { dayOf } from "../store/ids";

const INGEST_KEY = /^src_[A-Za-z0-9_-]{32}$/;

async function readBounded(req: Request, limit: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  // A declared length within the limit: HTTP framing holds the body to it, so it is read
  // in one step. Without one (chunked), it is counted as it streams in.
  if (declared !== null && /^\d+$/.test(declared)) {
    const whole = new Uint8Array(await req.arrayBuffer());
    if (whole.length > limit) throw tooLarge(limit);
    return whole;
  }
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      reader.cancel().catch(() => undefined);
      throw tooLarge(limit);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

const tooLarge = (limit: number) =>
  new ApiError("payload_too_large", `The event body must be at most ${limit} bytes.`);

const Accepted = z.object({ data: z.object({ event_id: z.string(), duplicate: z.boolean().optional() }) });

const ingestDoc = describeRoute({
  tags: ["Ingest"],
  summary: "Receive an event from a provider",
  description:
    "No API key: the ingest key in the URL is the credential. With a signing secret on the source, the provider's signature is verified (Stripe, GitHub, Shopify, Standard Webhooks). Answers 202 once the event is stored and its forwarding guaranteed; a repeated provider delivery id answers 200 with the first event's id.",
  requestBody: { content: { "application/json": { schema: { description: "The provider's payload, as it sends it (JSON or text, UTF-8, at most MAX_BODY_BYTES)." } } } },
  responses: {
    202: { description: "Stored; forwarding is guaranteed.", content: { "application/json": { schema: resolver(Accepted) } } },
    200: { description: "A duplicate of an event already received.", content: { "application/json": { schema: resolver(Accepted) } } },
    401: { description: "Bad or missing provider signature: nothing stored.", content: { "application/json": { schema: resolver(ErrorEnvelope) } } },
    404: { description: "No source with this ingest key.", content: { "application/json": { schema: resolver(ErrorEnvelope) } } },
    413: { description: "The body is too large: nothing stored.", content: { "application/json": { schema: resolver(ErrorEnvelope) } } },
    415: { description: "The body is not UTF-8: nothing stored.", content: { "application/json": { schema: resolver(ErrorEnvelope) } } },
    429: { description: "Over the source's INGEST_RATE_LIMIT, or the account's MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: nothing stored; Retry-After says when to send it again.", content: { "application/json": { schema: resolver(ErrorEnvelope) } } },
  },
} as Parameters<typeof describeRoute>[0]);

export const ingestRoutes = new Hono<AppEnv>().post("/:ingest_key", ingestDoc, async (c) => {
  const s = c.var.services;
  const key = c.req.param("ingest_key");
  if (!INGEST_KEY.test(key)) throw notFound("source");
  const source = await sourceForIngest(s, key);
  // A source without an adapter (the alerts source, which Krafter feeds itself) takes no
  // requests. Its key never has the shape of one anyway (db/sources.ts): this is the second lock.
  if (!source || !Object.hasOwn(adapters, source.provider)) throw notFound("source");

  const bytes = await readBounded(c.req.raw, s.config.maxBodyBytes);
  // ignoreBOM: keep a leading byte-order mark. The default decoder drops it, which
  // stored a body that was not the one received and broke every signature over it.
  // fatal: a body that is not UTF-8 is refused rather than stored altered (payloads are text).
  let body: string;
  try {
    body = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new ApiError("unsupported_media_type", "The event body must be UTF-8 text (JSON or otherwise).");
  }
  // Parsed once, for the type and the delivery id; the body itself is stored and
  // forwarded as received. JSON.parse refuses a leading BOM: such a body is read without
  // it, but forwarded as text, never spliced in as JSON.
  let json: unknown;
  let payloadIsJson = false;
  try {
    json = JSON.parse(body);
    payloadIsJson = true;
  } catch {
    try {
      json = body.charCodeAt(0) === 0xfeff ? JSON.parse(body.slice(1)) : undefined;
    } catch {
      json = undefined;
    }
  }
  const now = s.now();
  const incoming: IncomingRequest = { headers: c.req.raw.headers, body, json, nowSeconds: Math.floor(now / 1000) };

  if (source.secretCiphertext !== null) {
    const secret = await s.secrets.decrypt(source.secretCiphertext, secretContext.source(source.id));
    const verdict = await adapters[source.provider].verify(secret, incoming);
    if (!verdict.ok) {
      log("info", "ingest_signature_rejected", { source_id: source.id, reason: verdict.reason });
      throw new ApiError("unauthorized", `Signature verification failed: ${verdict.reason}.`);
    }
  }

  const dedupeKey = (await deliveryIdOf(source.provider, incoming, source.secretCiphertext !== null)) ?? null;
  const headers = keptHeaders(c.req.raw.headers);
  // The account's bytes of the day, as this isolate knows them (ingest/stored-bytes.ts): no call here.
  const size = storedSize(bytes, headers);
  const overQuota = overStoredQuota(s, source.accountId, size, now);
  if (overQuota) {
    c.header("retry-after", String(overQuota.retryAfterSeconds));
    throw new ApiError(
      "rate_limited",
      `This account stored the most MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY allows today (${s.config.maxStoredBytesPerAccountPerDay} bytes of events per UTC day): retry after ${overQuota.retryAfterSeconds} s, at midnight UTC. Nothing was stored.`,
    );
  }
  const event = {
    type: eventTypeOf(source.provider, incoming),
    dedupeKey,
    payload: body,
    payloadIsJson,
    headers,
    receivedAt: now,
  };
  const result = await ingestRouted(s, source.id, event);
  if (result.kind === "source_gone") {
    forgetIngestSource(key);
    throw notFound("source");
  }
  if (result.kind === "rate_limited") {
    c.header("retry-after", String(result.retryAfterSeconds));
    throw new ApiError("rate_limited", `This source takes at most ${s.config.ingestRateLimit} events per 10 seconds (INGEST_RATE_LIMIT): retry after ${result.retryAfterSeconds} s. Nothing was stored.`);
  }
  if (result.kind === "duplicate") {
    // Seen before: answer with the first event's id; no second fan-out.
    return c.json({ data: { event_id: result.eventId, duplicate: true } }, 200);
  }
  // The day it went to (a sealed day moves it to the next).
  countStored(s, c.executionCtx, source.accountId, dayOf(event.receivedAt), size);
  return c.json({ data: { event_id: result.eventId } }, 202);
});
