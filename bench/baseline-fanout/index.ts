/**
 * The fan-out baselines (see wrangler.toml beside this file). Both sign each forward
 * the Standard Webhooks way with SECRET, so the benchmark verifies their deliveries
 * exactly as it verifies the relay's, and return the webhook-id as `event_id`.
 *
 * - `POST /` (direct): the runtime's own limit for forwarding, with no storage, no queue
 *   and no retries. It answers 202 at once (as the relay does) and, after the response,
 *   POSTs the body to each URL of TARGETS.
 * - `POST /floor`: the least a relay that keeps the product's records must do on this
 *   runtime: the event stored (one D1 insert) and queued before the 202; the consumer
 *   POSTs it to each URL of FLOOR_TARGETS and records each attempt (one D1 insert per
 *   delivery, as every attempt is recorded), then acknowledges; one structured log line
 *   per request and per attempt, as the product's contract requires. No retries, no
 *   other state, one queue hop.
 * - `GET`: 200, the benchmark's readiness check.
 */
interface Env {
  DB: D1Database;
  QUEUE: Queue<{ id: string }>;
  /** JSON arrays of destination URLs. */
  TARGETS: string;
  FLOOR_TARGETS: string;
  /** `whsec_` + base64 key. */
  SECRET: string;
}

let cached: { targets: string[]; floorTargets: string[]; key: Promise<CryptoKey> } | undefined;

function setup(env: Env) {
  if (!cached) {
    const raw = Uint8Array.from(atob(env.SECRET.slice("whsec_".length)), (c) => c.charCodeAt(0));
    cached = {
      targets: JSON.parse(env.TARGETS) as string[],
      floorTargets: JSON.parse(env.FLOOR_TARGETS ?? "[]") as string[],
      key: crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
    };
  }
  return cached;
}

async function sign(key: CryptoKey, id: string, timestamp: number, body: string): Promise<string> {
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${timestamp}.${body}`)));
  let bin = "";
  for (const b of mac) bin += String.fromCharCode(b);
  return `v1,${btoa(bin)}`;
}

/** One signed POST; resolves to its status (0: transport error). */
async function post(url: string, key: CryptoKey, id: string, body: string): Promise<number> {
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = {
    "content-type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": await sign(key, id, timestamp, body),
  };
  try {
    const res = await fetch(url, { method: "POST", headers, body });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** One structured JSON line, as the relay's src/log.ts writes it. */
function logLine(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ level: "info", time: new Date().toISOString(), ...fields }));
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    if (request.method === "GET") return new Response("ok");
    const { targets, key } = setup(env);
    const body = await request.text();
    const id = crypto.randomUUID();
    if (new URL(request.url).pathname === "/floor") {
      const started = Date.now();
      await env.DB.prepare("INSERT INTO events (id, payload, received_at) VALUES (?, ?, ?)").bind(id, body, Date.now()).run();
      await env.QUEUE.send({ id });
      logLine({ msg: "request", request_id: crypto.randomUUID(), method: "POST", path: "/floor", status: 202, duration_ms: Date.now() - started });
    } else {
      ctx.waitUntil(key.then((k) => Promise.all(targets.map((url) => post(url, k, id, body)))));
    }
    return Response.json({ data: { event_id: id } }, { status: 202 });
  },

  async queue(batch: MessageBatch<{ id: string }>, env: Env): Promise<void> {
    const { floorTargets, key } = setup(env);
    const k = await key;
    await Promise.all(
      batch.messages.map(async (m) => {
        const event = await env.DB.prepare("SELECT payload FROM events WHERE id = ?").bind(m.body.id).first<{ payload: string }>();
        if (!event) return m.ack();
        await Promise.all(
          floorTargets.map(async (url, i) => {
            const started = Date.now();
            const status = await post(url, k, m.body.id, event.payload);
            await env.DB.prepare("INSERT INTO attempts (id, event_id, destination, status, duration_ms, created_at) VALUES (?, ?, ?, ?, ?, ?)")
              .bind(crypto.randomUUID(), m.body.id, i, status, Date.now() - started, Date.now())
              .run();
            logLine({ msg: "delivery_attempt", event_id: m.body.id, destination: i, status_code: status, duration_ms: Date.now() - started });
          }),
        );
        m.ack();
      }),
    );
  },
} satisfies ExportedHandler<Env, { id: string }>;
