/**
 * How many shards a source's day needs (src/store/shards.ts, neededShards): from the
 * bytes and ingests one partition saw, enough that it stays under PARTITION_SPLIT_BYTES
 * by the end of its day and under PARTITION_INGEST_RATE ingests a second.
 */
import { describe, expect, it } from "vitest";
import { MAX_DAY_SHARDS, neededShards, PARTITION_INGEST_RATE } from "../../src/store/shards";

const GiB = 1024 ** 3;
const DAY = 86_400_000;

describe("neededShards", () => {
  it("keeps the count of a partition that will stay small and quiet", () => {
    expect(neededShards({ shards: 1, size: 10 * 1024 ** 2, bytesPerMs: 10, insertsPerSec: 2, msLeft: DAY / 2, splitBytes: 4 * GiB })).toBe(1);
    expect(neededShards({ shards: 8, size: 0, bytesPerMs: 0, insertsPerSec: 0, msLeft: DAY, splitBytes: 4 * GiB })).toBe(8);
  });

  it("1,000 events/s of 5,145 bytes (2 KB payloads, one destination) from midnight: 128 shards of about 3.5 GB", () => {
    const n = neededShards({ shards: 1, size: 0, bytesPerMs: 5_145, insertsPerSec: 1_000, msLeft: DAY, splitBytes: 4 * GiB });
    expect(n).toBe(128);
    expect((1_000 * 86_400 * 5_145) / n).toBeLessThan(4 * GiB);
  });

  it("a burst of small events splits by rate: 1,000 ingests/s needs four partitions of 250", () => {
    expect(PARTITION_INGEST_RATE).toBe(250);
    expect(neededShards({ shards: 1, size: 0, bytesPerMs: 1, insertsPerSec: 1_000, msLeft: DAY / 100, splitBytes: 4 * GiB })).toBe(4);
    expect(neededShards({ shards: 4, size: 0, bytesPerMs: 0.25, insertsPerSec: 250, msLeft: DAY / 100, splitBytes: 4 * GiB })).toBe(4);
  });

  it("a partition already past the threshold asks for all it can get, and never more than MAX_DAY_SHARDS", () => {
    expect(neededShards({ shards: 64, size: 5 * GiB, bytesPerMs: 100, insertsPerSec: 10, msLeft: DAY / 2, splitBytes: 4 * GiB })).toBe(MAX_DAY_SHARDS);
    expect(neededShards({ shards: MAX_DAY_SHARDS, size: 9 * GiB, bytesPerMs: 1e6, insertsPerSec: 1e6, msLeft: DAY, splitBytes: 4 * GiB })).toBe(MAX_DAY_SHARDS);
  });
});
