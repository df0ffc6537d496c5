/**
 * ListenHub: one SQLite-backed Durable Object per source (named by its id) that holds the
 * WebSockets of `krafter listen` through the Hibernation API, so a connected but idle
 * listener costs nothing: the runtime keeps the sockets and answers their heartbeats
 * ("ping" → "pong") while the object sleeps.
 *
 * How events reach it without slowing anyone when nobody listens: each partition of the
 * source (store/event-store.ts, through listen/feed.ts) keeps one flag, "listened to",
 * in its own storage. While it is off a stored event costs that one memoized boolean.
 * When the hub's first listener connects, it turns on every partition the source has
 * today and yesterday (D1's bookkeeping rows say which exist) before the listener hears
 * "ready"; a partition with no flag yet (born since) asks once, at its first event, and
 * keeps the answer; the answer to a push with nobody connected any more turns it off.
 * An epoch, bumped at every first connection, orders these words, whatever order they
 * arrive in. A source nobody listens to costs its hub one read-only call per partition
 * (source, day, shard) and no storage; never one per event.
 *
 * Listener traffic is not delivery: it touches no destination, no failure_count and no
 * attempt log. A listener's result is logged, nothing else.
 */
import { DurableObject } from "cloudflare:workers";
import { and, eq, inArray, isNull } from "drizzle-orm";
import type { Env } from "../config";
import { partitionDays } from "../db/partitions";
import { apiKeys, sources } from "../db/schema";
import { log } from "../log";
import { servicesFor, type Services } from "../services";
import { dayOf, parsePartitionName } from "../store/ids";
import { CLOSE, MAX_FRAME_BYTES, PING, PONG, type ListenEvent, type ListenState } from "./protocol";

/** Listeners' keys and source are looked at again before a push once this old: a revoked key hears nothing after. */
const AUTH_RECHECK_MS = 30_000;
/** Partitions turned on at once when the first listener connects. */
const ANNOUNCE_BATCH = 50;

const KV = { epoch: "epoch" } as const;

/** What the Worker's route tells the hub about a listener, kept on its socket across hibernation. */
interface ListenerInfo {
  keyId: string;
  accountId: string;
  connectedAt: number;
}

/** Headers the route passes the principal in: set only by the Worker, on its own request to the object. */
export const LISTENER_HEADERS = { keyId: "krafter-listener-key-id", accountId: "krafter-listener-account-id", name: "krafter-listener-source-name" } as const;

export class ListenHub extends DurableObject<Env> {
  private readonly s: Services;
  private readonly sourceId: string;
  /** The announcement of the current epoch while it runs: later listeners wait for it too. */
  private announcing: Promise<void> | null = null;
  private checkedAt = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.s = servicesFor(env);
    this.sourceId = ctx.id.name ?? "";
    // Heartbeats are answered by the runtime: they never wake the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
  }

  /** A listener connecting: the route has checked its key, scope and the source's owner. */
  override async fetch(request: Request): Promise<Response> {
    const keyId = request.headers.get(LISTENER_HEADERS.keyId);
    const accountId = request.headers.get(LISTENER_HEADERS.accountId);
    if (!keyId || !accountId || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("expected a WebSocket upgrade from the listen route", { status: 400 });
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ keyId, accountId, connectedAt: Date.now() } satisfies ListenerInfo);
    // Counted with the new one: the first listener of an epoch turns the partitions on.
    if (this.open().length === 1 && !this.announcing) {
      const epoch = this.epoch + 1;
      this.ctx.storage.kv.put(KV.epoch, epoch);
      this.announcing = this.announce(epoch).finally(() => (this.announcing = null));
    }
    try {
      if (this.announcing) await this.announcing;
    } catch (err) {
      // Some partition may not know it is listened to: no "ready" that could miss events.
      log("warn", "listen_announce_failed", { source_id: this.sourceId, error: err instanceof Error ? err.name : "unknown" });
      server.close(1011, "try again");
      return new Response("the source's partitions could not be told; try again", { status: 503 });
    }
    server.send(JSON.stringify({ type: "ready", source_id: this.sourceId, name: decodeName(request.headers.get(LISTENER_HEADERS.name)), now: Date.now() }));
    return new Response(null, { status: 101, webSocket: client });
  }

  /** A partition's first question (it has no flag yet): is anyone listening? Reads only. */
  async subscribe(partition: string): Promise<ListenState> {
    this.check(partition);
    return this.state();
  }

  /** Events a partition just stored, in its order: to every listener. */
  async push(partition: string, events: ListenEvent[]): Promise<ListenState> {
    this.check(partition);
    if (this.open().length > 0 && Date.now() - this.checkedAt >= AUTH_RECHECK_MS) await this.recheck();
    const sockets = this.open();
    for (const e of events) {
      const frame = eventFrame(e);
      for (const ws of sockets) {
        try {
          ws.send(frame);
        } catch {
          // Closing under us: its listener catches up when it reconnects.
        }
      }
    }
    return this.state();
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    if (typeof message !== "string" || message === PING) return;
    let m: { type?: unknown; event_id?: unknown; status?: unknown; duration_ms?: unknown; error?: unknown; replayed?: unknown };
    try {
      m = JSON.parse(message) as typeof m;
    } catch {
      return;
    }
    if (m?.type !== "result") return;
    const info = ws.deserializeAttachment() as ListenerInfo | null;
    // Ids, status and timing only: never a payload or the local URL.
    log("info", "listener_result", {
      source_id: this.sourceId,
      key_id: info?.keyId,
      event_id: typeof m.event_id === "string" ? m.event_id.slice(0, 64) : undefined,
      status: typeof m.status === "number" ? m.status : null,
      duration_ms: typeof m.duration_ms === "number" ? m.duration_ms : undefined,
      error: typeof m.error === "string" ? m.error.slice(0, 200) : undefined,
      replayed: m.replayed === true,
    });
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    try {
      // 1005/1006 are not codes one may send back.
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // Already closed.
    }
  }

  override async webSocketError(_ws: WebSocket, error: unknown): Promise<void> {
    log("warn", "listener_socket_error", { source_id: this.sourceId, error: error instanceof Error ? error.name : "unknown" });
  }

  private open(): WebSocket[] {
    return this.ctx.getWebSockets().filter((ws) => ws.readyState === 1);
  }

  private get epoch(): number {
    return this.ctx.storage.kv.get<number>(KV.epoch) ?? 0;
  }

  private state(): ListenState {
    return { on: this.open().length > 0, epoch: this.epoch };
  }

  private check(partition: string): void {
    if (parsePartitionName(partition)?.sourceId !== this.sourceId) throw new Error("not a partition of this source");
  }

  /**
   * Turns on every partition of today and yesterday (the only ones that take new events)
   * before the listener hears "ready". One born after this asks by itself.
   */
  private async announce(epoch: number): Promise<void> {
    const today = dayOf(Date.now());
    const days = await partitionDays(this.s, this.sourceId, today - 1, today + 1);
    const refs = days.flatMap((d) => d.shards.map((shard) => ({ sourceId: this.sourceId, day: d.day, shard })));
    for (let i = 0; i < refs.length; i += ANNOUNCE_BATCH) {
      await Promise.all(refs.slice(i, i + ANNOUNCE_BATCH).map((ref) => this.s.store(ref).listeners({ on: true, epoch })));
    }
  }

  /** Closes the sockets whose key was revoked or whose source is gone (or changed hands) since they connected. */
  private async recheck(): Promise<void> {
    const sockets = this.open();
    const infos = sockets.map((ws) => ws.deserializeAttachment() as ListenerInfo);
    const keyIds = [...new Set(infos.map((i) => i.keyId))];
    const [live, source] = await Promise.all([
      this.s.db.select({ id: apiKeys.id, accountId: apiKeys.accountId }).from(apiKeys).where(and(inArray(apiKeys.id, keyIds), isNull(apiKeys.revokedAt))).all(),
      this.s.db.select({ accountId: sources.accountId }).from(sources).where(eq(sources.id, this.sourceId)).get(),
    ]);
    this.checkedAt = Date.now();
    const liveKeys = new Map(live.map((k) => [k.id, k.accountId]));
    sockets.forEach((ws, i) => {
      const info = infos[i]!;
      const why =
        !source || source.accountId !== info.accountId
          ? ([CLOSE.sourceGone, "source not found"] as const)
          : liveKeys.get(info.keyId) !== info.accountId
            ? ([CLOSE.keyRevoked, "API key revoked"] as const)
            : null;
      if (why) {
        try {
          ws.close(why[0], why[1]);
        } catch {
          // Already closing.
        }
      }
    });
  }
}

/** One event's frame: its body inline, or null (read it through the events API) when too large for a frame. */
function eventFrame(e: ListenEvent): string {
  const head = { type: "event", id: e.id, event_type: e.type, received_at: new Date(e.receivedAt).toISOString() };
  const frame = JSON.stringify({ ...head, body: e.body });
  // UTF-8 bytes: at most three per UTF-16 unit, so most frames need no count.
  const small = frame.length * 3 <= MAX_FRAME_BYTES || utf8.encode(frame).length <= MAX_FRAME_BYTES;
  return small ? frame : JSON.stringify({ ...head, body: null });
}

const utf8 = new TextEncoder();

function decodeName(v: string | null): string | null {
  if (v === null) return null;
  try {
    return decodeURIComponent(v);
  } catch {
    return null;
  }
}
