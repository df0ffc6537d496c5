/**
 * The slow lane (delivery/gate.ts, step 0): once a destination's gate knows it is slow,
 * a shared deliver queue attempts none of its deliveries; each moves, unattempted and
 * with a new token, to the deliver-slow queue, whose consumer attempts it. A destination
 * that answers fast never leaves the shared queues, and a new one starts in the slow
 * lane until an attempt has answered fast. Through the real queues: the slow
 * lane's consumer is the Worker's own, run by the local queue.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Env } from "../../src/config";
import { deliveryQueues } from "../../src/services";
import { createAccount, createDestination, createSource, envWith, eventually, mailbox, type Account } from "../helpers/api";
import { attemptRows, currentMessage, deliveryRow, insertDelivery, insertEvent, runQueue } from "../helpers/delivery";

const e = env as unknown as Env;
let account: Account;
let source: { id: string };

/** The delivery_attempt log lines the Worker wrote, by delivery id. */
const attemptsLogged: Record<string, unknown>[] = [];
beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "lanes" });
  attemptsLogged.length = 0;
  const real = console.log.bind(console);
  vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
    const line = args.map(String).join(" ");
    if (line.includes('"delivery_attempt"')) attemptsLogged.push(JSON.parse(line));
    else real(...args);
  });
});
afterEach(() => vi.restoreAllMocks());

describe("lanes", () => {
  it("the slow lane's key goes to DELIVER_SLOW_QUEUE, every other key to a shared queue", () => {
    const q = deliveryQueues(e, false);
    expect(q.slowLane).toBe(true);
    expect(q.deliver("slow:dst_1")).toBe(e.DELIVER_SLOW_QUEUE);
    const shared = [e.DELIVER_QUEUE, e.DELIVER_QUEUE_1, e.DELIVER_QUEUE_2, e.DELIVER_QUEUE_3];
    for (const key of ["dst_1", "dst_2", "evt_3"]) expect(shared).toContain(q.deliver(key));
    // Without the binding, the slow lane's keys stay in the shared queues.
    const none = deliveryQueues({ ...e, DELIVER_SLOW_QUEUE: undefined } as Env, false);
    expect(none.slowLane).toBe(false);
    expect(none.deliver("slow:dst_1")).toBe(none.deliver("dst_1"));
  });

  it("a destination whose attempts take seconds: the shared queue attempts nothing of it, the slow lane delivers it, once", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    // Its gate has seen a 5-second attempt (another invocation's).
    const gate = e.DESTINATION_HEALTH.getByName(dest.id);
    await gate.release(dest.id, [{ deliveryId: "earlier", end: "answered", durationMs: 5_000 }]);
    expect((await gate.gateState()).meanMs).toBeGreaterThan(1_000);

    const msg = await insertDelivery(await insertEvent(source.id), dest.id);
    const run = await runQueue("krafter-deliver", [msg]);
    expect(run.explicitAcks).toEqual(run.ids);
    // Moved, not attempted: a new token, no attempt from the shared queue.
    const moved = await currentMessage(msg);
    expect(moved.deliveries[0]!.token).not.toBe(msg.deliveries[0]!.token);
    expect(attemptsLogged.filter((l) => l.lane === "shared")).toEqual([]);

    // The deliver-slow queue's consumer attempts it.
    const delivered = await eventually(async () => {
      const row = await deliveryRow(msg.deliveries[0]!.delivery_id);
      return row?.status === "succeeded" ? row : undefined;
    }, 15_000, "the delivery from the slow lane");
    expect(delivered).toMatchObject({ attempt_count: 1 });
    expect(await attemptRows(msg.deliveries[0]!.delivery_id)).toHaveLength(1);
    expect(await box.requests()).toHaveLength(1);
    expect(attemptsLogged.map((l) => [l.delivery_id, l.lane])).toEqual([[msg.deliveries[0]!.delivery_id, "slow"]]);
  });

  it("NEW_DESTINATIONS_START_SLOW: a new destination's first delivery goes to the slow lane; once an attempt answered within a second, the shared queue attempts its next", async () => {
    const startSlow = envWith({ NEW_DESTINATIONS_START_SLOW: "true" });
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const first = await insertDelivery(await insertEvent(source.id), dest.id);
    await runQueue("krafter-deliver", [first], { env: startSlow });
    await eventually(async () => ((await deliveryRow(first.deliveries[0]!.delivery_id))?.status === "succeeded" ? true : undefined), 15_000, "the first delivery, from the slow lane");
    const next = await insertDelivery(await insertEvent(source.id), dest.id);
    await runQueue("krafter-deliver", [next], { env: startSlow });
    expect(await deliveryRow(next.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded", attempt_count: 1 });
    expect(attemptsLogged.map((l) => [l.delivery_id, l.lane])).toEqual([
      [first.deliveries[0]!.delivery_id, "slow"],
      [next.deliveries[0]!.delivery_id, "shared"],
    ]);
    // Proven fast is kept in the object's storage: an eviction does not make it start slow again.
    await runInDurableObject(e.DESTINATION_HEALTH.getByName(dest.id), (_: unknown, state: DurableObjectState) => state.abort("evicted")).catch(() => undefined);
    const third = await insertDelivery(await insertEvent(source.id), dest.id);
    await runQueue("krafter-deliver", [third], { env: startSlow });
    expect(await deliveryRow(third.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded", attempt_count: 1 });
  });

  it("a destination that answers fast is attempted by the shared queue itself", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, source.id, { url: box.url });
    const msg = await insertDelivery(await insertEvent(source.id), dest.id);
    const run = await runQueue("krafter-deliver", [msg]);
    expect(run.explicitAcks).toEqual(run.ids);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "succeeded", attempt_count: 1 });
    expect(attemptsLogged.map((l) => [l.delivery_id, l.lane])).toEqual([[msg.deliveries[0]!.delivery_id, "shared"]]);
  });
});
