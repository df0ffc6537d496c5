/**
 * A throwaway local relay: the real `wrangler dev` (the Worker with embedded D1, Queues
 * and Durable Objects) on a free port, with its state in a fresh temporary directory,
 * migrations applied, and the api-key script against that same state. The e2e tests and
 * `npm run demo` use it.
 *
 *   const dev = await startDev();             // migrations applied, GET / answers 200
 *   const key = await dev.apiKey("webhooks:read");
 *   await fetch(`${dev.origin}/api/v1/webhooks/sources`, { headers: { authorization: `Bearer ${key}` } });
 *   await dev.stop();                          // kills wrangler and workerd, removes the state
 *
 * The developer's own `.dev.vars`/`.env` are ignored (an empty `--env-file`); the vars
 * come from `--var`. Wrangler's output is kept and shown when something fails.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./process.ts";
import { applyMigrations, runApiKey, startWranglerDev } from "./wrangler.ts";

/** A fixed key for throwaway local relays only (tests, the demo, the bench; never deployed). */
export const E2E_ENCRYPTION_KEY = "q1ZsS0cRkq1KqfUIv8u2RoX0mWd2p3yqJ4n3f0mQH9U=";

export const DEFAULT_VARS: Readonly<Record<string, string>> = {
  ENVIRONMENT: "development",
  ENCRYPTION_KEY: E2E_ENCRYPTION_KEY,
  ALLOW_PRIVATE_DESTINATIONS: "true",
  RETRY_SCHEDULE: "1,1,1",
};

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
        const dev = await startWranglerDev({
          port,
          persistTo,
          envFile,
          vars,
          // --test-scheduled even without the cron: tests fire /__scheduled themselves.
          args: ["--test-scheduled"],
          cronEveryMs: options.cronEveryMs ?? 60_000,
        });
        return relay(dev, persistTo);
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

function relay(dev: Awaited<ReturnType<typeof startWranglerDev>>, persistTo: string): Dev {
  let stopped = false;
  return {
    origin: dev.origin,
    port: dev.port,
    persistTo,
    output: dev.output,
    async stop() {
      if (stopped) return;
      stopped = true;
      await dev.stop();
      await rm(persistTo, { recursive: true, force: true, maxRetries: 3 });
    },
    async apiKey(scopes = "webhooks:read,webhooks:write", account = "e2e") {
      const r = await runApiKey(["create", "--account", account, "--scopes", scopes], persistTo);
      const key = r.stdout.trimEnd().split("\n").at(-1) ?? "";
      if (r.code !== 0 || !/^krf_[A-Za-z0-9_-]{43}$/.test(key)) {
        throw new Error(`api-key create failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
      }
      return key;
    },
  };
}
