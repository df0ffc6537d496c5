import { describe, expect, it } from "vitest";
import { TtlCache } from "../../src/ttl-cache";

describe("TtlCache", () => {
  it("returns a value until its expiry, then nothing (and forgets it)", () => {
    const c = new TtlCache<string, number | null>(10);
    c.set("a", 1, 1_000);
    c.set("gone", null, 1_000);
    expect(c.get("a", 999)).toEqual({ value: 1 });
    // null is a value (an unknown key remembered as unknown), not a miss
    expect(c.get("gone", 999)).toEqual({ value: null });
    expect(c.get("a", 1_000)).toBeUndefined();
    expect(c.size).toBe(1);
    expect(c.get("missing", 0)).toBeUndefined();
  });

  it("keeps at most maxEntries, dropping the oldest written first", () => {
    const c = new TtlCache<number, number>(3);
    for (let i = 0; i < 5; i++) c.set(i, i, 10);
    expect(c.size).toBe(3);
    expect(c.get(0, 0)).toBeUndefined();
    expect(c.get(1, 0)).toBeUndefined();
    expect(c.get(4, 0)).toEqual({ value: 4 });
    // writing an entry again makes it the newest
    c.set(2, 20, 10);
    c.set(5, 5, 10);
    expect(c.get(3, 0)).toBeUndefined();
    expect(c.get(2, 0)).toEqual({ value: 20 });
  });

  it("delete and clear forget entries", () => {
    const c = new TtlCache<string, number>(3);
    c.set("a", 1, 10);
    c.set("b", 2, 10);
    c.delete("a");
    expect(c.get("a", 0)).toBeUndefined();
    c.clear();
    expect(c.size).toBe(0);
  });
});
