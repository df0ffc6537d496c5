/**
 * The event log of a source: `GET …/events`, `GET …/events/:event_id` (payload, the
 * headers we kept, and each destination's delivery status), and
 * `POST …/events/:event_id/redeliver`, which goes through the same delivery path as the
 * first time (same event id, so the same webhook-id). The events live in partitions
 * (src/store/query.ts reads across them).
 */
import { Hono } from "hono";
import { z } from "zod";
import { destinationIdsOf, enabledDestinationsNamed, targetsOf } from "../db/destinations";
import { partitionOf } from "../store/ids";
import { getEvent, listEvents } from "../store/query";
import type { TargetDestination } from "../store/types";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { NotFoundError, ValidationError } from "../errors";
import { rfc3339 } from "../time";
import { cursorField, encodeCursor, limitField } from "./pagination";
import { ownedSource } from "./sources";
import { validate } from "./validation";
import { doc, EventDetail, EventSummary, list, one, Queued } from "./openapi";
import { isId } from "../db/ids";

const tags = ["Events"];

/** RFC 3339 with an offset, as milliseconds. */
export const instant = z.iso.datetime({ offset: true, error: "must be an RFC 3339 date-time, e.g. 2026-04-26T09:00:00Z" }).transform((v) => Date.parse(v));

export const windowRefinement = (v: { since?: number | undefined; until?: number | undefined }, ctx: z.RefinementCtx) => {
  if (v.since !== undefined && v.until !== undefined && v.until <= v.since) {
    ctx.addIssue({ code: "custom", path: ["until"], message: "must be later than since" });
  }
};

const listEventsQuery = z
  .strictObject({
    type: z.string().min(1).max(255).optional(),
    since: instant.optional(),
    until: instant.optional(),
    limit: limitField,
    cursor: cursorField.optional(),
  })
  .superRefine(windowRefinement);

const redeliverBody = z.strictObject({
  destination_ids: z.array(z.string()).min(1).max(100).optional(),
});

/** The detail's JSON with the payload spliced in as received: never parsed and serialized again. */
function eventDetailJson(data: Record<string, unknown>, payload: string, payloadIsJson: boolean): string {
  const rest = JSON.stringify({ data });
  return `${rest.slice(0, -2)},"payload":${payloadIsJson ? payload : JSON.stringify(payload)}}}`;
}

export const eventRoutes = new Hono<AppEnv>()
  .get("/", doc({ tags, summary: "List events", description: "Newest first; `since` inclusive, `until` exclusive (RFC 3339).", ok: { 200: { description: "A page of events.", schema: list(EventSummary) } } }, [404, 422]), requireScope("webhooks:read"), validate("query", listEventsQuery), async (c) => {
    const source = await ownedSource(c, c.req.param("source_id"));
    const q = c.req.valid("query");
    const { items, nextId } = await listEvents(c.var.services, source.id, { ...q, sinceMs: q.since, untilMs: q.until });
    return c.json(
      {
        data: items.map((e) => ({ id: e.id, source_id: source.id, type: e.type, status: e.status, received_at: rfc3339(e.receivedAt) })),
        next_cursor: nextId === null ? null : encodeCursor(nextId),
      },
      200,
    );
  })
  .get("/:event_id", doc({ tags, summary: "Get an event", description: "The payload, the headers kept, and each destination's delivery status with its last attempt.", ok: { 200: { description: "The event.", schema: one(EventDetail) } } }, [404]), requireScope("webhooks:read"), async (c) => {
    const s = c.var.services;
    const source = await ownedSource(c, c.req.param("source_id"));
    const id = c.req.param("event_id");
    const [event, live] = await Promise.all([isId(id) ? getEvent(s, source.id, id) : null, destinationIdsOf(s, source.id)]);
    if (!event) throw new NotFoundError("event");
    const data = {
      id: event.id,
      source_id: source.id,
      type: event.type,
      status: event.status,
      received_at: rfc3339(event.receivedAt),
      headers: event.headers,
      // A deleted destination's deliveries are hidden at once, and removed in the background.
      deliveries: event.deliveries
        .filter((d) => live.has(d.destinationId))
        .map((d) => ({
          destination_id: d.destinationId,
          status: d.status,
          attempt_count: d.attemptCount,
          last_attempt_at: rfc3339(d.lastAttempt?.createdAt ?? null),
          last_attempt: d.lastAttempt
            ? {
                id: d.lastAttempt.id,
                number: d.lastAttempt.number,
                outcome: d.lastAttempt.outcome,
                status_code: d.lastAttempt.statusCode,
                error: d.lastAttempt.error,
                duration_ms: d.lastAttempt.durationMs,
                created_at: rfc3339(d.lastAttempt.createdAt),
              }
            : null,
        })),
    };
    return c.body(eventDetailJson(data, event.payload, event.payloadIsJson), 200, { "content-type": "application/json" });
  })
  .post("/:event_id/redeliver", doc({ tags, summary: "Redeliver an event", description: "Through the same delivery path, with the same `webhook-id`: to the destinations named, or to every enabled destination whose filter matches. A delivery already pending for the event and a destination is not queued twice (`already_pending`).", ok: { 202: { description: "Queued.", schema: Queued } } }, [400, 404, 413, 415, 422]), requireScope("webhooks:write"), validate("json", redeliverBody), async (c) => {
    const s = c.var.services;
    const source = await ownedSource(c, c.req.param("source_id"));
    const id = c.req.param("event_id");
    const ref = isId(id) ? partitionOf(source.id, id) : null;
    if (!ref) throw new NotFoundError("event");
    const { destination_ids } = c.req.valid("json");

    let targets: TargetDestination[];
    if (destination_ids) {
      const wanted = [...new Set(destination_ids)];
      const found = wanted.every(isId) ? await enabledDestinationsNamed(s, source.id, wanted) : new Map<string, boolean>();
      const details = destination_ids.flatMap((d, i) =>
        !found.has(d)
          ? [{ field: `destination_ids.${i}`, code: "unknown_destination", message: "No such destination on this source." }]
          : !found.get(d)
            ? [{ field: `destination_ids.${i}`, code: "destination_disabled", message: "The destination is disabled: PATCH enabled:true first." }]
            : [],
      );
      if (details.length > 0) throw new ValidationError(details);
      targets = wanted.map((d) => ({ id: d, eventFilter: [] }));
    } else {
      targets = await targetsOf(s, source.id);
    }
    const result = await s.store(ref).redeliver(id, targets, destination_ids !== undefined);
    if (!result) throw new NotFoundError("event");
    return c.json({ data: { queued: result.queued, already_pending: result.alreadyPending } }, 202);
  });
