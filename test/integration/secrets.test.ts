/**
 * Secrets stay secret: across a whole workflow (sources, destinations, custom headers,
 * rotation, test sends, signed ingest, deliveries, the event and attempt logs), no
 * response but the one 201 of POST …/destinations carries a destination secret, none
 * carries a source's signing secret, a custom header's value or an API key, no log line
 * carries any of them or a signature, and D1 holds only ciphertext and hashes.
 */
import { env } from "cloudflare:workers";
import Stripe from "stripe";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { EncryptionUnavailableError } from "../../src/errors";
import { sha256Hex } from "../../src/security/encoding";
import { secretBox } from "../../src/security/secrets";
import { call, createAccount, envWith, eventually, mailbox, type CallOptions } from "../helpers/api";
import { storedEvents } from "../helpers/delivery";

const logs: string[] = [];
beforeEach(() => {
  logs.length = 0;
  for (const level of ["log", "info", "warn", "error", "debug"] as const) {
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      logs.push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" "));
    });
  }
});
afterEach(() => vi.restoreAllMocks());

const randomSecret = () => "whsec_" + btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));

/** The forms a secret could leak in: whole, and its key part. */
const forms = (secret: string) => [secret, secret.replace(/^whsec_/, "")];

describe("secrets", () => {
  it("never appear in responses (but the one 201), logs, or D1 rows in plain text", async () => {
    const account = await createAccount();
    const responses: { label: string; text: string }[] = [];
    const api = async (label: string, method: string, path: string, opts: CallOptions = {}) => {
      const res = await call(method, path, { key: account.key, ...opts });
      const text = await res.text();
      responses.push({ label, text: text + JSON.stringify([...res.headers]) });
      return { status: res.status, json: text ? JSON.parse(text) : null };
    };

    const signingSecret = "whsec_stripe_" + crypto.randomUUID();
    const src = await api("create source", "POST", "/api/v1/webhooks/sources", {
      body: { name: "stripe", provider: "stripe", signing_secret: signingSecret },
    });
    expect(src.status).toBe(201);
    const base = `/api/v1/webhooks/sources/${src.json.data.id}`;
    const box = await mailbox();

    const headerValue = `Bearer hdr_${crypto.randomUUID()}`;
    const created = await call("POST", `${base}/destinations`, { key: account.key, body: { url: box.url, headers: { Authorization: headerValue } } });
    expect(created.status).toBe(201);
    const destination = ((await created.json()) as { data: { id: string; secret: string } }).data;
    const first = destination.secret;
    expect(first).toMatch(/^whsec_/);
    const dpath = `${base}/destinations/${destination.id}`;

    await api("get source", "GET", base);
    await api("list sources", "GET", "/api/v1/webhooks/sources");
    await api("patch source", "PATCH", base, { body: { name: "renamed" } });
    await api("get destination", "GET", dpath);
    await api("list destinations", "GET", `${base}/destinations`);
    const otherHeader = `Bearer hdr2_${crypto.randomUUID()}`;
    await api("patch headers", "PATCH", dpath, { body: { headers: { Authorization: otherHeader, "X-Api-Key": otherHeader } } });
    const rotated = randomSecret();
    const patch = await api("rotate", "PATCH", dpath, { body: { secret: rotated } });
    expect(patch.status).toBe(200);
    await api("test send", "POST", `${dpath}/test`);

    // Signed ingest, and a rejected one whose error must not echo the secret.
    const payload = JSON.stringify({ id: `evt_${crypto.randomUUID()}`, type: "invoice.paid" });
    const header = await new Stripe("sk_test_x").webhooks.generateTestHeaderStringAsync({ payload, secret: signingSecret });
    const ingestPath = new URL(src.json.data.ingest_url).pathname;
    const ok = await api("ingest", "POST", ingestPath, { key: null, raw: payload, headers: { "content-type": "application/json", "stripe-signature": header } });
    expect(ok.status).toBe(202);
    const bad = await api("bad ingest", "POST", ingestPath, { key: null, raw: payload + " ", headers: { "content-type": "application/json", "stripe-signature": header } });
    expect(bad.status).toBe(401);

    const delivered = await eventually(async () => {
      const r = await box.requests();
      return r.length >= 2 ? r : undefined;
    });
    const signatures = delivered.map((r) => r.headers["webhook-signature"]!).flatMap((h) => h.split(" ").map((s) => s.slice(3)));
    await api("events", "GET", `${base}/events`);
    await api("event", "GET", `${base}/events/${ok.json.data.event_id}`);
    await api("attempts", "GET", `${dpath}/attempts`);

    // The custom header's value did reach the receiver (it is sent), and nowhere else.
    expect(delivered.some((r) => r.headers.authorization === otherHeader)).toBe(true);
    const secrets = [...forms(first), ...forms(rotated), signingSecret, account.key, headerValue, otherHeader];
    for (const r of responses) {
      for (const s of secrets) expect(r.text, `${r.label} leaks a secret`).not.toContain(s);
    }
    expect(logs.length).toBeGreaterThan(5);
    const allLogs = logs.join("\n");
    for (const s of [...secrets, ...signatures, header, ...header.split(",").map((p) => p.split("=")[1]!)]) {
      expect(allLogs).not.toContain(s);
    }
    // The ingest key is a credential too: logs name the route, not the key.
    expect(allLogs).not.toContain(ingestPath.slice(4));

    // D1 and the partitions: ciphertext and hashes only.
    const dump = JSON.stringify([
      (await env.DB.prepare("SELECT * FROM sources WHERE account_id = ?").bind(account.id).all()).results,
      (await env.DB.prepare("SELECT d.* FROM destinations d WHERE d.id = ?").bind(destination.id).all()).results,
      (await env.DB.prepare("SELECT * FROM api_keys WHERE account_id = ?").bind(account.id).all()).results,
      (await storedEvents(src.json.data.id)).map((e) => e.headers),
    ]);
    for (const s of secrets) expect(dump).not.toContain(s);
    expect(dump).toContain(await sha256Hex(account.key));
    const row = await env.DB.prepare("SELECT secret_ct, previous_secret_ct FROM destinations WHERE id = ?").bind(destination.id).first<{ secret_ct: string; previous_secret_ct: string }>();
    expect(row!.secret_ct).toMatch(/^v1\.[0-9a-f]{16}\.[\w-]+\.[\w-]+$/);
    expect(row!.previous_secret_ct).toMatch(/^v1\./);
  });

  it("without ENCRYPTION_KEY: a clear 500 and nothing stored in plain text", async () => {
    const account = await createAccount();
    const noKey = envWith({ ENCRYPTION_KEY: undefined });
    const signingSecret = randomSecret();
    const res = await call("POST", "/api/v1/webhooks/sources", {
      key: account.key,
      body: { name: "no key", signing_secret: signingSecret },
      env: noKey,
    });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; message: string; request_id: string } };
    expect(body.error.code).toBe("encryption_unavailable");
    expect(body.error.message).toMatch(/ENCRYPTION_KEY/);
    expect(body.error.request_id).toEqual(expect.any(String));
    expect(await env.DB.prepare("SELECT count(*) AS n FROM sources WHERE account_id = ?").bind(account.id).first("n")).toBe(0);
  });

  it("with a malformed ENCRYPTION_KEY: a clear 500, nothing stored", async () => {
    const account = await createAccount();
    const res = await call("POST", "/api/v1/webhooks/sources", {
      key: account.key,
      body: { name: "bad key", signing_secret: randomSecret() },
      env: envWith({ ENCRYPTION_KEY: "dG9vIHNob3J0" }),
    });
    expect(res.status).toBe(500);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("encryption_unavailable");
    expect(await env.DB.prepare("SELECT count(*) AS n FROM sources WHERE account_id = ?").bind(account.id).first("n")).toBe(0);
  });

  it("a secret this isolate decrypted before still needs its key and its context: remembering it opens nothing", async () => {
    const key = () => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
    const [k1, k2] = [key(), key()];
    const secret = randomSecret();
    const ciphertext = await secretBox(k1).encrypt(secret, "destination:d1:secret");
    expect(await secretBox(k1).decrypt(ciphertext, "destination:d1:secret")).toBe(secret);
    expect(await secretBox(k1).decrypt(ciphertext, "destination:d1:secret")).toBe(secret);
    // Without its key configured, or bound to another row, it does not decrypt.
    await expect(secretBox(k2).decrypt(ciphertext, "destination:d1:secret")).rejects.toThrow(EncryptionUnavailableError);
    await expect(secretBox(k1).decrypt(ciphertext, "destination:d2:secret")).rejects.toThrow(EncryptionUnavailableError);
    // With its key kept as a previous one, it does.
    expect(await secretBox(k2, k1).decrypt(ciphertext, "destination:d1:secret")).toBe(secret);
  });
});
