/**
 * The benchmark's verdicts and its one table, from the figures of every step. Ratios
 * are Krafter over the reference of the row; a target says which way is good.
 */
import { costPerMillion, type CostLine } from "./cost.ts";
import type { E2EFigures, IngestFigures, WidthFigures } from "./phases.ts";
import type { FlowFigures } from "./flow.ts";
import { round3 } from "./phases.ts";
import { S } from "./settings.ts";
import { rowChanges, type D1State, type SourceStorage } from "./storage.ts";
import type { DropFigures, GrowthFigures, MeteredFigures } from "./stored.ts";

export interface Figures {
  ingest: Map<string, IngestFigures>;
  e2e: E2EFigures;
  direct: E2EFigures;
  /** the floor within the platform's limits (six connections waiting per invocation): the target's reference */
  e2eFloor: E2EFigures;
  /** the same floor past the connection limit, as wrangler dev allows and Cloudflare does not: reported */
  e2eFloorUnlimited: E2EFigures;
  /** --against REF */
  ref?: { ref: string; commit: string; e2e: E2EFigures };
  storage: { d1Before: D1State; d1After: D1State; d1BytesPerEvent: number; partitions: SourceStorage };
  /** the size of a partition holding its schema and one event: what every partition costs before its events */
  partitionBaseBytes: number;
  fanout: WidthFigures[];
  flow: FlowFigures;
  growth: GrowthFigures[];
  metered: MeteredFigures;
  large: MeteredFigures;
  drops: DropFigures[];
}

export interface Target {
  name: string;
  value: number;
  limit: number;
  met: boolean;
}

const fmt = (n: number | null | undefined, digits = 1) => (n !== null && n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : "—");
export const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? a / b : Number.NaN);
const mark = (met: boolean) => (met ? "met" : "**not met**");
const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en") : "—");
const usd = (n: number) => `$${n < 0.01 ? n.toFixed(4) : n.toFixed(3)}`;

/** Every delivery the run expected of the relay and did not get, verified. */
export function relayLost(f: Figures): number {
  return f.e2e.lost + f.metered.e2e.lost + f.large.e2e.lost + f.fanout.reduce((a, x) => a + x.lost, 0);
}

export function cost(f: Figures) {
  return costPerMillion(f.metered.perEvent, { partitionBytes: f.metered.storage.bytesPerEvent, d1Bytes: f.storage.d1BytesPerEvent });
}

export function targets(f: Figures): Target[] {
  const r = f.ingest.get("relay")!;
  const floor = f.ingest.get("floor")!;
  const small = f.growth[0]!;
  const big = f.growth[f.growth.length - 1]!;
  const t = (name: string, value: number, limit: number, atLeast: boolean): Target => ({ name, value: round3(value), limit, met: atLeast ? value >= limit : value <= limit });
  const list = [
    t("ingest requests/s ≥ 0.9 × the ingest floor", ratio(r.rps, floor.rps), 0.9, true),
    t("deliveries/s ≥ 0.9 × the end-to-end floor", ratio(f.e2e.deliveriesPerSecond, f.e2eFloor.deliveriesPerSecond), 0.9, true),
    t("zero loss", relayLost(f), 0, false),
  ];
  if (f.ref) {
    const refIngest = f.ingest.get("ref")!;
    list.push(t(`ingest requests/s ≥ ${f.ref.commit}'s`, ratio(r.rps, refIngest.rps), 1, true));
    list.push(t(`deliveries/s ≥ ${f.ref.commit}'s`, ratio(f.e2e.deliveriesPerSecond, f.ref.e2e.deliveriesPerSecond), 1, true));
  }
  list.push(t(`ingest p50 at ${big.stored} within 20 % of ${small.stored}`, ratio(big.ingest.p50, small.ingest.p50), 1.2, false));
  list.push(t(`list p50 at ${big.stored} within 20 % of ${small.stored}`, ratio(big.list.p50, small.list.p50), 1.2, false));
  return list;
}

type Row = [step: string, figure: string, krafter: string, reference: string, ratio: string, target: string];

/** One table row per figure; the first row of a step names it. */
class Rows {
  readonly all: Row[] = [];
  private step = "";
  section(name: string): this {
    this.step = name;
    return this;
  }
  add(figure: string, krafter: string, reference = "", r = "", target = ""): this {
    this.all.push([this.step, figure, krafter, reference, r, target]);
    this.step = "";
    return this;
  }
  /** A figure against its reference, with their ratio. */
  vs(figure: string, a: number, b: number, digits = 1, target = ""): this {
    return this.add(figure, fmt(a, digits), fmt(b, digits), fmt(ratio(a, b), 2), target);
  }
}

export function tableRows(f: Figures, verdicts: Target[]): Row[] {
  const byName = (prefix: string) => verdicts.find((v) => v.name.startsWith(prefix))!;
  const rows = new Rows();
  ingestRows(rows, f, byName);
  endToEndRows(rows, f, byName);
  storageRows(rows, f);
  cpuRows(rows, f);
  growthRows(rows, f, byName);
  dropRows(rows, f);
  costRows(rows, f);
  widthRows(rows, f);
  flowRows(rows, f);
  return rows.all;
}

function ingestRows(rows: Rows, f: Figures, v: (p: string) => Target) {
  const r = f.ingest.get("relay")!;
  const rs = f.ingest.get("relay-signed")!;
  const bare = f.ingest.get("bare")!;
  const floor = f.ingest.get("floor")!;
  const logged = f.ingest.get("bare-logged")!;
  rows.section(`Ingest (${S.connections} conn, ${S.rounds}×${Math.round(S.ingestSeconds / S.rounds)} s)`);
  rows.vs("requests/s vs floor (DO insert + queue send + log line)", r.rps, floor.rps, 1, `≥ 0.9: ${mark(v("ingest requests/s ≥ 0.9").met)}`);
  rows.vs("p50 ms vs floor", r.p50, floor.p50);
  rows.vs("p99 ms vs floor", r.p99, floor.p99);
  if (f.ref) {
    const ref = f.ingest.get("ref")!;
    rows.vs(`requests/s vs ${f.ref.commit} (--against ${f.ref.ref})`, r.rps, ref.rps, 1, `≥ 1: ${mark(v(`ingest requests/s ≥ ${f.ref.commit}`).met)}`);
    rows.vs(`p99 ms vs ${f.ref.commit}`, r.p99, ref.p99);
  }
  rows.vs("requests/s vs bare Worker", r.rps, bare.rps, 1, "reported");
  rows.vs("p99 ms vs bare Worker", r.p99, bare.p99);
  rows.vs("floor vs bare Worker: requests/s", floor.rps, bare.rps);
  rows.vs("floor vs bare Worker: p99 ms", floor.p99, bare.p99);
  rows.add("bare + one log line vs bare: requests/s, p99 ms", `${fmt(logged.rps)}, ${fmt(logged.p99)}`, `${fmt(bare.rps)}, ${fmt(bare.p99)}`, fmt(ratio(logged.rps, bare.rps), 2));
  rows.add("signed (Standard Webhooks) requests/s, p99 ms", `${fmt(rs.rps)}, ${fmt(rs.p99)}`, `${fmt(r.rps)}, ${fmt(r.p99)} (unsigned)`, fmt(ratio(rs.rps, r.rps), 2));
}

function endToEndRows(rows: Rows, f: Figures, v: (p: string) => Target) {
  const { e2e, direct, e2eFloor } = f;
  rows.section(`End to end (${S.events} events × ${S.destinations} dest.)`);
  rows.vs("deliveries/s vs floor (stored in a DO, queued to 4 queues, attempts recorded there, logged; 6 connections waiting per invocation)", e2e.deliveriesPerSecond, e2eFloor.deliveriesPerSecond, 1, `≥ 0.9: ${mark(v("deliveries/s ≥ 0.9").met)}`);
  rows.vs("deliveries/s vs the floor past the connection limit (every attempt of a batch at once: wrangler dev only)", e2e.deliveriesPerSecond, f.e2eFloorUnlimited.deliveriesPerSecond, 1, "reported");
  if (f.ref) {
    const ref = f.ref.e2e;
    rows.vs(`deliveries/s vs ${f.ref.commit}`, e2e.deliveriesPerSecond, ref.deliveriesPerSecond, 1, `≥ 1: ${mark(v(`deliveries/s ≥ ${f.ref.commit}`).met)}`);
    rows.vs(`ingest→receipt p50 ms vs ${f.ref.commit}`, e2e.p50, ref.p50, 0);
  }
  rows.vs("deliveries/s vs direct fan-out", e2e.deliveriesPerSecond, direct.deliveriesPerSecond, 1, "reported");
  rows.vs("floor vs direct fan-out: deliveries/s", e2eFloor.deliveriesPerSecond, direct.deliveriesPerSecond);
  rows.vs("time to last delivery s vs direct", e2e.seconds, direct.seconds);
  rows.vs("ingest→receipt p50 ms vs direct", e2e.p50, direct.p50, 0);
  rows.vs("ingest→receipt p99 ms vs direct", e2e.p99, direct.p99, 0);
  const lost = relayLost(f);
  rows.add("lost / duplicates (this step; zero loss: every step)", `${e2e.lost} / ${e2e.duplicates}`, `${direct.lost} / ${direct.duplicates} (direct)`, "", `0 lost: ${mark(lost === 0)}`);
}

/** Bytes per event once the fixed size of each partition (schema, empty pages) is taken out. */
export function marginalBytesPerEvent(x: SourceStorage, baseBytes: number): number {
  return x.events > 0 ? Math.round((x.bytes - x.partitions * baseBytes) / x.events) : Number.NaN;
}

function storageRows(rows: Rows, f: Figures) {
  const { d1Before, d1After, d1BytesPerEvent, partitions } = f.storage;
  const base = f.partitionBaseBytes;
  const m = f.metered.storage;
  const l = f.large.storage;
  const kb = (n: number) => `${int(n / 1024)} KB`;
  rows.section(`Storage (end to end, ${S.events} events)`);
  rows.add("D1 bytes per event (D1 files after − before ÷ events)", fmt(d1BytesPerEvent, 1), `${int(d1Before.bytes)} → ${int(d1After.bytes)} bytes`, "", "≈ 0: reported");
  const rowsOf = rowChanges(d1Before.rows, d1After.rows);
  rows.add("D1 rows of every table: changed (before→after); unchanged", rowsOf.changed, rowsOf.unchanged);
  rows.add(`partition bytes per event (${S.destinations} deliveries + attempts each)`, int(partitions.bytesPerEvent), `${kb(partitions.bytes)}, ${int(partitions.events)} events, ${partitions.partitions} partition(s)`, "", "reported");
  rows.add(`  the same without the fixed ${kb(base)} per partition`, int(marginalBytesPerEvent(partitions, base)));
  rows.add(`partition bytes per event, 1 dest., ${int(f.metered.payloadBytes)}-byte payloads`, int(m.bytesPerEvent), `${int(m.events)} events, ${m.partitions} partition(s)`);
  rows.add("  the same without the fixed size", int(marginalBytesPerEvent(m, base)));
  rows.add(`partition bytes per event, 1 dest., ${int(f.large.payloadBytes)}-byte payloads`, int(l.bytesPerEvent), `${int(l.events)} events, ${l.partitions} partition(s)`);
  rows.add(`  the same without the fixed size`, int(marginalBytesPerEvent(l, base)), int(marginalBytesPerEvent(m, base)), fmt(ratio(marginalBytesPerEvent(l, base), marginalBytesPerEvent(m, base)), 2));
}

function cpuRows(rows: Rows, f: Figures) {
  const r = f.ingest.get("relay")!;
  const rs = f.ingest.get("relay-signed")!;
  const bare = f.ingest.get("bare")!;
  const floor = f.ingest.get("floor")!;
  const { e2e, direct, e2eFloor } = f;
  rows.section("Cost (CPU s, all processes)");
  rows.vs("per 1,000 ingested events vs bare", r.cpuPer1k, bare.cpuPer1k, 2, "reported");
  rows.vs("per 1,000 ingested events vs floor", r.cpuPer1k, floor.cpuPer1k, 2);
  if (f.ref) rows.vs(`per 1,000 ingested events vs ${f.ref.commit}`, r.cpuPer1k, f.ingest.get("ref")!.cpuPer1k, 2);
  rows.vs("per 1,000 signed events vs unsigned", rs.cpuPer1k, r.cpuPer1k, 2);
  rows.vs("per 1,000 deliveries (ingest included) vs direct", e2e.cpuPer1kDeliveries, direct.cpuPer1kDeliveries, 2, "reported");
  rows.vs("per 1,000 deliveries (ingest included) vs floor", e2e.cpuPer1kDeliveries, e2eFloor.cpuPer1kDeliveries, 2);
  if (f.ref) rows.vs(`per 1,000 deliveries (ingest included) vs ${f.ref.commit}`, e2e.cpuPer1kDeliveries, f.ref.e2e.cpuPer1kDeliveries, 2);
  // The same with each event's ingest cost (from the ingest step) taken out: what a delivery itself costs.
  const deducted = (x: E2EFigures, ingestPer1k: number) => ((x.cpuSeconds - (x.events * ingestPer1k) / 1000) / Math.max(1, x.delivered)) * 1000;
  rows.vs("per 1,000 deliveries, ingest deducted vs direct", deducted(e2e, r.cpuPer1k), deducted(direct, bare.cpuPer1k), 2);
}

function growthRows(rows: Rows, f: Figures, v: (p: string) => Target) {
  const small = f.growth[0]!;
  const big = f.growth[f.growth.length - 1]!;
  rows.section(`Growth (one partition: ${int(small.stored)} → ${int(big.stored)} stored)`);
  rows.vs("ingest p50 ms, large vs small", big.ingest.p50, small.ingest.p50, 1, `≤ 1.2: ${mark(v("ingest p50 at").met)}`);
  rows.vs("ingest p99 ms, large vs small", big.ingest.p99, small.ingest.p99);
  rows.vs("ingest requests/s, large vs small", big.ingest.rps, small.ingest.rps);
  rows.vs("list p50 ms (limit=50), large vs small", big.list.p50, small.list.p50, 2, `≤ 1.2: ${mark(v("list p50 at").met)}`);
  rows.vs("list p99 ms, large vs small", big.list.p99, small.list.p99, 2);
}

function dropRows(rows: Rows, f: Figures) {
  const [small, big] = [f.drops[0]!, f.drops[f.drops.length - 1]!];
  rows.section("Partition drop (source deleted)");
  for (const d of f.drops) {
    rows.add(`drop of ${int(d.events)} events: duration_ms (partition_dropped)`, fmt(d.durationMs, 0), `${int(d.bytesBefore)} bytes; logged ${fmt(d.secondsToLog, 1)} s after the DELETE`, "", d === big ? "reported" : "");
  }
  rows.add(`${int(big.events)} vs ${int(small.events)} events: duration ratio`, fmt(big.durationMs, 0), fmt(small.durationMs, 0), fmt(ratio(big.durationMs ?? Number.NaN, small.durationMs ?? Number.NaN), 2), `events ×${fmt(ratio(big.events, small.events), 0)}`);
  const state = (d: DropFigures) => (!d.fileAfter.exists ? "gone" : d.fileAfter.events === null ? "empty" : `**${d.fileAfter.events} events left**`);
  const detail = (d: DropFigures) => (d.fileAfter.exists ? `${int(d.fileAfter.bytes)} bytes, ${d.fileAfter.tables} tables` : "no file");
  rows.add("partition files afterwards", f.drops.map(state).join(", "), f.drops.map(detail).join("; "));
}

function costRows(rows: Rows, f: Figures) {
  const m = f.metered;
  const o = m.perEvent;
  rows.section(`Operations per event (METER, ${int(m.events)} events × 1 dest.)`);
  rows.add("Worker requests: ingest + queue batches", fmt(o.workerRequests + o.queueBatches, 3), `${fmt(o.workerRequests, 3)} + ${fmt(o.queueBatches, 3)}`, "", "reported");
  rows.add("queue messages sent / received", `${fmt(o.queueMessagesSent, 3)} / ${fmt(o.queueMessagesReceived, 3)}`);
  rows.add("Durable Object requests + alarms", fmt(o.doRequests + o.doAlarms, 3), `${fmt(o.doRequests, 3)} + ${fmt(o.doAlarms, 3)}`);
  rows.add("Durable Object SQLite rows read / written", `${fmt(o.doRowsRead, 2)} / ${fmt(o.doRowsWritten, 2)}`);
  rows.add("D1 queries / rows read / rows written", `${fmt(o.d1Queries, 3)} / ${fmt(o.d1RowsRead, 3)} / ${fmt(o.d1RowsWritten, 3)}`);
  const c = cost(f);
  rows.section("Cost per 1M events (list prices)");
  for (const l of c.lines) rows.add(l.item, usd(l.usdPerMillion), `${perEventText(l)} per event`);
  rows.add("total (Workers Paid; free allowances, CPU, DO duration not counted)", usd(c.total), "", "", "reported");
}

function perEventText(l: CostLine): string {
  return l.unit === "bytes" ? `${int(l.perEvent)} bytes` : `${fmt(l.perEvent, 3)} ${l.unit}`;
}

function widthRows(rows: Rows, f: Figures) {
  const base = f.fanout[0]!;
  rows.section(`Fan-out width (${S.fanoutEvents} events, one at a time)`);
  for (const w of f.fanout) {
    rows.add(
      `${w.destinations} dest.: ingest→last delivery p50 (p99) ms`,
      `${fmt(w.eventP50, 0)} (${fmt(w.eventP99, 0)})`,
      w === base ? "" : `${fmt(base.eventP50, 0)} (${base.destinations} dest.)`,
      `${fmt(w.msPerDelivery, 1)} ms/delivery`,
      w.lost === 0 ? "0 lost" : `**${w.lost} lost**`,
    );
  }
}

function flowRows(rows: Rows, f: Figures) {
  const { rateLimit: r, fifo, isolation: i } = f.flow;
  rows.section(`Flow control and isolation`);
  rows.add(`rate_limit ${r.setting}/s, ${r.events} events at once: measured starts/s`, fmt(r.measuredPerSecond, 2), `${r.setting} (setting)`, fmt(r.ratioToSetting, 2), `${r.most10s} in any 10 s (≤ ${r.allowed10s})`);
  rows.vs(`fifo against unordered, ${fifo.events} events, one source: deliveries/s`, fifo.fifoPerSecond, fifo.unorderedPerSecond, 1, fifo.inOrder ? "in ingest order" : "**out of order**");
  rows.add(`account B's ingest→delivery p50 (p99) ms beside A's dead endpoint, against B alone`, `${fmt(i.besideP50, 0)} (${fmt(i.besideP99, 0)})`, `${fmt(i.aloneP50, 0)} (${fmt(i.aloneP99, 0)})`, fmt(i.p99Ratio, 2), "p99 ≤ 2×");
}

export function markdownTable(rows: Row[]): string {
  const head: Row = ["Step", "Figure", "Krafter", "Reference", "Ratio", "Target"];
  const all = [head, ...rows];
  const widths = head.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  const line = (r: Row) => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(" | ")} |`;
  return [line(head), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...rows.map(line)].join("\n");
}
