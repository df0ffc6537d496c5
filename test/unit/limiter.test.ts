/**
 * The deliver consumer's limiter (src/delivery/limiter.ts): requests to destinations hold
 * at most the platform's six connections waiting for headers, and calls to storage
 * (partitions, health objects, D1), which the platform does not count there, have their
 * own pool: neither waits behind the other, and each stays bounded.
 */
import { describe, expect, it } from "vitest";
import { CONNECTIONS_PER_INVOCATION, Limiter, STORAGE_PERMITS } from "../../src/delivery/limiter";

/** A call that runs until `open()` is called, and says when it started. */
function gated() {
  let open!: () => void;
  const until = new Promise<void>((r) => (open = r));
  const started: number[] = [];
  const call = (i: number) => async () => {
    started.push(i);
    await until;
    return i;
  };
  return { open, started, call };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("the limiter's two pools", () => {
  it("a storage call starts at once while every connection is held by a destination, and the seventh request waits for one", async () => {
    const limiter = new Limiter();
    const http = gated();
    const requests = Array.from({ length: CONNECTIONS_PER_INVOCATION + 1 }, (_, i) => limiter.run("http", http.call(i)));
    await tick();
    expect(http.started).toEqual([0, 1, 2, 3, 4, 5]);
    const storage = gated();
    const read = limiter.run("storage", storage.call(100));
    await tick();
    expect(storage.started).toEqual([100]);
    storage.open();
    expect(await read).toBe(100);
    // Still six waiting: the seventh has not started.
    expect(http.started).toHaveLength(CONNECTIONS_PER_INVOCATION);
    http.open();
    expect(await Promise.all(requests)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(http.started).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(limiter.peak).toBe(CONNECTIONS_PER_INVOCATION);
  });

  it("storage calls are bounded by their own permits, started in order as they free, and a failed one frees its permit", async () => {
    const limiter = new Limiter();
    const storage = gated();
    const calls = Array.from({ length: STORAGE_PERMITS + 3 }, (_, i) => limiter.run("storage", storage.call(i)));
    const failing = limiter.run("storage", async () => {
      throw new Error("refused");
    });
    await tick();
    expect(storage.started).toEqual(Array.from({ length: STORAGE_PERMITS }, (_, i) => i));
    // Destinations are not held back by the full storage pool.
    expect(await limiter.run("http", async () => "sent")).toBe("sent");
    storage.open();
    expect(await Promise.all(calls)).toEqual(Array.from({ length: STORAGE_PERMITS + 3 }, (_, i) => i));
    await expect(failing).rejects.toThrow("refused");
    expect(limiter.storagePeak).toBe(STORAGE_PERMITS);
    expect(limiter.peak).toBe(1);
    // Every permit came back: a full pool's worth starts at once again.
    const again = gated();
    const more = Array.from({ length: STORAGE_PERMITS }, (_, i) => limiter.run("storage", again.call(i)));
    await tick();
    expect(again.started).toHaveLength(STORAGE_PERMITS);
    again.open();
    await Promise.all(more);
  });
});
