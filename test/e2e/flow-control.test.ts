/// <reference types="node" />
/**
 * Flow control and isolation through `wrangler dev`, the real queues and a loopback
 * receiver: a destination's rate limit as the receiver sees it, and one account's dead
 * endpoint (held by its in-flight cap, then its circuit breaker) leaving another
 * account's deliveries as fast as when it is idle; the dead endpoint's deliveries all
 * arrive once it recovers, each once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startReceiver, type ReceiverHandle } from "../support/receiver";
import { Api, openMailbox, percentile, sendEvents, verifyDeliveries, waitFor, type Sent } from "./flow";
import { startDev, type Dev } from "./harness";

let dev: Dev;
let receiver: ReceiverHandle;
let a: Api;
let b: Api;

beforeAll(async () => {
  receiver = await startReceiver();
  dev = await startDev({ vars: { RETRY_SCHEDULE: "1,1,1,1,1,1,1,1", DELIVERY_TIMEOUT_MS: "2000", CIRCUIT_OPEN_SECONDS: "3", CIRCUIT_OPEN_MAX_SECONDS: "6" }, cronEveryMs: 0 });
  a = new Api(dev.origin, await dev.apiKey(undefined, "tenant-a"));
  b = new Api(dev.origin, await dev.apiKey(undefined, "tenant-b"));
});

afterAll(async () => {
  await dev?.stop();
  await receiver?.close();
});

const event = (prefix: string) => (i: number) => ({ type: "invoice.paid", body: { id: `${prefix}_${i}`, type: "invoice.paid", data: { n: i } } });

/** The most of these instants that fall in any window of `ms`. */
function mostInWindow(instants: number[], ms: number): number {
  const t = [...instants].sort((x, y) => x - y);
  let most = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while (t[i]! - t[j]! >= ms) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

/** Ingest→receipt latencies of each event, from the receiver's clock and the send times. */
async function deliveredWithin(box: Awaited<ReturnType<typeof openMailbox>>, sent: Sent[], sentAt: Map<string, number>, secret: string, sourceId: string) {
  const v = await waitFor(
    async () => {
      const v = verifyDeliveries(await box.requests(), sent, secret, sourceId);
      return v.missing.length === 0 ? v : undefined;
    },
    90_000,
    `all ${sent.length} deliveries to ${box.url}`,
  );
  const first = new Map<string, number>();
  for (const r of await box.requests()) {
    const id = r.headers["webhook-id"] ?? "";
    if (r.answered === 200 && !first.has(id)) first.set(id, r.at);
  }
  return { v, latencies: sent.map((e) => first.get(e.eventId)! - sentAt.get(e.eventId)!) };
}

async function sendTimed(ingestUrl: string, n: number, prefix: string) {
  const sentAt = new Map<string, number>();
  const report = await sendEvents(ingestUrl, n, 4, (i) => event(prefix)(i));
  // sendEvents does not return send times: approximate each by its 202 (the arrival is later still).
  const now = Date.now();
  for (const e of report.accepted) sentAt.set(e.eventId, now - report.durationMs);
  return { report, sentAt };
}

describe("rate limit", () => {
  it("5/s: 100 events arrive in under a few seconds; the receiver sees no more than 55 starts in any 10 s, each event once, none failed", async () => {
    const source = await b.createSource({ name: "rate", provider: "stripe" });
    const box = await openMailbox(receiver.origin);
    const dest = await b.createDestination(source.id, { url: box.url, rate_limit: 5 });
    expect(dest).toMatchObject({ rate_limit: 5, ordering: "none" });

    const sent = await sendEvents(source.ingest_url, 100, 20, event("evt_rate"));
    expect(sent.refused).toEqual({});
    const v = await waitFor(
      async () => {
        const v = verifyDeliveries(await box.requests(), sent.accepted, dest.secret, source.id);
        return v.missing.length === 0 ? v : undefined;
      },
      90_000,
      "all 100 rate-limited deliveries",
    );
    expect(v).toMatchObject({ delivered: 100, duplicates: 0, badSignatures: 0, altered: 0, unexpected: [] });
    const starts = (await box.requests()).map((r) => r.at);
    expect(starts).toHaveLength(100);
    expect(mostInWindow(starts, 10_000)).toBeLessThanOrEqual(55);
    // Spread over about 20 s, not sent at once.
    expect(Math.max(...starts) - Math.min(...starts)).toBeGreaterThan(15_000);
    const failed = await b.call("GET", `/api/v1/webhooks/sources/${source.id}/destinations/${dest.id}/attempts?outcome=failed&limit=100`);
    expect(failed.body.data).toEqual([]);
    const got = await b.call("GET", `/api/v1/webhooks/sources/${source.id}/destinations/${dest.id}`);
    expect(got.body.data.failure_count).toBe(0);
  });
});

describe("fifo", () => {
  /** The successful requests' event ids in the order they arrived, and whether any two overlapped. */
  async function arrivals(box: Awaited<ReturnType<typeof openMailbox>>) {
    const reqs = await box.requests();
    const ok = reqs.filter((r) => r.answered === 200).map((r) => r.headers["webhook-id"] ?? "");
    // Each answer takes 100 ms: two in flight at once would be answered less than that apart.
    const at = reqs.map((r) => r.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    return { ok, all: reqs.map((r) => [r.headers["webhook-id"], r.answered] as const), minGap: Math.min(...gaps) };
  }

  it("50 events, the 10th refused three times: 1–9, then 10 after its retries, then 11–50, in order and one at a time", async () => {
    const source = await b.createSource({ name: "fifo", provider: "stripe" });
    const step = { status: 200, delayMs: 100 };
    const box = await openMailbox(receiver.origin, { script: [...Array.from({ length: 9 }, () => step), ...Array.from({ length: 3 }, () => ({ status: 503, delayMs: 100 }))], repeat: step });
    const dest = await b.createDestination(source.id, { url: box.url, ordering: "fifo" });
    expect((dest as unknown as { ordering: string }).ordering).toBe("fifo");
    const sent = await sendEvents(source.ingest_url, 50, 1, event("evt_fifo"));
    expect(sent.refused).toEqual({});
    const order = sent.accepted.map((e) => e.eventId);
    expect([...order].sort()).toEqual(order); // sent one at a time: ids in ingest order
    const got = await waitFor(async () => {
      const a = await arrivals(box);
      return a.ok.length >= 50 ? a : undefined;
    }, 120_000, "the 50 fifo deliveries");
    expect(got.ok).toEqual(order);
    // Event 10's three refusals came between 9 and its own success, nothing else in between.
    expect(got.all.slice(9, 13)).toEqual([[order[9], 503], [order[9], 503], [order[9], 503], [order[9], 200]]);
    expect(got.minGap).toBeGreaterThanOrEqual(90);
    const v = verifyDeliveries(await box.requests(), sent.accepted, dest.secret, source.id);
    expect(v).toMatchObject({ delivered: 50, duplicates: 0, badSignatures: 0, altered: 0 });
  });

  it("a head that exhausts its retries is given up (failed, counted), and the line moves on", async () => {
    const source = await b.createSource({ name: "fifo-exhaust", provider: "stripe" });
    const box = await openMailbox(receiver.origin, { script: [{ status: 200 }, { status: 200 }, ...Array.from({ length: 9 }, () => ({ status: 500 }))], repeat: { status: 200 } });
    const dest = await b.createDestination(source.id, { url: box.url, ordering: "fifo" });
    const sent = await sendEvents(source.ingest_url, 8, 1, event("evt_fifo_x"));
    const order = sent.accepted.map((e) => e.eventId);
    const got = await waitFor(async () => {
      const a = await arrivals(box);
      return a.ok.length >= 7 ? a : undefined;
    }, 120_000, "the fifo line moving past its exhausted head");
    // 1 and 2, then 3 nine times (1 + 8 retries) and given up, then 4–8.
    expect(got.all.map(([id]) => id)).toEqual([order[0], order[1], ...Array.from({ length: 9 }, () => order[2]), ...order.slice(3)]);
    expect(got.ok).toEqual([order[0], order[1], ...order.slice(3)]);
    // Given up: its delivery failed after 9 attempts. (failure_count counted it, and the
    // next success, event 4's, reset it: the reference page's rule.)
    const e = await b.call("GET", `/api/v1/webhooks/sources/${source.id}/events/${order[2]}`);
    expect(e.body.data.deliveries).toEqual([expect.objectContaining({ destination_id: dest.id, status: "failed", attempt_count: 9 })]);
    const failed = await b.call("GET", `/api/v1/webhooks/sources/${source.id}/destinations/${dest.id}/attempts?outcome=failed&limit=100`);
    expect(failed.body.data.map((a: { event_id: string }) => a.event_id)).toEqual(Array.from({ length: 9 }, () => order[2]));
  });
});

describe("isolation", () => {
  it("account A's endpoint that never answers gets at most 10 attempts at once, B's deliveries all arrive meanwhile, and A's all arrive once it recovers", async () => {
    const srcA = await a.createSource({ name: "dead", provider: "stripe" });
    const srcB = await b.createSource({ name: "live", provider: "stripe" });
    const dead = await openMailbox(receiver.origin, { repeat: { hang: true } });
    const live = await openMailbox(receiver.origin);
    const dA = await a.createDestination(srcA.id, { url: dead.url });
    const dB = await b.createDestination(srcB.id, { url: live.url });

    // B alone.
    const idle = await sendTimed(srcB.ingest_url, 50, "evt_idle");
    const alone = await deliveredWithin(live, idle.report.accepted, idle.sentAt, dB.secret, srcB.id);
    expect(alone.v).toMatchObject({ delivered: 50, duplicates: 0 });

    // A's 64 events to the dead endpoint, then B's 50 while they time out.
    const sentA = await sendEvents(srcA.ingest_url, 64, 8, event("evt_dead"));
    expect(sentA.refused).toEqual({});
    const busy = await sendTimed(srcB.ingest_url, 50, "evt_busy");
    const beside = await deliveredWithin(live, busy.report.accepted, busy.sentAt, dB.secret, srcB.id);
    expect(beside.v).toMatchObject({ delivered: 50, duplicates: 0 });
    // The figure, not a threshold: under wrangler dev a queue's consumer takes one batch at a
    // time, so a batch that holds one of A's attempts (2 s here) delays B's messages that share
    // its queue; on Cloudflare each queue's consumers scale out (docs/scale.md).
    console.log(`isolation: B's ingest→delivery p50/p99 ${percentile(alone.latencies, 50)}/${percentile(alone.latencies, 99)} ms alone, ${percentile(beside.latencies, 50)}/${percentile(beside.latencies, 99)} ms beside A's dead endpoint`);

    // A's endpoint never had more than 10 requests open at once (its in-flight cap)...
    const open = (await dead.requests()).map((r) => r.at);
    expect(mostInWindow(open, 1_500)).toBeLessThanOrEqual(10);
    // ...and once it answers again, every one of A's events arrives, each once.
    await dead.script({ repeat: { status: 200 } });
    const recovered = await waitFor(
      async () => {
        const v = verifyDeliveries(await dead.requests(), sentA.accepted, dA.secret, srcA.id);
        return v.missing.length === 0 ? v : undefined;
      },
      120_000,
      "A's 64 deliveries after its endpoint recovered",
    );
    expect(recovered).toMatchObject({ delivered: 64, duplicates: 0, badSignatures: 0, altered: 0 });
  });
});
