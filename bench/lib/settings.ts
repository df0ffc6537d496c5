/**
 * The benchmark's settings, from the environment (see bench/run.ts), and its progress log.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { E2E_ENCRYPTION_KEY, ROOT } from "../../test/e2e/harness.ts";

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
  calmSamples: QUICK ? 3 : 5,
  events: int("BENCH_EVENTS", QUICK ? 50 : 2000),
  destinations: int("BENCH_DESTINATIONS", QUICK ? 2 : 5),
  /** concurrent senders of the end-to-end events */
  sendConcurrency: 32,
  growth: list("BENCH_GROWTH", QUICK ? [200, 2000] : [10_000, 100_000]),
  growthIngestSeconds: QUICK ? 1 : 12,
  listSeconds: QUICK ? 1 : 6,
  fanout: list("BENCH_FANOUT", QUICK ? [1, 3] : [1, 10, 100]),
  fanoutEvents: QUICK ? 3 : 20,
  /** a phase fails when no delivery has arrived for this long */
  stallMs: QUICK ? 30_000 : 90_000,
};
export const OUT = process.env.BENCH_OUT ?? join(ROOT, "bench", "results.json");
/** The relay to measure: this tree's, unless BENCH_RELAY names another wrangler.toml. */
export const RELAY_CONFIG = process.env.BENCH_RELAY ?? join(ROOT, "wrangler.toml");
export const RUN = randomBytes(4).toString("hex");

export const RELAY_VARS = {
  ENVIRONMENT: "development",
  ENCRYPTION_KEY: E2E_ENCRYPTION_KEY,
  ALLOW_PRIVATE_DESTINATIONS: "true",
};

export const t0 = Date.now();
export const note = (msg: string) => process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);

