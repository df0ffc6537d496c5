import { describe, expect, it } from "vitest";
import { idBoundAt, isId, newId } from "../../src/db/ids";

describe("ids", () => {
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

  it("time bounds bracket every id of their millisecond", () => {
    const t = Date.now() + 20_000;
    const id = newId(t);
    expect(idBoundAt(t, "low") <= id && id <= idBoundAt(t, "high")).toBe(true);
    expect(idBoundAt(t + 1, "low") > id).toBe(true);
  });

  it("accepts only canonical lower-case UUIDs", () => {
    expect(isId(newId())).toBe(true);
    for (const bad of ["", "x", newId().toUpperCase(), newId() + "0", "../" + newId(), undefined]) expect(isId(bad)).toBe(false);
  });
});
