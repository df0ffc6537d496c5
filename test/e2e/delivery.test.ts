/// <reference types="node" />
/**
 * End to end through `wrangler dev` and a real receiver on loopback (issue 4's check):
 * 200 events to a source with 3 destinations (one filtered, one failing for its first
 * attempts then recovering) → each gets exactly the events it should, at least once,
 * all verifiable, attempts recorded, nothing lost. Then a destination failing for good
 * is disabled after 10 exhausted events, and re-enabled by PATCH.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startReceiver, type ReceiverHandle } from "../support/receiver";
import { Api, openMailbox, sendEvents, verifyDeliveries, waitFor } from "./flow";
import { startDev, type Dev } from "./harness";

let dev: Dev;
let receiver: ReceiverHandle;
let api: Api;

beforeAll(async () => {
  receiver = await startReceiver();
  // The circuit breaker is off here (CIRCUIT_MIN_ATTEMPTS out of reach): these tests count
  // failed attempts in a row; test/e2e/flow-control.test.ts covers the breaker.
  dev = await startDev({ vars: { RETRY_SCHEDULE: "1,1,1", CIRCUIT_MIN_ATTEMPTS: "1000000" }, cronEveryMs: 5_000 });
  api = new Api(dev.origin, await dev.apiKey());
});

afterAll(async () => {
  await dev?.stop();
  await receiver?.close();
});

describe("ingest to delivery through wrangler dev", () => {
  it("delivers 200 events to 3 destinations exactly as their filters say, through failures, nothing lost", async () => {
    const source = await api.createSource({ name: "e2e", provider: "stripe" });
    const all = await openMailbox(receiver.origin);
    const invoices = await openMailbox(receiver.origin);
    // Down for its first 30 requests, then back.
    const flaky = await openMailbox(receiver.origin, { script: Array.from({ length: 30 }, () => ({ status: 503 })), repeat: { status: 200 } });
    const dAll = await api.createDestination(source.id, { url: all.url });
    const dInvoices = await api.createDestination(source.id, { url: invoices.url, event_filter: ["invoice.*"] });
    const dFlaky = await api.createDestination(source.id, { url: flaky.url });

    const types = ["invoice.paid", "invoice.payment_failed", "customer.created", "charge.refunded"];
    const sent = await sendEvents(source.ingest_url, 200, 10, (i) => {
      const type = types[i % types.length]!;
      return { type, body: { id: `evt_e2e_${i}`, type, object: "event", data: { n: i, note: "é ✓" } } };
    });
    expect(sent.refused).toEqual({});
    expect(sent.accepted).toHaveLength(200);
    const invoiceEvents = sent.accepted.filter((e) => e.type.startsWith("invoice."));

    const expectations = [
      { box: all, dest: dAll, want: sent.accepted },
      { box: invoices, dest: dInvoices, want: invoiceEvents },
      { box: flaky, dest: dFlaky, want: sent.accepted },
    ];
    for (const { box, dest, want } of expectations) {
      const v = await waitFor(
        async () => {
          const v = verifyDeliveries(await box.requests(), want, dest.secret, source.id);
          if (process.env.DEBUG_E2E) console.error(box.url, JSON.stringify({ ...v, missing: v.missing.length, unexpected: v.unexpected.length }));
          return v.missing.length === 0 ? v : undefined;
        },
        120_000,
        `all ${want.length} deliveries to ${box.url}`,
      );
      expect(v).toMatchObject({ expected: want.length, delivered: want.length, missing: [], unexpected: [], badSignatures: 0, altered: 0 });
    }

    // The flaky one's first attempts failed and were retried: its attempt log shows both.
    const attempts = await waitFor(
      async () => {
        const failed = await api.call("GET", `/api/v1/webhooks/sources/${source.id}/destinations/${dFlaky.id}/attempts?outcome=failed&limit=100`);
        return failed.body.data.length >= 30 ? failed.body.data : undefined;
      },
      30_000,
      "the failed attempts in the log",
    );
    expect(attempts.every((a: { status_code: number }) => a.status_code === 503)).toBe(true);
    const ok = await api.call("GET", `/api/v1/webhooks/sources/${source.id}/destinations/${dFlaky.id}/attempts?outcome=succeeded&limit=100`);
    expect(ok.body.data.length).toBe(100);
    expect(ok.body.next_cursor).not.toBeNull();
    // Recovered: the successes reset its failure_count (it never exhausted anything).
    const flakyNow = await api.call("GET", `/api/v1/webhooks/sources/${source.id}/destinations/${dFlaky.id}`);
    expect(flakyNow.body.data).toMatchObject({ enabled: true, failure_count: 0 });
  });

  it("disables a destination after 10 exhausted events, and PATCH enabled:true brings it back", async () => {
    const source = await api.createSource({ name: "e2e-disable" });
    const down = await openMailbox(receiver.origin, { repeat: { status: 500 } });
    const dest = await api.createDestination(source.id, { url: down.url });
    const path = `/api/v1/webhooks/sources/${source.id}/destinations/${dest.id}`;

    const sent = await sendEvents(source.ingest_url, 10, 5, (i) => ({ type: "ping", body: { type: "ping", n: i } }));
    expect(sent.accepted).toHaveLength(10);
    const disabled = await waitFor(
      async () => {
        const r = await api.call("GET", path);
        return r.body.data.enabled === false ? r.body.data : undefined;
      },
      120_000,
      "auto-disable",
    );
    expect(disabled.failure_count).toBe(10);
    // 10 events × 4 attempts (1 + the 3 retries of RETRY_SCHEDULE=1,1,1).
    expect((await down.requests()).length).toBe(40);

    // While disabled, a new event is stored but not sent.
    const later = await sendEvents(source.ingest_url, 1, 1, () => ({ type: "ping", body: { type: "ping", n: "late" } }));
    await new Promise((r) => setTimeout(r, 3000));
    expect((await down.requests()).length).toBe(40);

    await down.script({ repeat: { status: 200 } });
    const patched = await api.call("PATCH", path, { enabled: true });
    expect(patched.status).toBe(200);
    expect(patched.body.data).toMatchObject({ enabled: true, failure_count: 10 });

    const next = await sendEvents(source.ingest_url, 1, 1, () => ({ type: "ping", body: { type: "ping", n: "after" } }));
    await waitFor(
      async () => ((await down.requests()).some((r) => r.headers["webhook-id"] === next.accepted[0]!.eventId) ? true : undefined),
      30_000,
      "delivery after re-enabling",
    );
    const healthy = await waitFor(
      async () => {
        const r = await api.call("GET", path);
        return r.body.data.failure_count === 0 ? r.body.data : undefined;
      },
      15_000,
      "failure_count reset by the first success",
    );
    expect(healthy.enabled).toBe(true);
    // The event that arrived while it was disabled can be replayed.
    const replay = await api.call("POST", `${path}/replay`, { since: new Date(Date.now() - 600_000).toISOString(), only_failed: true });
    expect(replay.status).toBe(202);
    expect(replay.body.data.queued).toBe(11);
    await waitFor(
      async () => ((await down.requests()).some((r) => r.headers["webhook-id"] === later.accepted[0]!.eventId) ? true : undefined),
      30_000,
      "the replayed event",
    );
  });
});
