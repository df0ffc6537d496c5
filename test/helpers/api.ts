/**
 * Test helpers that run inside workerd: accounts and keys straight into the real D1,
 * requests through the Worker's own fetch handler, and the loopback receiver's
 * control API (mailboxes and DNS answers).
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect } from "vitest";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import { newId } from "../../src/db/ids";
import { generateApiKey, hashApiKey, type Scope } from "../../src/security/api-keys";
import type { Received, Step } from "../support/receiver";

export const ORIGIN = "https://krafter.test";
/** RFC 3339 UTC with second precision, as the API writes timestamps. */
export const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** The destinations collection of a source. */
export const destinationsPath = (sourceId: string) => `/api/v1/webhooks/sources/${sourceId}/destinations`;

export interface Account {
  id: string;
  key: string;
  keyId: string;
}

let counter = 0;

export async function createAccount(scopes: Scope[] = ["webhooks:read", "webhooks:write"]): Promise<Account> {
  const id = newId();
  await env.DB.prepare("INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)")
    .bind(id, `acct-${id}-${counter++}`, Date.now())
    .run();
  const { key, keyId } = await addKey(id, scopes);
  return { id, key, keyId };
}

export async function addKey(accountId: string, scopes: Scope[]): Promise<{ key: string; keyId: string }> {
  const key = generateApiKey();
  const keyId = newId();
  await env.DB.prepare(
    "INSERT INTO api_keys (id, account_id, prefix, key_hash, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
  )
    .bind(keyId, accountId, key.slice(0, 12), await hashApiKey(key), scopes.join(","), Date.now())
    .run();
  return { key, keyId };
}

/** The bindings with some configuration changed, for one request. */
export function envWith(overrides: Partial<Record<keyof Env, string | undefined>>): Env {
  return { ...(env as unknown as Env), ...overrides } as Env;
}

export interface CallOptions {
  key?: string | null;
  body?: unknown;
  /** A raw body sent as is (for bad JSON and the like). */
  raw?: string;
  headers?: Record<string, string>;
  env?: Env;
}

/** Calls the Worker's fetch handler, as a request from outside would. */
export async function call(method: string, path: string, opts: CallOptions = {}): Promise<Response> {
  const headers = new Headers(opts.headers);
  if (opts.key) headers.set("authorization", `Bearer ${opts.key}`);
  let body: string | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
  }
  const ctx = createExecutionContext();
  const res = await worker.fetch(
    new Request(`${ORIGIN}${path}`, { method, headers, body }) as Request<unknown, IncomingRequestCfProperties>,
    opts.env ?? (env as unknown as Env),
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}

export async function json<T = any>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

export async function createSource(account: Account, body: Record<string, unknown> = { name: "stripe prod" }) {
  const res = await call("POST", "/api/v1/webhooks/sources", { key: account.key, body });
  if (res.status !== 201) throw new Error(`createSource: ${res.status} ${await res.text()}`);
  return (await json(res)).data as { id: string; ingest_url: string; name: string; provider: string };
}

export async function createDestination(account: Account, sourceId: string, body: Record<string, unknown>) {
  const res = await call("POST", `/api/v1/webhooks/sources/${sourceId}/destinations`, { key: account.key, body });
  if (res.status !== 201) throw new Error(`createDestination: ${res.status} ${await res.text()}`);
  return (await json(res)).data as {
    id: string;
    source_id: string;
    url: string;
    secret: string;
    event_filter: string[];
    enabled: boolean;
    failure_count: number;
  };
}

// ---- the loopback receiver ----

const receiver = () => env.RECEIVER_ORIGIN;

export async function mailbox(spec: { script?: Step[]; repeat?: Step } = {}) {
  const res = await fetch(`${receiver()}/control/mailboxes`, { method: "POST", body: JSON.stringify(spec) });
  const { id, url } = (await res.json()) as { id: string; url: string };
  return {
    id,
    url,
    async requests(): Promise<Received[]> {
      const r = await fetch(`${receiver()}/control/mailboxes/${id}`);
      return ((await r.json()) as { requests: Received[] }).requests;
    },
    async script(next: { script?: Step[]; repeat?: Step }) {
      await fetch(`${receiver()}/control/mailboxes/${id}`, { method: "PUT", body: JSON.stringify(next) });
    },
  };
}

/** Sets what the injected DoH resolver answers for a name (null removes it: NXDOMAIN), with a TTL (default 0: never kept). */
export async function setDns(name: string, addresses: string[] | null, ttl = 0): Promise<void> {
  await fetch(`${receiver()}/control/dns`, { method: "POST", body: JSON.stringify({ name, addresses, ttl }) });
}

/** Waits until `check` returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 15_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- the error envelope ----

export interface Envelope {
  error: { code: string; message: string; details?: { field: string; code: string; message: string }[]; request_id?: string };
}

/** The one error envelope: asserts status, code and shape (no stack trace), and returns the body. */
export async function expectError(res: Response, status: number, code: string): Promise<Envelope> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  expect(res.headers.get("x-request-id")).toBeTruthy();
  const body = JSON.parse(text) as Envelope;
  expect(Object.keys(body)).toEqual(["error"]);
  for (const k of Object.keys(body.error)) expect(["code", "message", "details", "request_id"]).toContain(k);
  expect(body.error.code).toBe(code);
  expect(body.error.code).toMatch(/^[a-z]+(_[a-z]+)*$/);
  expect(typeof body.error.message).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  expect(text).not.toMatch(/\bat .*\.(ts|js):\d+/);
  if (body.error.details !== undefined) {
    expect(Array.isArray(body.error.details)).toBe(true);
    for (const d of body.error.details) {
      expect(Object.keys(d).sort()).toEqual(["code", "field", "message"]);
      expect(typeof d.field).toBe("string");
      expect(typeof d.message).toBe("string");
    }
  }
  return body;
}

/** A 422 whose details name each of `fields`. */
export async function expect422(res: Response, ...fields: string[]): Promise<Envelope> {
  const body = await expectError(res, 422, "validation_failed");
  const got = (body.error.details ?? []).map((d) => d.field);
  for (const f of fields) expect(got, JSON.stringify(body)).toContain(f);
  return body;
}
