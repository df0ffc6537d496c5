/**
 * A partition's side of `krafter listen`: after an event is stored (EventStore.ingest),
 * `stored()` hands it to the source's ListenHub, off the caller's path, when and only
 * when someone listens.
 *
 * The cost when nobody does: one boolean, read from this object's storage once and then
 * from memory. The flag is the hub's word (listen/protocol.ts ListenState): the hub turns
 * it on when its first listener connects; the answer to a push with nobody left turns it
 * off. A partition with no flag yet (its first event, or its first since this feature)
 * asks the hub once and keeps the answer, so a source nobody listens to costs one hub
 * call per partition (source, day, shard), never one per event.
 *
 * Pushes are best effort and in the partition's order: an event pushed while the socket
 * is down, or lost with an object that stopped, is what the listener's catch-up through
 * the events API is for (bin/krafter.mjs).
 */
import { envelope } from "../delivery/envelope";
import { log } from "../log";
import type { Services } from "../services";
import { partitionName, type PartitionRef } from "../store/ids";
import type { ListenEvent, ListenState } from "./protocol";

/** Per push: at most this many events, and about this many bytes of bodies. */
const PUSH_EVENTS = 100;
const PUSH_BYTES = 4 * 1024 * 1024;
const KEY = "listen";

interface StoredEvent {
  type: string;
  payload: string;
  payloadIsJson: boolean;
  receivedAt: number;
}

export class ListenFeed {
  /** undefined: not read from storage yet; null: the hub was never asked. */
  private flag: ListenState | null | undefined;
  private queue: (StoredEvent & { id: string })[] = [];
  private flushing: Promise<void> | null = null;
  private readonly name: string;

  constructor(
    private readonly ctx: DurableObjectState,
    private readonly s: Services,
    private readonly ref: PartitionRef,
  ) {
    this.name = partitionName(ref);
  }

  /** The hook, after an event is stored: nothing but a memoized boolean while nobody listens. */
  stored(id: string, e: StoredEvent): void {
    const flag = this.current();
    if (flag !== null && !flag.on) return;
    this.queue.push({ id, type: e.type, payload: e.payload, payloadIsJson: e.payloadIsJson, receivedAt: e.receivedAt });
    if (!this.flushing) {
      this.flushing = this.flush().finally(() => (this.flushing = null));
      this.ctx.waitUntil(this.flushing);
    }
  }

  /** The hub's word; the newest epoch wins, and within one "off" is final. Returns the flag now. */
  learn(s: ListenState): ListenState {
    const cur = this.current();
    if (cur === null || s.epoch > cur.epoch || (s.epoch === cur.epoch && cur.on && !s.on)) {
      this.flag = { on: s.on, epoch: s.epoch };
      this.ctx.storage.kv.put(KEY, this.flag);
    }
    return this.flag!;
  }

  private current(): ListenState | null {
    if (this.flag === undefined) this.flag = this.ctx.storage.kv.get<ListenState>(KEY) ?? null;
    return this.flag;
  }

  private hub() {
    return this.s.listenHub(this.ref.sourceId);
  }

  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      try {
        let flag = this.current();
        if (flag === null) flag = this.learn(await this.hub().subscribe(this.name));
        if (!flag.on) {
          this.queue = [];
          return;
        }
        const batch: ListenEvent[] = [];
        let bytes = 0;
        while (this.queue.length > 0 && batch.length < PUSH_EVENTS && (batch.length === 0 || bytes < PUSH_BYTES)) {
          const e = this.queue.shift()!;
          const body = envelope(e.type, e.payload, e.payloadIsJson, this.ref.sourceId);
          bytes += body.length;
          batch.push({ id: e.id, type: e.type, receivedAt: e.receivedAt, body });
        }
        this.learn(await this.hub().push(this.name, batch));
      } catch (err) {
        // The hub unreachable: these events are not pushed (the listener's catch-up has them).
        log("warn", "listen_push_failed", { partition: this.name, error: err instanceof Error ? err.name : "unknown" });
        this.queue = [];
        return;
      }
    }
  }
}
