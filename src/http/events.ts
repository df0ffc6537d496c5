/**
 * The event log of a source: `GET …/events`, `GET …/events/:event_id` (payload, the
 * headers we kept, and each destination's delivery status), and
 * `POST …/events/:event_id/redeliver`, which goes through the same fan-out and
 * delivery path as the first time (same event id, so the same webhook-id).
 */
import { and, eq, inArray } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { deliveriesOfEvent, getEvent, listEvents } from "../db/events";
import { isId } from "../db/ids";
import { destinations } from "../db/schema";
import { matchesFilter } from "../delivery/filter";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { ApiError, notFound } from "./errors";
import { rfc3339 } from "./format";
import { cursorField, limitField, page } from "./pagination";
import { ownedSource } from "./sources";
import { validate } from "./validation";
import { doc, EventDetail, EventSummary, list, one, Queued } from "./openapi";

const tags = ["Events"];

/** RFC 3339 with an offset, as milliseconds. */
export const instant = z.iso.datetime({ offset: true, error: "must be an RFC 3339 date-time, e.g. 2026-04-26T09:00:00Z" }).transform((v) => Date.parse(v));

export const windowRefinement = (v: { since?: number | undefined; until?: number | undefined }, ctx: z.RefinementCtx) => {
  if (v.since !== undefined && v.until !== undefined && v.until <= v.since) {
    ctx.addIssue({ code: "custom", path: ["until"], message: "must be later than since" });
  }
};

export const listEventsQuery = z
  .strictObject({
    type: z.string().min(1).max(255).optional(),
    since: instant.optional(),
    until: instant.optional(),
    limit: limitField,
    cursor: cursorField.optional(),
  })
  .superRefine(windowRefinement);

export const redeliverBody = z.strictObject({
  destination_ids: z.array(z.string()).min(1).max(100).optional(),
});

function parsePayload(payload: string): unknown {
  try {
    return JSON.parse(payload);
  } catch {
    return payload;
  }
}

export const eventRoutes = new Hono<AppEnv>()
  .get("/", doc({ tags, summary: "List events", description: "Newest first; `since` inclusive, `until` exclusive (RFC 3339).", ok: { 200: { description: "A page of events.", schema: list(EventSummary) } } }, [404, 422]), requireScope("webhooks:read"), validate("query", listEventsQuery), async (c) => {
    const source = await ownedSource(c, c.req.param("source_id"));
    const q = c.req.valid("query");
    const rows = await listEvents(c.var.services, source.id, { ...q, sinceMs: q.since, untilMs: q.until });
    const { items, nextCursor } = page(rows, q.limit);
    return c.json(
      {
        data: items.map((e) => ({ id: e.id, source_id: e.sourceId, type: e.type, status: e.status, received_at: rfc3339(e.receivedAt) })),
        next_cursor: nextCursor,
      },
      200,
    );
  })
  .get("/:event_id", doc({ tags, summary: "Get an event", description: "The payload, the headers kept, and each destination's delivery status with its last attempt.", ok: { 200: { description: "The event.", schema: one(EventDetail) } } }, [404]), requireScope("webhooks:read"), async (c) => {
    const source = await ownedSource(c, c.req.param("source_id"));
    const id = c.req.param("event_id");
    const event = isId(id) ? await getEvent(c.var.services, source.id, id) : undefined;
    if (!event) throw notFound("event");
    const deliveries = await deliveriesOfEvent(c.var.services, event.id);
    return c.json(
      {
        data: {
          id: event.id,
          source_id: event.sourceId,
          type: event.type,
          status: event.status,
          received_at: rfc3339(event.receivedAt),
          headers: JSON.parse(event.headers) as Record<string, string>,
          payload: parsePayload(event.payload),
          deliveries: deliveries.map(({ delivery: d, lastAttempt: a }) => ({
            destination_id: d.destinationId,
            status: d.status,
            attempt_count: d.attemptCount,
            last_attempt_at: rfc3339(d.lastAttemptAt),
            last_attempt: a
              ? {
                  id: a.id,
                  number: a.number,
                  outcome: a.outcome,
                  status_code: a.statusCode,
                  error: a.error,
                  duration_ms: a.durationMs,
                  created_at: rfc3339(a.createdAt),
                }
              : null,
          })),
        },
      },
      200,
    );
  })
  .post("/:event_id/redeliver", doc({ tags, summary: "Redeliver an event", description: "Through the same fan-out and delivery path, with the same `webhook-id`: to the destinations named, or to every enabled destination whose filter matches.", ok: { 202: { description: "Queued.", schema: Queued } } }, [400, 404, 413, 415, 422]), requireScope("webhooks:write"), validate("json", redeliverBody), async (c) => {
    const s = c.var.services;
    const source = await ownedSource(c, c.req.param("source_id"));
    const id = c.req.param("event_id");
    const event = isId(id) ? await getEvent(s, source.id, id) : undefined;
    if (!event) throw notFound("event");
    const { destination_ids } = c.req.valid("json");

    let targets: string[];
    if (destination_ids) {
      const wanted = [...new Set(destination_ids)];
      const found = wanted.every(isId)
        ? await s.db
            .select({ id: destinations.id, enabled: destinations.enabled })
            .from(destinations)
            .where(and(eq(destinations.sourceId, source.id), inArray(destinations.id, wanted)))
            .all()
        : [];
      const byId = new Map(found.map((d) => [d.id, d]));
      const details = destination_ids.flatMap((d, i) =>
        !byId.has(d)
          ? [{ field: `destination_ids.${i}`, code: "unknown_destination", message: "No such destination on this source." }]
          : !byId.get(d)!.enabled
            ? [{ field: `destination_ids.${i}`, code: "destination_disabled", message: "The destination is disabled: PATCH enabled:true first." }]
            : [],
      );
      if (details.length > 0) throw new ApiError("validation_failed", "The request is not valid.", details);
      targets = wanted;
    } else {
      const all = await s.db
        .select({ id: destinations.id, eventFilter: destinations.eventFilter })
        .from(destinations)
        .where(and(eq(destinations.sourceId, source.id), eq(destinations.enabled, true)))
        .all();
      targets = all.filter((d) => matchesFilter(JSON.parse(d.eventFilter) as string[], event.type)).map((d) => d.id);
    }
    if (targets.length > 0) {
      await c.env.FANOUT_QUEUE.send({ kind: "fanout", event_id: event.id, destination_ids: targets, redeliver: true });
    }
    return c.json({ data: { queued: targets.length } }, 202);
  });
