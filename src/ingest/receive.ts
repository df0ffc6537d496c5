/**
 * Receiving one provider request for a source: the body as text, the signature check
 * (in memory), the delivery id, the account's stored-bytes quota, then one call to the
 * partition (dedupe and insert together). Forwarding never happens here: the partition
 * fans the event out itself (its outbox, drained right after and retried by its alarm).
 *
 * Refusals are domain errors (src/errors.ts); the route (src/http/ingest.ts) finds the
 * source, bounds the body and shapes the answer.
 */
import { KrafterError, NotFoundError, RateLimitedError } from "../errors";
import { log } from "../log";
import { secretContext } from "../security/secrets";
import type { Services } from "../services";
import { dayOf } from "../store/ids";
import { keptHeaders } from "./headers";
import { adapters, deliveryIdOf, eventTypeOf, type IncomingRequest } from "./providers";
import { ingestRouted } from "./router";
import { forgetIngestSource, sourceForIngest, type IngestSource } from "./sources";
import { countStored, overStoredQuota, storedSize } from "./stored-bytes";

const INGEST_KEY = /^src_[A-Za-z0-9_-]{32}$/;

/** The source that takes requests at this ingest key (from the isolate's cache); NotFoundError otherwise. */
export async function receivingSource(s: Services, ingestKey: string): Promise<IngestSource> {
  if (!INGEST_KEY.test(ingestKey)) throw new NotFoundError("source");
  const source = await sourceForIngest(s, ingestKey);
  // A source without an adapter (the alerts source, which Krafter feeds itself) takes no
  // requests. Its key never has the shape of one anyway (db/sources.ts): this is the second lock.
  if (!source || !Object.hasOwn(adapters, source.provider)) throw new NotFoundError("source");
  return source;
}

type Received = { kind: "stored" | "duplicate"; eventId: string };

/** Stores one event received at `ingestKey` for `source`, or throws why not (nothing stored then). */
export async function receive(
  s: Services,
  ctx: Pick<ExecutionContext, "waitUntil">,
  ingestKey: string,
  source: IngestSource,
  bytes: Uint8Array,
  requestHeaders: Headers,
): Promise<Received> {
  // ignoreBOM: keep a leading byte-order mark. The default decoder drops it, which
  // stored a body that was not the one received and broke every signature over it.
  // fatal: a body that is not UTF-8 is refused rather than stored altered (payloads are text).
  let body: string;
  try {
    body = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new KrafterError("unsupported_media_type", "The event body must be UTF-8 text (JSON or otherwise).");
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
  const incoming: IncomingRequest = { headers: requestHeaders, body, json, nowSeconds: Math.floor(now / 1000) };

  if (source.secretCiphertext !== null) {
    const secret = await s.secrets.decrypt(source.secretCiphertext, secretContext.source(source.id));
    const verdict = await adapters[source.provider].verify(secret, incoming);
    if (!verdict.ok) {
      log("info", "ingest_signature_rejected", { source_id: source.id, reason: verdict.reason });
      throw new KrafterError("unauthorized", `Signature verification failed: ${verdict.reason}.`);
    }
  }

  const dedupeKey = (await deliveryIdOf(source.provider, incoming, source.secretCiphertext !== null)) ?? null;
  const headers = keptHeaders(requestHeaders);
  // The account's bytes of the day, as this isolate knows them (ingest/stored-bytes.ts): no call here.
  const size = storedSize(bytes, headers);
  const overQuota = overStoredQuota(s, source.accountId, size, now);
  if (overQuota) {
    throw new RateLimitedError(
      `This account stored the most MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY allows today (${s.config.maxStoredBytesPerAccountPerDay} bytes of events per UTC day): retry after ${overQuota.retryAfterSeconds} s, at midnight UTC. Nothing was stored.`,
      overQuota.retryAfterSeconds,
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
    forgetIngestSource(ingestKey);
    throw new NotFoundError("source");
  }
  if (result.kind === "rate_limited") {
    throw new RateLimitedError(
      `This source takes at most ${s.config.ingestRateLimit} events per 10 seconds (INGEST_RATE_LIMIT): retry after ${result.retryAfterSeconds} s. Nothing was stored.`,
      result.retryAfterSeconds,
    );
  }
  // A duplicate answers with the first event's id: no second fan-out, nothing counted.
  // A stored one counts on the day it went to (a sealed day moves it to the next).
  if (result.kind === "stored") countStored(s, ctx, source.accountId, dayOf(event.receivedAt), size);
  return result;
}
