/**
 * The project's wrangler, and the one launcher of `wrangler dev` (start, wait until it
 * answers, stop, its logs). `npm start` (scripts/dev.mjs), the demo and the e2e tests
 * (through tools/relay.ts), the bench (bench/lib/wrangler.ts), and the api-key and
 * deploy scripts (the one-shot `wrangler()` below) all go through this file.
 *
 * KRAFTER_WRANGLER replaces the wrangler binary: the deploy test runs a stand-in that
 * records its calls.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import type { Writable } from "node:stream";
import { join } from "node:path";
import { childEnv, freePort, pinnedEnv, ROOT, run, sleep, type RunResult } from "./process.ts";

/** A failure told to the user as it is (no stack trace): the scripts print its message. */
export class Failure extends Error {}

/** node_modules/.bin/wrangler (the version package.json pins). */
export const WRANGLER = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "wrangler.cmd" : "wrangler");

/** The wrangler to run: KRAFTER_WRANGLER if set, else the installed one. */
export function wranglerBin(): string {
  if (process.env.KRAFTER_WRANGLER) return process.env.KRAFTER_WRANGLER;
  if (!existsSync(WRANGLER)) throw new Failure("wrangler is not installed: run `npm install` (or `npm ci`) first.");
  return WRANGLER;
}

export interface WranglerResult extends RunResult {
  /** stdout + stderr */
  output: string;
}

/**
 * Runs one wrangler command. With `capture`, its output is collected (and not shown) and
 * stdin is closed, so it never prompts; `input` is written to its stdin (a secret's
 * value). Otherwise it shares this terminal (prompts work interactively, and are
 * skipped in CI).
 */
export async function wrangler(args: string[], o: { capture?: boolean; input?: string } = {}): Promise<WranglerResult> {
  if (o.capture || o.input !== undefined) {
    const r = await run(wranglerBin(), args, { timeoutMs: 600_000, ...(o.input !== undefined ? { input: o.input } : {}) });
    return { ...r, output: r.stdout + r.stderr };
  }
  return new Promise((resolve, reject) => {
    const child = spawn(wranglerBin(), args, { cwd: ROOT, stdio: "inherit", env: pinnedEnv(), shell: process.platform === "win32" });
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), stdout: "", stderr: "", output: "" }));
  });
}

/** Applies the D1 migrations to a local state directory (wrangler's default one without it). */
export async function applyMigrations(persistTo?: string, config?: string): Promise<void> {
  const args = ["d1", "migrations", "apply", "DB", "--local", ...(config ? ["--config", config] : []), ...(persistTo ? ["--persist-to", persistTo] : [])];
  const r = await run(wranglerBin(), args, { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Failure(`wrangler d1 migrations apply failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
}

/** `npm run api-key -- …args` against a local state directory, run the way npm would. */
export function runApiKey(args: string[], persistTo: string): Promise<RunResult> {
  return run(process.execPath, [join(ROOT, "scripts", "api-key.mjs"), ...args, "--persist-to", persistTo]);
}

// ---------------------------------------------------------------------------------------
// wrangler dev

export interface WranglerDevOptions {
  /** --port; also where readiness is asked. */
  port: number;
  /** --ip. Default 127.0.0.1; null passes none (wrangler's default, localhost). */
  ip?: string | null;
  /** --inspector-port. Default a free port; null passes none (wrangler's default). */
  inspectorPort?: number | null;
  /** --persist-to; wrangler's .wrangler/state without it. */
  persistTo?: string;
  /** --env-file: an empty one keeps the developer's .dev.vars and .env out. */
  envFile?: string;
  /** Each one a `--var NAME:VALUE`. */
  vars?: Record<string, string>;
  /** Further `wrangler dev` arguments (`--config path`, the user's own for npm start). */
  args?: string[];
  /**
   * Run the Worker with PUBLIC_NETWORK bound, through wrangler's programmatic API
   * (scripts/lib/dev-public-network.mjs, which takes the same arguments): npm start with
   * private destinations off.
   */
  publicNetwork?: boolean;
  /**
   * Added to the child's environment. Without `foreground`, WRANGLER_REGISTRY_PATH
   * defaults to a dev registry of its own under persistTo: with the shared one
   * (~/.config/.wrangler/registry), another `wrangler dev` on the machine (a parallel
   * test, npm start, the bench) with the same queue names may be handed its messages.
   */
  env?: Record<string, string>;
  /**
   * In this terminal: stdin shared (wrangler's hotkeys), the same process group (a
   * Ctrl-C reaches it), colours and telemetry as the developer has them. Otherwise
   * (default) stdin is closed and it gets a process group of its own, so stop() reaches
   * workerd too, and an exit hook kills it if this process ends without stop().
   */
  foreground?: boolean;
  /**
   * Fire the housekeeping cron (`/__scheduled`, with --test-scheduled) this often, as
   * production's once-a-minute trigger would: wrangler dev runs none by itself. 0: never.
   */
  cronEveryMs?: number;
  /** Wrangler's output is also passed on to these (npm start: its terminal, keys masked). */
  echo?: { stdout?: Writable; stderr?: Writable };
  /** Default 60 s. */
  readyTimeoutMs?: number;
  /** How much of wrangler's output output() keeps (the newest). Default 64 KiB. */
  outputLimit?: number;
}

export interface WranglerDev {
  /** `http://127.0.0.1:PORT` (localhost when no --ip was given) */
  origin: string;
  port: number;
  /** wrangler's pid; without `foreground`, also its process group (wrangler, workerd and the rest). */
  pid: number;
  /** wrangler's inspector (DevTools protocol) for the Worker; null when left to wrangler. */
  inspectorPort: number | null;
  /** Wrangler's output so far (stdout and stderr, the newest `outputLimit` characters). */
  output(): string;
  /** Passes a signal on to wrangler (npm start forwards the ones it gets). */
  signal(signal: NodeJS.Signals): void;
  /** Settles when wrangler has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (to the whole group), then SIGKILL once wrangler has gone or after 5 s. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5_000;
const OUTPUT_LIMIT = 64 * 1024;

// Process groups still running, killed if this process exits without stop(); and
// foreground wranglers, asked to stop (they take workerd with them).
const liveGroups = new Set<number>();
const liveForeground = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const pgid of liveGroups) killGroup(pgid, "SIGKILL");
    for (const child of liveForeground) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  });
}

function killGroup(pgid: number, signal: NodeJS.Signals) {
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

/** Whether any process of the group is left. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts `wrangler dev` and resolves once `GET /` answers 200. If it does not come up, it
 * is stopped and the error carries wrangler's output ("address already in use" among it
 * when the port was taken).
 */
export async function startWranglerDev(o: WranglerDevOptions): Promise<WranglerDev> {
  const ip = o.ip === undefined ? "127.0.0.1" : o.ip;
  const inspectorPort = o.inspectorPort === undefined ? await freePort() : o.inspectorPort;
  const readyTimeoutMs = o.readyTimeoutMs ?? READY_TIMEOUT_MS;
  const outputLimit = o.outputLimit ?? OUTPUT_LIMIT;
  const cronEveryMs = o.cronEveryMs ?? 0;
  const extra = o.args ?? [];
  const args = [
    ...(cronEveryMs > 0 && !extra.includes("--test-scheduled") ? ["--test-scheduled"] : []),
    ...extra,
    ...(ip !== null ? ["--ip", ip] : []),
    "--port", String(o.port),
    ...(inspectorPort !== null ? ["--inspector-port", String(inspectorPort)] : []),
    ...(o.persistTo ? ["--persist-to", o.persistTo] : []),
    ...(o.envFile ? ["--env-file", o.envFile] : []),
    ...(o.foreground ? [] : ["--show-interactive-dev-session=false"]),
    ...Object.entries(o.vars ?? {}).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
  ];
  const [command, argv] = o.publicNetwork
    ? ["node", [join(ROOT, "scripts", "lib", "dev-public-network.mjs"), ...args]]
    : [wranglerBin(), ["dev", ...args]];
  const registry: Record<string, string> = !o.foreground && o.persistTo ? { WRANGLER_REGISTRY_PATH: join(o.persistTo, "dev-registry") } : {};
  const child: ChildProcess = spawn(command, argv, {
    cwd: ROOT,
    env: o.foreground ? pinnedEnv(o.env) : childEnv({ ...registry, ...o.env }),
    stdio: [o.foreground ? "inherit" : "ignore", "pipe", "pipe"],
    shell: process.platform === "win32" && command.endsWith(".cmd"),
    detached: !o.foreground,
  });
  const pid = child.pid;
  if (pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once("error", resolve));
    throw new Error(`could not start wrangler dev: ${err.message}`);
  }
  if (o.foreground) liveForeground.add(child);
  else liveGroups.add(pid);
  installExitHook();

  let output = "";
  const collect = (d: string) => {
    output += d;
    if (output.length > outputLimit) output = output.slice(-outputLimit);
  };
  child.stdout!.setEncoding("utf8").on("data", collect);
  child.stderr!.setEncoding("utf8").on("data", collect);
  if (o.echo?.stdout) child.stdout!.pipe(o.echo.stdout);
  if (o.echo?.stderr) child.stderr!.pipe(o.echo.stderr);
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  // The group stays in liveGroups after wrangler exits: workerd may still be in it.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      liveForeground.delete(child);
      resolve((exit = { code, signal }));
    }),
  );
  let spawnError: Error | undefined;
  child.once("error", (err) => (spawnError = err));

  const host = ip === null ? "localhost" : ip === "0.0.0.0" ? "127.0.0.1" : ip === "::" ? "[::1]" : ip.includes(":") ? `[${ip}]` : ip;
  const origin = `http://${host}:${o.port}`;
  let cron: ReturnType<typeof setInterval> | undefined;
  let stopped = false;
  const signal = (s: NodeJS.Signals) => {
    if (exit) return;
    if (o.foreground) child.kill(s);
    else killGroup(pid, s);
  };
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (cron) clearInterval(cron);
    signal("SIGTERM");
    const gone = await Promise.race([exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
    // workerd may outlive wrangler for a moment: the whole group, for certain.
    if (o.foreground) {
      if (!gone) child.kill("SIGKILL");
    } else {
      killGroup(pid, "SIGKILL");
    }
    if (!gone) await Promise.race([exited, sleep(STOP_TIMEOUT_MS)]);
    liveGroups.delete(pid);
  };

  const failed = async (why: string) => {
    await stop();
    return new Error(`wrangler dev did not come up on ${origin}: ${why}\n--- wrangler output ---\n${output}\n--- end ---`);
  };

  const deadline = Date.now() + readyTimeoutMs;
  let lastProblem = "no answer yet";
  for (;;) {
    if (spawnError) throw await failed(`could not start it: ${spawnError.message}`);
    if (exit) throw await failed(`it exited (${exit.signal ?? `code ${exit.code}`})`);
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

  if (cronEveryMs > 0) {
    cron = setInterval(() => {
      fetch(`${origin}/__scheduled?cron=${encodeURIComponent("* * * * *")}`, { signal: AbortSignal.timeout(30_000) })
        .then((r) => r.arrayBuffer())
        .catch(() => undefined); // restarting: the next tick will do
    }, cronEveryMs);
    cron.unref();
  }

  return { origin, port: o.port, pid, inspectorPort, output: () => output, signal, exited, stop };
}
