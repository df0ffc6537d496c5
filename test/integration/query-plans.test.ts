/**
 * Every list and lookup is an index range scan (SQLite "SEARCH … USING INDEX"), never a
 * table scan or a sort in a temporary B-tree, so its cost follows the page size, not the
 * table size: in a partition's own SQLite (the builders of src/store/queries.ts, EXPLAINed
 * inside the object) and in D1.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { destinationsForDelivery, listDestinations, targetsOf } from "../../src/db/destinations";
import { newId } from "../../src/db/ids";
import { partitionDays } from "../../src/db/partitions";
import { listSources } from "../../src/db/sources";
import { servicesFor } from "../../src/services";
import { idBoundAt } from "../../src/store/ids";
import { attemptsPage, deliveriesOfEvent, destinationRows, eventsPage, pendingEvents, replayPage, type PartitionDb } from "../../src/store/queries";
import { attempts, deliveries } from "../../src/store/schema";
import { createAccount, createSource } from "../helpers/api";
import { inPartition } from "../helpers/delivery";

const s = servicesFor(env as unknown as Env);
const id = newId();
const now = Date.now();
const cursor = idBoundAt(now, "high");
const low = idBoundAt(now - 86_400_000, "low");

type Query = { toSQL(): { sql: string; params: unknown[] } };

function expectIndexOnly(steps: string[], name: string) {
  console.log(`${name}:\n  ${steps.join("\n  ")}`);
  const scans = steps.filter((d) => /^(SCAN|SEARCH)\b/.test(d));
  expect(scans.length).toBeGreaterThan(0);
  for (const d of scans) expect(d).toMatch(/^SEARCH \S+ USING (COVERING )?INDEX|^SEARCH \S+ USING INTEGER PRIMARY KEY|^SEARCH \S+ USING PRIMARY KEY|^SCAN json_each VIRTUAL TABLE/);
  expect(steps.join("\n")).not.toMatch(/TEMP B-TREE/);
}

const partitionCases: [string, (db: PartitionDb) => Query][] = [
  ["events list page", (db) => eventsPage(db, { limit: 51, high: cursor })],
  ["events by type", (db) => eventsPage(db, { limit: 51, type: "invoice.paid", high: cursor })],
  ["events in a window", (db) => eventsPage(db, { limit: 51, low, high: cursor })],
  ["events by type in a window", (db) => eventsPage(db, { limit: 51, type: "invoice.paid", low, high: cursor })],
  ["attempts list page", (db) => attemptsPage(db, id, { limit: 51, high: cursor })],
  ["attempts by outcome", (db) => attemptsPage(db, id, { limit: 51, outcome: "failed", high: cursor })],
  ["attempts in a window", (db) => attemptsPage(db, id, { limit: 51, low, high: cursor })],
  ["fan-out: events waiting", (db) => pendingEvents(db, 100)],
  ["event detail: its deliveries", (db) => deliveriesOfEvent(db, id)],
  ["replay: a window with each event's delivery", (db) => replayPage(db, id, low, cursor, low, 1000)],
  ["removal: a destination's deliveries (along the primary key)", (db) => destinationRows(db, deliveries, id, "", 5000)],
  ["removal: a destination's attempts", (db) => destinationRows(db, attempts, id, "", 5000)],
];

describe("query plans in a partition", () => {
  it.each(partitionCases)("%s is an index range scan with no sort", async (name, build) => {
    const source = await createSource(await createAccount(), { name: "plans" });
    const steps = await inPartition({ sourceId: source.id, day: Math.floor(now / 86_400_000), shard: 0 }, (db, _i, state) => {
      const { sql, params } = build(db).toSQL();
      return state.storage.sql
        .exec<{ detail: string }>(`EXPLAIN QUERY PLAN ${sql}`, ...params)
        .toArray()
        .map((r) => r.detail);
    });
    expectIndexOnly(steps, name);
  });
});

async function plan(query: Query): Promise<string[]> {
  const { sql, params } = query.toSQL();
  const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`)
    .bind(...params)
    .all<{ detail: string }>();
  return results.map((r) => r.detail);
}

describe("query plans in D1", () => {
  it.each([
    ["sources list page", listSources(s, id, 50, newId())],
    ["destinations list page", listDestinations(s, id, 50, newId())],
  ] as [string, Query][])("%s is an index range scan with no sort", async (name, query) => {
    expectIndexOnly(await plan(query), name);
  });

  it("the deliver consumer's destinations, the fan-out's targets and the days of partitions are index lookups", async () => {
    // Run them for real too: they answer, with nothing to find.
    expect(await destinationsForDelivery(s, [id, newId()])).toEqual(new Map());
    expect(await targetsOf(s, id)).toEqual([]);
    expect(await partitionDays(s, id, 0, 1e6)).toEqual([]);
    const { sql } = await import("drizzle-orm");
    const { destinations, partitions } = await import("../../src/db/schema");
    const byIds = s.db.select().from(destinations).where(sql`${destinations.id} IN (SELECT value FROM json_each(${JSON.stringify([id])}))`);
    expectIndexOnly(await plan(byIds), "destinations by id list");
    const { and, eq, gte, lte, desc } = await import("drizzle-orm");
    const days = s.db.select().from(partitions).where(and(eq(partitions.sourceId, id), gte(partitions.day, 0), lte(partitions.day, 9))).orderBy(desc(partitions.day));
    expectIndexOnly(await plan(days), "partition days of a source");
  });
});
