/**
 * A destination's attempt log and its replay:
 * `GET …/destinations/:id/attempts` and `POST …/destinations/:id/replay`.
 * Replay re-sends a window of the source's events to one destination through the same
 * delivery path, so receivers see the same webhook-id as the first time; events that
 * arrived while it was disabled are included (they have no delivery yet). Each
 * partition of the window counts, then queues, its own events.
 */
import { Hono } from "hono";
import { z } from "zod";
import { Limiter } from "../delivery/limiter";
import { idBoundAt } from "../store/ids";
import { listAttempts, partitionsIn } from "../store/query";
import { attemptOutcomes } from "../store/schema";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { KrafterError } from "../errors";
import { instant, windowRefinement } from "./events";
import { rfc3339 } from "../time";
import { cursorField, encodeCursor, limitField } from "./pagination";
import { ownedDestination } from "./destinations";
import { validate } from "./validation";
import { isId } from "../db/ids";
import { Attempt, doc, list, Queued } from "./openapi";

const tags = ["Attempts"];

/** One replay request queues at most this many events; narrow the window for more. */
const MAX_REPLAY_EVENTS = 10_000;
/** Partitions one replay may read: two calls each, within a Worker invocation's subrequests. */
const MAX_REPLAY_PARTITIONS = 400;

const listAttemptsQuery = z
  .strictObject({
    outcome: z.enum(attemptOutcomes).optional(),
    event_id: z.string().refine(isId, "must be an event id").optional().describe("Only the attempts of this event's delivery: its attempt timeline."),
    since: instant.optional(),
    until: instant.optional(),
    limit: limitField,
    cursor: cursorField.optional(),
  })
  .superRefine(windowRefinement);

const replayBody = z
  .strictObject({
    since: instant,
    until: instant.optional(),
    only_failed: z.boolean().default(false),
  })
  .superRefine(windowRefinement);

export const recoveryRoutes = new Hono<AppEnv>()
  .get("/:id/attempts", doc({ tags, summary: "List a destination's attempts", description: "Newest first; filter by outcome, time, and event (`event_id`: one delivery's attempt timeline).", ok: { 200: { description: "A page of attempts.", schema: list(Attempt) } } }, [404, 422]), requireScope("webhooks:read"), validate("query", listAttemptsQuery), async (c) => {
    const dest = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    const q = c.req.valid("query");
    const { items, nextId } = await listAttempts(c.var.services, dest.sourceId, dest.id, { ...q, sinceMs: q.since, untilMs: q.until, eventId: q.event_id });
    return c.json(
      {
        data: items.map((a) => ({
          id: a.id,
          event_id: a.eventId,
          destination_id: a.destinationId,
          number: a.number,
          outcome: a.outcome,
          status_code: a.statusCode,
          error: a.error,
          duration_ms: a.durationMs,
          response_body: a.responseBody,
          created_at: rfc3339(a.createdAt),
        })),
        next_cursor: nextId === null ? null : encodeCursor(nextId),
      },
      200,
    );
  })
  .post("/:id/replay", doc({ tags, summary: "Replay a window of events to a destination", description: "Events of the source in [since, until) that match the destination's filter; with `only_failed`, those whose delivery failed or was cancelled, or that arrived while it was disabled. A delivery already pending is not queued twice (`already_pending`). At most 10,000 per request.", ok: { 202: { description: "Queued.", schema: Queued } } }, [400, 404, 409, 413, 415, 422]), requireScope("webhooks:write"), validate("json", replayBody), async (c) => {
    const s = c.var.services;
    const dest = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    if (!dest.enabled) {
      throw new KrafterError("conflict", "The destination is disabled: PATCH enabled:true first, then replay.");
    }
    const body = c.req.valid("json");
    const window = { sinceMs: body.since, untilMs: body.until ?? s.now() + 1 };
    const q = {
      destination: { id: dest.id, eventFilter: dest.eventFilter, payloadFilter: dest.payloadFilter },
      low: idBoundAt(window.sinceMs, "low"),
      high: idBoundAt(window.untilMs, "low"),
      onlyFailed: body.only_failed,
    };
    const refs = await partitionsIn(s, dest.sourceId, window);
    if (refs.length > MAX_REPLAY_PARTITIONS) throw tooWide(`The window spans more than ${MAX_REPLAY_PARTITIONS} partitions; narrow it with since/until.`);
    // First how many, so a window too large queues nothing; then the queuing itself.
    const limiter = new Limiter();
    const counts = await Promise.all(refs.map((ref) => limiter.run("storage", () => s.store(ref).replayCount(q, MAX_REPLAY_EVENTS))));
    if (counts.reduce((n, r) => n + r.queued, 0) > MAX_REPLAY_EVENTS) {
      throw tooWide(`The window holds more than ${MAX_REPLAY_EVENTS} events to replay; narrow it with since/until.`);
    }
    const results = await Promise.all(
      refs.map((ref, i) => (counts[i]!.queued > 0 ? limiter.run("storage", () => s.store(ref).replay(q)) : Promise.resolve(counts[i]!))),
    );
    return c.json(
      { data: { queued: results.reduce((n, r) => n + r.queued, 0), already_pending: results.reduce((n, r) => n + r.alreadyPending, 0) } },
      202,
    );
  });

const tooWide = (message: string) =>
  new KrafterError("validation_failed", message, [{ field: "until", code: "window_too_large", message }]);
