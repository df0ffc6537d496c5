/**
 * `POST /in/:ingest_key`: where providers send events. No API key: the unguessable
 * ingest key is the capability. The request is answered as soon as the event is
 * durable in its partition (src/ingest/receive.ts): forwarding never happens here.
 *
 * The hot path is: the source from the isolate's cache, the body within MAX_BODY_BYTES
 * (Hono's bodyLimit), the signature check (in memory), one call to the partition.
 */
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { describeRoute, resolver } from "hono-openapi";
import { z } from "zod";
import { KrafterError } from "../errors";
import { receive, receivingSource } from "../ingest/receive";
import type { AppEnv } from "./context";
import { ErrorEnvelope } from "./openapi";

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

/**
 * Hono's bodyLimit at MAX_BODY_BYTES: a declared Content-Length over it is refused
 * unread; a body without one is counted as it streams and refused as soon as it passes
 * the limit, never read whole. One per limit (the setting rarely changes), called by the
 * handler once the source is known, so an unknown key is a 404 before any body is read.
 */
let limiter: { maxSize: number; middleware: MiddlewareHandler } | undefined;
function bodyLimitOf(maxSize: number): MiddlewareHandler {
  if (limiter?.maxSize !== maxSize) {
    limiter = {
      maxSize,
      middleware: bodyLimit({
        maxSize,
        onError: () => {
          throw new KrafterError("payload_too_large", `The event body must be at most ${maxSize} bytes.`);
        },
      }),
    };
  }
  return limiter.middleware;
}
/** What bodyLimit calls when the body is within the limit: the handler goes on. */
const within = async () => {};

export const ingestRoutes = new Hono<AppEnv>().post("/:ingest_key", ingestDoc, async (c) => {
  const s = c.var.services;
  const key = c.req.param("ingest_key");
  const source = await receivingSource(s, key);
  await bodyLimitOf(s.config.maxBodyBytes)(c, within);
  const bytes = new Uint8Array(await c.req.raw.arrayBuffer());
  const result = await receive(s, c.executionCtx, key, source, bytes, c.req.raw.headers);
  if (result.kind === "duplicate") return c.json({ data: { event_id: result.eventId, duplicate: true } }, 200);
  return c.json({ data: { event_id: result.eventId } }, 202);
});
