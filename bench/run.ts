/**
 * `npm run bench`: ingest and delivery throughput, latency, CPU, storage and billed
 * operations of the relay against Workers that do less, in one run, on this machine,
 * with everything local.
 *
 * Every Worker (the relay and the baselines in bench/baseline-*) runs the same way:
 * `wrangler dev`, local, its own fresh `--persist-to`, the same flags (lib/wrangler.ts).
 * The machine is shared and noisy, so every figure that matters is a ratio against a
 * baseline measured in the same run, and the load alternates between the Workers
 * compared in short rounds rather than measuring one after the other.
 *
 *   1. Ingest: POST under fixed concurrency (autocannon) to the relay, to a bare Worker
 *      that reads the body and answers 202 (and the same with one log line), and to the
 *      "floor" (one call to a SQLite-backed Durable Object that inserts the event, one
 *      queue send, one log line: the least the ingest contract needs on this runtime).
 *   2. End to end: N events to a source with M destinations on a loopback receiver, until
 *      every delivery has arrived and verified; against a Worker that POSTs each body to
 *      the M destinations directly, with no storage, and against the "floor" (event
 *      stored in a Durable Object and queued, each attempt recorded there and logged:
 *      the least the product's records need, within the platform's six connections
 *      waiting per invocation and on as many queues as the relay binds; the same past
 *      the connection limit, which only wrangler dev allows, is reported beside).
 *      Around it: the relay's D1 and partition files (lib/storage.ts), for D1 bytes per
 *      event (about 0: events are not in D1) and partition bytes per event.
 *   3. Cost: CPU seconds of each Worker's processes (wrangler, workerd; from /proc) per
 *      1,000 ingested events and per 1,000 deliveries.
 *   4. Fan-out time with 1, 10 and 100 destinations; then flow control and isolation
 *      (lib/flow.ts): a rate-limited destination's measured rate against its setting, a
 *      fifo destination's deliveries/s against an unordered one's, and one account's
 *      ingest→delivery p50/p99 beside another's endpoint that never answers, against alone.
 *   5. On seeded partitions (lib/stored.ts; the relay restarted with METER=true): growth
 *      (ingest and list latency, a partition of 10k against one of 100k events), billed
 *      operations per event and their cost per million events at list prices
 *      (lib/cost.ts), partition bytes with larger payloads, and the time to drop a
 *      partition of 1,000 and of 100,000 events.
 *
 * `--against REF` runs another commit of the relay alongside in steps 1 and 2
 * (lib/against.ts) and compares this one's requests/s and deliveries/s with it.
 *
 * Prints one table, writes bench/results.json (and bench/results.md). Fails (exit 1)
 * when any expected delivery is missing, unsigned or altered, the relay answers
 * anything but 202 to a valid event, seeded events are not listed, or a deleted
 * source's partition is not dropped.
 *
 * Environment: BENCH_QUICK=1 (a smoke run of about a minute), BENCH_OUT (results path),
 * BENCH_EVENTS, BENCH_DESTINATIONS, BENCH_CONNECTIONS, BENCH_INGEST_SECONDS, BENCH_ROUNDS,
 * BENCH_GROWTH (e.g. "10000,100000"), BENCH_DROP (e.g. "1000,100000"), BENCH_METER_EVENTS,
 * BENCH_FANOUT (e.g. "1,10,100"), BENCH_KEEP=1 (keep the state directories), BENCH_RELAY
 * (another relay's wrangler.toml, e.g. a copy of the tree with a change applied, to
 * measure the change against the same baselines).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import { dirname, join } from "node:path";
import { ROOT } from "../tools/process.ts";
import { checkoutRef, type RefCheckout } from "./lib/against.ts";
import { Receiver } from "./lib/deliveries.ts";
import { flowStep } from "./lib/flow.ts";
import { pool } from "./lib/load.ts";
import { cpuTimes, machine } from "./lib/machine.ts";
import { endToEnd, fanoutWidth, ingestRounds, relayEndToEnd, round1, round2, type E2EFigures, type IngestTarget, type WidthFigures } from "./lib/phases.ts";
import { RelayClient, samplePayload, standardWebhooksHeaders } from "./lib/relay.ts";
import { AGAINST, note, OUT, QUICK, RELAY_CONFIG, RELAY_VARS, RUN, S, STORE_VARS } from "./lib/settings.ts";
import { d1State, sourceStorage, type D1State } from "./lib/storage.ts";
import { createSeedSources, dropStep, growth, meteredStep, seedSources, verifySeeded } from "./lib/stored.ts";
import { cost, marginalBytesPerEvent, markdownTable, tableRows, targets, type Figures } from "./lib/table.ts";
import { migrate, removeDir, snapshot, startWorker, type Runtime } from "./lib/wrangler.ts";

/** A relay with its state prepared (its own migrations applied, an API key), not started yet. */
async function prepareRelay(config: string, persistTo: string, apiKeyScript?: string): Promise<string> {
  await migrate(config, persistTo);
  return RelayClient.newKey(persistTo, apiKeyScript);
}

async function main() {
  const started = new Date();
  const info = machine();
  const stat0 = cpuTimes();
  const work = await mkdtemp(join(os.tmpdir(), "krafter-bench-"));
  note(`${QUICK ? "quick run" : "full run"}; state in ${work}`);
  const runtimes: Runtime[] = [];
  const stop = async (rt: Runtime) => {
    await rt.stop();
    runtimes.splice(runtimes.indexOf(rt), 1);
  };
  const receiver = await Receiver.start();
  let checkout: RefCheckout | undefined;
  let failed: string[] = [];
  try {
    if (AGAINST) {
      checkout = await checkoutRef(AGAINST, join(work, "ref-tree"));
      note(`--against ${AGAINST}: ${checkout.commit} checked out in ${checkout.dir}`);
    }
    // Snapshots: the code as it is now, immune to edits of the working tree during the run.
    note(`bundling the relay${checkout ? `, ${checkout.commit}` : ""} and the baselines`);
    const [relayConfig, ingestConfig, fanoutConfig, refConfig] = await Promise.all([
      snapshot(RELAY_CONFIG, join(work, "relay")),
      snapshot(join(ROOT, "bench", "baseline-ingest", "wrangler.toml"), join(work, "baseline-ingest")),
      snapshot(join(ROOT, "bench", "baseline-fanout", "wrangler.toml"), join(work, "baseline-fanout")),
      checkout ? snapshot(checkout.config, join(work, "ref")) : undefined,
    ]);
    const relayState = join(work, "relay", "state");
    const refState = join(work, "ref", "state");
    // Each relay's own migrations (REF's from its own drizzle/), one after the other: wrangler d1 is not cheap.
    const key = await prepareRelay(relayConfig, relayState);
    const refKey = refConfig ? await prepareRelay(refConfig, refState, checkout!.apiKeyScript) : undefined;

    const fanoutSecret = `whsec_${randomBytes(32).toString("base64")}`;
    const fanoutBoxes = await pool(Array.from({ length: S.destinations }), 8, () => receiver.mailbox(fanoutSecret));
    const floorBoxes = await pool(Array.from({ length: S.destinations }), 8, () => receiver.mailbox(fanoutSecret));
    const unlimitedBoxes = await pool(Array.from({ length: S.destinations }), 8, () => receiver.mailbox(fanoutSecret));

    note(`starting wrangler dev: relay, ${refConfig ? `${checkout!.commit}, ` : ""}baseline-ingest, baseline-fanout`);
    const [relay, bIngest, bFanout, ref] = await Promise.all([
      startWorker({ label: "relay", config: relayConfig, persistTo: relayState, vars: RELAY_VARS }),
      startWorker({ label: "baseline-ingest", config: ingestConfig, persistTo: join(work, "baseline-ingest", "state"), vars: {} }),
      startWorker({
        label: "baseline-fanout",
        config: fanoutConfig,
        persistTo: join(work, "baseline-fanout", "state"),
        vars: {
          TARGETS: JSON.stringify(fanoutBoxes.map((b) => b.url)),
          FLOOR_TARGETS: JSON.stringify(floorBoxes.map((b) => b.url)),
          UNLIMITED_TARGETS: JSON.stringify(unlimitedBoxes.map((b) => b.url)),
          SECRET: fanoutSecret,
        },
      }),
      refConfig ? startWorker({ label: `relay ${checkout!.commit}`, config: refConfig, persistTo: refState, vars: RELAY_VARS }) : undefined,
    ]);
    runtimes.push(relay, bIngest, bFanout, ...(ref ? [ref] : []));
    const client = new RelayClient(relay.origin, key);
    const refClient = ref ? new RelayClient(ref.origin, refKey!) : undefined;

    // 1. Ingest ------------------------------------------------------------------------
    const plain = await client.source(`ingest ${RUN}`);
    const signingSecret = `whsec_${randomBytes(32).toString("base64")}`;
    const signed = await client.source(`ingest signed ${RUN}`, "standard-webhooks", signingSecret);
    const refPlain = refClient ? await refClient.source(`ingest ${RUN}`) : undefined;
    const body = samplePayload(`${RUN}ingest`, 0);
    note(`ingest: ${S.connections} connections, ${S.rounds} × ${Math.round(S.ingestSeconds / S.rounds)} s per Worker, body ${Buffer.byteLength(body)} bytes`);
    const ingestTargets: IngestTarget[] = [
      { name: "bare", rt: bIngest, url: `${bIngest.origin}/bare`, body },
      { name: "bare-logged", rt: bIngest, url: `${bIngest.origin}/logged`, body },
      { name: "floor", rt: bIngest, url: `${bIngest.origin}/floor`, body },
      { name: "relay", rt: relay, url: plain.ingestUrl, body },
      { name: "relay-signed", rt: relay, url: signed.ingestUrl, body, next: () => ({ body, headers: standardWebhooksHeaders(signingSecret, body) }) },
      ...(ref && refPlain ? [{ name: "ref", rt: ref, url: refPlain.ingestUrl, body }] : []),
    ];
    const ingest = await ingestRounds(ingestTargets, S.ingestSeconds, S.rounds, S.connections);
    await stop(bIngest);

    // 2. End to end ----------------------------------------------------------------------
    note(`end to end: ${S.events} events × ${S.destinations} destinations`);
    const direct = await endToEnd({
      name: "direct fan-out",
      rt: bFanout,
      url: `${bFanout.origin}/`,
      payloads: Array.from({ length: S.events }, (_, i) => samplePayload(`${RUN}direct`, i)),
      mailboxes: fanoutBoxes,
      receiver,
      expectedBody: (p) => p,
      stallMs: S.baselineStallMs,
    });
    const e2eFloor = await endToEnd({
      name: "floor fan-out",
      rt: bFanout,
      url: `${bFanout.origin}/floor`,
      payloads: Array.from({ length: S.events }, (_, i) => samplePayload(`${RUN}floor`, i)),
      mailboxes: floorBoxes,
      receiver,
      expectedBody: (p) => p,
      stallMs: S.baselineStallMs,
    });
    const e2eFloorUnlimited = await endToEnd({
      name: "floor fan-out past the connection limit",
      rt: bFanout,
      url: `${bFanout.origin}/floor-unlimited`,
      payloads: Array.from({ length: S.events }, (_, i) => samplePayload(`${RUN}unlimited`, i)),
      mailboxes: unlimitedBoxes,
      receiver,
      expectedBody: (p) => p,
      stallMs: S.baselineStallMs,
    });
    await stop(bFanout);
    // The relay's D1 just before the events (its source and destinations made) and after.
    let d1Before: D1State | undefined;
    const e2e = await relayEndToEnd({
      name: "relay",
      rt: relay,
      client,
      receiver,
      events: S.events,
      destinations: S.destinations,
      ready: () => {
        d1Before = d1State(relayState);
      },
    });
    const d1After = d1State(relayState);
    const storage = {
      d1Before: d1Before!,
      d1After,
      d1BytesPerEvent: round1((d1After.bytes - d1Before!.bytes) / Math.max(1, e2e.events - e2e.ingestErrors)),
      partitions: sourceStorage(relayState, e2e.sourceId),
    };
    note(`storage: D1 ${d1Before!.bytes} → ${d1After.bytes} bytes; partitions ${storage.partitions.bytesPerEvent} bytes per event`);
    let refE2e: E2EFigures | undefined;
    if (ref && refClient) {
      refE2e = await relayEndToEnd({ name: checkout!.commit, rt: ref, client: refClient, receiver, events: S.events, destinations: S.destinations });
      await stop(ref);
    }

    // 4. Fan-out width ------------------------------------------------------------------
    const fanout: WidthFigures[] = [];
    for (const d of S.fanout) {
      note(`fan-out width: ${S.fanoutEvents} events one at a time × ${d} destinations`);
      fanout.push(await fanoutWidth(relay, client, receiver, S.fanoutEvents, d));
    }

    // 4b. Flow control and isolation -------------------------------------------------------
    let accounts = 0;
    const flow = await flowStep(client, async () => new RelayClient(relay.origin, await RelayClient.newKey(relayState, undefined, `bench-tenant-${++accounts}`)), receiver, S.flow);

    // 5. Seeded partitions: growth, cost, drop ---------------------------------------------
    const wanted = [...S.growth.map((count) => ({ label: `growth-${count}`, count })), ...S.drop.map((count) => ({ label: `drop-${count}`, count }))];
    const created = await createSeedSources(client, wanted);
    await stop(relay);
    const seeded = seedSources(relayState, created);
    const store = await startWorker({ label: "relay (seeded, metered)", config: relayConfig, persistTo: relayState, vars: STORE_VARS });
    runtimes.push(store);
    const storeClient = new RelayClient(store.origin, key);
    await verifySeeded(storeClient, seeded);
    note(`growth: ${S.growth.join(" and ")} stored events`);
    const grown = await growth(store, storeClient, seeded.filter((s) => s.label.startsWith("growth-")));
    const metered = await meteredStep(store, storeClient, receiver, { name: "metered", events: S.meterEvents });
    const large = await meteredStep(store, storeClient, receiver, { name: "large payloads", events: S.largeEvents, payloadBytes: S.largePayloadBytes });
    const drops = await dropStep(store, storeClient, seeded.filter((s) => s.label.startsWith("drop-")));
    await stop(store);

    // Verdicts ---------------------------------------------------------------------------
    const figures: Figures = {
      ingest,
      e2e,
      direct,
      e2eFloor,
      e2eFloorUnlimited,
      ...(refE2e ? { ref: { ref: AGAINST!, commit: checkout!.commit, e2e: refE2e } } : {}),
      storage,
      partitionBaseBytes: Math.min(...seeded.map((s) => s.bytesBeforeSeed)),
      fanout,
      flow,
      growth: grown,
      metered,
      large,
      drops,
    };
    const verdicts = targets(figures);
    const table = markdownTable(tableRows(figures, verdicts));
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
        busyPercent: round1(100 * (1 - (stat1.idle - stat0.idle) / Math.max(1, stat1.total - stat0.total))),
      },
      settings: { ...S, relay: RELAY_CONFIG, against: checkout ? { ref: AGAINST, commit: checkout.commit } : null },
      ingest: Object.fromEntries(ingest),
      endToEnd: { relay: e2e, direct, floor: e2eFloor, floorUnlimited: e2eFloorUnlimited, ...(refE2e ? { ref: refE2e } : {}) },
      storage: { ...storage, partitionBaseBytes: figures.partitionBaseBytes, marginalBytesPerEvent: marginalBytesPerEvent(storage.partitions, figures.partitionBaseBytes) },
      fanout,
      flow,
      growth: grown,
      metered,
      largePayloads: large,
      cost: cost(figures),
      drops,
      targets: verdicts,
      table,
    };
    failed = failures(figures);
    await writeFile(OUT, JSON.stringify({ ok: failed.length === 0, failures: failed, ...results }, null, 2) + "\n");
    const header = `Krafter benchmark, ${finished.toISOString().slice(0, 16).replace("T", " ")} UTC: ${info.nproc} × ${info.cpu}, ${info.memGiB} GiB, Node ${info.node}, wrangler ${info.wrangler} (workerd ${info.workerd}); commit ${info.git.commit}${info.git.dirty.length > 0 ? " with local changes" : ""}${checkout ? ` against ${checkout.commit}` : ""}; the machine ${results.machine.busyPercent} % busy over the run (everything on it), ${results.machine.stealPercent} % stolen; ${results.durationSeconds} s${QUICK ? " [quick run]" : ""}`;
    if (!process.env.BENCH_OUT) await writeFile(join(dirname(OUT), "results.md"), `${header}\n\n${table}\n`);
    process.stdout.write(`\n${header}\n\n${table}\n\nTargets:\n${verdicts.map((t) => `  ${t.met ? "met    " : "NOT MET"}  ${t.name} (${t.value})`).join("\n")}\n`);
    for (const b of [direct, e2eFloor, e2eFloorUnlimited, ...(refE2e ? [refE2e] : [])]) {
      if (b.lost > 0) process.stdout.write(`\nWarning: ${b.name} lost ${b.lost} deliveries (the baselines retry nothing): ${b.problems.slice(0, 3).join("; ")}\n`);
    }
    process.stdout.write(`\nWrote ${OUT}\n`);
  } finally {
    for (const rt of [...runtimes]) await rt.stop();
    await receiver.close();
    await checkout?.remove();
    if (process.env.BENCH_KEEP !== "1") await removeDir(work);
  }
  if (failed.length > 0) {
    process.stderr.write(`\nBENCHMARK FAILED\n${failed.map((f) => `  - ${f}`).join("\n")}\n`);
    process.exitCode = 1;
  }
}

/** What makes the run fail: the relay's losses and refusals, and partitions it did not drop. */
function failures(f: Figures): string[] {
  const lossOf = (x: { name: string; lost: number; expected: number; problems: string[] }) =>
    x.lost > 0 ? [`${x.name}: ${x.lost} of ${x.expected} deliveries lost (${x.problems.slice(0, 3).join("; ")})`] : [];
  const refused = [f.ingest.get("relay")!, f.ingest.get("relay-signed")!, ...f.growth.map((g) => g.ingest)].filter((x) => x.errors > 0);
  return [
    ...[f.e2e, f.metered.e2e, f.large.e2e, ...f.fanout].flatMap(lossOf),
    ...refused.map((x) => `${x.name}: ${x.errors} ingest requests not answered 202 (${JSON.stringify(x.statuses)})`),
    ...f.flow.problems.map((p) => `flow control: ${p}`),
    ...f.drops.filter((d) => d.durationMs === null).map((d) => `${d.partition}: no partition_dropped line after its source was deleted`),
    ...f.drops.filter((d) => d.fileAfter.events !== null).map((d) => `${d.partition}: ${d.fileAfter.events} events still in its file after the drop`),
  ];
}

main().catch((err: unknown) => {
  process.stderr.write(`\nBENCHMARK FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
