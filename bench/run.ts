/**
 * `npm run bench`: ingest and delivery throughput, latency and CPU cost of the relay
 * against bare Workers, in one run, on this machine, with everything local.
 *
 * Every Worker (the relay and the baselines in bench/baseline-*) runs the same way:
 * `wrangler dev`, local, its own fresh `--persist-to`, the same flags (lib/wrangler.ts).
 * The machine is shared and noisy, so every figure that matters is a ratio against a
 * baseline measured in the same run, and the load alternates between the Workers
 * compared in short rounds rather than measuring one after the other.
 *
 *   1. Ingest: POST under fixed concurrency (autocannon) to the relay, to a bare Worker
 *      that reads the body and answers 202 (and the same with one log line), and to the
 *      "floor" (one D1 read, one insert, one queue send, one log line: the least the
 *      ingest contract needs on this runtime).
 *   2. End to end: N events to a source with M destinations on a loopback receiver, until
 *      every delivery has arrived and verified; against a Worker that POSTs each body to
 *      the M destinations directly, with no storage, and against the "floor" (event
 *      stored and queued, each attempt recorded and logged: the least the product's
 *      records need).
 *   3. Cost: CPU seconds of each Worker's processes (wrangler, workerd; from /proc) per
 *      1,000 ingested events and per 1,000 deliveries.
 *   4. Growth: ingest and list latency with 10k and 100k events stored (two relays,
 *      seeded straight into D1, measured in alternation); fan-out time with 1, 10 and
 *      100 destinations.
 *
 * Prints one table, writes bench/results.json (and bench/results.md). Fails (exit 1)
 * when any expected delivery is missing, unsigned or altered, or the relay answers
 * anything but 202 to a valid event.
 *
 * Environment: BENCH_QUICK=1 (a smoke run of seconds), BENCH_OUT (results path),
 * BENCH_EVENTS, BENCH_DESTINATIONS, BENCH_CONNECTIONS, BENCH_INGEST_SECONDS, BENCH_ROUNDS,
 * BENCH_GROWTH (e.g. "10000,100000"), BENCH_FANOUT (e.g. "1,10,100"), BENCH_KEEP=1
 * (keep the state directories), BENCH_RELAY (another relay's wrangler.toml, e.g. a copy
 * of the tree with a change applied, to measure the change against the same baselines).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import { dirname, join } from "node:path";
import { ROOT } from "../test/e2e/harness.ts";
import { Receiver } from "./lib/deliveries.ts";
import { pool } from "./lib/load.ts";
import { cpuTimes, machine } from "./lib/machine.ts";
import { endToEnd, fanoutWidth, growth, ingestRounds, relayEndToEnd, round1, round2, round3, type WidthFigures } from "./lib/phases.ts";
import { RelayClient, samplePayload, standardWebhooksHeaders } from "./lib/relay.ts";
import { note, OUT, QUICK, RELAY_CONFIG, RELAY_VARS, RUN, S } from "./lib/settings.ts";
import { executeSql, migrate, removeDir, snapshot, startWorker, type Runtime } from "./lib/wrangler.ts";

// ---------------------------------------------------------------------------------------
// The table

type Row = [step: string, figure: string, krafter: string, reference: string, ratio: string, target: string];

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "—");
const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? a / b : Number.NaN);
const mark = (met: boolean) => (met ? "met" : "**not met**");

function markdownTable(rows: Row[]): string {
  const head: Row = ["Step", "Figure", "Krafter", "Reference", "Ratio", "Target"];
  const all = [head, ...rows];
  const widths = head.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  const line = (r: Row) => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(" | ")} |`;
  return [line(head), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------------------------------

async function main() {
  const started = new Date();
  const info = machine();
  const stat0 = cpuTimes();
  const work = await mkdtemp(join(os.tmpdir(), "krafter-bench-"));
  note(`${QUICK ? "quick run" : "full run"}; state in ${work}`);
  const runtimes: Runtime[] = [];
  const receiver = await Receiver.start();
  let failed: string[] = [];
  try {
    // Snapshots: the code as it is now, immune to edits of the working tree during the run.
    note("bundling the relay and the baselines");
    const [relayConfig, ingestConfig, fanoutConfig] = await Promise.all([
      snapshot(RELAY_CONFIG, join(work, "relay")),
      snapshot(join(ROOT, "bench", "baseline-ingest", "wrangler.toml"), join(work, "baseline-ingest")),
      snapshot(join(ROOT, "bench", "baseline-fanout", "wrangler.toml"), join(work, "baseline-fanout")),
    ]);

    const relayState = join(work, "relay", "state");
    await migrate(relayConfig, relayState);
    const key = await RelayClient.newKey(relayState);
    const baselineState = join(work, "baseline-ingest", "state");
    await executeSql(ingestConfig, baselineState, join(ROOT, "bench", "baseline-ingest", "schema.sql"));

    const fanoutSecret = `whsec_${randomBytes(32).toString("base64")}`;
    const fanoutBoxes = await pool(Array.from({ length: S.destinations }), 8, () => receiver.mailbox(fanoutSecret));
    const floorBoxes = await pool(Array.from({ length: S.destinations }), 8, () => receiver.mailbox(fanoutSecret));
    const fanoutState = join(work, "baseline-fanout", "state");
    await executeSql(fanoutConfig, fanoutState, join(ROOT, "bench", "baseline-fanout", "schema.sql"));

    note("starting wrangler dev: relay, baseline-ingest, baseline-fanout");
    const relay = await startWorker({ label: "relay", config: relayConfig, persistTo: relayState, vars: RELAY_VARS });
    runtimes.push(relay);
    const bIngest = await startWorker({ label: "baseline-ingest", config: ingestConfig, persistTo: baselineState, vars: {} });
    runtimes.push(bIngest);
    const bFanout = await startWorker({
      label: "baseline-fanout",
      config: fanoutConfig,
      persistTo: fanoutState,
      vars: {
        TARGETS: JSON.stringify(fanoutBoxes.map((b) => b.url)),
        FLOOR_TARGETS: JSON.stringify(floorBoxes.map((b) => b.url)),
        SECRET: fanoutSecret,
      },
    });
    runtimes.push(bFanout);
    const client = new RelayClient(relay.origin, key);

    // 1. Ingest ------------------------------------------------------------------------
    const plain = await client.source(`ingest ${RUN}`);
    const signingSecret = `whsec_${randomBytes(32).toString("base64")}`;
    const signed = await client.source(`ingest signed ${RUN}`, "standard-webhooks", signingSecret);
    const body = samplePayload(`${RUN}ingest`, 0);
    note(`ingest: ${S.connections} connections, ${S.rounds} × ${Math.round(S.ingestSeconds / S.rounds)} s per Worker, body ${Buffer.byteLength(body)} bytes`);
    const ingest = await ingestRounds(
      [
        { name: "bare", rt: bIngest, url: `${bIngest.origin}/bare`, body },
        { name: "bare-logged", rt: bIngest, url: `${bIngest.origin}/logged`, body },
        { name: "floor", rt: bIngest, url: `${bIngest.origin}/floor`, body },
        { name: "relay", rt: relay, url: plain.ingestUrl, body },
        {
          name: "relay-signed",
          rt: relay,
          url: signed.ingestUrl,
          body,
          next: () => ({ body, headers: standardWebhooksHeaders(signingSecret, body) }),
        },
      ],
      S.ingestSeconds,
      S.rounds,
      S.connections,
    );
    await bIngest.stop();

    // 2. End to end ----------------------------------------------------------------------
    note(`end to end: ${S.events} events × ${S.destinations} destinations`);
    const directPayloads = Array.from({ length: S.events }, (_, i) => samplePayload(`${RUN}direct`, i));
    const direct = await endToEnd({
      name: "direct fan-out",
      rt: bFanout,
      url: `${bFanout.origin}/`,
      payloads: directPayloads,
      mailboxes: fanoutBoxes,
      receiver,
      expectedBody: (p) => p,
    });
    const e2eFloor = await endToEnd({
      name: "floor fan-out",
      rt: bFanout,
      url: `${bFanout.origin}/floor`,
      payloads: Array.from({ length: S.events }, (_, i) => samplePayload(`${RUN}floor`, i)),
      mailboxes: floorBoxes,
      receiver,
      expectedBody: (p) => p,
    });
    await bFanout.stop();
    const e2e = await relayEndToEnd("relay", relay, client, receiver, S.events, S.destinations);

    // 4b. Fan-out width ------------------------------------------------------------------
    const fanout: WidthFigures[] = [];
    for (const d of S.fanout) {
      note(`fan-out width: ${S.fanoutEvents} events one at a time × ${d} destinations`);
      fanout.push(await fanoutWidth(relay, client, receiver, S.fanoutEvents, d));
    }
    await relay.stop();

    // 4a. Growth -------------------------------------------------------------------------
    note(`growth: ${S.growth.join(" and ")} stored events`);
    const grown = await growth(work, relayConfig);

    // Verdicts ---------------------------------------------------------------------------
    const r = ingest.get("relay")!;
    const rs = ingest.get("relay-signed")!;
    const bare = ingest.get("bare")!;
    const floor = ingest.get("floor")!;
    const logged = ingest.get("bare-logged")!;
    const small = grown[0]!;
    const big = grown[grown.length - 1]!;
    const targets = [
      { name: "ingest throughput ≥ 0.5 × bare Worker", value: ratio(r.rps, bare.rps), limit: 0.5, met: ratio(r.rps, bare.rps) >= 0.5 },
      { name: "ingest p99 ≤ 3 × bare Worker", value: ratio(r.p99, bare.p99), limit: 3, met: ratio(r.p99, bare.p99) <= 3 },
      { name: "deliveries/s ≥ 0.5 × direct fan-out", value: ratio(e2e.deliveriesPerSecond, direct.deliveriesPerSecond), limit: 0.5, met: ratio(e2e.deliveriesPerSecond, direct.deliveriesPerSecond) >= 0.5 },
      { name: "zero loss", value: e2e.lost + fanout.reduce((a, f) => a + f.lost, 0), limit: 0, met: e2e.lost + fanout.reduce((a, f) => a + f.lost, 0) === 0 },
      { name: `ingest p50 at ${big.stored} within 20 % of ${small.stored}`, value: ratio(big.ingest.p50, small.ingest.p50), limit: 1.2, met: ratio(big.ingest.p50, small.ingest.p50) <= 1.2 },
      { name: `list p50 at ${big.stored} within 20 % of ${small.stored}`, value: ratio(big.list.p50, small.list.p50), limit: 1.2, met: ratio(big.list.p50, small.list.p50) <= 1.2 },
    ].map((t) => ({ ...t, value: round3(t.value) }));

    const rows: Row[] = [];
    const ing = `Ingest (${S.connections} conn, ${S.rounds}×${Math.round(S.ingestSeconds / S.rounds)} s)`;
    rows.push([ing, "requests/s vs bare Worker", fmt(r.rps), fmt(bare.rps), fmt(ratio(r.rps, bare.rps), 2), `≥ 0.5: ${mark(targets[0]!.met)}`]);
    rows.push(["", "p50 ms vs bare Worker", fmt(r.p50), fmt(bare.p50), fmt(ratio(r.p50, bare.p50), 2), ""]);
    rows.push(["", "p99 ms vs bare Worker", fmt(r.p99), fmt(bare.p99), fmt(ratio(r.p99, bare.p99), 2), `≤ 3: ${mark(targets[1]!.met)}`]);
    rows.push(["", "requests/s vs floor (read+insert+send+log line)", fmt(r.rps), fmt(floor.rps), fmt(ratio(r.rps, floor.rps), 2), ""]);
    rows.push(["", "p99 ms vs floor", fmt(r.p99), fmt(floor.p99), fmt(ratio(r.p99, floor.p99), 2), ""]);
    rows.push(["", "floor vs bare Worker: requests/s", fmt(floor.rps), fmt(bare.rps), fmt(ratio(floor.rps, bare.rps), 2), ""]);
    rows.push(["", "floor vs bare Worker: p99 ms", fmt(floor.p99), fmt(bare.p99), fmt(ratio(floor.p99, bare.p99), 2), ""]);
    rows.push(["", "bare + one log line vs bare: requests/s, p99 ms", `${fmt(logged.rps)}, ${fmt(logged.p99)}`, `${fmt(bare.rps)}, ${fmt(bare.p99)}`, fmt(ratio(logged.rps, bare.rps), 2), ""]);
    rows.push(["", "signed (Standard Webhooks) requests/s, p99 ms", `${fmt(rs.rps)}, ${fmt(rs.p99)}`, `${fmt(r.rps)}, ${fmt(r.p99)} (unsigned)`, fmt(ratio(rs.rps, r.rps), 2), ""]);
    const ee = `End to end (${S.events} events × ${S.destinations} dest.)`;
    rows.push([ee, "deliveries/s vs direct fan-out", fmt(e2e.deliveriesPerSecond), fmt(direct.deliveriesPerSecond), fmt(ratio(e2e.deliveriesPerSecond, direct.deliveriesPerSecond), 2), `≥ 0.5: ${mark(targets[2]!.met)}`]);
    rows.push(["", "deliveries/s vs floor (stored, queued, each attempt recorded and logged)", fmt(e2e.deliveriesPerSecond), fmt(e2eFloor.deliveriesPerSecond), fmt(ratio(e2e.deliveriesPerSecond, e2eFloor.deliveriesPerSecond), 2), ""]);
    rows.push(["", "floor vs direct fan-out: deliveries/s", fmt(e2eFloor.deliveriesPerSecond), fmt(direct.deliveriesPerSecond), fmt(ratio(e2eFloor.deliveriesPerSecond, direct.deliveriesPerSecond), 2), ""]);
    rows.push(["", "time to last delivery s", fmt(e2e.seconds), fmt(direct.seconds), fmt(ratio(e2e.seconds, direct.seconds), 2), ""]);
    rows.push(["", "ingest→receipt p50 ms", fmt(e2e.p50, 0), fmt(direct.p50, 0), fmt(ratio(e2e.p50, direct.p50), 2), ""]);
    rows.push(["", "ingest→receipt p99 ms", fmt(e2e.p99, 0), fmt(direct.p99, 0), fmt(ratio(e2e.p99, direct.p99), 2), ""]);
    rows.push(["", "lost / duplicates", `${e2e.lost} / ${e2e.duplicates}`, `${direct.lost} / ${direct.duplicates}`, "", `0 lost: ${mark(targets[3]!.met)}`]);
    rows.push(["Cost (CPU s, all processes)", "per 1,000 ingested events vs bare", fmt(r.cpuPer1k, 2), fmt(bare.cpuPer1k, 2), fmt(ratio(r.cpuPer1k, bare.cpuPer1k), 2), "reported"]);
    rows.push(["", "per 1,000 ingested events vs floor", fmt(r.cpuPer1k, 2), fmt(floor.cpuPer1k, 2), fmt(ratio(r.cpuPer1k, floor.cpuPer1k), 2), ""]);
    rows.push(["", "per 1,000 signed events vs unsigned", fmt(rs.cpuPer1k, 2), fmt(r.cpuPer1k, 2), fmt(ratio(rs.cpuPer1k, r.cpuPer1k), 2), ""]);
    rows.push(["", "per 1,000 deliveries (ingest included)", fmt(e2e.cpuPer1kDeliveries, 2), fmt(direct.cpuPer1kDeliveries, 2), fmt(ratio(e2e.cpuPer1kDeliveries, direct.cpuPer1kDeliveries), 2), "reported"]);
    rows.push(["", "per 1,000 deliveries (ingest included) vs floor", fmt(e2e.cpuPer1kDeliveries, 2), fmt(e2eFloor.cpuPer1kDeliveries, 2), fmt(ratio(e2e.cpuPer1kDeliveries, e2eFloor.cpuPer1kDeliveries), 2), ""]);
    // The same with each event's ingest cost (from step 1) taken out: what a delivery itself costs.
    const relayDelivery = (e2e.cpuSeconds - (e2e.events * r.cpuPer1k) / 1000) / Math.max(1, e2e.delivered) * 1000;
    const directDelivery = (direct.cpuSeconds - (direct.events * bare.cpuPer1k) / 1000) / Math.max(1, direct.delivered) * 1000;
    rows.push(["", "per 1,000 deliveries, ingest deducted", fmt(relayDelivery, 2), fmt(directDelivery, 2), fmt(ratio(relayDelivery, directDelivery), 2), ""]);
    const gs = `Growth (${small.stored.toLocaleString("en")} → ${big.stored.toLocaleString("en")} stored)`;
    rows.push([gs, "ingest p50 ms, large vs small", fmt(big.ingest.p50), fmt(small.ingest.p50), fmt(ratio(big.ingest.p50, small.ingest.p50), 2), `≤ 1.2: ${mark(targets[4]!.met)}`]);
    rows.push(["", "ingest p99 ms, large vs small", fmt(big.ingest.p99), fmt(small.ingest.p99), fmt(ratio(big.ingest.p99, small.ingest.p99), 2), ""]);
    rows.push(["", "ingest requests/s, large vs small", fmt(big.ingest.rps), fmt(small.ingest.rps), fmt(ratio(big.ingest.rps, small.ingest.rps), 2), ""]);
    rows.push(["", "list p50 ms (limit=50), large vs small", fmt(big.list.p50, 2), fmt(small.list.p50, 2), fmt(ratio(big.list.p50, small.list.p50), 2), `≤ 1.2: ${mark(targets[5]!.met)}`]);
    rows.push(["", "list p99 ms, large vs small", fmt(big.list.p99, 2), fmt(small.list.p99, 2), fmt(ratio(big.list.p99, small.list.p99), 2), ""]);
    const base = fanout[0]!;
    for (const f of fanout) {
      rows.push([
        f === base ? `Fan-out width (${S.fanoutEvents} events, one at a time)` : "",
        `${f.destinations} dest.: ingest→last delivery p50 (p99) ms`,
        `${fmt(f.eventP50, 0)} (${fmt(f.eventP99, 0)})`,
        f === base ? "" : `${fmt(base.eventP50, 0)} (${base.destinations} dest.)`,
        `${fmt(f.msPerDelivery, 1)} ms/delivery`,
        f.lost === 0 ? "0 lost" : `**${f.lost} lost**`,
      ]);
    }

    const table = markdownTable(rows);
    const stat1 = cpuTimes();
    const finished = new Date();
    const results = {
      date: finished.toISOString(),
      durationSeconds: Math.round((finished.getTime() - started.getTime()) / 1000),
      machine: {
        ...info,
        loadavgAtEnd: os.loadavg().map(round2),
        // Time stolen by the hypervisor and used by everything on the machine (bench included), over the run.
        stealPercent: round1((100 * (stat1.steal - stat0.steal)) / Math.max(1, stat1.total - stat0.total)),
        busyPercent: round1((100 * (1 - (stat1.idle - stat0.idle) / Math.max(1, stat1.total - stat0.total)))),
      },
      settings: { ...S, relay: RELAY_CONFIG },
      ingest: Object.fromEntries(ingest),
      endToEnd: { relay: e2e, direct, floor: e2eFloor },
      fanout,
      growth: grown,
      targets,
      table,
    };
    failed = [
      ...(e2e.lost > 0 ? [`end to end: ${e2e.lost} of ${e2e.expected} deliveries lost (${e2e.problems.slice(0, 3).join("; ")})`] : []),
      ...fanout.filter((f) => f.lost > 0).map((f) => `${f.name}: ${f.lost} of ${f.expected} deliveries lost (${f.problems.slice(0, 3).join("; ")})`),
      ...[r, rs, ...grown.map((g) => g.ingest)].filter((x) => x.errors > 0).map((x) => `${x.name}: ${x.errors} ingest requests not answered 202 (${JSON.stringify(x.statuses)})`),
    ];
    await writeFile(OUT, JSON.stringify({ ok: failed.length === 0, failures: failed, ...results }, null, 2) + "\n");
    const header = `Krafter benchmark, ${finished.toISOString().slice(0, 16).replace("T", " ")} UTC: ${info.nproc} × ${info.cpu}, ${info.memGiB} GiB, Node ${info.node}, wrangler ${info.wrangler} (workerd ${info.workerd}); commit ${info.git.commit}${info.git.dirty.length > 0 ? " with local changes" : ""}; the machine ${results.machine.busyPercent} % busy over the run (everything on it), ${results.machine.stealPercent} % stolen${QUICK ? " [quick run]" : ""}`;
    if (!process.env.BENCH_OUT) await writeFile(join(dirname(OUT), "results.md"), `${header}\n\n${table}\n`);
    process.stdout.write(`\n${header}\n\n${table}\n\nTargets:\n${targets.map((t) => `  ${t.met ? "met    " : "NOT MET"}  ${t.name} (${t.value})`).join("\n")}\n`);
    for (const b of [direct, e2eFloor]) {
      if (b.lost > 0) process.stdout.write(`\nWarning: the ${b.name} baseline lost ${b.lost} deliveries (it has no retries): ${b.problems.slice(0, 3).join("; ")}\n`);
    }
    process.stdout.write(`\nWrote ${OUT}\n`);
  } finally {
    for (const rt of runtimes) await rt.stop();
    await receiver.close();
    if (process.env.BENCH_KEEP !== "1") await removeDir(work);
  }
  if (failed.length > 0) {
    process.stderr.write(`\nBENCHMARK FAILED: deliveries or events were lost\n${failed.map((f) => `  - ${f}`).join("\n")}\n`);
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`\nBENCHMARK FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
