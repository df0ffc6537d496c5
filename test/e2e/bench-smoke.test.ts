/**
 * `npm run bench` in its quick mode (BENCH_QUICK=1: seconds of load, 50 events to 2
 * destinations, partitions seeded with a few thousand events): it runs to the end, loses
 * nothing, lists what it seeded, counts the relay's operations and drops the partitions
 * of deleted sources. No timing is asserted here: figures on a shared machine are for
 * `npm run bench` itself.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { childEnv, ROOT } from "./harness";

interface Results {
  ok: boolean;
  failures: string[];
  endToEnd: { relay: { expected: number; delivered: number; lost: number } };
  fanout: { expected: number; delivered: number; lost: number }[];
  ingest: Record<string, { requests: number; errors: number }>;
  growth: { stored: number; ingest: { requests: number; errors: number }; list: { requests: number; errors: number } }[];
  storage: { d1BytesPerEvent: number; partitions: { events: number; bytesPerEvent: number } };
  metered: { events: number; e2e: { lost: number }; perEvent: { workerRequests: number; queueMessagesSent: number; doRequests: number; doRowsWritten: number } };
  largePayloads: { e2e: { lost: number }; storage: { bytesPerEvent: number } };
  cost: { lines: { item: string; usdPerMillion: number }[]; total: number };
  drops: { events: number; durationMs: number | null; fileAfter: { events: number | null } }[];
  flow: {
    rateLimit: { setting: number; events: number; delivered: number; measuredPerSecond: number; most10s: number; allowed10s: number };
    fifo: { events: number; delivered: number; inOrder: boolean; fifoPerSecond: number; unorderedPerSecond: number };
    isolation: { events: number; aloneP99: number; besideP99: number; deadAttempts: number };
  };
  table: string;
}

const dir = await mkdtemp(join(tmpdir(), "krafter-bench-smoke-"));
afterAll(() => rm(dir, { recursive: true, force: true }));

function runBench(out: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    // The pinned Node (the one running vitest) strips the runner's types.
    const child = spawn(process.execPath, [join(ROOT, "bench", "run.ts")], {
      cwd: ROOT,
      env: childEnv({ BENCH_QUICK: "1", BENCH_OUT: out }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (output += d));
    const timer = setTimeout(() => child.kill("SIGTERM"), 170_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, output });
    });
  });
}

it("npm run bench (quick) completes and every expected delivery arrives", { timeout: 300_000 }, async () => {
  const out = join(dir, "results.json");
  const { code, output } = await runBench(out);
  expect(code, output).toBe(0);
  const r = JSON.parse(await readFile(out, "utf8")) as Results;
  expect(r.ok, r.failures.join("\n")).toBe(true);
  expect(r.endToEnd.relay.expected).toBe(100);
  expect(r.endToEnd.relay.delivered).toBe(r.endToEnd.relay.expected);
  expect(r.endToEnd.relay.lost).toBe(0);
  for (const f of r.fanout) {
    expect(f.lost).toBe(0);
    expect(f.delivered).toBe(f.expected);
  }
  for (const name of ["bare", "floor", "relay", "relay-signed"]) {
    expect(r.ingest[name]!.requests).toBeGreaterThan(0);
    expect(r.ingest[name]!.errors).toBe(0);
  }
  // Flow control: every rate-limited delivery arrived, no faster than allowed; fifo in order; isolation measured beside a dead endpoint in use.
  expect(r.flow.rateLimit.delivered).toBe(r.flow.rateLimit.events);
  expect(r.flow.rateLimit.most10s).toBeLessThanOrEqual(r.flow.rateLimit.allowed10s);
  expect(r.flow.rateLimit.measuredPerSecond).toBeGreaterThan(0);
  expect(r.flow.fifo).toMatchObject({ delivered: r.flow.fifo.events, inOrder: true });
  expect(r.flow.fifo.fifoPerSecond).toBeGreaterThan(0);
  expect(r.flow.isolation.deadAttempts).toBeGreaterThan(0);
  expect(r.flow.isolation.besideP99).toBeGreaterThan(0);
  expect(r.table).toContain("fifo against unordered");
  for (const g of r.growth) {
    expect(g.ingest.errors).toBe(0);
    expect(g.list.requests).toBeGreaterThan(0);
    expect(g.list.errors).toBe(0);
  }
  // Events are not in D1: its files do not grow with them (a page at most, for the source-day's bookkeeping row).
  expect(r.storage.d1BytesPerEvent).toBeLessThanOrEqual(4096 / 50);
  expect(r.storage.partitions.events).toBe(50);
  expect(r.storage.partitions.bytesPerEvent).toBeGreaterThan(0);
  expect(r.metered.e2e.lost).toBe(0);
  expect(r.largePayloads.e2e.lost).toBe(0);
  expect(r.largePayloads.storage.bytesPerEvent).toBeGreaterThan(0);
  // One ingest request, one deliver message, and Durable Object calls and writes per event.
  expect(r.metered.perEvent.workerRequests).toBeGreaterThanOrEqual(1);
  expect(r.metered.perEvent.queueMessagesSent).toBeGreaterThanOrEqual(1);
  expect(r.metered.perEvent.doRequests).toBeGreaterThan(0);
  expect(r.metered.perEvent.doRowsWritten).toBeGreaterThan(0);
  expect(r.cost.total).toBeGreaterThan(0);
  expect(r.drops).toHaveLength(2);
  for (const d of r.drops) {
    expect(d.durationMs).not.toBeNull();
    expect(d.fileAfter.events).toBeNull();
  }
  expect(r.table).toMatch(/\| Step/);
});
