/**
 * Running the project's Node tools: the repository root, the environment every child
 * gets (the pinned Node 22 from node_modules/.bin first on PATH, so `#!/usr/bin/env node`
 * finds it whatever Node started us), a command run to completion, and a free port.
 * Shared by the scripts, the bench and the tests; plain Node 22 runs it (erasable syntax).
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** process.env with the pinned Node first on PATH, plus `extra`. */
export function pinnedEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: join(ROOT, "node_modules", ".bin") + delimiter + (process.env.PATH ?? ""), ...extra };
}

/** For a child whose output is read by a program: the pinned Node, no telemetry, no colours. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return pinnedEnv({ WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", FORCE_COLOR: "0", ...extra });
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command in ROOT to completion with its output captured. stdin is closed (nothing
 * can prompt) unless `input` is given, which is written to it (a secret's value).
 */
export function run(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: ROOT,
      env: childEnv(options.env),
      stdio: [options.input !== undefined ? "pipe" : "ignore", "pipe", "pipe"],
      shell: process.platform === "win32" && command.endsWith(".cmd"),
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    if (options.input !== undefined) child.stdin!.end(options.input);
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
