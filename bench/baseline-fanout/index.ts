/**
 * The fan-out baselines (see wrangler.toml beside this file). Both sign each forward
 * the Standard Webhooks way with SECRET, so the benchmark verifies their deliveries
 * exactly as it verifies the relay's, and return the webhook-id as `event_id`.
 *
 * - `POST /` (direct): the runtime's own limit for forwarding, with no storage, no queue
 *   and no retries. It answers 202 at once (as the relay does) and, after the response,
 *   POSTs the body to each URL of TARGETS.
 * - `POST /floor`: the least a relay that keeps the product's records must do on this
 *   runtime, with its records in a SQLite-backed Durable Object as the relay's are: the
 *   event stored (one call to the object, one insert) and queued before the 202; the
 *   consumer reads it (one call), POSTs it to each URL of FLOOR_TARGETS and records each
 *   attempt (one call, one insert, per delivery, as every attempt is recorded), then
 *   acknowledges; one structured log line per request and per attempt, as the product's
 *   contract requires. No retries, no other state, one queue hop.
 * - `GET`: 200, the benchmark's readiness check.
 */
import { DurableObject } from "cloudflare:workers";

interface Env {
  FLOOR_STORE: DurableObjectNamespace<FloorStore>;
  QUEUE: Queue<{ id: string }>;
  /** JSON arrays of destination URLs. */
  TARGETS: string;
  FLOOR_TARGETS: string;
  /** `whsec_` + base64 key. */
  SECRET: string;
}

/**
 * The floor's records: one SQLite-backed object for every event, as the relay's
 * end-to-end step sends everything to one source (one partition until it splits).
 */
export class FloorStore extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Synchronous and idempotent: the tables exist before the first call is served.
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, payload TEXT NOT NULL, received_at INTEGER NOT NULL)");
    ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS attempts (id TEXT PRIMARY KEY, event_id TEXT NOT NULL, destination INTEGER NOT NULL, status INTEGER NOT NULL, duration_ms INTEGER NOT NULL, created_at INTEGER NOT NULL)",
    );
  }

  store(id: string, payload: string): void {
    this.ctx.storage.sql.exec("INSERT INTO events (id, payload, received_at) VALUES (?, ?, ?)", id, payload, Date.now());
  }

  read(id: string): string | null {
    const rows = this.ctx.storage.sql.exec<{ payload: string }>("SELECT payload FROM events WHERE id = ?", id).toArray();
    return rows[0]?.payload ?? null;
  }

  recordAttempt(eventId: string, destination: number, status: number, durationMs: number): void {
    this.ctx.storage.sql.exec(
      "INSERT INTO attempts (id, event_id, destination, status, duration_ms, created_at) VALUES (?, ?, ?, ?, ?, ?)",
      crypto.randomUUID(),
      eventId,
      destination,
      status,
      durationMs,
      Date.now(),
    );
  }
}

const floorStore = (env: Env) => env.FLOOR_STORE.getByName("floor");

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
      await floorStore(env).store(id, body);
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
        const payload = await floorStore(env).read(m.body.id);
        if (payload === null) return m.ack();
        await Promise.all(
          floorTargets.map(async (url, i) => {
            const started = Date.now();
            const status = await post(url, k, m.body.id, payload);
            await floorStore(env).recordAttempt(m.body.id, i, status, Date.now() - started);
            logLine({ msg: "delivery_attempt", event_id: m.body.id, destination: i, status_code: status, duration_ms: Date.now() - started });
          }),
        );
        m.ack();
      }),
    );
  },
} satisfies ExportedHandler<Env, { id: string }>;
