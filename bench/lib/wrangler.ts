/**
 * Runs a Worker the way the benchmark compares them: `wrangler dev`, local, on a free
 * port, with its state in a fresh `--persist-to` directory, through the project's one
 * launcher (tools/wrangler.ts), for the relay and the baselines alike.
 *
 * Each Worker runs from a snapshot: `wrangler deploy --dry-run --outdir` bundles it
 * (the code that would be deployed), and a copy of its wrangler.toml points `main` at
 * that bundle. `wrangler dev` watches its sources and reloads on every change, which
 * would restart the runtime (and drop in-memory queue messages) in the middle of a run
 * whenever someone edits src/ in this working tree; the snapshot never changes.
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, run } from "../../tools/process.ts";
import { applyMigrations, groupAlive, startWranglerDev, WRANGLER } from "../../tools/wrangler.ts";
import { sampleTree, type CpuSample } from "./proc.ts";

const READY_TIMEOUT_MS = 90_000;
/** Wrangler's output kept per Worker (the newest): a few minutes of log lines, for the logs written at stop. */
const OUTPUT_LIMIT = 4 * 1024 * 1024;

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
  let dev;
  try {
    dev = await startWranglerDev({
      port: await freePort(),
      persistTo: o.persistTo,
      envFile,
      vars: o.vars,
      args: ["--config", o.config],
      readyTimeoutMs: READY_TIMEOUT_MS,
      outputLimit: OUTPUT_LIMIT,
    });
  } catch (err) {
    throw new Error(`${o.label}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const stop = async () => {
    // Its output beside its state (kept with BENCH_KEEP=1): what to read when a step fails.
    await writeFile(join(dirname(o.persistTo), `wrangler-${o.label.replace(/[^\w.-]+/g, "_")}.log`), dev.output()).catch(() => undefined);
    await dev.stop();
    await groupGone(dev.pid);
  };
  return {
    label: o.label,
    origin: dev.origin,
    inspectorPort: dev.inspectorPort!,
    pid: dev.pid,
    config: o.config,
    persistTo: o.persistTo,
    cpu: () => sampleTree(dev.pid),
    output: dev.output,
    stop,
  };
}

/**
 * Until no process of the group is left. The launcher's stop() returns once wrangler has
 * exited and the group was sent SIGKILL, but workerd can take a moment to die, holding
 * its SQLite files: the benchmark writes to them next (seeding).
 */
async function groupGone(pgid: number, maxMs = 15_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline && groupAlive(pgid)) await sleep(50);
}

/** Applies the D1 migrations of a snapshot config to a state directory. */
export function migrate(config: string, persistTo: string): Promise<void> {
  return applyMigrations(persistTo, config);
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
