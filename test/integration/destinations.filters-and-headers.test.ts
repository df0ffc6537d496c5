/**
 * payload_filter and headers on destinations (PRODUCT.md "Payload filters", "Custom
 * headers"): through the API (validation, masking, PATCH semantics), at rest (headers
 * only as ciphertext), and end to end through the queues (fan-out, redeliver, replay;
 * headers on forwards and tests).
 */
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { call, createAccount, createDestination, createSource, eventually, expect422, json, mailbox, type Account } from "../helpers/api";
import { insertEvent } from "../helpers/delivery";

let account: Account;
let source: { id: string; ingest_url: string };
const base = () => `/api/v1/webhooks/sources/${source.id}/destinations`;

beforeEach(async () => {
  account = await createAccount();
  source = await createSource(account, { name: "filters" });
});

const post = (body: unknown) => call("POST", base(), { key: account.key, body });
const patch = (id: string, body: unknown) => call("PATCH", `${base()}/${id}`, { key: account.key, body });
const send = (body: unknown) => call("POST", new URL(source.ingest_url).pathname, { raw: JSON.stringify(body), headers: { "content-type": "application/json" } });

/** The README's example: only invoice.paid events over 10,000 in data.object.amount_paid. */
const BIG_INVOICES = { type: "invoice.paid", data: { object: { amount_paid: { $gt: 10000 } } } };

describe("payload_filter through the API", () => {
  it("is stored and returned by create, GET, list and PATCH; PATCH null removes it", async () => {
    const created = await post({ url: "https://hooks.example.com/a", payload_filter: BIG_INVOICES });
    expect(created.status).toBe(201);
    const d = (await json(created)).data;
    expect(d.payload_filter).toEqual(BIG_INVOICES);
    expect((await json(await call("GET", `${base()}/${d.id}`, { key: account.key }))).data.payload_filter).toEqual(BIG_INVOICES);
    expect((await json(await call("GET", base(), { key: account.key }))).data[0].payload_filter).toEqual(BIG_INVOICES);
    const other = { type: { $in: ["charge.succeeded", "charge.failed"] } };
    expect((await json(await patch(d.id, { payload_filter: other }))).data.payload_filter).toEqual(other);
    expect((await json(await patch(d.id, { payload_filter: null }))).data.payload_filter).toBeNull();
    expect((await json(await call("GET", `${base()}/${d.id}`, { key: account.key }))).data.payload_filter).toBeNull();
    // Not mentioned: left as it is.
    await patch(d.id, { payload_filter: other });
    expect((await json(await patch(d.id, { enabled: false }))).data.payload_filter).toEqual(other);
  });

  it.each([
    [{ a: { $gtx: 1 } }, "payload_filter.a.$gtx", "unknown_operator"],
    [{ a: { $in: "x" } }, "payload_filter.a.$in", "invalid_operand"],
    [{ a: { $gt: { b: 1 } } }, "payload_filter.a.$gt", "invalid_operand"],
    [{ $or: [] }, "payload_filter.$or", "invalid_operand"],
    [{ a: { b: [{ $exist: "yes" }] } }, "payload_filter.a.b.0.$exist", "invalid_operand"],
  ])("refuses %j with a 422 naming the path of the fault", async (filter, field, code) => {
    const body = await expect422(await post({ url: "https://hooks.example.com/a", payload_filter: filter }), field);
    expect(body.error.details!.find((x) => x.field === field)!.code).toBe(code);
  });

  it("refuses a filter that is not an object, one over 4 KB, and one over 10 levels; accepts each at its limit", async () => {
    await expect422(await post({ url: "https://hooks.example.com/a", payload_filter: ["x"] }), "payload_filter");
    const sized = (n: number) => ({ k: "x".repeat(n - '{"k":""}'.length) });
    expect((await post({ url: "https://hooks.example.com/a", payload_filter: sized(4096) })).status).toBe(201);
    const big = await expect422(await post({ url: "https://hooks.example.com/a", payload_filter: sized(4097) }), "payload_filter");
    expect(big.error.details![0]!.code).toBe("too_large");
    const nest = (levels: number): Record<string, unknown> => (levels === 1 ? { a: 1 } : { a: nest(levels - 1) });
    expect((await post({ url: "https://hooks.example.com/a", payload_filter: nest(10) })).status).toBe(201);
    const deep = await expect422(await post({ url: "https://hooks.example.com/a", payload_filter: nest(11) }), "payload_filter.a.a.a.a.a.a.a.a.a.a");
    expect(deep.error.details![0]!.code).toBe("too_deep");
  });
});

describe("headers through the API", () => {
  it("are masked in every read, replaced as a whole by PATCH, removed by {}", async () => {
    const created = await post({ url: "https://hooks.example.com/a", headers: { Authorization: "Bearer sk_live_secret_1", "X-Tenant": "acme" } });
    expect(created.status).toBe(201);
    const d = (await json(created)).data;
    expect(d.headers).toEqual({ Authorization: "********", "X-Tenant": "********" });
    const text = JSON.stringify([
      d,
      await json(await call("GET", `${base()}/${d.id}`, { key: account.key })),
      await json(await call("GET", base(), { key: account.key })),
    ]);
    expect(text).not.toContain("sk_live_secret_1");
    expect(text).not.toContain("acme");
    const replaced = await json(await patch(d.id, { headers: { "X-Other": "v2" } }));
    expect(replaced.data.headers).toEqual({ "X-Other": "********" });
    expect((await json(await patch(d.id, { headers: {} }))).data.headers).toEqual({});
  });

  it("are stored encrypted: D1 holds the names, never a value", async () => {
    const d = (await json(await post({ url: "https://hooks.example.com/a", headers: { Authorization: "Bearer very-secret-token" } }))).data;
    const row = await env.DB.prepare("SELECT * FROM destinations WHERE id = ?").bind(d.id).first<Record<string, string>>();
    expect(JSON.stringify(row)).not.toContain("very-secret-token");
    expect(row!.headers_ct).toMatch(/^v1\./);
    expect(JSON.parse(row!.header_names!)).toEqual(["Authorization"]);
  });

  it.each([
    ["content-type", "reserved_header"],
    ["Content-Length", "reserved_header"],
    ["Host", "reserved_header"],
    ["User-Agent", "reserved_header"],
    ["webhook-signature", "reserved_header"],
    ["Webhook-Id", "reserved_header"],
    ["krafter-attempt", "reserved_header"],
    ["Connection", "reserved_header"],
    ["Transfer-Encoding", "reserved_header"],
    ["Bad Name", "invalid_header_name"],
    ["é", "invalid_header_name"],
  ])("refuses the header name %s with a 422 naming it", async (name, code) => {
    const body = await expect422(await post({ url: "https://hooks.example.com/a", headers: { [name]: "v" } }), `headers.${name}`);
    expect(body.error.details![0]!.code).toBe(code);
  });

  it("refuses values over 1,024 characters or with CR or LF, more than 20 headers, and a name given twice", async () => {
    expect((await post({ url: "https://hooks.example.com/a", headers: { "X-A": "x".repeat(1024) } })).status).toBe(201);
    await expect422(await post({ url: "https://hooks.example.com/a", headers: { "X-A": "x".repeat(1025) } }), "headers.X-A");
    await expect422(await post({ url: "https://hooks.example.com/a", headers: { "X-A": "a\r\nX-Injected: 1" } }), "headers.X-A");
    const twenty = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`X-H${i}`, "v"]));
    expect((await post({ url: "https://hooks.example.com/a", headers: twenty })).status).toBe(201);
    await expect422(await post({ url: "https://hooks.example.com/a", headers: { ...twenty, "X-H20": "v" } }), "headers");
    await expect422(await post({ url: "https://hooks.example.com/a", headers: { "X-Tenant": "a", "x-tenant": "b" } }), "headers.x-tenant");
  });
});

describe("end to end through the queues", () => {
  it("two destinations with different filters get the events that match each: one, both, neither", async () => {
    const big = await mailbox();
    const charges = await mailbox();
    await createDestination(account, source.id, { url: big.url, payload_filter: BIG_INVOICES });
    await createDestination(account, source.id, { url: charges.url, payload_filter: { $or: [{ type: { $startsWith: "charge." } }, { data: { object: { amount_paid: { $gte: 50000 } } } }] } });
    const ids: Record<string, string> = {};
    for (const [name, body] of Object.entries({
      bigInvoice: { type: "invoice.paid", data: { object: { amount_paid: 20000 } } },
      hugeInvoice: { type: "invoice.paid", data: { object: { amount_paid: 60000 } } },
      smallInvoice: { type: "invoice.paid", data: { object: { amount_paid: 100 } } },
      charge: { type: "charge.succeeded", data: { object: { amount: 5 } } },
      other: { type: "customer.created" },
    })) {
      const res = await send(body);
      expect(res.status).toBe(202);
      ids[name] = (await json(res)).data.event_id;
    }
    // Not JSON: matches no payload filter.
    await call("POST", new URL(source.ingest_url).pathname, { raw: "invoice.paid 20000", headers: { "content-type": "text/plain" } });
    await eventually(async () => ((await big.requests()).length >= 2 && (await charges.requests()).length >= 2 ? true : undefined));
    await new Promise((r) => setTimeout(r, 1500));
    const got = async (box: Awaited<ReturnType<typeof mailbox>>) => (await box.requests()).map((r) => r.headers["webhook-id"]).sort();
    expect(await got(big)).toEqual([ids.bigInvoice, ids.hugeInvoice].sort());
    expect(await got(charges)).toEqual([ids.hugeInvoice, ids.charge].sort());
  });

  it("redeliver (without destination_ids) and replay honour the filter", async () => {
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url, payload_filter: BIG_INVOICES });
    const t0 = Date.now() - 3600_000;
    const match = await insertEvent(source.id, { type: "invoice.paid", payload: JSON.stringify({ type: "invoice.paid", data: { object: { amount_paid: 99999 } } }), receivedAt: t0 });
    const miss = await insertEvent(source.id, { type: "invoice.paid", payload: JSON.stringify({ type: "invoice.paid", data: { object: { amount_paid: 1 } } }), receivedAt: t0 + 1000 });
    const redeliver = (id: string) => call("POST", `/api/v1/webhooks/sources/${source.id}/events/${id}/redeliver`, { key: account.key, body: {} });
    expect(await json(await redeliver(miss))).toEqual({ data: { queued: 0, already_pending: 0 } });
    expect(await json(await redeliver(match))).toEqual({ data: { queued: 1, already_pending: 0 } });
    await eventually(async () => ((await box.requests()).length >= 1 ? true : undefined));
    const replay = await call("POST", `${base()}/${d.id}/replay`, { key: account.key, body: { since: new Date(t0 - 1000).toISOString() } });
    const counted = (await json(replay)).data;
    // The matching event only (queued again, or still pending from the redeliver); never the other.
    expect(counted.queued + counted.already_pending).toBe(1);
    await new Promise((r) => setTimeout(r, 1500));
    expect(new Set((await box.requests()).map((r) => r.headers["webhook-id"]))).toEqual(new Set([match]));
  });

  it("custom headers arrive with every forward and every test; ours cannot be shadowed", async () => {
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url, headers: { Authorization: "Bearer abc123", "X-Tenant": "acme" } });
    expect((await send({ type: "invoice.paid" })).status).toBe(202);
    const [forward] = await eventually(async () => {
      const r = await box.requests();
      return r.length > 0 ? r : undefined;
    });
    expect(forward!.headers.authorization).toBe("Bearer abc123");
    expect(forward!.headers["x-tenant"]).toBe("acme");
    expect(forward!.headers["content-type"]).toBe("application/json");
    const test = await call("POST", `${base()}/${d.id}/test`, { key: account.key });
    expect(test.status).toBe(200);
    const tested = (await box.requests())[1]!;
    expect(tested.headers.authorization).toBe("Bearer abc123");
    expect(tested.headers["x-tenant"]).toBe("acme");
  });
});
