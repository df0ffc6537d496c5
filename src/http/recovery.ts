/**
 * A destination's attempt log and its replay:
 * `GET …/destinations/:id/attempts` and `POST …/destinations/:id/replay`.
 * Replay re-sends a window of the source's events to one destination through the same
 * fan-out and delivery path, so receivers see the same webhook-id as the first time;
 * events that arrived while it was disabled are included (they have no delivery yet).
 */
import { Hono } from "hono";
import { z } from "zod";
import { eventsToReplay, listAttempts } from "../db/events";
import { attemptOutcomes } from "../db/schema";
import { matchesFilter } from "../delivery/filter";
import { sendAll, type FanoutMessage } from "../delivery/messages";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { ApiError } from "./errors";
import { instant, windowRefinement } from "./events";
import { rfc3339 } from "./format";
import { cursorField, limitField, page } from "./pagination";
import { ownedDestination } from "./destinations";
import { validate } from "./validation";
import { Attempt, doc, list, Queued } from "./openapi";

const tags = ["Attempts"];

/** One replay request queues at most this many events; narrow the window for more. */
export const MAX_REPLAY_EVENTS = 10_000;
const REPLAY_PAGE = 1000;

export const listAttemptsQuery = z
  .strictObject({
    outcome: z.enum(attemptOutcomes).optional(),
    since: instant.optional(),
    until: instant.optional(),
    limit: limitField,
    cursor: cursorField.optional(),
  })
  .superRefine(windowRefinement);

export const replayBody = z
  .strictObject({
    since: instant,
    until: instant.optional(),
    only_failed: z.boolean().default(false),
  })
  .superRefine(windowRefinement);

export const recoveryRoutes = new Hono<AppEnv>()
  .get("/:id/attempts", doc({ tags, summary: "List a destination's attempts", description: "Newest first; filter by outcome and time.", ok: { 200: { description: "A page of attempts.", schema: list(Attempt) } } }, [404, 422]), requireScope("webhooks:read"), validate("query", listAttemptsQuery), async (c) => {
    const dest = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    const q = c.req.valid("query");
    const rows = await listAttempts(c.var.services, dest.id, { ...q, sinceMs: q.since, untilMs: q.until });
    const { items, nextCursor } = page(rows, q.limit);
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
        next_cursor: nextCursor,
      },
      200,
    );
  })
  .post("/:id/replay", doc({ tags, summary: "Replay a window of events to a destination", description: "Events of the source in [since, until) that match the destination's filter; with `only_failed`, those whose delivery failed or was cancelled, or that arrived while it was disabled. At most 10,000 per request.", ok: { 202: { description: "Queued.", schema: Queued } } }, [400, 404, 409, 413, 415, 422]), requireScope("webhooks:write"), validate("json", replayBody), async (c) => {
    const s = c.var.services;
    const dest = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    if (!dest.enabled) {
      throw new ApiError("conflict", "The destination is disabled: PATCH enabled:true first, then replay.");
    }
    const body = c.req.valid("json");
    const filter = JSON.parse(dest.eventFilter) as string[];
    const window = { sinceMs: body.since, untilMs: body.until ?? s.now() + 1 };

    const ids: string[] = [];
    let after: string | undefined;
    for (;;) {
      const rows = await eventsToReplay(s, dest.sourceId, dest.id, window, body.only_failed, REPLAY_PAGE, after);
      for (const e of rows) if (matchesFilter(filter, e.type)) ids.push(e.id);
      if (ids.length > MAX_REPLAY_EVENTS) {
        throw new ApiError(
          "validation_failed",
          `The window holds more than ${MAX_REPLAY_EVENTS} events to replay; narrow it with since/until.`,
          [{ field: "until", code: "window_too_large", message: `at most ${MAX_REPLAY_EVENTS} events per replay` }],
        );
      }
      if (rows.length < REPLAY_PAGE) break;
      after = rows[rows.length - 1]!.id;
    }
    await sendAll<FanoutMessage>(
      c.env.FANOUT_QUEUE,
      ids.map((event_id) => ({ kind: "fanout", event_id, destination_ids: [dest.id], redeliver: true })),
    );
    return c.json({ data: { queued: ids.length } }, 202);
  });
