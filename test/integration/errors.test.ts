/**
 * The error handler (src/http/errors.ts onError): every 400 keeps its own code. A body
 * that is not JSON is `invalid_json`; a request refused for another reason is
 * `bad_request` (or its own code) with its own message, whether our code or Hono's
 * refused it. Before, every HTTPException 400 became `invalid_json`.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { validator } from "hono/validator";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app";
import type { Env } from "../../src/config";
import { ORIGIN, call, createAccount, createSource, expectError } from "../helpers/api";

const SOURCES = "/api/v1/webhooks/sources";

describe("400s", () => {
  it("a body that is not JSON is invalid_json; a WebSocket route called without Upgrade is bad_request", async () => {
    const a = await createAccount();
    const notJson = await expectError(await call("POST", SOURCES, { key: a.key, raw: '{"name":', headers: { "content-type": "application/json" } }), 400, "invalid_json");
    expect(notJson.error.message).toBe("The request body is not valid JSON.");

    const src = await createSource(a);
    const noUpgrade = await expectError(await call("GET", `${SOURCES}/${src.id}/listen`, { key: a.key }), 400, "bad_request");
    expect(noUpgrade.error.message).toMatch(/WebSocket/);
    expect(noUpgrade.error.message).not.toBe(notJson.error.message);
  });

  it("a 400 Hono raises itself (a malformed form body) keeps bad_request and Hono's message, not invalid_json", async () => {
    // The app as the Worker builds it, with one more route that reads a form through Hono's own validator.
    const app = createApp();
    app.post("/__form", validator("form", (v) => v), (c) => c.text("ok"));
    const req = new Request(`${ORIGIN}/__form`, {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=x" },
      body: "this is not multipart",
    });
    const ctx = createExecutionContext();
    const res = await app.fetch(req, env as unknown as Env, ctx);
    await waitOnExecutionContext(ctx);
    const body = await expectError(res, 400, "bad_request");
    expect(body.error.message).toMatch(/^Malformed FormData request/);
  });
});
