/**
 * Talking to a running relay the way a user does: the REST API with a key, and the
 * ingest URL with a provider's request.
 */
import { createHmac, randomUUID } from "node:crypto";
import { run } from "../../tools/process.ts";
import { runApiKey } from "../../tools/wrangler.ts";

export class RelayClient {
  readonly origin: string;
  readonly key: string;
  constructor(origin: string, key: string) {
    this.origin = origin;
    this.key = key;
  }

  /**
   * `npm run api-key -- create` against a state directory (the relay need not be running).
   * `script`: another checkout's scripts/api-key.mjs (it applies that checkout's own D1
   * migrations first, as this one's would apply ours).
   */
  static async newKey(persistTo: string, script?: string, account = "bench"): Promise<string> {
    const args = ["create", "--account", account, "--scopes", "webhooks:read,webhooks:write"];
    const r = script ? await run(process.execPath, [script, ...args, "--persist-to", persistTo]) : await runApiKey(args, persistTo);
    const key = r.stdout.trimEnd().split("\n").at(-1) ?? "";
    if (r.code !== 0 || !key.startsWith("krf_")) throw new Error(`api-key create failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    return key;
  }

  async api<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.origin}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${this.key}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** A source; returns its id and its ingest URL on this origin. */
  async source(name: string, provider = "generic", signingSecret?: string): Promise<{ id: string; ingestUrl: string }> {
    const { data } = await this.api<{ data: { id: string; ingest_url: string } }>("POST", "/webhooks/sources", {
      name,
      provider,
      ...(signingSecret ? { signing_secret: signingSecret } : {}),
    });
    return { id: data.id, ingestUrl: this.origin + new URL(data.ingest_url).pathname };
  }

  /** A destination forwarding everything to `url`; returns its id and signing secret. */
  async destination(sourceId: string, url: string): Promise<{ id: string; secret: string }> {
    const { data } = await this.api<{ data: { id: string; secret: string } }>("POST", `/webhooks/sources/${sourceId}/destinations`, { url });
    return data;
  }
}

/** The body the relay forwards for an event (src/delivery/deliver.ts `envelope`). */
export function envelope(type: string, payload: string, sourceId: string): string {
  let data: unknown = payload;
  try {
    data = JSON.parse(payload);
  } catch {
    // forwarded as text
  }
  return JSON.stringify({ event: type, data, source_id: sourceId });
}

/** Standard Webhooks headers for an incoming request, as a provider would sign it. */
export function standardWebhooksHeaders(secret: string, body: string): Record<string, string> {
  const id = `msg_${randomUUID()}`;
  const ts = String(Math.floor(Date.now() / 1000));
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const sig = createHmac("sha256", key).update(`${id}.${ts}.${body}`).digest("base64");
  return { "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": `v1,${sig}` };
}

/** A realistic provider event (about 790 bytes of JSON), unique per `seq`. */
export function samplePayload(run: string, seq: number): string {
  return JSON.stringify({
    id: `evt_${run}_${seq}`,
    object: "event",
    type: "invoice.paid",
    created: 1_780_000_000 + seq,
    livemode: false,
    data: {
      object: {
        id: `in_${run}_${seq}`,
        object: "invoice",
        amount_due: 4200 + seq,
        amount_paid: 4200 + seq,
        currency: "eur",
        customer: `cus_${(seq * 7919).toString(36)}`,
        customer_email: `customer${seq}@example.com`,
        status: "paid",
        lines: {
          object: "list",
          data: Array.from({ length: 3 }, (_, i) => ({
            id: `il_${seq}_${i}`,
            amount: 1400,
            description: `Seat ${i + 1} × Pro plan (monthly) — Zürich`,
            period: { start: 1_780_000_000, end: 1_782_592_000 },
          })),
        },
        metadata: { order: `ord_${seq}`, note: "benchmark ✓" },
      },
    },
  });
}

/** The same event padded to about `bytes` bytes of JSON (a larger provider payload), unique per `seq`. */
export function paddedPayload(run: string, seq: number, bytes: number): string {
  const base = JSON.parse(samplePayload(run, seq)) as Record<string, unknown>;
  const without = Buffer.byteLength(JSON.stringify({ ...base, padding: "" }));
  return JSON.stringify({ ...base, padding: "x".repeat(Math.max(0, bytes - without)) });
}
