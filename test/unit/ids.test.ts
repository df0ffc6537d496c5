import { describe, expect, it } from "vitest";
import { isId, newId } from "../../src/db/ids";
import { DAY_MS, dayOf, idBoundAt, IdMaker, parsePartitionName, partitionName, partitionOf, readId, shardFor, shardOfKey } from "../../src/store/ids";
import { initialShards, keyShards } from "../../src/store/shards";

describe("ids of configuration rows", () => {
  it("are UUIDv7 carrying their time, strictly increasing within one millisecond", () => {
    const t = Date.now() + 10_000;
    const ids = Array.from({ length: 1000 }, () => newId(t));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(1000);
    for (const id of ids) {
      expect(isId(id)).toBe(true);
      expect(id[14]).toBe("7");
      expect(parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(t);
    }
  });

  it("accepts only canonical lower-case UUIDs", () => {
    expect(isId(newId())).toBe(true);
    for (const bad of ["", "x", newId().toUpperCase(), newId() + "0", "../" + newId(), undefined]) expect(isId(bad)).toBe(false);
  });
});

describe("ids made in a partition", () => {
  it("carry their shard and time, and increase strictly, even within a millisecond", () => {
    const t = Date.now();
    const maker = new IdMaker(37);
    const ids = Array.from({ length: 2000 }, () => maker.next(t));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(2000);
    for (const id of ids) {
      expect(isId(id)).toBe(true);
      expect(readId(id)).toEqual({ ms: t, shard: 37 });
    }
    // Never earlier than the last one made, whatever the clock says.
    expect(maker.next(t - 5000) > ids[ids.length - 1]!).toBe(true);
  });

  it("name their partition: the source with the day of the id and its shard", () => {
    const source = crypto.randomUUID();
    const t = Date.UTC(2026, 11, 1, 23, 59, 59, 999);
    const id = new IdMaker(5).next(t);
    expect(partitionOf(source, id)).toEqual({ sourceId: source, day: dayOf(t), shard: 5 });
    expect(dayOf(t + 1)).toBe(dayOf(t) + 1);
    const name = partitionName({ sourceId: source, day: dayOf(t), shard: 5 });
    expect(parsePartitionName(name)).toEqual({ sourceId: source, day: dayOf(t), shard: 5 });
    for (const bad of ["", `${source}/1/4096`, `${source}/x/1`, `../${source}/1/1`, `${source}/1/1/1`]) expect(parsePartitionName(bad)).toBeNull();
    // Not an id a partition made: no partition.
    expect(partitionOf(source, "00000000-0000-4000-8000-000000000000")).toBeNull();
  });

  it("order across shards and days by time first", () => {
    const day = dayOf(Date.now());
    const late = new IdMaker(0).next(day * DAY_MS + DAY_MS - 1);
    const nextDay = new IdMaker(0).next((day + 1) * DAY_MS);
    const otherShard = new IdMaker(63).next(day * DAY_MS + 1000);
    expect(otherShard < late && late < nextDay).toBe(true);
  });

  it("time bounds bracket every id of their millisecond", () => {
    const t = Date.now() + 20_000;
    const id = new IdMaker(9).next(t);
    expect(idBoundAt(t, "low") <= id && id <= idBoundAt(t, "high")).toBe(true);
    expect(idBoundAt(t + 1, "low") > id).toBe(true);
  });
});

describe("shards", () => {
  it("a delivery id always lands in the same shard; keys spread over all of them", () => {
    expect(shardOfKey("evt_1", 16)).toBe(shardOfKey("evt_1", 16));
    const seen = new Set(Array.from({ length: 2000 }, (_, i) => shardOfKey(`evt_${i}`, 16)));
    expect(seen.size).toBe(16);
    const counts = new Array(8).fill(0);
    for (let i = 0; i < 8000; i++) counts[shardOfKey(`whmsg_${i}`, 8)]++;
    for (const n of counts) expect(n).toBeGreaterThan(800); // within 20 % of 1,000 each
  });

  it("an event without a delivery id goes to any shard", () => {
    expect(shardFor(null, 4, () => 0.99)).toBe(3);
    expect(shardFor(undefined, 4, () => 0)).toBe(0);
    expect(shardFor("k", 4, () => 0.99)).toBe(shardOfKey("k", 4));
    expect(shardFor(null, 1)).toBe(0);
  });
});

describe("a day's shard count", () => {
  it("starts at half the day before's, never below the minimum", () => {
    expect(initialShards(null, 1)).toBe(1);
    expect(initialShards(64, 1)).toBe(32);
    expect(initialShards(1, 1)).toBe(1);
    expect(initialShards(2, 4)).toBe(4);
  });

  it("a key may be in its shard under each count the day had, newest first, each once", () => {
    const key = Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => shardOfKey(k, 8) === 7)!;
    expect(keyShards(key, 8, 1)).toEqual([7, 3, 1, 0]);
    expect(keyShards(key, 8, 8)).toEqual([7]);
    expect(keyShards(key, 8, 2)).toEqual([7, 3, 1]);
    // Halving keeps the key's place: its shard under n is its shard under 2n, mod n.
    for (let i = 0; i < 500; i++) expect(shardOfKey(`x${i}`, 32) % 16).toBe(shardOfKey(`x${i}`, 16));
  });
});
