/**
 * The steps on stored data, all on the relay restarted over seeded partitions:
 *
 * - seeding (seed.ts): sources made through the API, one real event ingested into each
 *   (so its partition exists, registered the relay's own way), the relay stopped, rows
 *   added to those partitions' SQLite files, the relay started again and its lists
 *   checked to show exactly the newest seeded events.
 * - growth: ingest and list latency of a source whose partition holds 10,000 events
 *   against one holding 100,000, in the same runtime, in alternating rounds. Events live
 *   in one SQLite database per partition, so what a partition's size can change is that
 *   partition's own inserts and index scans: two sources side by side measure exactly
 *   that, with none of the noise of comparing two runtimes.
 * - cost: N events to a source with one destination, the relay's billed operations
 *   counted (METER=true, GET /__meter) before and after, and the bytes its partitions
 *   hold per event; the same with ~2 KB payloads for the storage.
 * - drop: two seeded sources (1,000 and 100,000 events) deleted through the API; their
 *   removal job drops each partition whole (src/delivery/removal.ts, about 10 s later),
 *   which logs `partition_dropped` with the time the drop took; and their files checked.
 */
import { existsSync } from "node:fs";
import { perEvent, readMeter, type MeterTotals } from "./cost.ts";
import type { Receiver } from "./deliveries.ts";
import { load, percentile, sleep, type LoadResult } from "./load.ts";
import { ingestRounds, quiet, relayEndToEnd, round2, send, type E2EFigures, type IngestFigures } from "./phases.ts";
import { paddedPayload, RelayClient, samplePayload } from "./relay.ts";
import { readEventId, seedPartition } from "./seed.ts";
import { note, RUN, S } from "./settings.ts";
import { d1Rows, findPartitionFile, readPartitionFile, sourceStorage, type SourceStorage } from "./storage.ts";
import type { Runtime } from "./wrangler.ts";

// ---------------------------------------------------------------------------------------
// Seeding

export interface SeededSource {
  label: string;
  /** events seeded (the real one not counted) */
  count: number;
  id: string;
  /** `/in/…`: the relay restarts on another port */
  ingestPath: string;
  firstEventId: string;
  partition: string;
  file: string;
  /** rows of its partition after seeding, and the ids its first page must list */
  stored: number;
  newest: string[];
  seedSeconds: number;
  /** the partition's size before seeding: its schema and the one real event */
  bytesBeforeSeed: number;
}

type Created = Omit<SeededSource, "file" | "stored" | "newest" | "seedSeconds" | "bytesBeforeSeed">;

/** While the relay runs: a source per wanted partition, and its first event. */
export async function createSeedSources(client: RelayClient, wanted: { label: string; count: number }[]): Promise<Created[]> {
  const out: Created[] = [];
  for (const w of wanted) {
    const source = await client.source(`${w.label} ${RUN}`);
    const [sent] = await send(source.ingestUrl, [samplePayload(`${RUN}${w.label}`, 0)], 1);
    if (!sent || sent.status !== 202 || !sent.eventId) throw new Error(`${w.label}: the first event was not accepted (status ${sent?.status})`);
    const { day, shard } = readEventId(sent.eventId);
    out.push({ ...w, id: source.id, ingestPath: new URL(source.ingestUrl).pathname, firstEventId: sent.eventId, partition: `${source.id}/${day}/${shard}` });
  }
  return out;
}

/** With the relay stopped: the rows, into each source's partition file. */
export function seedSources(persistTo: string, sources: Created[]): SeededSource[] {
  const payload = samplePayload(`${RUN}seed`, 0);
  const headers = { "content-type": "application/json", "content-length": String(Buffer.byteLength(payload)), "user-agent": "krafter-bench-seed" };
  return sources.map((s) => {
    const file = findPartitionFile(persistTo, s.partition, s.firstEventId);
    const bytesBeforeSeed = readPartitionFile(file).bytes;
    const { ms, day, shard } = readEventId(s.firstEventId);
    // The last few hours before the real event (within its day): older than anything the relay makes next.
    const seeded = seedPartition({ file, day, shard, count: s.count, beforeMs: ms, spanMs: 6 * 3600_000, payload, type: "invoice.paid", headers });
    note(`seeded ${s.count} events into ${s.partition} in ${seeded.seconds.toFixed(1)} s`);
    return { ...s, file, stored: seeded.events, newest: seeded.newest, seedSeconds: seeded.seconds, bytesBeforeSeed };
  });
}

/** After the restart: the first page of each source's events is exactly its newest stored ids. */
export async function verifySeeded(client: RelayClient, sources: SeededSource[]): Promise<void> {
  for (const s of sources) {
    const { data } = await client.api<{ data: { id: string }[] }>("GET", `/webhooks/sources/${s.id}/events?limit=${s.newest.length}`);
    const got = data.map((e) => e.id);
    if (got.length !== s.newest.length || got.some((id, i) => id !== s.newest[i])) {
      throw new Error(`${s.label}: GET …/events lists ${got.length} events, not the ${s.newest.length} newest seeded (first ${got[0]}, expected ${s.newest[0]})`);
    }
    if (s.stored !== s.count + 1) throw new Error(`${s.label}: the partition holds ${s.stored} events, not ${s.count + 1}`);
  }
  note(`seeded partitions listed by the relay: ${sources.map((s) => `${s.label} ${s.stored}`).join(", ")}`);
}

// ---------------------------------------------------------------------------------------
// Growth

export interface GrowthFigures {
  stored: number;
  ingest: IngestFigures;
  list: { requests: number; errors: number; p50: number; p99: number };
  /** the day's shard count after the step (1: every event went into the seeded partition) */
  shardsAfter: number | null;
}

export async function growth(rt: Runtime, client: RelayClient, sources: SeededSource[]): Promise<GrowthFigures[]> {
  const payload = samplePayload(`${RUN}growth`, 0);
  const ingest = await ingestRounds(
    sources.map((g) => ({ name: `growth-${g.count}`, rt, url: `${rt.origin}${g.ingestPath}`, body: payload })),
    S.growthIngestSeconds,
    S.rounds,
    S.connections,
  );
  // List latency: one client at a time, newest page, as a dashboard asks for it.
  const lists = new Map<number, LoadResult[]>();
  for (let r = 0; r < S.listSeconds; r++) {
    for (let i = 0; i < sources.length; i++) {
      const g = sources[(i + r) % sources.length]!;
      const res = await load({
        url: `${rt.origin}/api/v1/webhooks/sources/${g.id}/events?limit=50`,
        method: "GET",
        headers: { authorization: `Bearer ${client.key}` },
        connections: 1,
        durationS: 1,
        expectStatus: 200,
      });
      lists.set(g.count, [...(lists.get(g.count) ?? []), res]);
    }
  }
  for (const [count, l] of lists) {
    const lat = l.flatMap((x) => x.latencies);
    note(`list at ${count}: ${lat.length} requests in ${l.length} rounds of 1 s, p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${percentile(lat, 99).toFixed(1)} ms`);
  }
  const shards = partitionShards(rt.persistTo);
  return sources.map((g) => {
    const l = lists.get(g.count)!;
    const lat = l.flatMap((x) => x.latencies);
    return {
      stored: g.count,
      ingest: ingest.get(`growth-${g.count}`)!,
      list: { requests: l.reduce((a, x) => a + x.ok, 0), errors: l.reduce((a, x) => a + x.bad, 0), p50: round2(percentile(lat, 50)), p99: round2(percentile(lat, 99)) },
      shardsAfter: shards.get(`${g.id}/${readEventId(g.firstEventId).day}`) ?? null,
    };
  });
}

/** D1's `partitions` rows: "source/day" → the day's shard count. */
function partitionShards(persistTo: string): Map<string, number> {
  const rows = d1Rows(persistTo, "SELECT source_id, day, shards FROM partitions") as { source_id: string; day: number; shards: number }[];
  return new Map(rows.map((r) => [`${r.source_id}/${r.day}`, r.shards]));
}

// ---------------------------------------------------------------------------------------
// Cost: operations and storage per event

export interface MeteredFigures {
  name: string;
  payloadBytes: number;
  destinations: number;
  /** events accepted (202): the divisor */
  events: number;
  e2e: E2EFigures;
  /** the meter's difference over the step */
  totals: MeterTotals;
  perEvent: MeterTotals;
  storage: SourceStorage;
}

/** N events to a new source with one destination (answering 200), metered, every delivery verified. */
export async function meteredStep(rt: Runtime, client: RelayClient, receiver: Receiver, o: { name: string; events: number; payloadBytes?: number }): Promise<MeteredFigures> {
  let before: MeterTotals | undefined;
  const payload = (i: number) => (o.payloadBytes ? paddedPayload(`${RUN}${o.name}`, i, o.payloadBytes) : samplePayload(`${RUN}${o.name}`, i));
  note(`${o.name}: ${o.events} events × 1 destination${o.payloadBytes ? `, ${o.payloadBytes}-byte payloads` : ""}, metered`);
  const e2e = await relayEndToEnd({
    name: o.name,
    rt,
    client,
    receiver,
    events: o.events,
    destinations: 1,
    payload,
    ready: async () => {
      before = await readMeter(rt.origin);
    },
  });
  // endToEnd returns once every delivery arrived and the relay is idle again (its records written).
  const after = await readMeter(rt.origin);
  const accepted = e2e.events - e2e.ingestErrors;
  const totals = perEvent(before!, after, 1);
  return {
    name: o.name,
    payloadBytes: Buffer.byteLength(payload(0)),
    destinations: 1,
    events: accepted,
    e2e,
    totals,
    perEvent: perEvent(before!, after, accepted),
    storage: sourceStorage(rt.persistTo, e2e.sourceId),
  };
}

// ---------------------------------------------------------------------------------------
// Drop

export interface DropFigures {
  label: string;
  events: number;
  partition: string;
  /** `partition_dropped` duration_ms, as the relay logged it */
  durationMs: number | null;
  /** from the DELETE to the log line (the removal job waits ~10 s first) */
  secondsToLog: number | null;
  bytesBefore: number;
  fileAfter: { exists: boolean; bytes: number; tables: number; events: number | null };
}

const DROP_WAIT_MS = 90_000;

interface Dropped {
  partition: string;
  duration_ms: number;
}

/** Every `partition_dropped` line in the relay's output so far. */
function droppedLines(output: string): Dropped[] {
  const out: Dropped[] = [];
  for (const m of output.matchAll(/\{[^\n{}]*"msg":"partition_dropped"[^\n{}]*\}/g)) {
    try {
      out.push(JSON.parse(m[0]) as Dropped);
    } catch {
      // a line cut by the output buffer's limit
    }
  }
  return out;
}

export async function dropStep(rt: Runtime, client: RelayClient, sources: SeededSource[]): Promise<DropFigures[]> {
  const bytesBefore = new Map(sources.map((s) => [s.id, readPartitionFile(s.file).bytes]));
  const deletedAt = Date.now();
  for (const s of sources) await client.api("DELETE", `/webhooks/sources/${s.id}`);
  note(`drop: ${sources.map((s) => s.label).join(" and ")} deleted; waiting for their partitions to be dropped`);
  const seen = new Map<string, { durationMs: number; at: number }>();
  while (seen.size < sources.length && Date.now() - deletedAt < DROP_WAIT_MS) {
    for (const d of droppedLines(rt.output())) {
      if (!seen.has(d.partition) && sources.some((s) => s.partition === d.partition)) seen.set(d.partition, { durationMs: d.duration_ms, at: Date.now() });
    }
    await sleep(200);
  }
  await quiet(rt);
  return sources.map((s) => {
    const d = seen.get(s.partition);
    const exists = existsSync(s.file);
    const after = exists ? readPartitionFile(s.file) : null;
    note(`drop ${s.label} (${s.count} events): ${d ? `${d.durationMs} ms` : "no partition_dropped line"}; file ${exists ? `${after!.bytes} bytes, ${after!.tables} tables` : "gone"}`);
    return {
      label: s.label,
      events: s.stored,
      partition: s.partition,
      durationMs: d?.durationMs ?? null,
      secondsToLog: d ? round2((d.at - deletedAt) / 1000) : null,
      bytesBefore: bytesBefore.get(s.id)!,
      fileAfter: { exists, bytes: after?.bytes ?? 0, tables: after?.tables ?? 0, events: after?.events ?? null },
    };
  });
}
