/**
 * Signing of what Krafter sends, checked against the Standard Webhooks published test
 * vector and against the `standardwebhooks` library as an independent verifier.
 */
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { bytesToBase64 } from "../../src/security/encoding";
import {
  generateSecret,
  secretKeyBytes,
  signedHeaders,
  signPayload,
} from "../../src/security/signing";

const VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TS = 1614265330;
const VECTOR_BODY = '{"test": 2432232314}';
const VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const secretOf = (bytes: number, fill = 7) => "whsec_" + bytesToBase64(new Uint8Array(bytes).fill(fill));
const nowSeconds = () => Math.floor(Date.now() / 1000);

describe("signPayload", () => {
  it("matches the Standard Webhooks published test vector", async () => {
    expect(await signPayload(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)).toBe(VECTOR_SIGNATURE);
  });

  it("matches the standardwebhooks library's own signature for the same input", async () => {
    const theirs = new Webhook(VECTOR_SECRET).sign(VECTOR_ID, new Date(VECTOR_TS * 1000), VECTOR_BODY);
    expect(await signPayload(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)).toBe(theirs);
  });

  it("changes when any of id, timestamp, body or secret changes", async () => {
    const base = await signPayload(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY);
    const variants = await Promise.all([
      signPayload(VECTOR_SECRET, VECTOR_ID + "x", VECTOR_TS, VECTOR_BODY),
      signPayload(VECTOR_SECRET, VECTOR_ID, VECTOR_TS + 1, VECTOR_BODY),
      signPayload(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY + " "),
      signPayload(secretOf(32), VECTOR_ID, VECTOR_TS, VECTOR_BODY),
    ]);
    for (const v of variants) {
      expect(v).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
      expect(v).not.toBe(base);
    }
  });

  it("refuses a value that is not a whsec_ secret", async () => {
    await expect(signPayload("not-a-secret", VECTOR_ID, VECTOR_TS, VECTOR_BODY)).rejects.toThrow();
  });
});

describe("signedHeaders, verified by the standardwebhooks library", () => {
  it("one secret: the three headers verify and the body comes back", async () => {
    const secret = generateSecret();
    const body = JSON.stringify({ event: "invoice.paid", data: { id: "in_1", amount: 42 }, source_id: "s" });
    const headers = await signedHeaders([secret], "msg_one", nowSeconds(), body);
    expect(Object.keys(headers).sort()).toEqual(["webhook-id", "webhook-signature", "webhook-timestamp"]);
    expect(headers["webhook-id"]).toBe("msg_one");
    expect(headers["webhook-timestamp"]).toMatch(/^\d+$/);
    expect(headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(new Webhook(secret).verify(body, { ...headers })).toEqual(JSON.parse(body));
  });

  it("one secret: a tampered body, another secret or another id does not verify", async () => {
    const secret = generateSecret();
    const body = '{"event":"x","data":{},"source_id":"s"}';
    const headers = await signedHeaders([secret], "msg_two", nowSeconds(), body);
    expect(() => new Webhook(secret).verify(body.replace("x", "y"), { ...headers })).toThrow();
    expect(() => new Webhook(generateSecret()).verify(body, { ...headers })).toThrow();
    expect(() => new Webhook(secret).verify(body, { ...headers, "webhook-id": "msg_other" })).toThrow();
  });

  it("two secrets: two space-separated signatures, newest first, each verifiable with its own secret", async () => {
    const newer = secretOf(32, 1);
    const older = secretOf(48, 2);
    const body = '{"event":"test","data":{"n":1},"source_id":"s"}';
    const ts = nowSeconds();
    const headers = await signedHeaders([newer, older], "msg_rot", ts, body);
    const parts = headers["webhook-signature"].split(" ");
    expect(parts).toHaveLength(2);
    expect(parts[0]).toBe(await signPayload(newer, "msg_rot", ts, body));
    expect(parts[1]).toBe(await signPayload(older, "msg_rot", ts, body));
    expect(new Webhook(newer).verify(body, { ...headers })).toEqual(JSON.parse(body));
    expect(new Webhook(older).verify(body, { ...headers })).toEqual(JSON.parse(body));
    expect(() => new Webhook(secretOf(32, 3)).verify(body, { ...headers })).toThrow();
  });

  it("secrets of 24 and 64 bytes sign verifiably too", async () => {
    for (const secret of [secretOf(24), secretOf(64)]) {
      const body = '{"ok":true}';
      const headers = await signedHeaders([secret], "msg_len", nowSeconds(), body);
      expect(new Webhook(secret).verify(body, { ...headers })).toEqual({ ok: true });
    }
  });
});

describe("secrets", () => {
  it("a generated secret is whsec_ + base64 of 32 random bytes", () => {
    const a = generateSecret();
    const b = generateSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(secretKeyBytes(a)).toHaveLength(32);
    expect(a).not.toBe(b);
  });

  it("accepts whsec_ + base64 of 24 to 64 bytes, nothing else", () => {
    expect(secretKeyBytes(secretOf(24))).toHaveLength(24);
    expect(secretKeyBytes(secretOf(64))).toHaveLength(64);
    expect(secretKeyBytes(VECTOR_SECRET)).toHaveLength(24);
    expect(secretKeyBytes(secretOf(23))).toBeNull();
    expect(secretKeyBytes(secretOf(65))).toBeNull();
    expect(secretKeyBytes(secretOf(32).slice("whsec_".length))).toBeNull();
    expect(secretKeyBytes("whsec_!!!not*base64!!!!!!!!!!!!!!!!!!!!!!!")).toBeNull();
    expect(secretKeyBytes("WHSEC_" + secretOf(32).slice(6))).toBeNull();
    expect(secretKeyBytes("whsec_")).toBeNull();
  });
});
