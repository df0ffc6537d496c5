/**
 * The ingest baselines (see wrangler.toml beside this file).
 *
 * - `POST /bare`: reads the whole body (as the relay must) and answers 202 with a JSON
 *   body of the relay's shape. What the runtime costs with no relay at all.
 * - `POST /logged`: the bare Worker plus the one structured JSON log line per request
 *   the product's contract requires (PRODUCT.md): what that line alone costs here.
 * - `POST /floor`: the least any implementation of the relay's ingest contract does on
 *   this runtime before answering, now that events live in SQLite-backed Durable Objects
 *   ("202 only once the event is durable and its forwarding guaranteed", one log line
 *   per request): one call to a Durable Object that inserts the event into its SQLite,
 *   one queue send, one log line, nothing else. No D1: the relay reads its sources from
 *   a per-isolate cache. Its queue consumer only acknowledges.
 * - `GET`: 200, the benchmark's readiness check (as `GET /` is the relay's).
 */
import { DurableObject } from "cloudflare:workers";

interface Env {
  FLOOR_STORE: DurableObjectNamespace<FloorStore>;
  QUEUE: Queue<{ id: string }>;
}

/**
 * The floor's storage: one SQLite-backed object holding every event, as the relay's
 * ingest step sends everything to one source (one partition until it splits).
 */
export class FloorStore extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Synchronous and idempotent: the table exists before the first call is served.
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, payload TEXT NOT NULL, received_at INTEGER NOT NULL)");
  }

  /** Inserts one event; returns its id. */
  insert(payload: string): string {
    const id = crypto.randomUUID();
    this.ctx.storage.sql.exec("INSERT INTO events (id, payload, received_at) VALUES (?, ?, ?)", id, payload, Date.now());
    return id;
  }
}

/** The relay's request line (src/log.ts and the middleware in src/app.ts), field for field. */
function requestLine(path: string, status: number, started: number): void {
  console.log(
    JSON.stringify({
      level: "info",
      msg: "request",
      time: new Date().toISOString(),
      request_id: crypto.randomUUID(),
      method: "POST",
      path,
      status,
      duration_ms: Date.now() - started,
    }),
  );
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    if (request.method === "GET") return new Response("ok");
    const started = Date.now();
    const path = new URL(request.url).pathname;
    if (path !== "/floor") {
      const body = await request.arrayBuffer();
      if (path === "/logged") requestLine(path, 202, started);
      return Response.json({ data: { bytes: body.byteLength } }, { status: 202 });
    }
    const body = await request.text();
    const id = await env.FLOOR_STORE.getByName("floor").insert(body);
    await env.QUEUE.send({ id });
    requestLine(path, 202, started);
    return Response.json({ data: { event_id: id } }, { status: 202 });
  },
  async queue(batch: MessageBatch<{ id: string }>): Promise<void> {
    batch.ackAll();
  },
} satisfies ExportedHandler<Env, { id: string }>;
