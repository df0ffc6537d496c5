/// <reference types="node" />
/**
 * The e2e harness: runs the real `wrangler dev` (the Worker with embedded D1, Queues and
 * Durable Objects) as a separate process on a free port, with its state in a fresh
 * temporary directory, and the project's scripts against that same state.
 *
 *   const dev = await startDev();             // migrations applied, GET / answers 200
 *   const key = await dev.apiKey("webhooks:read");
 *   await fetch(`${dev.origin}/api/v1/webhooks/sources`, { headers: { authorization: `Bearer ${key}` } });
 *   await dev.stop();                          // kills wrangler and workerd, removes the state
 *
 * The developer's own `.dev.vars`/`.env` are ignored (an empty `--env-file`); the vars
 * come from `--var`. Wrangler's output is kept and shown when something fails.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const WRANGLER = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "wrangler.cmd" : "wrangler");

/** A fixed key for e2e runs only (never used outside tests). */
export const E2E_ENCRYPTION_KEY = "q1ZsS0cRkq1KqfUIv8u2RoX0mWd2p3yqJ4n3f0mQH9U=";

export const DEFAULT_VARS: Readonly<Record<string, string>> = {
  ENVIRONMENT: "development",
  ENCRYPTION_KEY: E2E_ENCRYPTION_KEY,
  ALLOW_PRIVATE_DESTINATIONS: "true",
  RETRY_SCHEDULE: "1,1,1",
};

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5_000;
const OUTPUT_LIMIT = 64 * 1024;

/** The environment for every child: the pinned Node first, no telemetry, no prompts. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PATH: join(ROOT, "node_modules", ".bin") + delimiter + (process.env.PATH ?? ""),
    WRANGLER_SEND_METRICS: "false",
    NO_COLOR: "1",
    FORCE_COLOR: "0",
    ...extra,
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion with captured output (stdin closed: nothing can prompt). */
export function run(command: string, args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: ROOT,
      env: childEnv(options.env),
      stdio: ["ignore", "pipe", "pipe"],
      shell: process.platform === "win32" && command.endsWith(".cmd"),
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 0), stdout, stderr });
    });
  });
}

/** `npm run api-key -- …args` against a local state directory, run the way npm would. */
export function runApiKey(args: string[], persistTo: string): Promise<RunResult> {
  return run(process.execPath, [join(ROOT, "scripts", "api-key.mjs"), ...args, "--persist-to", persistTo]);
}

/** Applies the D1 migrations to a local state directory. */
export async function applyMigrations(persistTo: string): Promise<void> {
  const r = await run(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo]);
  if (r.code !== 0) {
    throw new Error(`wrangler d1 migrations apply failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface Dev {
  /** `http://127.0.0.1:PORT` */
  origin: string;
  port: number;
  /** The local state directory (D1, Durable Objects, queues) of this instance. */
  persistTo: string;
  /** Creates a key with `scripts/api-key.mjs create` against this instance's database; returns it. */
  apiKey(scopes?: string, account?: string): Promise<string>;
  /** Wrangler's output so far (stdout and stderr, the last 64 KiB). */
  output(): string;
  /** Stops wrangler dev (the whole process group) and removes the state directory. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Added to, or overriding, DEFAULT_VARS. */
  vars?: Record<string, string>;
  /** Default: a free port. */
  port?: number;
  /**
   * How often to fire the housekeeping cron (`/__scheduled`), as production's trigger
   * would once a minute; wrangler dev runs none by itself. Default 60 s; 0 for never.
   */
  cronEveryMs?: number;
}

// Process groups still running, killed if the test process exits without stop().
const liveGroups = new Set<number>();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const pgid of liveGroups) killGroup(pgid, "SIGKILL");
  });
}

function killGroup(pgid: number, signal: NodeJS.Signals) {
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startDev(options: StartOptions = {}): Promise<Dev> {
  const persistTo = await mkdtemp(join(tmpdir(), "krafter-e2e-"));
  try {
    // An empty env file: wrangler then loads neither the developer's .dev.vars nor .env.
    const envFile = join(persistTo, "empty.env");
    await writeFile(envFile, "");
    await applyMigrations(persistTo);
    const vars = { ...DEFAULT_VARS, ...options.vars };
    // A port taken between freePort() and wrangler's bind: try again on another.
    for (let attempt = 1; ; attempt++) {
      const port = options.port ?? (await freePort());
      try {
        return await launch({ port, vars, persistTo, envFile, cronEveryMs: options.cronEveryMs ?? 60_000 });
      } catch (err) {
        const inUse = err instanceof Error && /EADDRINUSE|address already in use/i.test(err.message);
        if (!inUse || options.port !== undefined || attempt >= 3) throw err;
      }
    }
  } catch (err) {
    await rm(persistTo, { recursive: true, force: true });
    throw err;
  }
}

export interface WranglerDevProcess {
  /** `http://127.0.0.1:PORT` */
  origin: string;
  /** The process group (wrangler, workerd and the rest): its leader's pid. */
  pgid: number;
  /** wrangler's inspector (DevTools protocol) for the Worker. */
  inspectorPort: number;
  /** Wrangler's output so far (stdout and stderr, the last `outputLimit` characters). */
  output(): string;
  /** SIGTERM to the whole group, then SIGKILL once wrangler has gone (or after 5 s). */
  stop(): Promise<void>;
}

/**
 * Runs `wrangler dev` on `port` with its state in `persistTo`, the developer's own vars
 * ignored (`envFile`, empty) and `vars` as `--var`, in a process group of its own, and
 * resolves once `GET /` answers 200. If it does not come up, it is killed and the error
 * carries wrangler's output. Shared by the e2e harness and the benchmark (bench/lib/wrangler.ts).
 */
export async function runWranglerDev(o: {
  port: number;
  persistTo: string;
  envFile: string;
  vars: Record<string, string>;
  /** e.g. `--config path` or `--test-scheduled` */
  extraArgs?: string[];
  readyTimeoutMs?: number;
  outputLimit?: number;
}): Promise<WranglerDevProcess> {
  const inspectorPort = await freePort();
  const readyTimeoutMs = o.readyTimeoutMs ?? READY_TIMEOUT_MS;
  const outputLimit = o.outputLimit ?? OUTPUT_LIMIT;
  const args = [
    "dev",
    ...(o.extraArgs ?? []),
    "--ip", "127.0.0.1",
    "--port", String(o.port),
    "--inspector-port", String(inspectorPort),
    "--persist-to", o.persistTo,
    "--env-file", o.envFile,
    "--show-interactive-dev-session=false",
    ...Object.entries(o.vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
  ];
  const child: ChildProcess = spawn(WRANGLER, args, {
    cwd: ROOT,
    // A dev registry of its own: with the shared one (~/.config/.wrangler/registry),
    // another `wrangler dev` on the machine (a parallel test, npm start, the bench) with
    // the same queue names may be handed this one's queue messages.
    env: childEnv({ WRANGLER_REGISTRY_PATH: join(o.persistTo, "dev-registry") }),
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, so stop() reaches workerd too.
    detached: true,
  });
  const pgid = child.pid!;
  liveGroups.add(pgid);
  installExitHook();

  let output = "";
  const collect = (d: string) => {
    output += d;
    if (output.length > outputLimit) output = output.slice(-outputLimit);
  };
  child.stdout!.setEncoding("utf8").on("data", collect);
  child.stderr!.setEncoding("utf8").on("data", collect);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let exitCode: number | null = null;
  let exitSignal: NodeJS.Signals | null = null;
  // The group stays in liveGroups after wrangler exits: workerd may still be in it.
  child.once("exit", (code, signal) => {
    exitCode = code;
    exitSignal = signal;
  });
  let spawnError: Error | undefined;
  child.once("error", (err) => (spawnError = err));

  const origin = `http://127.0.0.1:${o.port}`;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    killGroup(pgid, "SIGTERM");
    const gone = await Promise.race([exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
    // workerd may outlive wrangler for a moment: the whole group, for certain.
    killGroup(pgid, "SIGKILL");
    if (!gone) await Promise.race([exited, sleep(STOP_TIMEOUT_MS)]);
    liveGroups.delete(pgid);
  };

  const failed = async (why: string) => {
    await stop();
    return new Error(`wrangler dev did not come up on ${origin}: ${why}\n--- wrangler output ---\n${output}\n--- end ---`);
  };

  const deadline = Date.now() + readyTimeoutMs;
  let lastProblem = "no answer yet";
  for (;;) {
    if (spawnError) throw await failed(`could not start it: ${spawnError.message}`);
    if (exitCode !== null || exitSignal !== null) throw await failed(`it exited (${exitSignal ?? `code ${exitCode}`})`);
    if (Date.now() > deadline) throw await failed(`no 200 from GET / within ${readyTimeoutMs / 1000} s (last: ${lastProblem})`);
    try {
      const res = await fetch(`${origin}/`, { signal: AbortSignal.timeout(5_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
      lastProblem = `status ${res.status}`;
    } catch (err) {
      lastProblem = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    }
    await sleep(250);
  }
  return { origin, pgid, inspectorPort, output: () => output, stop };
}

async function launch(o: { port: number; vars: Record<string, string>; persistTo: string; envFile: string; cronEveryMs: number }): Promise<Dev> {
  const dev = await runWranglerDev({ ...o, extraArgs: ["--test-scheduled"] });
  const { origin } = dev;
  let cron: ReturnType<typeof setInterval> | undefined;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (cron) clearInterval(cron);
    await dev.stop();
    await rm(o.persistTo, { recursive: true, force: true, maxRetries: 3 });
  };

  if (o.cronEveryMs > 0) {
    cron = setInterval(() => {
      fetch(`${origin}/__scheduled?cron=${encodeURIComponent("* * * * *")}`, { signal: AbortSignal.timeout(30_000) })
        .then((r) => r.arrayBuffer())
        .catch(() => undefined);
    }, o.cronEveryMs);
    cron.unref();
  }

  return {
    origin,
    port: o.port,
    persistTo: o.persistTo,
    output: dev.output,
    stop,
    async apiKey(scopes = "webhooks:read,webhooks:write", account = "e2e") {
      const r = await runApiKey(["create", "--account", account, "--scopes", scopes], o.persistTo);
      const key = r.stdout.trimEnd().split("\n").at(-1) ?? "";
      if (r.code !== 0 || !/^krf_[A-Za-z0-9_-]{43}$/.test(key)) {
        throw new Error(`api-key create failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
      }
      return key;
    },
  };
}
