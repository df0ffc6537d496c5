/**
 * A real HTTP receiver on loopback for tests, e2e runs, benchmarks and the demo, plus
 * a DNS-over-HTTPS endpoint whose answers tests set (the injectable resolver).
 * Runs in Node. Everything is driven over HTTP so code inside workerd can use it:
 *
 *   POST /control/mailboxes {script?, repeat?, refuse?}        → {id, url}
 *   GET  /control/mailboxes/:id                                → {requests: Received[]}
 *   POST /control/dns {name, addresses}                        sets the DoH answers for a name
 *   GET  /dns-query?name=…&type=A|AAAA                         DoH JSON answers
 *   ANY  /r/:id                                                records the request, answers per script
 *
 * A step says how to answer one request: a status (default 200), headers, a body, a
 * delay before answering, or a misbehaviour: hang, reset, trickle, huge.
 * `refuse` fails by event rather than by position (see Refusals).
 * Only erasable TypeScript syntax, so plain `node` runs it too.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface Step {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  delayMs?: number;
  /** never answer (the connection stays open until the client gives up) */
  hang?: boolean;
  /** send the headers and part of the body, then destroy the socket */
  reset?: boolean;
  /** send the body one byte per `trickleMs` */
  trickleMs?: number;
  /** send this many bytes of body */
  hugeBytes?: number;
}

export interface Received {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  at: number;
  /** The status this receiver answered (undefined when it hung or reset the connection). */
  answered?: number;
}

/**
 * Refusals by event, not by request: the n-th distinct `webhook-id` this mailbox sees
 * (counted from 0), when n % every === 0, is answered `status` on its first
 * 1 + (n / every) % maxRefusals requests, then per the script. So each such event fails
 * 1, 2, …, maxRefusals times in turn, never more: unlike every n-th request, which can
 * land on one event's every attempt and exhaust its retries by chance.
 */
export interface Refusals {
  every: number;
  status: number;
  maxRefusals: number;
}

interface Mailbox {
  script: Step[];
  repeat: Step;
  refuse?: Refusals;
  /** Refusals left, by webhook-id (every id seen while `refuse` is set). */
  refusalsLeft: Map<string, number>;
  requests: Received[];
}

/** The step for a request carrying `webhookId`: a refusal it still owes, or the script's next. */
function stepFor(box: Mailbox, webhookId: string | undefined): Step {
  if (box.refuse && webhookId !== undefined) {
    let left = box.refusalsLeft.get(webhookId);
    if (left === undefined) {
      const n = box.refusalsLeft.size;
      const { every, maxRefusals } = box.refuse;
      left = n % every === 0 ? 1 + (Math.floor(n / every) % maxRefusals) : 0;
    }
    box.refusalsLeft.set(webhookId, Math.max(0, left - 1));
    if (left > 0) return { status: box.refuse.status };
  }
  return box.script.shift() ?? box.repeat;
}

export interface ReceiverHandle {
  port: number;
  origin: string;
  server: Server;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}

async function answer(res: ServerResponse, step: Step): Promise<void> {
  if (step.delayMs) await new Promise((r) => setTimeout(r, step.delayMs));
  if (step.hang) return; // leave it open
  const headers = { "content-type": "text/plain", ...(step.headers ?? {}) };
  if (step.reset) {
    res.writeHead(step.status ?? 200, headers);
    res.write("partial");
    setTimeout(() => res.socket?.destroy(), 10);
    return;
  }
  if (step.hugeBytes) {
    res.writeHead(step.status ?? 200, headers);
    const chunk = Buffer.alloc(64 * 1024, "x");
    let left = step.hugeBytes;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!res.write(chunk.subarray(0, n))) {
          res.once("drain", pump);
          return;
        }
      }
      res.end();
    };
    res.on("error", () => undefined);
    pump();
    return;
  }
  if (step.trickleMs) {
    res.writeHead(step.status ?? 200, headers);
    const body = step.body ?? "trickle";
    let i = 0;
    const timer = setInterval(() => {
      if (res.destroyed || i >= body.length) {
        clearInterval(timer);
        if (!res.destroyed) res.end();
        return;
      }
      res.write(body[i++]);
    }, step.trickleMs);
    res.on("close", () => clearInterval(timer));
    return;
  }
  res.writeHead(step.status ?? 200, headers);
  res.end(step.body ?? "ok");
}

export async function startReceiver(port = 0): Promise<ReceiverHandle> {
  const mailboxes = new Map<string, Mailbox>();
  const dns = new Map<string, string[]>();
  /** The TTL each name's answers carry (0 unless set: the relay then keeps no answer). */
  const dnsTtl = new Map<string, number>();
  let nextId = 1;

  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      const body = await readBody(req);
      const parts = url.pathname.split("/").filter(Boolean);

      if (url.pathname === "/dns-query") {
        const name = (url.searchParams.get("name") ?? "").replace(/\.$/, "").toLowerCase();
        const type = url.searchParams.get("type") === "AAAA" ? 28 : 1;
        const addresses = dns.get(name);
        if (addresses === undefined) return json(res, 200, { Status: 3, Answer: [] });
        const isV6 = (a: string) => a.includes(":");
        const answers = addresses
          .filter((a) => (type === 28 ? isV6(a) : !isV6(a)))
          .map((data) => ({ name, type, TTL: dnsTtl.get(name) ?? 0, data }));
        return json(res, 200, { Status: 0, Answer: answers });
      }
      if (parts[0] === "control" && parts[1] === "dns" && req.method === "POST") {
        const { name, addresses, ttl } = JSON.parse(body) as { name: string; addresses: string[] | null; ttl?: number };
        dnsTtl.set(name.toLowerCase(), ttl ?? 0);
        if (addresses === null) dns.delete(name.toLowerCase());
        else dns.set(name.toLowerCase(), addresses);
        return json(res, 200, { ok: true });
      }
      if (parts[0] === "control" && parts[1] === "mailboxes") {
        if (req.method === "POST" && parts.length === 2) {
          const spec = (body ? JSON.parse(body) : {}) as { script?: Step[]; repeat?: Step; refuse?: Refusals };
          const id = `m${nextId++}`;
          mailboxes.set(id, { script: spec.script ?? [], repeat: spec.repeat ?? {}, refuse: spec.refuse, refusalsLeft: new Map(), requests: [] });
          const host = req.headers.host ?? `127.0.0.1:${(server.address() as AddressInfo).port}`;
          return json(res, 201, { id, url: `http://${host}/r/${id}` });
        }
        const box = mailboxes.get(parts[2] ?? "");
        if (!box) return json(res, 404, { error: "no such mailbox" });
        if (req.method === "GET") return json(res, 200, { requests: box.requests });
        if (req.method === "PUT") {
          const spec = JSON.parse(body) as { script?: Step[]; repeat?: Step };
          box.script = spec.script ?? [];
          box.repeat = spec.repeat ?? {};
          return json(res, 200, { ok: true });
        }
      }
      if (parts[0] === "r") {
        const box = mailboxes.get(parts[1] ?? "");
        if (!box) return json(res, 404, { error: "no such mailbox" });
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers[k] = v;
        const step = stepFor(box, headers["webhook-id"]);
        const answered = step.hang || step.reset ? undefined : (step.status ?? 200);
        box.requests.push({ method: req.method ?? "", path: url.pathname + url.search, headers, body, at: Date.now(), answered });
        return answer(res, step);
      }
      json(res, 404, { error: "not found" });
    } catch (err) {
      json(res, 500, { error: String(err) });
    }
  });
  // Never close an idle keep-alive connection from this side: workerd reuses pooled
  // connections, and one closed under it fails with "Network connection lost".
  server.keepAliveTimeout = 0;
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    port: actual,
    origin: `http://127.0.0.1:${actual}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
