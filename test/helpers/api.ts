/**
 * Test helpers that run inside workerd: accounts and keys straight into the real D1
 * (through drizzle, with the app's schema), requests through the Worker's own fetch
 * handler (typed, with the client of src/client.ts, or raw with call()), and the
 * loopback receiver's control API (mailboxes and DNS answers).
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { expect } from "vitest";
import { krafterClient } from "../../src/client";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import { database } from "../../src/db/client";
import { newId } from "../../src/db/ids";
import { accounts, apiKeys, destinations } from "../../src/db/schema";
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

/** The D1 database through drizzle, with the app's schema: how tests seed and change rows. */
export const db = () => database(env.DB);

export async function createAccount(scopes: Scope[] = ["webhooks:read", "webhooks:write"]): Promise<Account> {
  const id = newId();
  await db().insert(accounts).values({ id, name: `acct-${id}-${counter++}`, createdAt: Date.now() }).run();
  const { key, keyId } = await addKey(id, scopes);
  return { id, key, keyId };
}

export async function addKey(accountId: string, scopes: Scope[]): Promise<{ key: string; keyId: string }> {
  const key = generateApiKey();
  const keyId = newId();
  await db()
    .insert(apiKeys)
    .values({ id: keyId, accountId, prefix: key.slice(0, 12), keyHash: await hashApiKey(key), scopes: scopes.join(","), createdAt: Date.now() })
    .run();
  return { key, keyId };
}

/** Revokes a key, as `npm run api-key revoke` would. */
export async function revokeKey(keyId: string): Promise<void> {
  await db().update(apiKeys).set({ revokedAt: Date.now() }).where(eq(apiKeys.id, keyId)).run();
}

/** Sets columns of a destination row directly (state the API cannot reach: failure_count, a rotation's age, a tampered ciphertext). */
export async function setDestination(id: string, values: Partial<typeof destinations.$inferInsert>): Promise<void> {
  await db().update(destinations).set(values).where(eq(destinations.id, id)).run();
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

/** A fetch that goes into the Worker's own fetch handler, as a request from outside would (and waits for its waitUntil work). */
export function workerFetch(e: Env = env as unknown as Env): typeof fetch {
  return async (input, init) => {
    const ctx = createExecutionContext();
    const res = await worker.fetch(new Request(input, init) as Request<unknown, IncomingRequestCfProperties>, e, ctx);
    await waitOnExecutionContext(ctx);
    return res;
  };
}

/**
 * The typed client (src/client.ts) as `who` (an account or a bare key), into the Worker's
 * fetch handler: paths, request bodies and response bodies are checked by the compiler.
 */
export function clientFor(who: Pick<Account, "key"> | string, opts: { env?: Env } = {}) {
  return krafterClient(ORIGIN, typeof who === "string" ? who : who.key, { fetch: workerFetch(opts.env) });
}

export type Client = ReturnType<typeof clientFor>;

/** The destinations of a source, through the typed client. */
export const destinationsApi = (c: Client) => c.api.v1.webhooks.sources[":source_id"].destinations;

/**
 * Calls the Worker's fetch handler with any method, path, headers and body, as a request
 * from outside would. For what the typed client cannot send: malformed JSON, wrong types,
 * unknown fields, missing or odd authorization, unknown routes and methods. Everything
 * else goes through clientFor().
 */
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

type Json<F extends (...args: never[]) => unknown> = Parameters<F>[0] extends { json: infer J } ? J : never;
export type SourceInput = Json<Client["api"]["v1"]["webhooks"]["sources"]["$post"]>;
export type DestinationInput = Json<ReturnType<typeof destinationsApi>["$post"]>;

/** A source made through the API (typed client); its ingest_url is a string, as the key may write. */
export async function createSource(account: Pick<Account, "key">, body: SourceInput = { name: "stripe prod" }) {
  const res = await clientFor(account).api.v1.webhooks.sources.$post({ json: body });
  if (res.status !== 201) throw new Error(`createSource: ${res.status} ${await res.text()}`);
  const { data } = await res.json();
  if (data.ingest_url === null) throw new Error("createSource: no ingest_url (an alerts source, or a read-only key)");
  return { ...data, ingest_url: data.ingest_url };
}

/** A destination made through the API (typed client), with the secret that only this response carries. */
export async function createDestination(account: Pick<Account, "key">, sourceId: string, body: DestinationInput, opts: { env?: Env } = {}) {
  const res = await destinationsApi(clientFor(account, opts)).$post({ param: { source_id: sourceId }, json: body });
  if (res.status !== 201) throw new Error(`createDestination: ${res.status} ${await res.text()}`);
  return (await res.json()).data;
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

/** The error of an answer: the typed client knows only the success bodies, so errors are read as the envelope. */
export async function errorOf(res: { json(): Promise<unknown> }): Promise<Envelope["error"]> {
  return ((await res.json()) as Envelope).error;
}

/**
 * GET …/events/:event_id, as the API documents it. The route writes its body itself (the
 * stored payload spliced in as is), so the typed client sees `unknown` there.
 */
export interface EventDetail {
  id: string;
  source_id: string;
  type: string;
  status: string;
  received_at: string;
  payload: unknown;
  headers: Record<string, string>;
  deliveries: {
    destination_id: string;
    status: string;
    attempt_count: number;
    last_attempt_at: string | null;
    last_attempt: { id: string; number: number; outcome: string; status_code: number | null; error: string | null; duration_ms: number; created_at: string } | null;
  }[];
}

/** What expectError reads: a Response, or the typed client's answer. */
type Answer = Pick<Response, "status" | "headers" | "text">;

/** The one error envelope: asserts status, code and shape (no stack trace), and returns the body. */
export async function expectError(res: Answer, status: number, code: string): Promise<Envelope> {
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
export async function expect422(res: Answer, ...fields: string[]): Promise<Envelope> {
  const body = await expectError(res, 422, "validation_failed");
  const got = (body.error.details ?? []).map((d) => d.field);
  for (const f of fields) expect(got, JSON.stringify(body)).toContain(f);
  return body;
}
