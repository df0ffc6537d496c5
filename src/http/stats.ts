/**
 * `GET …/destinations/:id/stats`: a destination's succeeded and failed attempts per hour
 * over the last 24 hours, as its DestinationHealth object counted them when the attempts
 * ended (delivery/attempt-counts.ts): one small read, whatever the size of the attempt
 * log. The console's chart reads it; so may anyone with webhooks:read.
 */
import { Hono } from "hono";
import { z } from "zod";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { ownedDestination } from "./destinations";
import { rfc3339 } from "../time";
import { doc, one } from "./openapi";

const tags = ["Attempts"];

const DestinationStats = z
  .object({
    destination_id: z.string().describe("UUID"),
    succeeded: z.number().int().describe("Attempts answered with a 2xx over the 24 hours."),
    failed: z.number().int().describe("Attempts that failed (no answer, or not a 2xx) over the 24 hours."),
    hours: z
      .array(z.object({ hour: z.string().describe("The hour's start, RFC 3339 UTC."), succeeded: z.number().int(), failed: z.number().int() }))
      .describe("24 hours, oldest first, the current hour last; hours without attempts as zeros."),
  })
  .meta({ id: "DestinationStats" });

export const statsRoutes = new Hono<AppEnv>().get(
  "/:id/stats",
  doc(
    {
      tags,
      summary: "Attempts per hour of a destination",
      description: "Succeeded and failed attempts per UTC hour over the last 24 hours, counted as attempts are made (cancelled deliveries count nothing).",
      ok: { 200: { description: "The destination's last 24 hours.", schema: one(DestinationStats) } },
    },
    [404],
  ),
  requireScope("webhooks:read"),
  async (c) => {
    const dest = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    const hours = await c.var.services.health(dest.id).hourlyCounts();
    return c.json(
      {
        data: {
          destination_id: dest.id,
          succeeded: hours.reduce((n, h) => n + h.succeeded, 0),
          failed: hours.reduce((n, h) => n + h.failed, 0),
          hours: hours.map((h) => ({ hour: rfc3339(h.hour), succeeded: h.succeeded, failed: h.failed })),
        },
      },
      200,
    );
  },
);
