/**
 * Destinations: who may do what, on every route, and the secrets at rest.
 * Every refusal is the error envelope, never a 500, and leaves the destination as it was.
 */
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { describe, expect, it, vi } from "vitest";
import { base64ToBytes, bytesToBase64, bytesToBase64Url, bytesToHex } from "../../src/security/encoding";
import {
  addKey, call, createAccount, createDestination, createSource, envWith, json, mailbox, expectError, destinationsPath as base } from "../helpers/api";
import { keyCases, sendAs, type GuardedRoute } from "../helpers/key-cases";

const CIPHERTEXT = /^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{40,}$/;



async function row(id: string) {
  return env.DB.prepare("SELECT * FROM destinations WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

async function countFor(sourceId: string) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM destinations WHERE source_id = ?").bind(sourceId).first<{ n: number }>())!.n;
}

/** An account with a source and a destination pointing at a fresh mailbox. */
async function world() {
  const owner = await createAccount();
  const source = await createSource(owner, { name: "guarded" });
  const box = await mailbox();
  const dest = await createDestination(owner, source.id, { url: box.url, event_filter: ["invoice.paid"] });
  return { owner, source, box, dest };
}

type World = Awaited<ReturnType<typeof world>>;

type Route = GuardedRoute<World>;

const routes: Route[] = [
  { name: "POST …/destinations (create)", scope: "webhooks:write", method: "POST", path: (w) => base(w.source.id), body: { url: "https://example.com/new" }, ok: 201 },
  { name: "GET …/destinations (list)", scope: "webhooks:read", method: "GET", path: (w) => base(w.source.id), ok: 200 },
  { name: "GET …/destinations/:id", scope: "webhooks:read", method: "GET", path: (w) => `${base(w.source.id)}/${w.dest.id}`, ok: 200 },
  { name: "PATCH …/destinations/:id", scope: "webhooks:write", method: "PATCH", path: (w) => `${base(w.source.id)}/${w.dest.id}`, body: { enabled: false, url: "https://example.com/moved" }, ok: 200 },
  { name: "DELETE …/destinations/:id", scope: "webhooks:write", method: "DELETE", path: (w) => `${base(w.source.id)}/${w.dest.id}`, ok: 204 },
  { name: "POST …/destinations/:id/test", scope: "webhooks:write", method: "POST", path: (w) => `${base(w.source.id)}/${w.dest.id}/test`, ok: 200 },
];

/** Asserts the world is exactly as it was: the row, the number of destinations, and no request sent. */
async function expectUnharmed(w: World, before: Record<string, unknown> | null) {
  expect(await row(w.dest.id)).toStrictEqual(before);
  expect(await countFor(w.source.id)).toBe(1);
  expect(await w.box.requests()).toHaveLength(0);
}

const send = sendAs<World>;

for (const r of routes) {
  describe(`${r.name} (requires ${r.scope})`, () => {
    keyCases(r, { world, snapshot: (w) => row(w.dest.id), expectUnharmed });

    it("another account's key → 404, and the destination unharmed", async () => {
      const w = await world();
      const stranger = await createAccount();
      const before = await row(w.dest.id);
      const body = await expectError(await send(r, w, stranger.key), 404, "not_found");
      expect(JSON.stringify(body)).not.toContain(w.source.id);
      await expectUnharmed(w, before);
      // The owner still sees it as it was.
      const mine = await json(await call("GET", `${base(w.source.id)}/${w.dest.id}`, { key: w.owner.key }));
      expect(mine.data).toMatchObject({ id: w.dest.id, url: w.box.url, enabled: true, event_filter: ["invoice.paid"] });
    });

    it("another account's key gets the same 404 as for an id that does not exist", async () => {
      const w = await world();
      const stranger = await createAccount();
      const theirs = await expectError(await send(r, w, stranger.key), 404, "not_found");
      const ghost: World = { ...w, source: { ...w.source, id: crypto.randomUUID() } };
      const none = await expectError(await send(r, ghost, w.owner.key), 404, "not_found");
      expect(theirs).toStrictEqual(none);
    });

    it("the right key → success", async () => {
      const w = await world();
      const res = await send(r, w, w.owner.key);
      expect(res.status).toBe(r.ok);
      expect(res.headers.get("x-request-id")).toBeTruthy();
      if (r.name.startsWith("DELETE")) expect(await row(w.dest.id)).toBeNull();
      if (r.name.startsWith("PATCH")) expect((await row(w.dest.id))!).toMatchObject({ enabled: 0, url: "https://example.com/moved" });
      if (r.name.includes("(create)")) expect(await countFor(w.source.id)).toBe(2);
      if (r.name.endsWith("/test")) expect(await w.box.requests()).toHaveLength(1);
    });
  });
}

describe("Scopes", () => {
  it("a write-only key may read too (write implies read)", async () => {
    const w = await world();
    const writer = await addKey(w.owner.id, ["webhooks:write"]);
    expect((await call("GET", base(w.source.id), { key: writer.key })).status).toBe(200);
    expect((await call("GET", `${base(w.source.id)}/${w.dest.id}`, { key: writer.key })).status).toBe(200);
  });

  it("a key with no known scope is refused everywhere", async () => {
    const w = await world();
    const none = await addKey(w.owner.id, []);
    await expectError(await call("GET", base(w.source.id), { key: none.key }), 403, "forbidden");
    await expectError(await call("GET", `${base(w.source.id)}/${w.dest.id}`, { key: none.key }), 403, "forbidden");
  });

  it("another account cannot create a destination under my source, nor list mine", async () => {
    const w = await world();
    const stranger = await createAccount();
    const res = await call("POST", base(w.source.id), { key: stranger.key, body: { url: "https://evil.example.com/" } });
    await expectError(res, 404, "not_found");
    const list = await call("GET", base(w.source.id), { key: stranger.key });
    const body = await expectError(list, 404, "not_found");
    expect(JSON.stringify(body)).not.toContain(w.dest.id);
    expect(await countFor(w.source.id)).toBe(1);
  });
});

describe("Encryption at rest", () => {
  const keyId = async () => {
    const raw = base64ToBytes(env.ENCRYPTION_KEY!);
    return bytesToHex(new Uint8Array(await crypto.subtle.digest("SHA-256", raw)).subarray(0, 8));
  };

  /** Every form in which a whsec_ secret could leak into a stored value. */
  function forms(secret: string): string[] {
    const b64 = secret.slice("whsec_".length);
    const bytes = base64ToBytes(b64);
    return [secret, b64, b64.replace(/=+$/, ""), bytesToHex(bytes), bytesToHex(bytes).toUpperCase(), bytesToBase64Url(bytes), bytesToBase64(bytes)];
  }

  it("secret | string | No | auto | Encrypted at rest.", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "at rest" });
    const given = "whsec_" + bytesToBase64(crypto.getRandomValues(new Uint8Array(32)));
    const withGiven = await createDestination(account, source.id, { url: "https://example.com/a", secret: given });
    const generated = await createDestination(account, source.id, { url: "https://example.com/b" });
    const kid = await keyId();
    for (const d of [withGiven, generated]) {
      const stored = (await row(d.id))!;
      const dump = JSON.stringify(stored);
      for (const f of forms(d.secret)) expect(dump).not.toContain(f);
      expect(stored.secret_ct).toMatch(CIPHERTEXT);
      expect((stored.secret_ct as string).split(".")[1]).toBe(kid);
      expect(stored.previous_secret_ct).toBeNull();
    }
    // The same secret twice gives two different ciphertexts (a fresh IV each time).
    const twin = await createDestination(account, source.id, { url: "https://example.com/c", secret: given });
    expect((await row(twin.id))!.secret_ct).not.toBe((await row(withGiven.id))!.secret_ct);
  });

  it("after a rotation both the new and the previous secret are stored encrypted only", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "rotation at rest" });
    const d = await createDestination(account, source.id, { url: "https://example.com/a" });
    const next = "whsec_" + bytesToBase64(crypto.getRandomValues(new Uint8Array(40)));
    expect((await call("PATCH", `${base(source.id)}/${d.id}`, { key: account.key, body: { secret: next } })).status).toBe(200);
    const stored = (await row(d.id))!;
    const dump = JSON.stringify(stored);
    for (const f of [...forms(d.secret), ...forms(next)]) expect(dump).not.toContain(f);
    expect(stored.secret_ct).toMatch(CIPHERTEXT);
    expect(stored.previous_secret_ct).toMatch(CIPHERTEXT);
  });

  it("a source's signing_secret is stored encrypted only", async () => {
    const account = await createAccount();
    const secret = "whsec_" + bytesToBase64(crypto.getRandomValues(new Uint8Array(32)));
    const source = await createSource(account, { name: "signed", provider: "standard-webhooks", signing_secret: secret });
    const stored = (await env.DB.prepare("SELECT * FROM sources WHERE id = ?").bind(source.id).first<Record<string, unknown>>())!;
    const dump = JSON.stringify(stored);
    for (const f of forms(secret)) expect(dump).not.toContain(f);
    expect(stored.signing_secret_ct).toMatch(CIPHERTEXT);
    expect((stored.signing_secret_ct as string).split(".")[1]).toBe(await keyId());
  });

  it("a ciphertext copied into another destination's row does not decrypt there", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "bound" });
    const box = await mailbox();
    const a = await createDestination(account, source.id, { url: "https://example.com/a" });
    const b = await createDestination(account, source.id, { url: box.url });
    const ctA = (await row(a.id))!.secret_ct;
    await env.DB.prepare("UPDATE destinations SET secret_ct = ? WHERE id = ?").bind(ctA, b.id).run();
    const res = await call("POST", `${base(source.id)}/${b.id}/test`, { key: account.key });
    const body = await expectError(res, 500, "encryption_unavailable");
    expect(body.error.request_id).toBeTruthy();
    expect(await box.requests()).toHaveLength(0);
  });

  it("without ENCRYPTION_KEY, creating a destination is a clear 500 and nothing is stored", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "no key" });
    for (const bad of [undefined, "", "   ", "not base64!", bytesToBase64(new Uint8Array(16))]) {
      const e = envWith({ ENCRYPTION_KEY: bad });
      for (const body of [{ url: "https://example.com/a" }, { url: "https://example.com/b", secret: "whsec_" + bytesToBase64(new Uint8Array(32).fill(9)) }]) {
        const res = await call("POST", base(source.id), { key: account.key, body, env: e });
        const err = await expectError(res, 500, "encryption_unavailable");
        expect(err.error.request_id).toBe(res.headers.get("x-request-id"));
        expect(JSON.stringify(err)).not.toContain("whsec_");
      }
    }
    expect(await countFor(source.id)).toBe(0);
  });

  it("without ENCRYPTION_KEY, rotating a secret is a clear 500 and the row is unchanged", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "no key patch" });
    const d = await createDestination(account, source.id, { url: "https://example.com/a" });
    const before = await row(d.id);
    const res = await call("PATCH", `${base(source.id)}/${d.id}`, {
      key: account.key,
      body: { secret: "whsec_" + bytesToBase64(new Uint8Array(32).fill(3)), enabled: false },
      env: envWith({ ENCRYPTION_KEY: undefined }),
    });
    await expectError(res, 500, "encryption_unavailable");
    expect(await row(d.id)).toStrictEqual(before);
  });

  it("without ENCRYPTION_KEY, a source with a signing_secret is refused and not stored", async () => {
    const account = await createAccount();
    const res = await call("POST", "/api/v1/webhooks/sources", {
      key: account.key,
      body: { name: "no key", signing_secret: "whsec_" + bytesToBase64(new Uint8Array(32).fill(5)) },
      env: envWith({ ENCRYPTION_KEY: undefined }),
    });
    await expectError(res, 500, "encryption_unavailable");
    const n = await env.DB.prepare("SELECT count(*) AS n FROM sources WHERE account_id = ?").bind(account.id).first<{ n: number }>();
    expect(n!.n).toBe(0);
  });

  it("an old key listed in ENCRYPTION_KEYS_PREVIOUS still decrypts after a key rotation", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "key rotation" });
    const box = await mailbox();
    const d = await createDestination(account, source.id, { url: box.url });
    const newKey = bytesToBase64(crypto.getRandomValues(new Uint8Array(32)));
    const rotated = envWith({ ENCRYPTION_KEY: newKey, ENCRYPTION_KEYS_PREVIOUS: env.ENCRYPTION_KEY });
    const res = await call("POST", `${base(source.id)}/${d.id}/test`, { key: account.key, env: rotated });
    expect(res.status).toBe(200);
    const [req] = await box.requests();
    expect(() => new Webhook(d.secret).verify(req!.body, req!.headers)).not.toThrow();
    // Without the old key the stored secret is unreadable: a clear 500, nothing sent.
    const lost = await call("POST", `${base(source.id)}/${d.id}/test`, { key: account.key, env: envWith({ ENCRYPTION_KEY: newKey }) });
    await expectError(lost, 500, "encryption_unavailable");
    expect(await box.requests()).toHaveLength(1);
  });
});

describe("Private destinations (PRODUCT.md)", () => {
  it("ALLOW_PRIVATE_DESTINATIONS=true lets local development forward to http://localhost:3000", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "local" });
    const res = await call("POST", base(source.id), {
      key: account.key,
      body: { url: "http://localhost:3000/webhooks" },
      env: envWith({ ENVIRONMENT: "development", ALLOW_PRIVATE_DESTINATIONS: "true" }),
    });
    expect(res.status).toBe(201);
    const refused = await call("POST", base(source.id), {
      key: account.key,
      body: { url: "http://localhost:3000/webhooks" },
      env: envWith({ ENVIRONMENT: "development", ALLOW_PRIVATE_DESTINATIONS: "false" }),
    });
    await expectError(refused, 422, "validation_failed");
    expect(await countFor(source.id)).toBe(1);
  });

  it("ALLOW_PRIVATE_DESTINATIONS=true in production: the Worker refuses to serve (500), nothing stored", async () => {
    const account = await createAccount();
    const source = await createSource(account, { name: "prod" });
    const unsafe = envWith({ ENVIRONMENT: "production", ALLOW_PRIVATE_DESTINATIONS: "true" });
    const res = await call("POST", base(source.id), { key: account.key, body: { url: "http://127.0.0.1:3000/" }, env: unsafe });
    const body = await expectError(res, 500, "misconfigured");
    expect(body.error.request_id).toBeTruthy();
    expect(JSON.stringify(body)).not.toContain("ALLOW_PRIVATE");
    await expectError(await call("GET", base(source.id), { key: account.key, env: unsafe }), 500, "misconfigured");
    expect(await countFor(source.id)).toBe(0);
  });
});

describe("No secret in any response but the 201", () => {
  it("list, get, update and test never carry the secret", async () => {
    const w = await world();
    const texts = [
      await (await call("GET", base(w.source.id), { key: w.owner.key })).text(),
      await (await call("GET", `${base(w.source.id)}/${w.dest.id}`, { key: w.owner.key })).text(),
      await (await call("PATCH", `${base(w.source.id)}/${w.dest.id}`, { key: w.owner.key, body: { event_filter: [] } })).text(),
      await (await call("POST", `${base(w.source.id)}/${w.dest.id}/test`, { key: w.owner.key })).text(),
    ];
    const b64 = w.dest.secret.slice("whsec_".length);
    for (const t of texts) {
      expect(t).not.toContain(b64);
      expect(t).not.toContain('"secret"');
    }
  });

  it("the secret never reaches the receiver in the clear", async () => {
    const w = await world();
    expect((await call("POST", `${base(w.source.id)}/${w.dest.id}/test`, { key: w.owner.key })).status).toBe(200);
    const [req] = await w.box.requests();
    const b64 = w.dest.secret.slice("whsec_".length);
    expect(JSON.stringify(req)).not.toContain(b64);
  });
});

describe("Logs", () => {
  it("no secret, key or signature appears in any log line", async () => {
    const lines: string[] = [];
    const capture = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    const spies = [vi.spyOn(console, "log").mockImplementation(capture), vi.spyOn(console, "warn").mockImplementation(capture), vi.spyOn(console, "error").mockImplementation(capture)];
    try {
      const account = await createAccount();
      const source = await createSource(account, { name: "logs", provider: "standard-webhooks", signing_secret: "whsec_" + bytesToBase64(new Uint8Array(32).fill(77)) });
      const box = await mailbox({ repeat: { status: 500 } });
      const given = "whsec_" + bytesToBase64(crypto.getRandomValues(new Uint8Array(32)));
      const d = await createDestination(account, source.id, { url: box.url, secret: given });
      const rotated = "whsec_" + bytesToBase64(crypto.getRandomValues(new Uint8Array(32)));
      expect((await call("PATCH", `${base(source.id)}/${d.id}`, { key: account.key, body: { secret: rotated } })).status).toBe(200);
      expect((await call("POST", `${base(source.id)}/${d.id}/test`, { key: account.key })).status).toBe(422);
      await call("POST", base(source.id), { key: account.key, body: { url: "https://example.com/x", secret: given }, env: envWith({ ENCRYPTION_KEY: undefined }) });
      await call("POST", base(source.id), { key: account.key, body: { url: "https://example.com/x", secret: "whsec_short" } });
      const [req] = await box.requests();
      const forbidden = [
        given,
        given.slice(6),
        rotated.slice(6),
        bytesToBase64(new Uint8Array(32).fill(77)),
        account.key,
        account.key.slice(4),
        ...req!.headers["webhook-signature"]!.split(" ").map((s) => s.slice(3)),
        new URL(source.ingest_url).pathname,
        env.ENCRYPTION_KEY!,
      ];
      expect(lines.length).toBeGreaterThan(3);
      for (const line of lines) for (const f of forbidden) expect(line).not.toContain(f);
    } finally {
      for (const s of spies) s.mockRestore();
    }
  });
});
