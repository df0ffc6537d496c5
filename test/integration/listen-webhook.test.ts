/**
 * `krafter listen` runs on plain Node and cannot import the Worker's TypeScript, so its
 * envelope and signing (bin/lib/webhook.mjs) are twins of the Worker's: held here to the
 * Worker's own functions, to what a destination really receives, and to `standardwebhooks`.
 */
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { envelope as workerEnvelope } from "../../src/delivery/envelope";
import { USER_AGENT } from "../../src/delivery/send";
import { generateSecret as workerSecret, signPayload } from "../../src/security/signing";
import { envelope, forwardHeaders, generateSecret, isSecret, payloadJsonOf, sign, USER_AGENT as CLI_USER_AGENT } from "../../bin/lib/webhook.mjs";
import { call, createAccount, createDestination, createSource, eventually, json, mailbox } from "../helpers/api";

const SOURCE = "0190e8a0-0000-7000-8000-000000000001";

/** Payloads as providers send them: the awkward JSON the relay forwards byte for byte, and text. */
const payloads: { raw: string; contentType: string }[] = [
  { raw: '{"id":"evt_1","type":"invoice.paid"}', contentType: "application/json" },
  { raw: '{"n":12345678901234567890,"x":1e400,"y":1.0,"d":1,"d":2,"e":"\\u00e9\\n","deep":[[[{"a":[]}]]]}', contentType: "application/json" },
  { raw: '  [1, 2 , 3]\n', contentType: "application/json" },
  { raw: '"a JSON string"', contentType: "application/json" },
  { raw: "plain text with \"quotes\", \\ backslashes, é, \u0001 and 🎉", contentType: "text/plain" },
  { raw: "\ufeff{\"bom\":true}", contentType: "application/json" },
];

describe("the listener's envelope and signature are the destinations'", () => {
  it("the envelope of each payload, as read back through GET …/events/:event_id, is the Worker's byte for byte", async () => {
    const owner = await createAccount();
    const src = await createSource(owner);
    for (const p of payloads) {
      const res = await call("POST", new URL(src.ingest_url).pathname, { raw: p.raw, headers: { "content-type": p.contentType } });
      expect(res.status).toBe(202);
      const id = (await json(res)).data.event_id as string;
      const detail = await call("GET", `/api/v1/webhooks/sources/${src.id}/events/${id}`, { key: owner.key });
      const text = await detail.text();
      const stored = JSON.parse(text).data as { type: string };
      let isJson = true;
      try {
        JSON.parse(p.raw);
      } catch {
        isJson = false;
      }
      expect(envelope(stored.type, payloadJsonOf(text), src.id)).toBe(workerEnvelope(stored.type, p.raw, isJson, src.id));
    }
  });

  it("a detail whose layout is not the expected one still gives the payload's value", () => {
    expect(payloadJsonOf('{"data":{"payload":{"a":1},"id":"x"}}')).toBe('{"a":1}');
  });

  it("signs as the Worker does, and standardwebhooks verifies the headers with the secret", async () => {
    const secret = generateSecret();
    expect(isSecret(secret)).toBe(true);
    expect(isSecret(workerSecret())).toBe(true);
    expect(isSecret("whsec_short")).toBe(false);
    const body = workerEnvelope("invoice.paid", '{"é":"✓"}', true, SOURCE);
    expect(sign(secret, "evt-id", 1_700_000_000, body)).toBe(await signPayload(secret, "evt-id", 1_700_000_000, body));
    const headers = forwardHeaders(secret, "0190e8a0-1111-7000-8000-000000000002", body);
    expect(() => new Webhook(secret).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(generateSecret()).verify(body, headers)).toThrow();
  });

  it("sends the headers a destination gets, user agent included", async () => {
    expect(CLI_USER_AGENT).toBe(USER_AGENT);
    const owner = await createAccount();
    const src = await createSource(owner);
    const box = await mailbox();
    const dest = await createDestination(owner, src.id, { url: box.url });
    const res = await call("POST", `/api/v1/webhooks/sources/${src.id}/destinations/${dest.id}/test`, { key: owner.key, body: {} });
    expect(res.status).toBe(200);
    const [got] = await eventually(async () => ((await box.requests()).length ? box.requests() : undefined), 5_000, "the test request");
    const relaySet = Object.keys(got!.headers).filter((h) => h === "content-type" || h === "user-agent" || h.startsWith("webhook-") || h.startsWith("krafter-"));
    expect(Object.keys(forwardHeaders(generateSecret(), "id", "{}")).sort()).toEqual(relaySet.sort());
    expect(got!.headers["user-agent"]).toBe(CLI_USER_AGENT);
  });
});
