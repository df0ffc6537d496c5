#!/usr/bin/env node
/**
 * The `krafter` command (package.json `bin`): `npx krafter listen …`, also
 * `npm run listen -- …`. Plain Node 20+, no dependencies.
 */
import { parseArgs } from "node:util";
import { defaultStateDir, startListening } from "./lib/listen.mjs";

const USAGE = `Usage: krafter listen --source ID[,ID…] --forward-to URL [options]

Forwards the events of one or more sources to a local URL as they arrive, signed the
Standard Webhooks way with a listener secret kept on this machine; on every reconnect it
first forwards, in order, what it missed since the last event it handled.

Options:
  --source ID[,ID…]    the sources to listen to (several: comma-separated or repeated)
  --forward-to URL     where to POST each event, e.g. http://localhost:3000/webhooks
  --url URL            the relay (default: KRAFTER_URL, else http://localhost:8787)
  --api-key KEY        an API key with webhooks:read (default: KRAFTER_API_KEY)
  --since RFC3339      start from this time instead of the last event handled
  --state-dir DIR      where the secret and progress live
                       (default: KRAFTER_STATE_DIR, else ${defaultStateDir()})
  -h, --help           this text`;

function fail(message) {
  process.stderr.write(`krafter: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function main(argv) {
  const [command, ...rest] = argv;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    process.stdout.write(USAGE + "\n");
    return;
  }
  if (command !== "listen") fail(`unknown command "${command}"`);
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        source: { type: "string", multiple: true },
        "forward-to": { type: "string" },
        url: { type: "string" },
        "api-key": { type: "string" },
        since: { type: "string" },
        "state-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    fail(err.message);
  }
  if (values.help) {
    process.stdout.write(USAGE + "\n");
    return;
  }
  const sources = [...new Set((values.source ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean))];
  if (sources.length === 0) fail("--source is required");
  const forwardTo = values["forward-to"];
  if (!forwardTo) fail("--forward-to is required");
  let target;
  try {
    target = new URL(forwardTo);
  } catch {
    fail(`--forward-to is not a URL: ${forwardTo}`);
  }
  if (target.protocol !== "http:" && target.protocol !== "https:") fail("--forward-to must be an http or https URL");
  const url = values.url ?? process.env.KRAFTER_URL ?? "http://localhost:8787";
  try {
    if (!/^https?:$/.test(new URL(url).protocol)) throw new Error();
  } catch {
    fail(`the relay URL is not an http(s) URL: ${url}`);
  }
  const apiKey = values["api-key"] ?? process.env.KRAFTER_API_KEY;
  if (!apiKey) fail("an API key is required: --api-key or KRAFTER_API_KEY (npm run api-key -- create --scopes webhooks:read)");
  let since;
  if (values.since !== undefined) {
    const ok = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i.test(values.since);
    since = ok ? Date.parse(values.since) : NaN;
    if (Number.isNaN(since)) fail(`--since must be an RFC 3339 date-time, e.g. 2026-04-26T09:00:00Z (got ${values.since})`);
  }

  const listener = startListening({ url, apiKey, sources, forwardTo, since, stateDir: values["state-dir"] });
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) process.exit(130);
    process.stderr.write("Stopping…\n");
    void listener.stop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  listener.done.then((code) => {
    if (code === 0) process.stderr.write("Stopped.\n");
    process.exit(code);
  });
}

main(process.argv.slice(2));
