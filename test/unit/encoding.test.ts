import { describe, expect, it } from "vitest";
import { timingSafeEqual } from "../../src/security/encoding";

const bytes = (...b: number[]) => new Uint8Array(b);

describe("timingSafeEqual (the runtime's crypto.subtle.timingSafeEqual)", () => {
  it("is true for the same bytes, false for one bit apart, anywhere", () => {
    const a = crypto.getRandomValues(new Uint8Array(32));
    expect(timingSafeEqual(a, a.slice())).toBe(true);
    for (const i of [0, 17, 31]) {
      const b = a.slice();
      b[i]! ^= 1;
      expect(timingSafeEqual(a, b)).toBe(false);
    }
    expect(timingSafeEqual(bytes(), bytes())).toBe(true);
  });

  it("is false, never a throw, for different lengths (a prefix included)", () => {
    expect(timingSafeEqual(bytes(1, 2, 3), bytes(1, 2))).toBe(false);
    expect(timingSafeEqual(bytes(), bytes(0))).toBe(false);
  });
});
