/**
 * Destination and source secrets at rest and in transit: stored as AES-GCM ciphertext
 * only (bound to their row, under ENCRYPTION_KEY, readable after a key rotation with
 * ENCRYPTION_KEYS_PREVIOUS), a clear 500 without a usable key, never in a response but
 * the 201 of a create, never in the clear at the receiver, never in a log line.
 * Who may call which route is the security matrix's (security-matrix.test.ts).
 *
 * The stored rows are read with raw SQL on purpose: what is checked is the stored form
 * (every column as D1 holds it), so no mapping may hide a plaintext copy.
 */
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { describe, expect, it, vi } from "vitest";
import type { Env } from "../../src/config";
import { base64ToBytes, bytesToBase64, bytesToBase64Url, bytesToHex } from "../../src/security/encoding";
import { clientFor, createAccount, createDestination, createSource, destinationsApi, envWith, expectError, mailbox, setDestination, type Account } from "../helpers/api";

const CIPHERTEXT = /^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{40,}$/;

async function row(id: string) {
  return env.DB.prepare("SELECT * FROM destinations WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

async function countFor(sourceId: string) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM destinations WHERE source_id = ?").bind(sourceId).first<{ n: number }>())!.n;
}

const dests = (a: Pick<Account, "key">, e?: Env) => destinationsApi(clientFor(a, e ? { env: e } : {}));
const testIt = (a: Pick<Account, "key">, sourceId: string, id: string, e?: Env) => dests(a, e)[":id"].test.$post({ param: { source_id: sourceId, id } });

/** An account with a source and a destination pointing at a fresh mailbox. */
async function world() {
  const owner = await createAccount();
  const source = await createSource(owner, { name: "guarded" });
  const box = await mailbox();
  const dest = await createDestination(owner, source.id, { url: box.url, event_filter: ["invoice.paid"] });
  return { owner, source, box, dest };
}

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
    expect((await dests(account)[":id"].$patch({ param: { source_id: source.id, id: d.id }, json: { secret: next } })).status).toBe(200);
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
    await setDestination(b.id, { secretCiphertext: ctA as string });
    const res = await testIt(account, source.id, b.id);
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
        const res = await dests(account, e).$post({ param: { source_id: source.id }, json: body });
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
    const res = await dests(account, envWith({ ENCRYPTION_KEY: undefined }))[":id"].$patch({
      param: { source_id: source.id, id: d.id },
      json: { secret: "whsec_" + bytesToBase64(new Uint8Array(32).fill(3)), enabled: false },
    });
    await expectError(res, 500, "encryption_unavailable");
    expect(await row(d.id)).toStrictEqual(before);
  });

  it("without ENCRYPTION_KEY, a source with a signing_secret is refused and not stored", async () => {
    const account = await createAccount();
    const res = await clientFor(account, { env: envWith({ ENCRYPTION_KEY: undefined }) }).api.v1.webhooks.sources.$post({
      json: { name: "no key", signing_secret: "whsec_" + bytesToBase64(new Uint8Array(32).fill(5)) },
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
    const res = await testIt(account, source.id, d.id, rotated);
    expect(res.status).toBe(200);
    const [req] = await box.requests();
    expect(() => new Webhook(d.secret).verify(req!.body, req!.headers)).not.toThrow();
    // Without the old key the stored secret is unreadable: a clear 500, nothing sent.
    const lost = await testIt(account, source.id, d.id, envWith({ ENCRYPTION_KEY: newKey }));
    await expectError(lost, 500, "encryption_unavailable");
    expect(await box.requests()).toHaveLength(1);
  });
});

describe("No secret in any response but the 201", () => {
  it("list, get, update and test never carry the secret", async () => {
    const w = await world();
    const d = dests(w.owner);
    const param = { source_id: w.source.id, id: w.dest.id };
    const texts = [
      await (await d.$get({ param: { source_id: w.source.id }, query: {} })).text(),
      await (await d[":id"].$get({ param })).text(),
      await (await d[":id"].$patch({ param, json: { event_filter: [] } })).text(),
      await (await d[":id"].test.$post({ param })).text(),
    ];
    const b64 = w.dest.secret.slice("whsec_".length);
    for (const t of texts) {
      expect(t).not.toContain(b64);
      expect(t).not.toContain('"secret"');
    }
  });

  it("the secret never reaches the receiver in the clear", async () => {
    const w = await world();
    expect((await testIt(w.owner, w.source.id, w.dest.id)).status).toBe(200);
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
      expect((await dests(account)[":id"].$patch({ param: { source_id: source.id, id: d.id }, json: { secret: rotated } })).status).toBe(200);
      expect((await testIt(account, source.id, d.id)).status).toBe(422);
      await dests(account, envWith({ ENCRYPTION_KEY: undefined })).$post({ param: { source_id: source.id }, json: { url: "https://example.com/x", secret: given } });
      // A secret too short to be one: refused (422), and not logged either.
      await dests(account).$post({ param: { source_id: source.id }, json: { url: "https://example.com/x", secret: "whsec_short" } });
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
