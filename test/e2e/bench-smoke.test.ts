/**
 * `npm run bench` in its quick mode (BENCH_QUICK=1: seconds of load, 50 events to 2
 * destinations, a few thousand stored events): it runs to the end and loses nothing.
 * No timing is asserted here: figures on a shared machine are for `npm run bench` itself.
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

it("npm run bench (quick) completes and every expected delivery arrives", { timeout: 180_000 }, async () => {
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
  for (const g of r.growth) {
    expect(g.ingest.errors).toBe(0);
    expect(g.list.requests).toBeGreaterThan(0);
    expect(g.list.errors).toBe(0);
  }
  expect(r.table).toMatch(/\| Step/);
});
