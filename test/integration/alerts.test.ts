/**
 * Alerts (PRODUCT.md "Alerts", issue 17): decided by a destination's health object,
 * stored in the account's alerts source like any event, and delivered by the same
 * partitions and queues to its destinations, signed. The failing destinations' forwards
 * go through the deliver consumer (runQueue); the alerts themselves travel the real
 * local queues to a loopback receiver and are verified there with `standardwebhooks`.
 */
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import { EXHAUSTED_WINDOW_MS } from "../../src/alerts/alerts";
import type { StoreAlert } from "../../src/alerts/store";
import type { DestinationHealth } from "../../src/destination-health";
import type { Received } from "../support/receiver";
import { call, createAccount, createDestination, createSource, eventually, json, mailbox, RFC3339, type Account } from "../helpers/api";
import { destinationRow, insertDelivery, insertEvent, runQueue, storedEvents } from "../helpers/delivery";

const SOURCES = "/api/v1/webhooks/sources";
const health = (destinationId: string) => env.DESTINATION_HEALTH.getByName(destinationId);
const ALERT_TYPES = new Set(["destination.failing", "destination.disabled", "destination.recovered", "delivery.exhausted"]);

interface Verified {
  event: string;
  data: Record<string, any>;
  source_id: string;
}

async function createAlertsSource(account: Account) {
  const res = await call("POST", SOURCES, { key: account.key, body: { name: "alerts", provider: "krafter" } });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await json(res)).data as { id: string; ingest_url: null };
}

/** An account with an alerts source whose one destination is a receiver answering 200. */
async function alertedAccount() {
  const account = await createAccount();
  const alerts = await createAlertsSource(account);
  const box = await mailbox();
  const endpoint = await createDestination(account, alerts.id, { url: box.url });
  return { account, alerts, box, endpoint };
}

/** A source with one destination whose receiver answers 500. */
async function failingDestination(account: Account) {
  const source = await createSource(account, { name: "payments" });
  const box = await mailbox({ repeat: { status: 500, body: "down" } });
  const dest = await createDestination(account, source.id, { url: box.url });
  return { source, box, dest };
}

/**
 * Forwards that give up, one after the other: each event's last attempt (the test
 * schedule has 3 retries) goes through the deliver consumer and fails. Their event ids,
 * in order.
 */
async function exhaustForwards(sourceId: string, destinationId: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const eventId = await insertEvent(sourceId, { type: "invoice.paid", payload: JSON.stringify({ id: `evt_${i}`, type: "invoice.paid" }) });
    const r = await runQueue("krafter-deliver", [await insertDelivery(eventId, destinationId, { attemptsInRun: 3 })]);
    expect(r.explicitAcks).toEqual(r.ids);
    ids.push(eventId);
  }
  return ids;
}

/** One forward that succeeds. */
async function succeedForward(sourceId: string, destinationId: string): Promise<string> {
  const eventId = await insertEvent(sourceId);
  await runQueue("krafter-deliver", [await insertDelivery(eventId, destinationId)]);
  return eventId;
}

/** The alerts an endpoint received, each verified with its destination's secret by an independent library. */
function verifiedAlerts(requests: Received[], secret: string): Verified[] {
  const wh = new Webhook(secret);
  return requests.map((r) => wh.verify(r.body, r.headers) as Verified);
}

async function alertsReceived(box: Awaited<ReturnType<typeof mailbox>>, secret: string, n: number): Promise<Verified[]> {
  const requests = await eventually(async () => {
    const r = await box.requests();
    return r.length >= n ? r : undefined;
  }, 20_000, `${n} alerts at the endpoint`);
  return verifiedAlerts(requests, secret);
}

/** Moves the clock of a destination's alerts by `ms` from now on. */
async function moveClock(destinationId: string, ms: number): Promise<void> {
  await runInDurableObject(health(destinationId), (instance: DestinationHealth) => {
    instance.alerts.now = () => Date.now() + ms;
  });
}

async function pendingAlerts(destinationId: string) {
  return runInDurableObject(health(destinationId), (instance: DestinationHealth) => instance.alerts.pending);
}

/** Waits until the destination's outbox of alerts is empty (its alarm stored or dropped each). */
async function outboxDrained(destinationId: string): Promise<void> {
  await eventually(async () => ((await pendingAlerts(destinationId)).length === 0 ? true : undefined), 15_000, "the alert outbox to drain");
}

/** Alert events stored in a source, oldest first. */
async function storedAlerts(sourceId: string) {
  return (await storedEvents(sourceId)).filter((e) => ALERT_TYPES.has(e.type)).map((e) => ({ ...e, data: JSON.parse(e.payload) }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("a destination failing, disabled and recovering", () => {
  let ctx: Awaited<ReturnType<typeof alertedAccount>>;
  beforeEach(async () => {
    ctx = await alertedAccount();
  });

  it("10 events failing in a row: one destination.failing then one destination.disabled, signed; an hour later one delivery.exhausted with count 10; then one destination.recovered", async () => {
    const { account, alerts, box, endpoint } = ctx;
    const { source, box: failing, dest } = await failingDestination(account);

    const events = await exhaustForwards(source.id, dest.id, 10);
    expect(await destinationRow(dest.id)).toEqual({ enabled: 0, failure_count: 10 });
    expect(await failing.requests()).toHaveLength(10);

    const [first, second] = await alertsReceived(box, endpoint.secret, 2);
    expect([first!.event, second!.event]).toEqual(["destination.failing", "destination.disabled"]);
    for (const a of [first!, second!]) {
      // The envelope's source is the alerts source; data names the destination and its own source.
      expect(a.source_id).toBe(alerts.id);
      expect(a.data).toMatchObject({ destination_id: dest.id, source_id: source.id, url: dest.url });
      expect(a.data.at).toMatch(RFC3339);
    }
    expect(first!.data.failure_count).toBe(5);
    expect(second!.data.failure_count).toBe(10);
    // The webhook-id is the alert event's id, as for any event: in the order they happened.
    const [r1, r2] = await box.requests();
    expect(r1!.headers["webhook-id"]! < r2!.headers["webhook-id"]!).toBe(true);

    // Nothing else within the hour: ten exhausted forwards are counted, not sent one by one.
    await sleep(1_500);
    expect(await box.requests()).toHaveLength(2);
    expect((await storedAlerts(alerts.id)).map((e) => e.type)).toEqual(["destination.failing", "destination.disabled"]);

    // The hour ends (an injected clock): its one delivery.exhausted, with the count and the latest event.
    await moveClock(dest.id, EXHAUSTED_WINDOW_MS + 1_000);
    expect(await runDurableObjectAlarm(health(dest.id))).toBe(true);
    const third = (await alertsReceived(box, endpoint.secret, 3))[2]!;
    expect(third.event).toBe("delivery.exhausted");
    expect(third.data).toMatchObject({ destination_id: dest.id, source_id: source.id, url: dest.url, count: 10, event_id: events[9] });
    expect(third.data.at).toMatch(RFC3339);
    expect(third.data.since).toMatch(RFC3339);

    // Re-enabled, the endpoint fixed: the first success is one destination.recovered.
    const patch = await call("PATCH", `${SOURCES}/${source.id}/destinations/${dest.id}`, { key: account.key, body: { enabled: true } });
    expect(patch.status).toBe(200);
    await failing.script({ repeat: { status: 200 } });
    await succeedForward(source.id, dest.id);
    // A circuit breaker that saw the ten failures may hold the forward a while: the queue brings it back.
    await eventually(async () => ((await destinationRow(dest.id))?.failure_count === 0 ? true : undefined), 80_000, "the first success");
    await succeedForward(source.id, dest.id);
    expect(await destinationRow(dest.id)).toEqual({ enabled: 1, failure_count: 0 });
    const fourth = (await alertsReceived(box, endpoint.secret, 4))[3]!;
    expect(fourth.event).toBe("destination.recovered");
    expect(fourth.data).toMatchObject({ destination_id: dest.id, source_id: source.id, url: dest.url, failure_count: 0, previous_failure_count: 10 });

    await outboxDrained(dest.id);
    await sleep(500);
    expect(await box.requests()).toHaveLength(4);
    // Stored in the alerts source like any event, and listed by its API.
    const list = await json(await call("GET", `${SOURCES}/${alerts.id}/events`, { key: account.key }));
    expect(list.data.map((e: { type: string }) => e.type).sort()).toEqual(["delivery.exhausted", "destination.disabled", "destination.failing", "destination.recovered"]);
  }, 120_000);

  it("destination.failing once per crossing of 5, and destination.recovered only after 5 or more", async () => {
    const { account, alerts } = ctx;
    const { dest } = await failingDestination(account);
    // What the deliver consumer reports, told straight to the health object.
    const stub = health(dest.id);
    const fail = async (n: number) => {
      for (let i = 0; i < n; i++) await stub.exhausted(dest.id);
    };
    await fail(4);
    await stub.success(dest.id); // from 4: no recovered
    await fail(7); // crosses 5 once, reaches 7
    await stub.success(dest.id); // recovered
    await stub.success(dest.id); // already 0: nothing
    await fail(5); // crosses again
    await outboxDrained(dest.id);
    const stored = await storedAlerts(alerts.id);
    expect(stored.map((e) => e.type)).toEqual(["destination.failing", "destination.recovered", "destination.failing"]);
    expect(stored[1]!.data.previous_failure_count).toBe(7);
  });

  it("delivery.exhausted counts the hour from its first forward given up: a later hour is another alert", async () => {
    const { alerts, account } = ctx;
    const { source, dest } = await failingDestination(account);
    const stub = health(dest.id);
    // Told the event (as a consumer may), the alert names it without looking it up.
    await stub.exhausted(dest.id, "evt-named-1");
    await stub.exhausted(dest.id, "evt-named-2");
    await moveClock(dest.id, EXHAUSTED_WINDOW_MS - 10_000);
    await stub.exhausted(dest.id, "evt-named-3");
    // Still the first hour: nothing yet.
    await sleep(300);
    expect(await storedAlerts(alerts.id)).toEqual([]);
    // The next forward given up falls in a new hour: the first hour's alert goes out at once.
    await moveClock(dest.id, EXHAUSTED_WINDOW_MS + 1_000);
    await stub.exhausted(dest.id, "evt-named-4");
    await outboxDrained(dest.id);
    let stored = await storedAlerts(alerts.id);
    expect(stored.map((e) => [e.type, e.data.count, e.data.event_id])).toEqual([["delivery.exhausted", 3, "evt-named-3"]]);
    expect(stored[0]!.data.source_id).toBe(source.id);
    // The second hour, counted from its first: one alert with its one forward.
    await moveClock(dest.id, 2 * EXHAUSTED_WINDOW_MS + 2_000);
    await runDurableObjectAlarm(stub);
    await outboxDrained(dest.id);
    stored = await storedAlerts(alerts.id);
    expect(stored.map((e) => [e.type, e.data.count, e.data.event_id])).toEqual([
      ["delivery.exhausted", 3, "evt-named-3"],
      ["delivery.exhausted", 1, "evt-named-4"],
    ]);
  });
});

describe("where alerts do not go", () => {
  it("the alert endpoint itself failing until it is disabled produces no alert about it", async () => {
    const { account, alerts, box, endpoint } = await alertedAccount();
    await box.script({ repeat: { status: 500 } });
    // Its forwards give up one after the other (events of the alerts source itself).
    await exhaustForwards(alerts.id, endpoint.id, 10);
    expect(await destinationRow(endpoint.id)).toEqual({ enabled: 0, failure_count: 10 });
    await outboxDrained(endpoint.id);
    await moveClock(endpoint.id, EXHAUSTED_WINDOW_MS + 1_000);
    await runDurableObjectAlarm(health(endpoint.id));
    await outboxDrained(endpoint.id);
    expect(await storedAlerts(alerts.id)).toEqual([]);
    // Known for good: nothing more is even decided for it.
    await health(endpoint.id).exhausted(endpoint.id);
    expect(await pendingAlerts(endpoint.id)).toEqual([]);
    // Another destination of the account is still alerted about, through the disabled endpoint's source.
    const { source, dest } = await failingDestination(account);
    await exhaustForwards(source.id, dest.id, 5);
    await outboxDrained(dest.id);
    expect((await storedAlerts(alerts.id)).map((e) => [e.type, e.data.destination_id])).toEqual([["destination.failing", dest.id]]);
  });

  it("an account without an alerts source: nothing stored, nothing sent, no error", async () => {
    const account = await createAccount();
    const { source, box, dest } = await failingDestination(account);
    await exhaustForwards(source.id, dest.id, 10);
    expect(await destinationRow(dest.id)).toEqual({ enabled: 0, failure_count: 10 });
    await outboxDrained(dest.id);
    await moveClock(dest.id, EXHAUSTED_WINDOW_MS + 1_000);
    await runDurableObjectAlarm(health(dest.id));
    await outboxDrained(dest.id);
    const sources = await env.DB.prepare("SELECT provider FROM sources WHERE account_id = ?").bind(account.id).all<{ provider: string }>();
    expect(sources.results.map((r) => r.provider)).toEqual(["generic"]);
    // Only the failing forwards themselves were sent, and only the source's own events exist.
    expect(await box.requests()).toHaveLength(10);
    expect((await storedEvents(source.id)).every((e) => e.type === "invoice.paid")).toBe(true);
  });

  it("another account's alerts are never visible or delivered to this one", async () => {
    const mine = await alertedAccount();
    const theirs = await alertedAccount();
    const { source, dest } = await failingDestination(theirs.account);
    await exhaustForwards(source.id, dest.id, 5);
    const [alert] = await alertsReceived(theirs.box, theirs.endpoint.secret, 1);
    expect(alert).toMatchObject({ event: "destination.failing", source_id: theirs.alerts.id, data: { destination_id: dest.id } });
    await outboxDrained(dest.id);
    await sleep(500);
    expect(await mine.box.requests()).toEqual([]);
    expect(await storedAlerts(mine.alerts.id)).toEqual([]);
    const list = await json(await call("GET", `${SOURCES}/${mine.alerts.id}/events`, { key: mine.account.key }));
    expect(list.data).toEqual([]);
    const peek = await call("GET", `${SOURCES}/${theirs.alerts.id}/events`, { key: mine.account.key });
    expect(peek.status).toBe(404);
  });
});

describe("the outbox", () => {
  it("retries an alert whose storing failed, and stores it once", async () => {
    const { account, alerts, box, endpoint } = await alertedAccount();
    const { source, dest } = await failingDestination(account);
    let calls = 0;
    await runInDurableObject(health(dest.id), (instance: DestinationHealth) => {
      const real = instance.alerts.store;
      instance.alerts.store = ((...args: Parameters<StoreAlert>) => {
        calls++;
        return calls === 1 ? Promise.reject(new Error("partition unavailable")) : real(...args);
      }) as StoreAlert;
    });
    await exhaustForwards(source.id, dest.id, 5);
    const [alert] = await alertsReceived(box, endpoint.secret, 1);
    expect(alert!.event).toBe("destination.failing");
    expect(calls).toBe(2);
    await outboxDrained(dest.id);
    await sleep(500);
    expect(await box.requests()).toHaveLength(1);
    expect((await storedAlerts(alerts.id)).map((e) => e.type)).toEqual(["destination.failing"]);
  });

  it("an alert stored by a try that seemed to fail is not stored twice (its dedupe key)", async () => {
    const { account, alerts, box, endpoint } = await alertedAccount();
    const { source, dest } = await failingDestination(account);
    let calls = 0;
    await runInDurableObject(health(dest.id), (instance: DestinationHealth) => {
      const real = instance.alerts.store;
      instance.alerts.store = (async (...args: Parameters<StoreAlert>) => {
        calls++;
        const result = await real(...args);
        if (calls === 1) throw new Error("the answer was lost");
        return result;
      }) as StoreAlert;
    });
    await exhaustForwards(source.id, dest.id, 5);
    await alertsReceived(box, endpoint.secret, 1);
    await outboxDrained(dest.id);
    expect(calls).toBe(2);
    await sleep(500);
    expect(await box.requests()).toHaveLength(1);
    expect((await storedAlerts(alerts.id)).map((e) => e.type)).toEqual(["destination.failing"]);
  });

  it("never slows or fails a delivery: the forward is settled while the alert waits", async () => {
    const { account, alerts } = await alertedAccount();
    const { source, dest } = await failingDestination(account);
    await runInDurableObject(health(dest.id), (instance: DestinationHealth) => {
      instance.alerts.store = (() => Promise.reject(new Error("down"))) as StoreAlert;
    });
    await exhaustForwards(source.id, dest.id, 10);
    expect(await destinationRow(dest.id)).toEqual({ enabled: 0, failure_count: 10 });
    // Both alerts wait, in order, for storage to come back.
    await sleep(300);
    expect((await pendingAlerts(dest.id)).map((a) => a.type)).toEqual(["destination.failing", "destination.disabled"]);
    expect(await storedAlerts(alerts.id)).toEqual([]);
  });
});
