/**
 * The operation counts the benchmark reads (src/meter.ts): on only with METER=true and
 * outside production, off otherwise (GET /__meter is then a 404).
 */
import { describe, expect, it } from "vitest";
import { meter } from "../../src/meter";
import { call, createAccount, createSource, envWith, json } from "../helpers/api";

describe("GET /__meter", () => {
  it("is a 404 unless METER=true", async () => {
    expect((await call("GET", "/__meter")).status).toBe(404);
    expect((await call("GET", "/__meter", { env: envWith({ METER: "true", ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: undefined }) })).status).toBe(404);
  });

  it("counts each request, the D1 queries it made and the Durable Object calls and queue messages", async () => {
    const metered = envWith({ METER: "true" });
    const account = await createAccount();
    const source = await createSource(account, { name: "metered" });
    const before = { ...(await json(await call("GET", "/__meter", { env: metered }))) } as typeof meter;
    const res = await call("POST", new URL(source.ingest_url).pathname, { raw: '{"type":"t"}', headers: { "content-type": "application/json" }, env: metered });
    expect(res.status).toBe(202);
    const after = (await json(await call("GET", "/__meter", { env: metered }))) as typeof meter;
    expect(after.workerRequests - before.workerRequests).toBe(1);
    // The source (not cached yet in a metered isolate's view: one read), the day's count (one read).
    expect(after.d1Queries - before.d1Queries).toBeGreaterThanOrEqual(1);
    expect(after.d1RowsRead - before.d1RowsRead).toBeGreaterThanOrEqual(1);
    // One call to the partition, and after the response the account's stored-bytes report
    // (ingest/stored-bytes.ts: at most one per STORED_BYTES_FLUSH_MS per isolate, 0 in tests).
    expect(after.doRequests - before.doRequests).toBe(2);
  });
});
