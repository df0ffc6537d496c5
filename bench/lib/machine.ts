/**
 * What the benchmark ran on: the machine, the versions, the commit, and how busy the
 * machine was over the run (a shared machine's noise shows in steal and busy time).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { ROOT } from "../../tools/process.ts";

const round2 = (n: number) => Math.round(n * 100) / 100;

export function machine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  const version = (pkg: string) => {
    try {
      return (JSON.parse(readFileSync(join(ROOT, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;
    } catch {
      return "unknown";
    }
  };
  let git = { commit: "unknown", dirty: [] as string[] };
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
    // Read-only (no index refresh): what in the benchmarked code differs from the commit.
    const status = execFileSync("git", ["status", "--porcelain", "--", "src", "wrangler.toml", "bench", ":!bench/results.*"], {
      cwd: ROOT,
      encoding: "utf8",
      env: { ...process.env, GIT_OPTIONAL_LOCKS: "0" },
    });
    git = { commit, dirty: status.split("\n").filter(Boolean).map((l) => l.slice(3)) };
  } catch {
    // not a git checkout
  }
  return {
    nproc: os.availableParallelism(),
    cpu: model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    wrangler: version("wrangler"),
    workerd: version("wrangler/node_modules/workerd") !== "unknown" ? version("wrangler/node_modules/workerd") : version("workerd"),
    autocannon: version("autocannon"),
    loadavgAtStart: os.loadavg().map(round2),
    git,
  };
}

/** CPU steal and other tenants' load over the run, from /proc/stat: how noisy the machine was. */
export function cpuTimes() {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = line.reduce((a, b) => a + b, 0);
  return { total, idle: (line[3] ?? 0) + (line[4] ?? 0), steal: line[7] ?? 0 };
}

