/**
 * DestinationHealth, the only writer of failure_count and auto-disable, in a real
 * SQLite-backed Durable Object, mirrored to the real D1.
 */
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import type { DestinationHealth } from "../../src/destination-health";
import type { Env } from "../../src/config";
import { servicesFor } from "../../src/services";
import { call, createAccount, createDestination, createSource, json, type Account } from "../helpers/api";
import { destinationRow } from "../helpers/delivery";

let account: Account;
let sourceId: string;
let destinationId: string;
const workerEnv = env as unknown as Env;

beforeEach(async () => {
  account = await createAccount();
  sourceId = (await createSource(account)).id;
  destinationId = (await createDestination(account, sourceId, { url: "https://hooks.example.com/x" })).id;
});

const patchEnabled = (enabled: boolean) =>
  call("PATCH", `/api/v1/webhooks/sources/${sourceId}/destinations/${destinationId}`, { key: account.key, body: { enabled } });

describe("DestinationHealth", () => {
  it("counts 50 concurrent exhausted forwards as 50 and disables exactly once", async () => {
    const stub = servicesFor(workerEnv).health(destinationId);
    const results = await Promise.all(Array.from({ length: 50 }, () => stub.exhausted(destinationId)));
    expect(results.filter((r) => r.disabled_now)).toHaveLength(1);
    expect(results.map((r) => r.failure_count).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    // The flip happens when the count reaches 10, not later.
    expect(results.find((r) => r.disabled_now)!.failure_count).toBe(10);
    expect(await destinationRow(destinationId)).toEqual({ enabled: 0, failure_count: 50 });
    expect((await stub.state()).failure_count).toBe(50);
  });

  it("does not disable below 10 consecutive failures", async () => {
    const stub = servicesFor(workerEnv).health(destinationId);
    for (let i = 0; i < 9; i++) expect((await stub.exhausted(destinationId)).disabled_now).toBe(false);
    expect(await destinationRow(destinationId)).toEqual({ enabled: 1, failure_count: 9 });
  });

  it("resets failure_count to 0 on a success", async () => {
    const stub = servicesFor(workerEnv).health(destinationId);
    for (let i = 0; i < 4; i++) await stub.exhausted(destinationId);
    await stub.success(destinationId);
    expect(await destinationRow(destinationId)).toEqual({ enabled: 1, failure_count: 0 });
    // Consecutive: the count starts again from 0.
    await stub.exhausted(destinationId);
    expect(await destinationRow(destinationId)).toEqual({ enabled: 1, failure_count: 1 });
  });

  it("PATCH enabled:true does not reset failure_count; one more failure disables again; the first success resets", async () => {
    const stub = servicesFor(workerEnv).health(destinationId);
    for (let i = 0; i < 10; i++) await stub.exhausted(destinationId);
    expect(await destinationRow(destinationId)).toEqual({ enabled: 0, failure_count: 10 });

    const res = await patchEnabled(true);
    expect(res.status).toBe(200);
    expect((await json(res)).data).toMatchObject({ enabled: true, failure_count: 10 });

    const again = await stub.exhausted(destinationId);
    expect(again).toEqual({ failure_count: 11, disabled_now: true });
    expect(await destinationRow(destinationId)).toEqual({ enabled: 0, failure_count: 11 });

    await patchEnabled(true);
    await stub.success(destinationId);
    expect(await destinationRow(destinationId)).toEqual({ enabled: 1, failure_count: 0 });
    const get = await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${destinationId}`, { key: account.key });
    expect((await json(get)).data).toMatchObject({ enabled: true, failure_count: 0 });
  });

  it("keeps its count across an eviction", async () => {
    const stub = servicesFor(workerEnv).health(destinationId);
    for (let i = 0; i < 3; i++) await stub.exhausted(destinationId);
    await evictDurableObject(stub);
    expect((await stub.state()).failure_count).toBe(3);
    await stub.exhausted(destinationId);
    expect(await destinationRow(destinationId)).toEqual({ enabled: 1, failure_count: 4 });
    const stored = await runInDurableObject(stub, (_instance: DestinationHealth, state) => state.storage.kv.get<number>("failure_count"));
    expect(stored).toBe(4);
  });
});
