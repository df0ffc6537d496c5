/**
 * Where an event lives, and ids that say so. A partition is one EventStore Durable
 * Object: the events one source received on one UTC day in one shard. Every id made in
 * a partition (events, deliveries, attempts) is a UUIDv7 whose millisecond timestamp
 * falls in the partition's day and whose 12 `rand_a` bits are the shard, so an id and
 * its source route to the partition without a lookup:
 *
 *   xxxxxxxx-xxxx-7sss-vccc-cccccccccccc   x: Unix ms, s: shard, v: variant + counter, c: counter
 *
 * Within one object the ids are strictly increasing (the counter steps within a
 * millisecond), so ordering by id is the order the partition received its events.
 */
export const DAY_MS = 86_400_000;
/** 12 bits of the id carry the shard. */
const MAX_SHARDS = 4096;

export interface PartitionRef {
  sourceId: string;
  /** UTC days since 1970-01-01. */
  day: number;
  shard: number;
}

export const dayOf = (ms: number): number => Math.floor(ms / DAY_MS);
export const dayStart = (day: number): number => day * DAY_MS;

/** The Durable Object name of a partition: `source/day/shard`. */
export const partitionName = (p: PartitionRef): string => `${p.sourceId}/${p.day}/${p.shard}`;

const NAME = /^([0-9a-f-]{36})\/(\d{1,7})\/(\d{1,4})$/;

export function parsePartitionName(name: string): PartitionRef | null {
  const m = NAME.exec(name);
  if (!m) return null;
  const shard = Number(m[3]);
  return shard < MAX_SHARDS ? { sourceId: m[1]!, day: Number(m[2]), shard } : null;
}

/** FNV-1a over the UTF-16 code units: the same key always lands in the same shard. */
export function shardOfKey(key: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}

/** The shard for an event: its provider delivery id decides (so a duplicate finds the first), else any. */
export function shardFor(dedupeKey: string | null | undefined, shards: number, random: () => number = Math.random): number {
  return dedupeKey ? shardOfKey(dedupeKey, shards) : Math.floor(random() * shards) % shards;
}

const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");

/** Ids made in one place: strictly increasing, the shard in every one. */
export class IdMaker {
  private ms = -1;
  private hi = 0; // 30 bits of counter
  private lo = 0; // 32 bits of counter

  constructor(private readonly shard: number) {
    if (!Number.isInteger(shard) || shard < 0 || shard >= MAX_SHARDS) throw new RangeError("shard out of range");
  }

  /** A new id at `nowMs` (never earlier than the last one made here). */
  next(nowMs: number): string {
    const ms = Math.max(Math.floor(nowMs), this.ms);
    if (ms > this.ms) {
      this.ms = ms;
      const r = crypto.getRandomValues(new Uint32Array(2));
      this.hi = r[0]! >>> 3; // leave room to count up within the millisecond
      this.lo = r[1]!;
    } else if (this.lo === 0xffffffff) {
      this.lo = 0;
      this.hi = (this.hi + 1) & 0x3fffffff;
    } else {
      this.lo++;
    }
    const t = hex(ms, 12);
    const variantAndHi = (0x80000000 | this.hi) >>> 0; // variant 10, then 30 counter bits
    const vh = hex(variantAndHi, 8);
    const lo = hex(this.lo, 8);
    return `${t.slice(0, 8)}-${t.slice(8, 12)}-7${hex(this.shard, 3)}-${vh.slice(0, 4)}-${vh.slice(4, 8)}${lo}`;
  }
}

const makers = new Map<number, IdMaker>();

/** An attempt id: made by the deliver consumer, in the shard of the attempt's event. */
export function attemptId(shard: number, nowMs: number): string {
  let m = makers.get(shard);
  if (!m) makers.set(shard, (m = new IdMaker(shard)));
  return m.next(nowMs);
}

const V7 = /^([0-9a-f]{8})-([0-9a-f]{4})-7([0-9a-f]{3})-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The time and shard an id made by IdMaker carries, or null for any other string. */
export function readId(id: string): { ms: number; shard: number } | null {
  const m = V7.exec(id);
  if (!m) return null;
  return { ms: parseInt(m[1]! + m[2]!, 16), shard: parseInt(m[3]!, 16) };
}

/** The partition of an event (or delivery) id of a source, without a lookup. */
export function partitionOf(sourceId: string, id: string): PartitionRef | null {
  const r = readId(id);
  return r ? { sourceId, day: dayOf(r.ms), shard: r.shard } : null;
}

/** The time (ms) an id or id bound starts with (its first 48 bits), whatever its version; null if it is not shaped like one. */
export function idTimeMs(id: string): number | null {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-/.test(id) ? parseInt(id.slice(0, 8) + id.slice(9, 13), 16) : null;
}

/** The smallest (edge "low") or largest (edge "high") UUIDv7 of the given millisecond. */
export function idBoundAt(ms: number, edge: "low" | "high"): string {
  const t = hex(Math.max(0, Math.min(ms, 0xffffffffffff)), 12);
  const rest = edge === "low" ? "0000-0000-000000000000" : "ffff-ffff-ffffffffffff";
  return `${t.slice(0, 8)}-${t.slice(8, 12)}-${rest}`;
}
