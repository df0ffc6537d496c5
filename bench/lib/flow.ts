/**
 * Flow control and isolation, measured through the relay (step 4b of run.ts):
 *
 * - rate limit: a destination with `rate_limit` R gets N events sent at once; its
 *   measured rate is (starts - 1) / (last start - first start) at the receiver, and the
 *   most starts in any 10 s window against PRODUCT.md's R × 10 × 1.1;
 * - fifo: one source, two destinations, one `ordering: "fifo"` and one unordered, the same
 *   N events; each one's deliveries/s (N over the first send to its last arrival), and the
 *   ratio fifo / unordered, in the same run;
 * - isolation: account B's ingest→delivery p50/p99 alone, then beside account A's endpoint
 *   that never answers (from A's first attempt on), and the ratio.
 */
import type { Received } from "../../tools/receiver.ts";
import type { Receiver } from "./deliveries.ts";
import { percentile, sleep } from "./load.ts";
import { round1, round2, send } from "./phases.ts";
import { RelayClient, samplePayload } from "./relay.ts";
import { note, RUN } from "./settings.ts";
import { mostInWindow } from "../../tools/windows.ts";

export interface FlowFigures {
  rateLimit: { setting: number; events: number; delivered: number; measuredPerSecond: number; ratioToSetting: number; most10s: number; allowed10s: number };
  fifo: { events: number; fifoPerSecond: number; unorderedPerSecond: number; ratio: number; inOrder: boolean; delivered: number };
  isolation: { events: number; aloneP50: number; aloneP99: number; besideP50: number; besideP99: number; p99Ratio: number; deadAttempts: number };
  problems: string[];
}


/** First 2xx arrival per webhook-id at a mailbox. */
function firstOk(reqs: Received[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of reqs) {
    const id = r.headers["webhook-id"] ?? "";
    if (r.answered !== undefined && r.answered >= 200 && r.answered < 300 && !m.has(id)) m.set(id, r.at);
  }
  return m;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await sleep(200);
  }
  note(`flow: gave up waiting for ${what}`);
  return false;
}

async function destination(client: RelayClient, sourceId: string, url: string, extra: Record<string, unknown> = {}) {
  const { data } = await client.api<{ data: { id: string } }>("POST", `/webhooks/sources/${sourceId}/destinations`, { url, ...extra });
  return data;
}

export async function flowStep(client: RelayClient, newAccountClient: () => Promise<RelayClient>, receiver: Receiver, o: { rate: number; rateEvents: number; fifoEvents: number; isolationEvents: number }): Promise<FlowFigures> {
  const problems: string[] = [];
  const payloads = (tag: string, n: number) => Array.from({ length: n }, (_, i) => samplePayload(`${RUN}${tag}`, i));

  // Rate limit -----------------------------------------------------------------------------
  note(`flow: rate_limit ${o.rate}/s, ${o.rateEvents} events sent at once`);
  const rs = await client.source(`rate ${RUN}`);
  const rbox = await receiver.mailbox();
  await destination(client, rs.id, rbox.url, { rate_limit: o.rate });
  const rsent = await send(rs.ingestUrl, payloads("rate", o.rateEvents), 16);
  if (rsent.some((s) => s.status !== 202)) problems.push("rate limit: an event was not answered 202");
  const expectSeconds = o.rateEvents / o.rate;
  await until("the rate-limited deliveries", async () => firstOk(await receiver.requests(rbox)).size >= o.rateEvents, (expectSeconds * 3 + 60) * 1000);
  const rreqs = await receiver.requests(rbox);
  const starts = rreqs.map((r) => r.at);
  const rdelivered = firstOk(rreqs).size;
  if (rdelivered < o.rateEvents) problems.push(`rate limit: ${o.rateEvents - rdelivered} deliveries missing`);
  const measured = (starts.length - 1) / Math.max(0.001, (Math.max(...starts) - Math.min(...starts)) / 1000);
  const most10s = mostInWindow(starts, 10_000);
  const allowed10s = Math.floor(o.rate * 10 * 1.1);
  if (most10s > allowed10s) problems.push(`rate limit: ${most10s} starts in 10 s, over ${allowed10s}`);

  // FIFO against unordered ----------------------------------------------------------------
  note(`flow: ${o.fifoEvents} events to a fifo and an unordered destination of one source`);
  const fs = await client.source(`fifo ${RUN}`);
  const [fbox, ubox] = [await receiver.mailbox(), await receiver.mailbox()];
  await destination(client, fs.id, fbox.url, { ordering: "fifo" });
  await destination(client, fs.id, ubox.url);
  // One at a time, so ingest order is send order.
  const fsent = await send(fs.ingestUrl, payloads("fifo", o.fifoEvents), 1);
  if (fsent.some((s) => s.status !== 202)) problems.push("fifo: an event was not answered 202");
  const t0 = Math.min(...fsent.map((s) => s.sentAt));
  await until("the fifo deliveries", async () => firstOk(await receiver.requests(fbox)).size >= o.fifoEvents && firstOk(await receiver.requests(ubox)).size >= o.fifoEvents, (o.fifoEvents * 2 + 120) * 1000);
  const freqs = await receiver.requests(fbox);
  const fOk = firstOk(freqs);
  const uOk = firstOk(await receiver.requests(ubox));
  const order = fsent.map((s) => s.eventId);
  const seen = [...fOk.entries()].sort((a, z) => a[1] - z[1]).map(([id]) => id);
  const inOrder = seen.length === order.length && seen.every((id, i) => id === order[i]);
  if (!inOrder) problems.push("fifo: deliveries out of ingest order");
  const perSecond = (ok: Map<string, number>) => ok.size / Math.max(0.001, (Math.max(...ok.values()) - t0) / 1000);

  // Isolation ------------------------------------------------------------------------------
  note(`flow: isolation, ${o.isolationEvents} events of account B alone, then beside account A's endpoint that never answers`);
  const clientB = await newAccountClient();
  const clientA = await newAccountClient();
  const sb = await clientB.source(`live ${RUN}`);
  const bbox = await receiver.mailbox();
  await destination(clientB, sb.id, bbox.url);
  const sa = await clientA.source(`dead ${RUN}`);
  const dead = await receiver.mailbox("", { repeat: { hang: true } });
  await destination(clientA, sa.id, dead.url);
  const latencies = async (tag: string) => {
    const sent = await send(sb.ingestUrl, payloads(tag, o.isolationEvents), 4);
    const ids = new Set(sent.map((s) => s.eventId));
    await until(`B's ${tag} deliveries`, async () => [...firstOk(await receiver.requests(bbox)).keys()].filter((id) => ids.has(id)).length >= ids.size, 120_000);
    const ok = firstOk(await receiver.requests(bbox));
    return sent.filter((s) => ok.has(s.eventId)).map((s) => ok.get(s.eventId)! - s.sentAt);
  };
  // A new destination's first deliveries wait for its probe (delivery/gate.ts): one event first, so both runs measure a destination known to answer.
  await latencies("warm-up");
  const alone = await latencies("alone");
  await send(sa.ingestUrl, payloads("dead", 64), 8);
  await until("A's first attempts", async () => (await receiver.requests(dead)).length > 0, 60_000);
  const beside = await latencies("beside");
  const deadAttempts = (await receiver.requests(dead)).length;
  // A's endpoint recovers, so its backlog leaves the slow lane before the next steps:
  // under wrangler dev the slow lane runs one batch at a time, and new destinations'
  // first deliveries (their probes) would wait behind A's timeouts.
  await receiver.script(dead, { repeat: { status: 200 } });
  await until("A's deliveries after its endpoint recovered", async () => firstOk(await receiver.requests(dead)).size >= 64, 180_000);
  if (alone.length < o.isolationEvents || beside.length < o.isolationEvents) problems.push("isolation: B's deliveries missing");

  const figures: FlowFigures = {
    rateLimit: { setting: o.rate, events: o.rateEvents, delivered: rdelivered, measuredPerSecond: round2(measured), ratioToSetting: round2(measured / o.rate), most10s, allowed10s },
    fifo: {
      events: o.fifoEvents,
      delivered: fOk.size,
      fifoPerSecond: round1(perSecond(fOk)),
      unorderedPerSecond: round1(perSecond(uOk)),
      ratio: round2(perSecond(fOk) / perSecond(uOk)),
      inOrder,
    },
    isolation: {
      events: o.isolationEvents,
      aloneP50: Math.round(percentile(alone, 50)),
      aloneP99: Math.round(percentile(alone, 99)),
      besideP50: Math.round(percentile(beside, 50)),
      besideP99: Math.round(percentile(beside, 99)),
      p99Ratio: round2(percentile(beside, 99) / percentile(alone, 99)),
      deadAttempts,
    },
    problems,
  };
  note(`flow: rate ${figures.rateLimit.measuredPerSecond}/s for ${o.rate}/s (most ${most10s} in 10 s); fifo ${figures.fifo.fifoPerSecond}/s against unordered ${figures.fifo.unorderedPerSecond}/s; B p50/p99 ${figures.isolation.aloneP50}/${figures.isolation.aloneP99} ms alone, ${figures.isolation.besideP50}/${figures.isolation.besideP99} ms beside A`);
  return figures;
}
