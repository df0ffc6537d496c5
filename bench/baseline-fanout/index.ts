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
 *   contract requires. No retries, no other state, one queue hop. Within Cloudflare's
 *   published limits, as the relay must be: an invocation has at most six connections
 *   waiting for response headers (CONNECTIONS_PER_INVOCATION; wrangler dev does not
 *   enforce it, Cloudflare queues the seventh), and the events go to as many queues as the
 *   relay binds (QUEUE, QUEUE_1 … QUEUE_3, by the event id), each one carrying at most
 *   5,000 messages a second. Under wrangler dev a queue runs one consumer batch at a time
 *   (max_batch_timeout = 0), so the floor, like the relay, has four batches in flight.
 * - `POST /floor-unlimited`: the same with every attempt of a batch at once, past the
 *   connection limit: what wrangler dev allows and Cloudflare does not (reported beside).
 * - `GET`: 200, the benchmark's readiness check.
 */
import { DurableObject } from "cloudflare:workers";

/** Connections an invocation may have waiting for response headers (Workers platform limits). */
const CONNECTIONS_PER_INVOCATION = 6;

type FloorMessage = { id: string; unlimited?: boolean };

interface Env {
  FLOOR_STORE: DurableObjectNamespace<FloorStore>;
  QUEUE: Queue<FloorMessage>;
  QUEUE_1: Queue<FloorMessage>;
  QUEUE_2: Queue<FloorMessage>;
  QUEUE_3: Queue<FloorMessage>;
  /** JSON arrays of destination URLs. */
  TARGETS: string;
  FLOOR_TARGETS: string;
  /** the targets of /floor-unlimited (its own, so the two are verified apart) */
  UNLIMITED_TARGETS?: string;
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

let cached: { targets: string[]; floorTargets: string[]; unlimitedTargets: string[]; key: Promise<CryptoKey> } | undefined;

function setup(env: Env) {
  if (!cached) {
    const raw = Uint8Array.from(atob(env.SECRET.slice("whsec_".length)), (c) => c.charCodeAt(0));
    cached = {
      targets: JSON.parse(env.TARGETS) as string[],
      floorTargets: JSON.parse(env.FLOOR_TARGETS ?? "[]") as string[],
      unlimitedTargets: JSON.parse(env.UNLIMITED_TARGETS ?? "[]") as string[],
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

/** At most `size` holders at once; the rest wait in order. */
class Semaphore {
  private held = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly size: number) {}
  async acquire(): Promise<void> {
    if (this.held < this.size) {
      this.held++;
      return;
    }
    await new Promise<void>((go) => this.waiting.push(go));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.held--;
  }
}

/**
 * One signed POST; resolves to its status (0: transport error). With `connections`, it
 * holds one of them until the response headers arrive (what the platform limit counts).
 */
async function post(url: string, key: CryptoKey, id: string, body: string, connections?: Semaphore): Promise<number> {
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = {
    "content-type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": await sign(key, id, timestamp, body),
  };
  try {
    await connections?.acquire();
    let res: Response;
    try {
      res = await fetch(url, { method: "POST", headers, body });
    } finally {
      connections?.release();
    }
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** The queue of an event: by its id, as the relay spreads its messages over its queues. */
function queueOf(env: Env, id: string): Queue<FloorMessage> {
  const queues = [env.QUEUE, env.QUEUE_1, env.QUEUE_2, env.QUEUE_3];
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return queues[h % queues.length]!;
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
    const path = new URL(request.url).pathname;
    if (path === "/floor" || path === "/floor-unlimited") {
      const started = Date.now();
      await floorStore(env).store(id, body);
      await queueOf(env, id).send(path === "/floor" ? { id } : { id, unlimited: true });
      logLine({ msg: "request", request_id: crypto.randomUUID(), method: "POST", path, status: 202, duration_ms: Date.now() - started });
    } else {
      ctx.waitUntil(key.then((k) => Promise.all(targets.map((url) => post(url, k, id, body)))));
    }
    return Response.json({ data: { event_id: id } }, { status: 202 });
  },

  async queue(batch: MessageBatch<FloorMessage>, env: Env): Promise<void> {
    const { floorTargets, unlimitedTargets, key } = setup(env);
    const k = await key;
    // This invocation's connections.
    const connections = new Semaphore(CONNECTIONS_PER_INVOCATION);
    await Promise.all(
      batch.messages.map(async (m) => {
        const payload = await floorStore(env).read(m.body.id);
        if (payload === null) return m.ack();
        await Promise.all(
          (m.body.unlimited ? unlimitedTargets : floorTargets).map(async (url, i) => {
            const started = Date.now();
            const status = await post(url, k, m.body.id, payload, m.body.unlimited ? undefined : connections);
            await floorStore(env).recordAttempt(m.body.id, i, status, Date.now() - started);
            logLine({ msg: "delivery_attempt", event_id: m.body.id, destination: i, status_code: status, duration_ms: Date.now() - started });
          }),
        );
        m.ack();
      }),
    );
  },
} satisfies ExportedHandler<Env, FloorMessage>;
