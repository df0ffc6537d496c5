/**
 * The ingest baselines (see wrangler.toml beside this file).
 *
 * - `POST /bare`: reads the whole body (as the relay must) and answers 202 with a JSON
 *   body of the relay's shape. What the runtime costs with no relay at all.
 * - `POST /logged`: the bare Worker plus the one structured JSON log line per request
 *   the product's contract requires (PRODUCT.md): what that line alone costs here.
 * - `POST /floor`: the least any implementation of the relay's ingest contract does on
 *   this runtime before answering ("202 only once the event is durable in D1 and its
 *   fan-out is queued", one log line per request): one indexed read, one insert, one
 *   queue send, one log line, nothing else. Its queue consumer only acknowledges.
 * - `GET`: 200, the benchmark's readiness check (as `GET /` is the relay's).
 */
interface Env {
  DB: D1Database;
  QUEUE: Queue<{ id: string }>;
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
    const source = await env.DB.prepare("SELECT id FROM sources WHERE ingest_key = ?").bind("floor").first<{ id: string }>();
    if (!source) return new Response("no source", { status: 404 });
    const id = crypto.randomUUID();
    await env.DB.prepare("INSERT INTO events (id, source_id, payload, received_at) VALUES (?, ?, ?, ?)")
      .bind(id, source.id, body, Date.now())
      .run();
    await env.QUEUE.send({ id });
    requestLine(path, 202, started);
    return Response.json({ data: { event_id: id } }, { status: 202 });
  },
  async queue(batch: MessageBatch<{ id: string }>): Promise<void> {
    batch.ackAll();
  },
} satisfies ExportedHandler<Env, { id: string }>;
