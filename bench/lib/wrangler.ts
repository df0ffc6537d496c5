/**
 * Runs a Worker the way the benchmark compares them: `wrangler dev`, local, on a free
 * port, with its state in a fresh `--persist-to` directory and the flags of the e2e
 * harness (test/e2e/harness.ts), for the relay and the baselines alike.
 *
 * Each Worker runs from a snapshot: `wrangler deploy --dry-run --outdir` bundles it
 * (the code that would be deployed), and a copy of its wrangler.toml points `main` at
 * that bundle. `wrangler dev` watches its sources and reloads on every change, which
 * would restart the runtime (and drop in-memory queue messages) in the middle of a run
 * whenever someone edits src/ in this working tree; the snapshot never changes.
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { childEnv, freePort, ROOT, run } from "../../test/e2e/harness.ts";
import { sampleTree, type CpuSample } from "./proc.ts";

export const WRANGLER = join(ROOT, "node_modules", ".bin", "wrangler");

const READY_TIMEOUT_MS = 90_000;
const OUTPUT_LIMIT = 256 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Bundles the Worker of `configPath` into `dir` and writes a config that runs the bundle. */
export async function snapshot(configPath: string, dir: string): Promise<string> {
  const build = join(dir, "build");
  await mkdir(build, { recursive: true });
  const r = await run(WRANGLER, ["deploy", "--dry-run", "--outdir", build, "--config", configPath], { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`wrangler deploy --dry-run --config ${configPath} failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  const text = await readFile(configPath, "utf8");
  const base = dirname(resolve(configPath));
  let sawMain = false;
  const rewritten = text
    .replace(/^main\s*=\s*"[^"]*"\s*$/m, () => {
      sawMain = true;
      return `main = ${JSON.stringify(join(build, "index.js"))}`;
    })
    // Other paths are relative to the config file: make them absolute (migrations, assets, site).
    .replace(/^(migrations_dir|directory|bucket)\s*=\s*"([^"]*)"\s*$/gm, (_, k: string, d: string) => `${k} = ${JSON.stringify(resolve(base, d))}`);
  if (!sawMain) throw new Error(`${configPath} has no main = "…" line`);
  const out = join(dir, "wrangler.toml");
  await writeFile(out, rewritten);
  return out;
}

export interface Runtime {
  label: string;
  origin: string;
  /** wrangler's inspector (DevTools protocol) for the Worker */
  inspectorPort: number;
  pid: number;
  config: string;
  persistTo: string;
  cpu(): CpuSample;
  output(): string;
  stop(): Promise<void>;
}

const live = new Set<number>();
process.on("exit", () => {
  for (const pgid of live) {
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // gone
    }
  }
});

/** wrangler dev of a snapshot config; resolves once `GET /` answers 200. */
export async function startWorker(o: {
  label: string;
  config: string;
  persistTo: string;
  vars: Record<string, string>;
}): Promise<Runtime> {
  await mkdir(o.persistTo, { recursive: true });
  const envFile = join(o.persistTo, "empty.env");
  await writeFile(envFile, "");
  const port = await freePort();
  const inspectorPort = await freePort();
  const args = [
    "dev",
    "--config", o.config,
    "--ip", "127.0.0.1",
    "--port", String(port),
    "--inspector-port", String(inspectorPort),
    "--persist-to", o.persistTo,
    "--env-file", envFile,
    "--show-interactive-dev-session=false",
    ...Object.entries(o.vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
  ];
  // A dev registry of its own: with the shared one (~/.config/.wrangler/registry), every
  // other `wrangler dev` on the machine starting or stopping (other runs, e2e tests)
  // updates this one mid-run, and local queues may be routed to another session's
  // consumer of the same queue name.
  const env = childEnv({ WRANGLER_REGISTRY_PATH: join(o.persistTo, "dev-registry") });
  const child = spawn(WRANGLER, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const pid = child.pid!;
  live.add(pid);
  let output = "";
  const collect = (d: string) => {
    output += d;
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
  };
  child.stdout!.setEncoding("utf8").on("data", collect);
  child.stderr!.setEncoding("utf8").on("data", collect);
  let exited = false;
  const exit = new Promise<void>((r) => child.once("exit", () => ((exited = true), r())));

  const origin = `http://127.0.0.1:${port}`;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      process.kill(-pid, "SIGTERM");
    } catch {
      // gone
    }
    await Promise.race([exit, sleep(5_000)]);
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone
    }
    live.delete(pid);
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`${o.label}: wrangler dev did not come up on ${origin}\n--- output ---\n${output}\n--- end ---`);
    }
    try {
      const res = await fetch(`${origin}/`, { signal: AbortSignal.timeout(5_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not yet
    }
    await sleep(250);
  }
  return {
    label: o.label,
    origin,
    inspectorPort,
    pid,
    config: o.config,
    persistTo: o.persistTo,
    cpu: () => sampleTree(pid),
    output: () => output,
    stop,
  };
}

/** Applies the D1 migrations of a snapshot config to a state directory. */
export async function migrate(config: string, persistTo: string): Promise<void> {
  const r = await run(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--config", config, "--persist-to", persistTo], { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`migrations failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
}

/** Runs SQL from a file against the local D1 of a state directory. */
export async function executeSql(config: string, persistTo: string, file: string): Promise<void> {
  const r = await run(WRANGLER, ["d1", "execute", "DB", "--local", "--config", config, "--persist-to", persistTo, "--file", file, "--yes"], {
    timeoutMs: 600_000,
  });
  if (r.code !== 0) throw new Error(`d1 execute failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Runs one SQL statement against the local D1 of a state directory; returns its rows. */
export async function queryRows<T = Record<string, unknown>>(config: string, persistTo: string, sql: string): Promise<T[]> {
  const r = await run(WRANGLER, ["d1", "execute", "DB", "--local", "--config", config, "--persist-to", persistTo, "--json", "--command", sql], {
    timeoutMs: 180_000,
  });
  if (r.code !== 0) throw new Error(`d1 execute failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  const out = JSON.parse(r.stdout) as { results: T[] }[];
  return out.flatMap((o) => o.results);
}
