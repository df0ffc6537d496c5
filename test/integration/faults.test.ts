/**
 * Faults at the destination and inside the relay, against real loopback servers and the
 * real queue handler: each ends in the right attempts, retries and final state.
 * (Also in delivery.test.ts: 500s, a hang past the timeout, a 302, a huge body, 429 and
 * 503 with Retry-After, 410; in fanout-and-housekeeping.test.ts: a failed queue send.)
 */
import { env } from "cloudflare:workers";
import { createServer } from "node:net";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { Limiter } from "../../src/delivery/limiter";
import { recordWriters } from "../../src/delivery/records";
import { servicesFor, type Services } from "../../src/services";
import { attemptId } from "../../src/store/ids";
import type { RecordRequest } from "../../src/store/types";
import { call, createAccount, createDestination, createSource, mailbox, setDestination, type Account } from "../helpers/api";
import { attemptRows, currentMessage, deliveryRow, eventPartition, insertDelivery, insertEvent, runQueue } from "../helpers/delivery";

let account: Account;
let sourceId: string;

beforeEach(async () => {
  account = await createAccount();
  sourceId = (await createSource(account, { name: "faults" })).id;
});

async function oneAttempt(step: Parameters<typeof mailbox>[0]) {
  const box = await mailbox(step);
  const dest = await createDestination(account, sourceId, { url: box.url });
  const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
  const result = await runQueue("krafter-deliver", [msg]);
  return { box, dest, msg, result, attempt: (await attemptRows(msg.deliveries[0]!.delivery_id))[0]! };
}

describe("faults at the destination", () => {
  it("a connection reset mid-response is a failed attempt, retried", async () => {
    const { result, attempt, msg } = await oneAttempt({ repeat: { reset: true } });
    expect(result.explicitAcks).toEqual(result.ids);
    expect(attempt).toMatchObject({ outcome: "failed", status_code: null });
    expect(attempt.error).toMatch(/transport error/);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 1 });
  });

  it("a closed port is a failed attempt, retried", async () => {
    // A port that was open a moment ago and is closed now.
    const server = createServer();
    const port = await new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
    await new Promise((r) => server.close(r));
    const dest = await createDestination(account, sourceId, { url: `http://127.0.0.1:${port}/hook` });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    await runQueue("krafter-deliver", [msg]);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 1 });
    const [a] = await attemptRows(msg.deliveries[0]!.delivery_id);
    expect(a).toMatchObject({ outcome: "failed", status_code: null });
    expect(a!.error).toMatch(/transport error/);
  });

  it("a slow trickle of bytes past the timeout fails as a timeout", async () => {
    // 40 bytes at 100 ms each: 4 s, past DELIVERY_TIMEOUT_MS (2 s in tests).
    const { attempt, msg } = await oneAttempt({ repeat: { status: 200, trickleMs: 100, body: "x".repeat(40) } });
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 1 });
    expect(attempt).toMatchObject({ outcome: "failed", status_code: null });
    expect(attempt.error).toMatch(/timed out/);
  });

  it("a slow trickle that ends within the timeout is a success", async () => {
    const { result, attempt } = await oneAttempt({ repeat: { status: 200, trickleMs: 20, body: "slow-but-ok" } });
    expect(result.explicitAcks).toEqual(result.ids);
    expect(attempt).toMatchObject({ outcome: "succeeded", status_code: 200, response_body: "slow-but-ok" });
  });

  it("a 302 to a private address is not followed", async () => {
    const { attempt, box, msg } = await oneAttempt({ repeat: { status: 302, headers: { location: "http://169.254.169.254/latest/meta-data/" } } });
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: 1 });
    expect(attempt).toMatchObject({ outcome: "failed", status_code: 302 });
    expect(await box.requests()).toHaveLength(1);
  });

  it("a destination that keeps failing ends exhausted after the last scheduled attempt", async () => {
    const box = await mailbox({ repeat: { status: 500 } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    // Test schedule "1,1,1": attempts 1 to 3 are retried, the 4th is the last.
    for (let i = 1; i <= 3; i++) {
      await runQueue("krafter-deliver", [await currentMessage(msg)]);
      expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempts_in_run: i });
    }
    const last = await runQueue("krafter-deliver", [await currentMessage(msg)]);
    expect(last.explicitAcks).toEqual(last.ids);
    expect(await deliveryRow(msg.deliveries[0]!.delivery_id)).toMatchObject({ status: "failed", attempt_count: 4 });
    expect((await attemptRows(msg.deliveries[0]!.delivery_id)).map((a) => a.number)).toEqual([1, 2, 3, 4]);
    expect(await box.requests()).toHaveLength(4);
    // Nothing more is sent for it, whatever arrives later.
    await runQueue("krafter-deliver", [msg, await currentMessage(msg)]);
    expect(await box.requests()).toHaveLength(4);
  });
});

describe("faults inside", () => {
  it("a message that crashes mid-batch is retried alone; the acknowledged ones are not sent again", async () => {
    const good = await mailbox();
    const poisoned = await mailbox();
    const goodDest = await createDestination(account, sourceId, { url: good.url });
    const badDest = await createDestination(account, sourceId, { url: poisoned.url });
    // A secret that no longer decrypts: processing that message throws inside the consumer.
    await setDestination(badDest.id, { secretCiphertext: "v1.0000000000000000.AAAA.AAAA" });
    const events = [await insertEvent(sourceId), await insertEvent(sourceId), await insertEvent(sourceId)];
    const msgs = [
      await insertDelivery(events[0]!, goodDest.id),
      await insertDelivery(events[1]!, badDest.id),
      await insertDelivery(events[2]!, goodDest.id),
    ];
    const first = await runQueue("krafter-deliver", msgs);
    expect(first.explicitAcks).toEqual([first.ids[0], first.ids[2]]);
    expect(first.retryMessages.map((m) => m.msgId)).toEqual([first.ids[1]]);
    expect(await good.requests()).toHaveLength(2);
    expect(await poisoned.requests()).toHaveLength(0);
    expect(await deliveryRow(msgs[1]!.deliveries[0]!.delivery_id)).toMatchObject({ status: "pending", attempt_count: 0 });

    // Even if the whole batch came back, the two that succeeded are not sent again.
    const again = await runQueue("krafter-deliver", msgs);
    expect(again.retryMessages.map((m) => m.msgId)).toEqual([again.ids[1]]);
    expect(await good.requests()).toHaveLength(2);
  });

  it("a destination deleted while its attempt is in flight: the message is settled, nothing breaks", async () => {
    const box = await mailbox({ repeat: { status: 200, delayMs: 600 } });
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msg = await insertDelivery(await insertEvent(sourceId), dest.id);
    const running = runQueue("krafter-deliver", [msg]);
    await new Promise((r) => setTimeout(r, 200));
    const del = await call("DELETE", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}`, { key: account.key });
    expect(del.status).toBe(204);
    const result = await running;
    // The attempt that was already on its way is recorded and its message settled; its
    // rows go with the destination's background removal, and nothing shows them meanwhile.
    expect(result.explicitAcks).toEqual(result.ids);
    const again = await runQueue("krafter-deliver", [msg]);
    expect(again.explicitAcks).toEqual(again.ids);
    expect(await box.requests()).toHaveLength(1);
    const list = await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}/attempts`, { key: account.key });
    expect(list.status).toBe(404);
  });

  it("a destination disabled while its deliveries are queued: they are cancelled and recorded, not sent", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    const msgs = [await insertDelivery(await insertEvent(sourceId), dest.id), await insertDelivery(await insertEvent(sourceId), dest.id)];
    await call("PATCH", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}`, { key: account.key, body: { enabled: false } });
    const r = await runQueue("krafter-deliver", msgs);
    expect(r.explicitAcks).toEqual(r.ids);
    expect(await box.requests()).toHaveLength(0);
    for (const m of msgs) {
      expect(await deliveryRow(m.deliveries[0]!.delivery_id)).toMatchObject({ status: "cancelled" });
      expect((await attemptRows(m.deliveries[0]!.delivery_id))[0]).toMatchObject({ outcome: "cancelled", error: "destination is disabled" });
    }
  });
});

describe("attempt records written together (group commit)", () => {
  it("records that end while one is being written share the next call; one that fails is written alone and fails alone", async () => {
    const box = await mailbox();
    const dest = await createDestination(account, sourceId, { url: box.url });
    const eventId = await insertEvent(sourceId);
    const ref = eventPartition(eventId);
    const base = servicesFor(env as unknown as Env);
    // The real partition, with the size of each record call noted on its way through.
    const sizes: number[] = [];
    const s: Services = {
      ...base,
      store: (r) => {
        const stub = base.store(r);
        return new Proxy(stub, {
          get: (target, prop) =>
            prop === "record"
              ? (req: RecordRequest) => {
                  sizes.push(req.attempts.length);
                  return target.record(req);
                }
              : Reflect.get(target, prop),
        });
      },
    };
    const write = recordWriters(s, new Limiter()).write;
    const row = (number: number) => ({
      id: attemptId(ref.shard, Date.now()),
      deliveryId: crypto.randomUUID(),
      eventId,
      destinationId: dest.id,
      number,
      outcome: "failed" as const,
      statusCode: null,
      error: null,
      durationMs: 1,
      responseBody: null,
      createdAt: Date.now(),
    });
    // A record the partition refuses: an attempt without its number.
    const broken = { ...row(1), number: null as unknown as number };

    const results = await Promise.allSettled([
      write(ref, { attempts: [row(1)], settlements: [] }),
      write(ref, { attempts: [row(2)], settlements: [] }),
      write(ref, { attempts: [broken], settlements: [] }),
      write(ref, { attempts: [row(3)], settlements: [] }),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
    // The first alone; the three that came meanwhile together (refused whole), then each alone.
    expect(sizes).toEqual([1, 3, 1, 1, 1]);
    // Each good record written exactly once (the refused group left nothing behind).
    const list = await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}/attempts`, { key: account.key });
    expect(((await list.json()) as { data: { number: number }[] }).data.map((a) => a.number).sort()).toEqual([1, 2, 3]);
  });
});
