/**
 * Every list and sweep query is an index range scan (SQLite "SEARCH … USING INDEX"),
 * never a table scan or a sort in a temporary B-tree, so its cost follows the page size,
 * not the table size. The queries are the very builders the code runs; the plans are
 * printed for docs/query-plans.md.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { deliveriesOfEvent, eventsToReplay, listAttempts, listEvents } from "../../src/db/events";
import { idBoundAt, newId } from "../../src/db/ids";
import { listDestinations } from "../../src/db/destinations";
import { listSources } from "../../src/db/sources";
import { eventsWithDestinations } from "../../src/delivery/fanout";
import { expiredEvents, stuckDeliveries, stuckEvents } from "../../src/housekeeping";
import { servicesFor } from "../../src/services";

const s = servicesFor(env as unknown as Env);
const id = newId();
const cursor = newId();
const now = Date.now();

async function plan(query: { toSQL(): { sql: string; params: unknown[] } }): Promise<string[]> {
  const { sql, params } = query.toSQL();
  const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .bind(...params)
    .all<{ detail: string }>();
  return results.map((r) => r.detail);
}

const cases: [string, { toSQL(): { sql: string; params: unknown[] } }][] = [
  ["sources list page", listSources(s, id, 50, cursor)],
  ["destinations list page", listDestinations(s, id, 50, cursor)],
  ["events list page", listEvents(s, id, { limit: 50, cursor })],
  ["events by type", listEvents(s, id, { limit: 50, type: "invoice.paid", cursor })],
  ["events in a window", listEvents(s, id, { limit: 50, sinceMs: now - 86_400_000, untilMs: now })],
  ["events by type in a window", listEvents(s, id, { limit: 50, type: "invoice.paid", sinceMs: now - 86_400_000, untilMs: now, cursor })],
  ["attempts list page", listAttempts(s, id, { limit: 50, cursor })],
  ["attempts by outcome", listAttempts(s, id, { limit: 50, outcome: "failed", cursor })],
  ["attempts in a window", listAttempts(s, id, { limit: 50, sinceMs: now - 3600_000, untilMs: now })],
  ["replay: all events of a window", eventsToReplay(s, id, id, { sinceMs: now - 86_400_000, untilMs: now }, false, 1000, cursor)],
  ["replay: only missed events", eventsToReplay(s, id, id, { sinceMs: now - 86_400_000, untilMs: now }, true, 1000)],
  ["sweep: events never fanned out", stuckEvents(s, now)],
  ["sweep: deliveries past due", stuckDeliveries(s, now)],
  ["retention: a batch of expired events", expiredEvents(s, idBoundAt(now, "low"))],
];

describe("query plans", () => {
  it.each(cases)("%s is an index range scan with no sort", async (_name, query) => {
    const steps = await plan(query);
    console.log(`${_name}:\n  ${steps.join("\n  ")}`);
    const scans = steps.filter((d) => /^(SCAN|SEARCH)\b/.test(d));
    expect(scans.length).toBeGreaterThan(0);
    for (const d of scans) expect(d).toMatch(/^SEARCH \S+ USING (COVERING )?INDEX|^SEARCH \S+ USING INTEGER PRIMARY KEY|^SEARCH \S+ USING PRIMARY KEY/);
    expect(steps.join("\n")).not.toMatch(/TEMP B-TREE/);
  });

  it("the event detail's deliveries and latest attempts are index lookups", async () => {
    // deliveriesOfEvent runs two queries; EXPLAIN them through the same SQL it issues.
    const { sql: q1, params: p1 } = s.db
      .select()
      .from((await import("../../src/db/schema")).deliveries)
      .where((await import("drizzle-orm")).eq((await import("../../src/db/schema")).deliveries.eventId, id))
      .toSQL();
    const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${q1}`).bind(...p1).all<{ detail: string }>();
    expect(results.map((r) => r.detail).join("\n")).toMatch(/SEARCH deliveries USING INDEX deliveries_event_destination_idx/);
    expect(await deliveriesOfEvent(s, id)).toEqual([]);
  });

  it("the batched fan-out's read looks each event up by its key and its destinations by index", async () => {
    const steps = await plan(eventsWithDestinations(s, [id, newId(), newId()]));
    console.log(`fan-out read:\n  ${steps.join("\n  ")}`);
    const scans = steps.filter((d) => /^(SCAN|SEARCH)\b/.test(d));
    // The only scan is of the id list itself (the JSON parameter); no table is scanned.
    for (const d of scans) expect(d).toMatch(/^SEARCH (events|destinations) USING (COVERING )?INDEX|^SCAN json_each VIRTUAL TABLE|^SCAN \S+ VIRTUAL TABLE INDEX/);
    expect(steps.join("\n")).toMatch(/SEARCH events USING INDEX sqlite_autoindex_events_1 \(id=\?\)/);
    expect(steps.join("\n")).toMatch(/SEARCH destinations USING INDEX destinations_source_idx/);
  });
});
