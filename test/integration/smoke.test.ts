import { describe, expect, it } from "vitest";
import { call, createAccount, json } from "../helpers/api";

describe("smoke", () => {
  it("creates and reads a source", async () => {
    const a = await createAccount();
    const res = await call("POST", "/api/v1/webhooks/sources", { key: a.key, body: { name: "x" } });
    expect(res.status).toBe(201);
    const body = await json(res);
    expect(body.data.ingest_url).toMatch(/^https:\/\/krafter\.test\/in\/src_/);
  });
});
