/**
 * CPU time of a process tree, from /proc (Linux): utime + stime of every live process
 * descended from a root pid (wrangler's node process; workerd and esbuild are its
 * children). Sampled before and after a phase; the difference is the CPU the runtime
 * spent on it. A process that exits between samples takes its time with it: the
 * runtime's processes live for the whole run, so nothing is lost in practice.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

interface Stat {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime, in clock ticks */
  ticks: number;
}

function readStat(pid: number): Stat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // "pid (comm) state ppid … utime stime …": comm may contain spaces and parentheses.
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const fields = text.slice(close + 2).split(" ");
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  return {
    pid,
    ppid: Number(fields[1]),
    comm: text.slice(open + 1, close),
    ticks: Number(fields[11]) + Number(fields[12]),
  };
}

function allStats(): Stat[] {
  const out: Stat[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

export interface CpuSample {
  /** seconds of CPU, the whole tree */
  total: number;
  /** seconds of CPU by process name (workerd, node, esbuild, …) */
  byName: Record<string, number>;
  /** pid → seconds, to tell processes apart across samples */
  byPid: Map<number, { comm: string; seconds: number }>;
}

/** The CPU time so far of `root` and all its descendants. */
export function sampleTree(root: number): CpuSample {
  const stats = allStats();
  const children = new Map<number, Stat[]>();
  for (const s of stats) {
    const list = children.get(s.ppid) ?? [];
    list.push(s);
    children.set(s.ppid, list);
  }
  const hz = clockTicks();
  const byPid = new Map<number, { comm: string; seconds: number }>();
  const rootStat = stats.find((s) => s.pid === root);
  const queue = rootStat ? [rootStat] : [];
  while (queue.length > 0) {
    const s = queue.shift()!;
    byPid.set(s.pid, { comm: s.comm, seconds: s.ticks / hz });
    queue.push(...(children.get(s.pid) ?? []));
  }
  return summarise(byPid);
}

function summarise(byPid: Map<number, { comm: string; seconds: number }>): CpuSample {
  let total = 0;
  const byName: Record<string, number> = {};
  for (const { comm, seconds } of byPid.values()) {
    total += seconds;
    byName[comm] = (byName[comm] ?? 0) + seconds;
  }
  return { total, byName, byPid };
}

/** after − before, per process (a process new since `before` counts from zero). */
export function cpuBetween(before: CpuSample, after: CpuSample): CpuSample {
  const byPid = new Map<number, { comm: string; seconds: number }>();
  for (const [pid, a] of after.byPid) {
    byPid.set(pid, { comm: a.comm, seconds: Math.max(0, a.seconds - (before.byPid.get(pid)?.seconds ?? 0)) });
  }
  return summarise(byPid);
}
