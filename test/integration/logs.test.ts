/**
 * What reaches the logs when something breaks inside: the error's class and a fixed
 * description, never its message (a driver's message can carry SQL and bound values,
 * payloads among them); the response is the envelope with a request id, nothing more.
 */
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Env } from "../../src/config";
import { call, createAccount, expectError } from "../helpers/api";

const logs: string[] = [];
beforeEach(() => {
  logs.length = 0;
  for (const level of ["log", "info", "warn", "error"] as const) {
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void logs.push(args.map(String).join(" ")));
  }
});
afterEach(() => vi.restoreAllMocks());

describe("an unexpected error", () => {
  it("is logged by its class only: not the SQL or the values its message carries", async () => {
    const account = await createAccount();
    const leaky = "D1_ERROR: UNIQUE constraint failed: INSERT INTO sources VALUES ('customer-secret-4242', 'payload {\"card\":\"4242\"}')";
    const real = (env as unknown as Env).DB;
    // The key lookup succeeds (the real D1); the source insert fails with a talkative message.
    const failing = new Proxy(real, {
      get: (target, prop) =>
        prop === "batch"
          ? () => Promise.reject(new Error(leaky))
          : prop === "prepare"
            ? (q: string) => {
                const stmt = target.prepare(q);
                if (!/insert into "sources"/i.test(q)) return stmt;
                return new Proxy(stmt, {
                  get: (t, p) => (p === "bind" ? () => ({ run: () => Promise.reject(new Error(leaky)), all: () => Promise.reject(new Error(leaky)), first: () => Promise.reject(new Error(leaky)), raw: () => Promise.reject(new Error(leaky)) }) : Reflect.get(t, p)),
                });
              }
            : (Reflect.get(target, prop) as (...a: unknown[]) => unknown).bind(target),
    });
    const res = await call("POST", "/api/v1/webhooks/sources", {
      key: account.key,
      body: { name: "x" },
      env: { ...(env as unknown as Env), DB: failing } as Env,
    });
    const body = await expectError(res, 500, "internal_error");
    expect(body.error.request_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.stringify(body)).not.toContain("customer-secret-4242");
    const line = logs.find((l) => l.includes("unhandled_error"));
    expect(line).toBeDefined();
    expect(JSON.parse(line!)).toMatchObject({ msg: "unhandled_error", error: "Error", request_id: body.error.request_id });
    expect(logs.join("\n")).not.toContain("customer-secret-4242");
    expect(logs.join("\n")).not.toContain("INSERT INTO");
  });
});
