#!/usr/bin/env node
/**
 * `npm start` when ALLOW_PRIVATE_DESTINATIONS is off: `wrangler dev` with one binding
 * more, PUBLIC_NETWORK, a workerd network service that connects to public addresses only
 * (`allow = ["public"]`, `deny = ["private", "local"]`). The Worker sends every request to
 * a destination through it when private destinations are off (src/services.ts), so the
 * socket itself refuses a loopback or private address, whatever the DoH check was told: a
 * name that DoH answers with a public address and the system resolver with 127.0.0.1 gets
 * nothing sent to it. The DoH resolver itself keeps the ordinary outbound (it may be a
 * local test resolver).
 *
 * Why not the `wrangler dev` command: wrangler 4 has no setting, flag or config key that
 * restricts a local Worker's network. Its outbound ("internet" in miniflare) allows
 * private addresses on purpose, and `outboundService` (the Worker's global outbound)
 * takes a function or a Worker but not a network service. A binding of type `fetcher`
 * whose fetcher is `{ network: { allow, deny } }` is accepted, but only through the
 * programmatic API, `unstable_startWorker`, used here. README, Security, says what each
 * kind of deployment guarantees.
 *
 * Run by scripts/dev.mjs with the pinned Node; takes the `wrangler dev` options that
 * npm start passes on (others are refused with a message, not ignored).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The network destinations are reached through: public addresses only. */
export function publicNetwork(env = process.env) {
  const tlsOptions = { trustBrowserCas: true };
  // As wrangler's own outbound does: extra CAs (a corporate proxy's) from NODE_EXTRA_CA_CERTS.
  if (env.NODE_EXTRA_CA_CERTS) {
    try {
      tlsOptions.trustedCertificates = [readFileSync(env.NODE_EXTRA_CA_CERTS, "utf8")];
    } catch {
      // Unreadable: wrangler warns about it already.
    }
  }
  return { network: { allow: ["public"], deny: ["private", "local"], tlsOptions } };
}

const VALUED = new Set(["--port", "--ip", "--inspector-port", "--inspector-ip", "--persist-to", "--env-file", "--env", "-e", "--config", "-c", "--local-protocol", "--log-level"]);
const BOOLEAN = new Set(["--test-scheduled", "--show-interactive-dev-session", "--live-reload"]);

class Usage extends Error {}

/** The `wrangler dev` options npm start passes on, parsed as wrangler reads them. */
export function parseDevArgs(argv) {
  const o = { vars: {}, envFiles: [], flags: {} };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = name === arg ? undefined : arg.slice(eq + 1);
    if (name === "--var") {
      // Like yargs' array options: every following word up to the next option.
      const values = inline !== undefined ? [inline] : [];
      while (inline === undefined && i + 1 < argv.length && !argv[i + 1].startsWith("-")) values.push(argv[++i]);
      for (const v of values) {
        const colon = v.indexOf(":");
        if (colon <= 0) throw new Usage(`--var takes KEY:VALUE, not ${JSON.stringify(v)}`);
        o.vars[v.slice(0, colon)] = v.slice(colon + 1);
      }
    } else if (VALUED.has(name)) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new Usage(`${name} needs a value`);
      if (name === "--env-file") o.envFiles.push(value);
      else o.flags[name === "-e" ? "--env" : name === "-c" ? "--config" : name] = value;
    } else if (BOOLEAN.has(name)) {
      o.flags[name] = inline === undefined ? true : inline !== "false";
    } else {
      throw new Usage(
        `${arg} is not an option npm start can pass on with ALLOW_PRIVATE_DESTINATIONS off (it runs the Worker through wrangler's programmatic API, to give it a public-only network). ` +
          `It takes ${[...VALUED, ...BOOLEAN, "--var"].join(", ")}. ` +
          "For anything else run `npx wrangler dev …` yourself: destinations are then checked by DoH only (README, Security).",
      );
    }
  }
  return o;
}

const port = (v, flag) => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Usage(`${flag} must be a port number`);
  return n;
};

/** The unstable_startWorker input: the project's wrangler.toml as `wrangler dev` reads it, plus PUBLIC_NETWORK. */
export function startWorkerInput(o) {
  const f = o.flags;
  if (f["--local-protocol"] !== undefined && f["--local-protocol"] !== "http" && f["--local-protocol"] !== "https") {
    throw new Usage("--local-protocol must be http or https");
  }
  return {
    config: f["--config"] ?? join(ROOT, "wrangler.toml"),
    env: f["--env"],
    envFiles: o.envFiles.length > 0 ? o.envFiles : undefined,
    bindings: {
      ...Object.fromEntries(Object.entries(o.vars).map(([k, value]) => [k, { type: "plain_text", value }])),
      PUBLIC_NETWORK: { type: "fetcher", fetcher: publicNetwork() },
    },
    dev: {
      server: {
        hostname: f["--ip"],
        port: port(f["--port"], "--port"),
        secure: f["--local-protocol"] === undefined ? undefined : f["--local-protocol"] === "https",
      },
      inspector: { hostname: f["--inspector-ip"], port: port(f["--inspector-port"], "--inspector-port") },
      persist: f["--persist-to"],
      testScheduled: f["--test-scheduled"] === true,
      liveReload: f["--live-reload"] === true,
      // As `wrangler dev` does: rebuilt and reloaded when a source file changes.
      watch: true,
    },
  };
}

async function main() {
  let o;
  let input;
  try {
    o = parseDevArgs(process.argv.slice(2));
    input = startWorkerInput(o);
  } catch (err) {
    if (!(err instanceof Usage)) throw err;
    console.error(`npm start: ${err.message}`);
    process.exit(2);
  }
  if (o.flags["--log-level"] !== undefined) process.env.WRANGLER_LOG = o.flags["--log-level"];
  const { unstable_startWorker } = createRequire(import.meta.url)("wrangler");
  console.log("Destinations are reached through PUBLIC_NETWORK: public addresses only (ALLOW_PRIVATE_DESTINATIONS is off).");
  const worker = await unstable_startWorker(input);
  await worker.ready;

  let stoppingSince;
  const stop = async (signal) => {
    // A Ctrl-C reaches this process twice (from the terminal, and passed on by dev.mjs):
    // only a signal a second or more after the first means "now".
    if (stoppingSince !== undefined) {
      if (Date.now() - stoppingSince > 1000) process.exit(1);
      return;
    }
    stoppingSince = Date.now();
    try {
      await worker.dispose();
    } finally {
      process.exit(signal === "SIGINT" ? 130 : signal === "SIGHUP" ? 129 : 143);
    }
  };
  for (const s of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(s, () => void stop(s));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  });
}
