/// <reference types="node" />
/**
 * `npm run demo`: Krafter at work, end to end, in about half a minute.
 *
 * It starts a relay of its own (`wrangler dev` on a free port with a temporary state
 * directory and a short RETRY_SCHEDULE, through tools/relay.ts), so it works
 * whether or not `npm start` is running and never touches your local data, and a small
 * loopback receiver standing in for your endpoints (tools/receiver.ts). Then:
 *
 *  1. an API key (`npm run api-key -- create`), a Stripe source with a signing secret and
 *     two destinations on the receiver, one for `invoice.*` and one for everything, all
 *     through the typed client (`krafterClient`, src/client.ts);
 *  2. 20 events signed the way Stripe signs them (the `stripe` package), and a forged
 *     one that is refused; each forward arriving at each destination, its Standard
 *     Webhooks signature verified with the `standardwebhooks` package;
 *  3. the invoice endpoint failing (HTTP 500): 10 more events, each retried on the
 *     schedule and given up, the attempt log, and the destination auto-disabled after 10
 *     exhausted events; then re-enabled by PATCH, and the next event arriving.
 *
 * It stops the relay and the receiver when it ends, on Ctrl-C too, and exits non-zero if
 * anything it expected did not happen. Run by the pinned Node 22, which strips the types.
 */
import { randomBytes } from "node:crypto";
import Stripe from "stripe";
import { Webhook } from "standardwebhooks";
import { krafterClient } from "../src/client.ts";
import { startDev, type Dev } from "../tools/relay.ts";
import { startReceiver, type ReceiverHandle, type Received, type Step } from "../tools/receiver.ts";

const RETRY_SCHEDULE = "1,1,1";
// The demo shows retries and the auto-disable at their own pace, so the circuit breaker
// (which would pause the failing endpoint: README, Limits and quotas) is kept out of reach.
const ATTEMPTS_PER_EVENT = 1 + RETRY_SCHEDULE.split(",").length;
const AUTO_DISABLE_AFTER = 10;
const FIRST_BATCH = 20;
const TYPES = ["invoice.created", "invoice.paid", "charge.succeeded", "customer.subscription.updated"];

// ---------------------------------------------------------------------------------------
// output

const tty = Boolean(process.stdout.isTTY);
const color = tty && !process.env.NO_COLOR;
const paint = (code: string) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = paint("1");
const dim = paint("2");
const green = paint("32");
const red = paint("31");
const yellow = paint("33");
const OK = green("✓");
const started = performance.now();
const elapsed = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;

const say = (line = "") => process.stdout.write(line + "\n");
const step = (n: number, title: string) => say(`\n${bold(`${n}. ${title}`)}`);

class DemoFailure extends Error {}
function expectThat(condition: unknown, what: string): asserts condition {
  if (!condition) throw new DemoFailure(what);
}

/**
 * Live progress: one line per row, redrawn in place on a terminal; elsewhere (a pipe, a
 * CI log) a row is printed when it changes, at most once a second, and once at the end.
 */
class Progress {
  private lines: string[] = [];
  private drawn = 0;
  private printed = new Map<number, string>();
  private lastPlain = 0;
  private readonly rows: number;

  constructor(rows: number) {
    this.rows = rows;
  }

  update(lines: string[]) {
    this.lines = lines;
    if (tty) this.redraw();
    else if (Date.now() - this.lastPlain >= 1000) this.plain();
  }

  done() {
    if (tty) this.redraw();
    else this.plain();
  }

  private redraw() {
    let out = this.drawn > 0 ? `\x1b[${this.drawn}A` : "";
    for (let i = 0; i < this.rows; i++) out += `\r\x1b[2K${this.lines[i] ?? ""}\n`;
    process.stdout.write(out);
    this.drawn = this.rows;
  }

  private plain() {
    this.lastPlain = Date.now();
    this.lines.forEach((line, i) => {
      if (this.printed.get(i) !== line) say(line);
      this.printed.set(i, line);
    });
  }
}

function bar(done: number, total: number, width = 20): string {
  const full = total === 0 ? width : Math.round((Math.min(done, total) / total) * width);
  return `[${"#".repeat(full)}${dim("-".repeat(width - full))}]`;
}

/** Reads the body only to explain a wrong status (the caller reads it otherwise). */
async function expectStatus(res: { status: number; text(): Promise<string> }, status: number, what: string) {
  if (res.status !== status) throw new DemoFailure(`${what} answered ${res.status}: ${await res.text()}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it gives a value, drawing progress meanwhile. */
async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new DemoFailure(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------------------
// the receiver's mailboxes, over its control API

interface Mailbox {
  url: string;
  requests(): Promise<Received[]>;
  answer(step: Step): Promise<void>;
}

async function mailbox(receiver: ReceiverHandle): Promise<Mailbox> {
  const res = await fetch(`${receiver.origin}/control/mailboxes`, { method: "POST", body: "{}" });
  const { id, url } = (await res.json()) as { id: string; url: string };
  return {
    url,
    async requests() {
      const r = await fetch(`${receiver.origin}/control/mailboxes/${id}`);
      return ((await r.json()) as { requests: Received[] }).requests;
    },
    async answer(step: Step) {
      await fetch(`${receiver.origin}/control/mailboxes/${id}`, { method: "PUT", body: JSON.stringify({ repeat: step }) });
    },
  };
}

/** What a destination received that verifies with its secret and carries an event we sent, intact. */
function verified(received: Received[], secret: string, sent: Map<string, string>, sourceId: string) {
  const wh = new Webhook(secret);
  const ids = new Set<string>();
  let bad = 0;
  for (const r of received) {
    if (r.answered !== 200) continue;
    try {
      wh.verify(r.body, r.headers);
    } catch {
      bad++;
      continue;
    }
    const id = r.headers["webhook-id"] ?? "";
    const body = sent.get(id);
    const envelope = JSON.parse(r.body) as { data: unknown; source_id: string };
    if (body === undefined || envelope.source_id !== sourceId || JSON.stringify(envelope.data) !== body) {
      bad++;
      continue;
    }
    ids.add(id);
  }
  return { ids, bad };
}

// ---------------------------------------------------------------------------------------

let dev: Dev | undefined;
let receiver: ReceiverHandle | undefined;
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await Promise.allSettled([dev?.stop(), receiver?.close()]);
  })();
  return cleaning;
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    say(`\n${yellow(`Interrupted (${signal}): stopping the relay and the receiver…`)}`);
    // Before startDev() has returned, the launcher's exit hook stops wrangler.
    void cleanup().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  });
}

async function main() {
  say(bold("Krafter demo") + dim(": a relay of its own, a local receiver, Stripe-signed events, retries and auto-disable."));

  step(1, "Start a relay and a receiver");
  say(dim(`   wrangler dev with a temporary state directory and RETRY_SCHEDULE=${RETRY_SCHEDULE} (3 retries, a second or so apart)…`));
  [dev, receiver] = await Promise.all([startDev({ vars: { RETRY_SCHEDULE, CIRCUIT_MIN_ATTEMPTS: "1000000" }, cronEveryMs: 0 }), startReceiver()]);
  say(`   ${OK} relay on ${dev.origin} ${dim(`(up after ${elapsed()})`)}`);
  say(`   ${OK} receiver on ${receiver.origin}`);

  step(2, "Create an API key, a Stripe source and two destinations");
  const key = await dev.apiKey("webhooks:read,webhooks:write", "demo");
  say(`   ${OK} npm run api-key -- create --account demo --scopes webhooks:read,webhooks:write → ${key.slice(0, 12)}…`);
  const krafter = krafterClient(dev.origin, key);

  const signingSecret = `whsec_${randomBytes(24).toString("base64")}`;
  const created = await krafter.api.v1.webhooks.sources.$post({ json: { name: "Stripe (demo)", provider: "stripe", signing_secret: signingSecret } });
  await expectStatus(created, 201, "creating the source");
  const source = (await created.json()).data;
  expectThat(source.verifies_signatures, "the source does not verify signatures");
  const ingestUrl = source.ingest_url;
  if (ingestUrl === null) throw new Error("a write key sees the ingest URL");
  say(`   ${OK} source "${source.name}" (provider ${source.provider}, verifies Stripe signatures)`);
  say(dim(`     ingest URL ${ingestUrl.replace(/\/in\/.*/, "/in/src_…")}`));

  const destinations = krafter.api.v1.webhooks.sources[":source_id"].destinations;
  const boxes = { invoices: await mailbox(receiver), everything: await mailbox(receiver) };
  const addDestination = async (url: string, event_filter: string[]) => {
    const r = await destinations.$post({ param: { source_id: source.id }, json: { url, event_filter } });
    await expectStatus(r, 201, "creating a destination");
    return (await r.json()).data;
  };
  const dest = {
    invoices: await addDestination(boxes.invoices.url, ["invoice.*"]),
    everything: await addDestination(boxes.everything.url, []),
  };
  say(`   ${OK} destination "invoices"   event_filter ["invoice.*"] → ${boxes.invoices.url}`);
  say(`   ${OK} destination "everything" event_filter []            → ${boxes.everything.url}`);
  say(dim("     (created with krafterClient, the typed client: src/client.ts)"));

  // Events as Stripe sends them: the body, and Stripe-Signature over it with the secret.
  const stripe = new Stripe("sk_test_demo");
  const sent = new Map<string, string>(); // event id (the webhook-id of every forward) → body
  const sentTypes = new Map<string, string>();
  let serial = 0;
  const send = async (type: string) => {
    const n = ++serial;
    const payload = JSON.stringify({
      id: `evt_demo_${String(n).padStart(4, "0")}_${randomBytes(6).toString("hex")}`,
      object: "event",
      type,
      created: Math.floor(Date.now() / 1000),
      livemode: false,
      data: { object: { id: `${type.split(".")[0]}_${n}`, amount: 1000 + n, currency: "usd" } },
    });
    const res = await fetch(ingestUrl, {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": stripe.webhooks.generateTestHeaderString({ payload, secret: signingSecret }) },
      body: payload,
    });
    const body = (await res.json()) as { data?: { event_id?: string } };
    expectThat(res.status === 202 && body.data?.event_id, `ingest answered ${res.status}: ${JSON.stringify(body)}`);
    sent.set(body.data.event_id, payload);
    sentTypes.set(body.data.event_id, type);
    return body.data.event_id;
  };
  // Events "invoices" is expected to receive do not include those it gave up on.
  const givenUp = new Set<string>();
  const expectedFor = (filter: "invoices" | "everything") =>
    [...sentTypes]
      .filter(([id, type]) => filter === "everything" || (type.startsWith("invoice.") && !givenUp.has(id)))
      .map(([id]) => id);

  step(3, `Send ${FIRST_BATCH} Stripe-signed events, and watch them arrive`);
  const forged = await fetch(ingestUrl, {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": `t=${Math.floor(Date.now() / 1000)},v1=${"0".repeat(64)}` },
    body: JSON.stringify({ id: "evt_forged", object: "event", type: "invoice.paid" }),
  });
  expectThat(forged.status === 401, `a forged event got ${forged.status}, not 401`);
  say(`   ${OK} a forged event (bad Stripe-Signature) → ${forged.status}, dropped`);
  const t0 = performance.now();
  for (let i = 0; i < FIRST_BATCH; i++) await send(TYPES[i % TYPES.length]!);
  say(`   ${OK} ${FIRST_BATCH} signed events → 202 Accepted ${dim(`(${TYPES.join(", ")})`)}`);
  say(dim("   Forwards arriving, each checked with standardwebhooks' Webhook.verify:"));

  const watchArrivals = async (timeoutMs: number, names: readonly ("invoices" | "everything")[] = ["invoices", "everything"]) => {
    const progress = new Progress(names.length);
    const seen = await until("every forward to arrive, verified", timeoutMs, async () => {
      const rows: string[] = [];
      let complete = true;
      const state: Partial<Record<"invoices" | "everything", number>> = {};
      for (const name of names) {
        const expected = expectedFor(name);
        const { ids, bad } = verified(await boxes[name].requests(), dest[name].secret, sent, source.id);
        expectThat(bad === 0, `${bad} forward(s) to "${name}" failed verification`);
        const got = expected.filter((id) => ids.has(id)).length;
        const extra = [...ids].filter((id) => !expected.includes(id) && !givenUp.has(id));
        expectThat(extra.length === 0, `"${name}" received events its filter excludes: ${extra.join(", ")}`);
        state[name] = got;
        if (got < expected.length) complete = false;
        rows.push(`   ${(got === expected.length ? OK : " ")} ${name.padEnd(10)} ${bar(got, expected.length)} ${String(got).padStart(2)}/${expected.length} verified`);
      }
      progress.update(rows);
      return complete ? state : undefined;
    });
    progress.done();
    return seen;
  };
  await watchArrivals(30_000);
  say(dim(`   all delivered and verified in ${((performance.now() - t0) / 1000).toFixed(1)} s`));

  step(4, `Make "invoices" fail: its endpoint now answers HTTP 500`);
  await boxes.invoices.answer({ status: 500, body: "database unavailable" });
  const failing: string[] = [];
  for (let i = 0; i < AUTO_DISABLE_AFTER; i++) failing.push(await send(i % 2 === 0 ? "invoice.paid" : "invoice.payment_failed"));
  say(`   ${OK} ${AUTO_DISABLE_AFTER} more invoice events sent; each forward to "invoices" is tried ${ATTEMPTS_PER_EVENT} times (1 + ${ATTEMPTS_PER_EVENT - 1} retries)`);

  const invoicesOne = destinations[":id"];
  const param = { source_id: source.id, id: dest.invoices.id };
  const readDestination = async () => {
    const r = await invoicesOne.$get({ param });
    await expectStatus(r, 200, "GET destination");
    return (await r.json()).data;
  };
  const failedAttempts = async () => {
    const r = await invoicesOne.attempts.$get({ param, query: { outcome: "failed", limit: "100" } });
    await expectStatus(r, 200, "GET attempts");
    return (await r.json()).data.filter((a) => failing.includes(a.event_id));
  };
  const expectedAttempts = AUTO_DISABLE_AFTER * ATTEMPTS_PER_EVENT;
  const progress = new Progress(2);
  const disabled = await until("the auto-disable", 60_000, async () => {
    const [d, attempts] = await Promise.all([readDestination(), failedAttempts()]);
    const exhausted = new Set(attempts.filter((a) => a.number === ATTEMPTS_PER_EVENT).map((a) => a.event_id)).size;
    progress.update([
      `   ${d.enabled ? " " : red("✗")} invoices   ${bar(attempts.length, expectedAttempts)} ${String(attempts.length).padStart(2)}/${expectedAttempts} failed attempts, ${exhausted}/${AUTO_DISABLE_AFTER} events given up`,
      `     failure_count ${String(d.failure_count).padStart(2)}/${AUTO_DISABLE_AFTER}, enabled: ${d.enabled ? green("true") : red("false")}`,
    ]);
    return !d.enabled && attempts.length >= expectedAttempts ? { d, attempts } : undefined;
  });
  progress.done();
  expectThat(disabled.d.failure_count === AUTO_DISABLE_AFTER, `failure_count is ${disabled.d.failure_count}, not ${AUTO_DISABLE_AFTER}`);
  for (const id of failing) {
    const numbers = disabled.attempts.filter((a) => a.event_id === id).map((a) => a.number).sort((a, b) => a - b);
    expectThat(
      numbers.join() === Array.from({ length: ATTEMPTS_PER_EVENT }, (_, i) => i + 1).join(),
      `event ${id}: attempts ${numbers.join(",")} instead of 1..${ATTEMPTS_PER_EVENT}`,
    );
  }
  say(`   ${red("✗")} "invoices" auto-disabled: enabled ${red("false")}, failure_count ${disabled.d.failure_count} ${dim(`(${elapsed()} in)`)}`);

  const one = disabled.attempts.filter((a) => a.event_id === failing[0]).sort((a, b) => a.number - b.number);
  say(dim(`   The attempt log of one of them (GET …/destinations/:id/attempts?outcome=failed):`));
  const first = Date.parse(one[0]!.created_at);
  for (const a of one) {
    const at = `+${Math.round((Date.parse(a.created_at) - first) / 1000)} s`;
    say(`     #${a.number}  ${a.created_at} ${dim(`(${at.padStart(4)})`)}  ${a.outcome}  HTTP ${a.status_code}  ${a.duration_ms} ms  ${dim(JSON.stringify(a.response_body ?? ""))}`);
  }

  for (const id of failing) givenUp.add(id);
  say(dim(`   Meanwhile "everything" got the same ${AUTO_DISABLE_AFTER} events without trouble:`));
  await watchArrivals(30_000, ["everything"]);

  step(5, `Fix the endpoint and re-enable "invoices" with PATCH`);
  await boxes.invoices.answer({ status: 200 });
  const patched = await invoicesOne.$patch({ param, json: { enabled: true } });
  await expectStatus(patched, 200, "PATCH destination");
  const back = (await patched.json()).data;
  expectThat(back.enabled, "PATCH enabled:true did not enable it");
  say(`   ${OK} PATCH {"enabled": true} → enabled ${green("true")}, failure_count ${back.failure_count} ${dim("(reset by the first success)")}`);
  const next = await send("invoice.paid");
  await until("the next event to arrive at invoices", 30_000, async () => {
    const { ids } = verified(await boxes.invoices.requests(), dest.invoices.secret, sent, source.id);
    return ids.has(next) ? true : undefined;
  });
  say(`   ${OK} the next invoice.paid event arrived at "invoices", verified`);
  const healed = await until("failure_count back to 0", 30_000, async () => {
    const d = await readDestination();
    return d.failure_count === 0 ? d : undefined;
  });
  say(`   ${OK} failure_count ${healed.failure_count}, enabled ${green(String(healed.enabled))}`);
  await watchArrivals(30_000);

  say(`\n${green("Done")} in ${elapsed()}: ${sent.size} events in, every forward verified, retries, auto-disable and recovery shown.`);
  say(dim("Next: npm start, and the walk-through in README.md; the API reference is at /docs."));
}

main().then(
  async () => {
    await cleanup();
    process.exit(0);
  },
  async (err: unknown) => {
    say("");
    say(red(`Demo failed: ${err instanceof Error ? err.message : String(err)}`));
    if (!(err instanceof DemoFailure) && err instanceof Error && err.stack) say(dim(err.stack));
    const output = dev?.output();
    if (output) say(dim(`--- the relay's last output ---\n${output.split("\n").slice(-30).join("\n")}`));
    await cleanup();
    process.exit(1);
  },
);
