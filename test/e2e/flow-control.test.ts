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

describe("isolation", () => {
  it("account A's endpoint that never answers leaves account B's deliveries as fast as when A is idle; A's all arrive once it recovers", async () => {
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
    const p99Alone = percentile(alone.latencies, 99);
    const p99Beside = percentile(beside.latencies, 99);
    // A floor of 250 ms: both are a few hundred ms on this machine, where 2× of a small number is noise.
    expect(p99Beside, `B's p99 ${p99Beside} ms with A's dead endpoint, ${p99Alone} ms alone`).toBeLessThanOrEqual(Math.max(2 * p99Alone, p99Alone + 250));

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
