/**
 * `POST /in/:ingest_key`: where providers send events. No API key: the unguessable
 * ingest key is the capability. The request is answered as soon as the event is
 * durable in D1 and its fan-out is guaranteed; forwarding never happens here.
 *
 * The hot path is: one indexed read of the source, the signature check (in memory),
 * one insert, one queue send.
 */
import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { describeRoute, resolver } from "hono-openapi";
import { z } from "zod";
import { ErrorEnvelope } from "../http/openapi";
import { and } from "drizzle-orm";
import type { AppEnv } from "../http/context";
import { ApiError, notFound } from "../http/errors";
import { newId } from "../db/ids";
import { events, sources } from "../db/schema";
import { log } from "../log";
import { secretContext } from "../security/secrets";
import { adapters, deliveryIdOf, eventTypeOf, type IncomingRequest } from "./providers";
import { keptHeaders } from "./headers";

const INGEST_KEY = /^src_[A-Za-z0-9_-]{32}$/;

async function readBounded(req: Request, limit: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit);
  if (!req.body) return new Uint8Array(0);
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
  },
} as Parameters<typeof describeRoute>[0]);

export const ingestRoutes = new Hono<AppEnv>().post("/:ingest_key", ingestDoc, async (c) => {
  const s = c.var.services;
  const key = c.req.param("ingest_key");
  if (!INGEST_KEY.test(key)) throw notFound("source");
  const source = await s.db
    .select({ id: sources.id, provider: sources.provider, secret: sources.signingSecretCiphertext })
    .from(sources)
    .where(eq(sources.ingestKey, key))
    .get();
  if (!source) throw notFound("source");

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
  let json: unknown;
  try {
    // For reading the type and the delivery id only: JSON.parse refuses a leading BOM.
    const text = body.charCodeAt(0) === 0xfeff ? body.slice(1) : body;
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  const now = s.now();
  const incoming: IncomingRequest = { headers: c.req.raw.headers, body, json, nowSeconds: Math.floor(now / 1000) };

  if (source.secret !== null) {
    const secret = await s.secrets.decrypt(source.secret, secretContext.source(source.id));
    const verdict = await adapters[source.provider].verify(secret, incoming);
    if (!verdict.ok) {
      log("info", "ingest_signature_rejected", { source_id: source.id, reason: verdict.reason });
      throw new ApiError("unauthorized", `Signature verification failed: ${verdict.reason}.`);
    }
  }

  const dedupeKey = deliveryIdOf(source.provider, incoming) ?? null;
  const id = newId(now);
  const inserted = await s.db
    .insert(events)
    .values({
      id,
      sourceId: source.id,
      type: eventTypeOf(source.provider, incoming),
      dedupeKey,
      payload: body,
      headers: JSON.stringify(keptHeaders(c.req.raw.headers)),
      status: "pending",
      receivedAt: now,
    })
    .onConflictDoNothing()
    .returning({ id: events.id })
    .get();

  if (!inserted) {
    // Seen before: answer with the first event's id; no second fan-out.
    const first = await s.db
      .select({ id: events.id })
      .from(events)
      .where(and(eq(events.sourceId, source.id), eq(events.dedupeKey, dedupeKey!)))
      .get();
    return c.json({ data: { event_id: first?.id ?? null, duplicate: true } }, 200);
  }

  try {
    await c.env.FANOUT_QUEUE.send({ kind: "fanout", event_id: id });
  } catch (err) {
    // The event is durable and stays `pending`: the cron sweep enqueues it again.
    log("error", "fanout_enqueue_failed", { event_id: id, error: err instanceof Error ? err.message : String(err) });
  }
  return c.json({ data: { event_id: id } }, 202);
});
