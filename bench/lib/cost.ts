/**
 * Operations counted per event, and what they cost at Cloudflare's list prices.
 *
 * A relay run with METER=true counts what Cloudflare bills as it happens (src/meter.ts)
 * and answers the isolate's totals at `GET /__meter`; `wrangler dev` runs the Worker and
 * its Durable Objects in one isolate, so one read covers both. The benchmark reads it
 * before and after a step of N events and divides the difference by N.
 *
 * The cost is per million events, on the Workers Paid plan, at the list price of each
 * billed item: the included allowances (10 M requests, 1 M queue operations, 25 B DO
 * rows read, …) and CPU time and Durable Object duration (GB-s) are left out, so this is
 * the marginal cost of the operations and storage an event causes, not a bill.
 */

/** `GET /__meter` (src/meter.ts). */
export interface MeterTotals {
  workerRequests: number;
  queueBatches: number;
  queueMessagesReceived: number;
  queueMessagesSent: number;
  d1Queries: number;
  d1RowsRead: number;
  d1RowsWritten: number;
  doRequests: number;
  doAlarms: number;
  doRowsRead: number;
  doRowsWritten: number;
}

export async function readMeter(origin: string): Promise<MeterTotals> {
  const res = await fetch(`${origin}/__meter`);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /__meter: HTTP ${res.status} ${text} (is METER=true set?)`);
  return JSON.parse(text) as MeterTotals;
}

/** (after − before) / events, field by field. */
export function perEvent(before: MeterTotals, after: MeterTotals, events: number): MeterTotals {
  const out = {} as MeterTotals;
  for (const k of Object.keys(after) as (keyof MeterTotals)[]) out[k] = Math.round(((after[k] - (before[k] ?? 0)) / Math.max(1, events)) * 1000) / 1000;
  return out;
}

/**
 * List prices in US dollars, Workers Paid plan, as published on:
 * - developers.cloudflare.com/workers/platform/pricing (requests)
 * - developers.cloudflare.com/queues/platform/pricing (operations: every 64 KB written,
 *   read or deleted; a message delivered once costs 3)
 * - developers.cloudflare.com/durable-objects/platform/pricing (requests, each RPC call and
 *   each alarm one; SQLite rows read and written; SQLite storage)
 * - developers.cloudflare.com/d1/platform/pricing (rows read and written; storage)
 */
export const PRICES = {
  workerRequestsPerMillion: 0.3,
  queueOperationsPerMillion: 0.4,
  /** write, read, delete: each message sent is delivered at least once */
  queueOperationsPerMessage: 3,
  doRequestsPerMillion: 0.15,
  doRowsReadPerMillion: 0.001,
  doRowsWrittenPerMillion: 1.0,
  d1RowsReadPerMillion: 0.001,
  d1RowsWrittenPerMillion: 1.0,
  doStoragePerGBMonth: 0.2,
  d1StoragePerGBMonth: 0.75,
} as const;

/** Days an event is kept (RETENTION_DAYS in wrangler.toml): its storage is held about one month. */
export const RETENTION_MONTHS = 1;

export interface CostLine {
  item: string;
  /** billed units per event (or bytes per event for storage) */
  perEvent: number;
  unit: string;
  /** US dollars per million events */
  usdPerMillion: number;
}

/**
 * The cost of a million events, item by item. `partitionBytes` and `d1Bytes` per event
 * are held for RETENTION_MONTHS: bytes × 10⁶ / 10⁹ GB-months per million events.
 */
export function costPerMillion(ops: MeterTotals, storage: { partitionBytes: number; d1Bytes: number }): { lines: CostLine[]; total: number } {
  const perMillion = (units: number, price: number) => units * price; // units per event × 10⁶ events × price per 10⁶
  const gbMonths = (bytes: number) => (Math.max(0, bytes) * 1e6 * RETENTION_MONTHS) / 1e9;
  const workerRequests = ops.workerRequests + ops.queueBatches;
  const queueOps = ops.queueMessagesSent * PRICES.queueOperationsPerMessage;
  const doRequests = ops.doRequests + ops.doAlarms;
  const lines: CostLine[] = [
    { item: "Workers requests (ingest + queue batches)", perEvent: workerRequests, unit: "requests", usdPerMillion: perMillion(workerRequests, PRICES.workerRequestsPerMillion) },
    { item: "Queues operations (3 per message sent)", perEvent: queueOps, unit: "operations", usdPerMillion: perMillion(queueOps, PRICES.queueOperationsPerMillion) },
    { item: "Durable Objects requests (calls + alarms)", perEvent: doRequests, unit: "requests", usdPerMillion: perMillion(doRequests, PRICES.doRequestsPerMillion) },
    { item: "Durable Objects SQLite rows read", perEvent: ops.doRowsRead, unit: "rows", usdPerMillion: perMillion(ops.doRowsRead, PRICES.doRowsReadPerMillion) },
    { item: "Durable Objects SQLite rows written", perEvent: ops.doRowsWritten, unit: "rows", usdPerMillion: perMillion(ops.doRowsWritten, PRICES.doRowsWrittenPerMillion) },
    { item: "D1 rows read", perEvent: ops.d1RowsRead, unit: "rows", usdPerMillion: perMillion(ops.d1RowsRead, PRICES.d1RowsReadPerMillion) },
    { item: "D1 rows written", perEvent: ops.d1RowsWritten, unit: "rows", usdPerMillion: perMillion(ops.d1RowsWritten, PRICES.d1RowsWrittenPerMillion) },
    { item: `Durable Objects storage (${RETENTION_MONTHS} month held)`, perEvent: storage.partitionBytes, unit: "bytes", usdPerMillion: gbMonths(storage.partitionBytes) * PRICES.doStoragePerGBMonth },
    { item: `D1 storage (${RETENTION_MONTHS} month held)`, perEvent: storage.d1Bytes, unit: "bytes", usdPerMillion: gbMonths(storage.d1Bytes) * PRICES.d1StoragePerGBMonth },
  ];
  return { lines, total: lines.reduce((a, l) => a + l.usdPerMillion, 0) };
}
