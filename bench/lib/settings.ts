/**
 * The benchmark's settings, from the environment (see bench/run.ts), and its progress log.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ROOT } from "../../tools/process.ts";
import { E2E_ENCRYPTION_KEY } from "../../tools/relay.ts";

export const QUICK = process.env.BENCH_QUICK === "1";
const int = (name: string, fallback: number) => {
  const v = process.env[name];
  return v === undefined || v === "" ? fallback : Number.parseInt(v, 10);
};
const list = (name: string, fallback: number[]) => {
  const v = process.env[name];
  return v === undefined || v === "" ? fallback : v.split(",").map((x) => Number.parseInt(x, 10));
};

export const S = {
  quick: QUICK,
  connections: int("BENCH_CONNECTIONS", 32),
  /** seconds of load per Worker, split over the rounds */
  ingestSeconds: int("BENCH_INGEST_SECONDS", QUICK ? 2 : 15),
  rounds: int("BENCH_ROUNDS", QUICK ? 1 : 3),
  warmupSeconds: QUICK ? 0 : 3,
  /** half-seconds of idle CPU that mean a Worker's queues have drained (more than a 1 s batch timeout) */
  calmSamples: QUICK ? 2 : 5,
  events: int("BENCH_EVENTS", QUICK ? 50 : 2000),
  destinations: int("BENCH_DESTINATIONS", QUICK ? 2 : 5),
  /** concurrent senders of the end-to-end events */
  sendConcurrency: 32,
  growth: list("BENCH_GROWTH", QUICK ? [200, 2000] : [10_000, 100_000]),
  /** events in the two partitions dropped (their sources deleted) */
  drop: list("BENCH_DROP", QUICK ? [100, 10_000] : [1_000, 100_000]),
  /** events of the metered step (1 destination), and of the storage step with larger payloads */
  meterEvents: int("BENCH_METER_EVENTS", QUICK ? 50 : 1000),
  largeEvents: QUICK ? 20 : 500,
  largePayloadBytes: 2048,
  growthIngestSeconds: QUICK ? 1 : 12,
  /** list latency: seconds per source, in rounds of 1 s alternating between the two (load drifts on a shared machine) */
  listSeconds: QUICK ? 1 : 8,
  fanout: list("BENCH_FANOUT", QUICK ? [1, 3] : [1, 10, 100]),
  fanoutEvents: QUICK ? 3 : 20,
  /** lib/flow.ts */
  flow: { rate: 20, rateEvents: QUICK ? 40 : 200, fifoEvents: QUICK ? 20 : 200, isolationEvents: QUICK ? 20 : 50 },
  /** a phase fails when no delivery has arrived for this long */
  stallMs: QUICK ? 30_000 : 90_000,
  /** the same for the baselines: they retry nothing, so what has not come by then never will */
  baselineStallMs: 10_000,
};
export const OUT = process.env.BENCH_OUT ?? join(ROOT, "bench", "results.json");
/** The relay to measure: this tree's, unless BENCH_RELAY names another wrangler.toml. */
export const RELAY_CONFIG = process.env.BENCH_RELAY ?? join(ROOT, "wrangler.toml");
export const RUN = randomBytes(4).toString("hex");

/** `npm run bench -- --against REF`: a commit measured alongside (lib/against.ts). */
export const AGAINST: string | undefined = parseArgs({ options: { against: { type: "string" } }, strict: true }).values.against;

export const RELAY_VARS = {
  ENVIRONMENT: "development",
  ENCRYPTION_KEY: E2E_ENCRYPTION_KEY,
  ALLOW_PRIVATE_DESTINATIONS: "true",
  // The fan-out width step gives one source 100 destinations (the default quota is 50).
  MAX_DESTINATIONS_PER_SOURCE: "200",
  // The list step makes requests back to back for seconds with one key.
  API_RATE_LIMIT: "1000000",
  ACCOUNT_API_RATE_LIMIT: "1000000",
};

/**
 * The relay once restarted on seeded partitions (growth, cost, drop): counting its
 * billed operations (METER, never in production), and with the largest split threshold,
 * so a seeded partition stays one partition while the growth step ingests into it
 * (the question there is a partition's size, not the split).
 */
export const STORE_VARS = {
  ...RELAY_VARS,
  METER: "true",
  PARTITION_SPLIT_BYTES: String(8 * 1024 ** 3),
};

export const t0 = Date.now();
export const note = (msg: string) => process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);

