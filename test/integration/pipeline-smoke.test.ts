import { describe, expect, it } from "vitest";
import { Webhook } from "standardwebhooks";
import { call, createAccount, createDestination, createSource, eventually, json, mailbox } from "../helpers/api";

describe("pipeline smoke", () => {
  it("delivers an ingested event", async () => {
    const a = await createAccount();
    const src = await createSource(a, { name: "s" });
    const box = await mailbox();
    const dest = await createDestination(a, src.id, { url: box.url });
    const path = new URL(src.ingest_url).pathname;
    const res = await call("POST", path, { raw: JSON.stringify({ type: "invoice.paid", id: "evt_1" }), headers: { "content-type": "application/json" } });
    expect(res.status).toBe(202);
    const { data } = await json(res);
    const reqs = await eventually(async () => { const r = await box.requests(); return r.length ? r : undefined; });
    expect(reqs[0]!.headers["webhook-id"]).toBe(data.event_id);
    const verified = new Webhook(dest.secret).verify(reqs[0]!.body, reqs[0]!.headers);
    expect(verified).toEqual({ event: "invoice.paid", data: { type: "invoice.paid", id: "evt_1" }, source_id: src.id });
  });
});
