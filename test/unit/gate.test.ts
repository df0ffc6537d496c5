/**
 * A destination's gate (src/delivery/gate.ts) under an injected clock: the rate limit's
 * spacing over any 10-second window, the in-flight cap across callers, and the circuit
 * breaker opening, half-opening and closing, and the lane: a slow destination leaves the
 * shared deliver queues for the slow lane.
 */
import { describe, expect, it } from "vitest";
import { admit, BREAKER_MIN_ATTEMPTS, BREAKER_OPEN_MAX_MS, BREAKER_OPEN_MS, emptyGate, isSlow, release, SLOW_ATTEMPT_MS, type GateConfig } from "../../src/delivery/gate";

const cfg = (over: Partial<GateConfig> = {}): GateConfig => ({ rateLimit: null, maxInFlight: 10, leaseMs: 45_000, ...over });
const ids = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `d${from + i}`);
const first = (list: string[]) => list.map((id) => ({ id, retry: false }));

describe("rate limit", () => {
  it("5/s: 100 deliveries asked at once start 200 ms apart, each keeping its slot while it waits; no 10 s window holds more than 51", () => {
    const g = emptyGate();
    const t0 = 1_000_000;
    const c = cfg({ rateLimit: 5, maxInFlight: 1000 });
    const starts: number[] = [];
    // The consumer's loop: ask, start those that may (after their ms), bring the rest back after floor(wait) seconds.
    let pending = ids(100).map((id) => ({ id, at: t0 }));
    while (pending.length > 0) {
      pending.sort((a, z) => a.at - z.at);
      const now = pending[0]!.at;
      const batch = pending.filter((p) => p.at === now);
      pending = pending.filter((p) => p.at !== now);
      admit(g, c, batch.map((b) => ({ id: b.id, retry: false })), now).forEach((a, i) => {
        if (a.kind === "go") {
          expect(a.startInMs).toBeLessThan(1000);
          starts.push(now + a.startInMs);
          release(g, batch[i]!.id, "succeeded", 50, now + a.startInMs + 50);
        } else {
          expect(a.reason).toBe("rate");
          pending.push({ id: batch[i]!.id, at: now + Math.floor(a.waitMs / 1000) * 1000 });
        }
      });
    }
    expect(starts).toHaveLength(100);
    starts.sort((a, z) => a - z);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(199);
    let most = 0;
    for (const s of starts) most = Math.max(most, starts.filter((x) => x >= s && x < s + 10_000).length);
    expect(most).toBeLessThanOrEqual(5 * 10 * 1.1);
    expect(most).toBe(50);
  });

  it("no limit: everything starts at once (up to the in-flight cap)", () => {
    const g = emptyGate();
    expect(admit(g, cfg({ maxInFlight: 100 }), first(ids(20)), 0).every((a) => a.kind === "go" && a.startInMs === 0)).toBe(true);
  });
});

describe("in-flight cap", () => {
  it("counts attempts at their start: a rate limit's next second of slots is not in flight together, so 20/s under a cap of 10 starts 20 a second", () => {
    const g = emptyGate();
    const c = cfg({ rateLimit: 20, maxInFlight: 10 });
    const a = admit(g, c, first(ids(20)), 0);
    expect(a.every((x) => x.kind === "go")).toBe(true);
    expect(a.map((x) => (x.kind === "go" ? x.startInMs : -1))).toEqual(Array.from({ length: 20 }, (_, i) => i * 50));
    // Attempts slower than the spacing do overlap, and then the cap holds them.
    const slow = emptyGate();
    for (const id of ids(5, 100)) {
      admit(slow, cfg({ maxInFlight: 1000 }), first([id]), 0);
      release(slow, id, "succeeded", 900, 900);
    }
    expect(slow.meanMs).toBeGreaterThan(500);
    const b = admit(slow, c, first(ids(20)), 1_000);
    expect(b.filter((x) => x.kind === "go")).toHaveLength(10);
    expect(b.filter((x) => x.kind === "hold" && x.reason === "in_flight")).toHaveLength(10);
  });

  it("at most maxInFlight permits out across callers; a permit returned or lapsed lets the next one start", () => {
    const g = emptyGate();
    const c = cfg({ maxInFlight: 3, leaseMs: 10_000 });
    const one = admit(g, c, first(ids(2)), 0);
    const second = admit(g, c, first(ids(3, 2)), 0); // another invocation
    expect([...one, ...second].map((a) => a.kind)).toEqual(["go", "go", "go", "hold", "hold"]);
    expect(second[1]).toMatchObject({ kind: "hold", reason: "in_flight" });
    release(g, "d0", "succeeded", 100, 500);
    expect(admit(g, c, first(["d3", "d4"]), 600).map((a) => a.kind)).toEqual(["go", "hold"]);
    // d1, d2 and d3 never come back: their leases lapse.
    expect(admit(g, c, first(["d4"]), 11_000)[0]!.kind).toBe("go");
  });
});

describe("circuit breaker", () => {
  const fail = (g: ReturnType<typeof emptyGate>, n: number, at: number, from = 0) => {
    for (const id of ids(n, from)) {
      expect(admit(g, cfg({ maxInFlight: 1000 }), first([id]), at)[0]!.kind).toBe("go");
      release(g, id, "failed", 15_000, at);
    }
  };

  it("opens once most recent attempts failed, holds everything while open, half-opens for one trial, closes on its success", () => {
    const g = emptyGate();
    const c = cfg({ maxInFlight: 1000 });
    fail(g, BREAKER_MIN_ATTEMPTS - 1, 1_000);
    expect(g.breaker.state).toBe("closed"); // too few attempts to judge
    fail(g, 1, 1_000, 100);
    expect(g.breaker.state).toBe("open");
    const held = admit(g, c, first(["x", "y"]), 2_000);
    expect(held).toEqual([
      { kind: "hold", waitMs: BREAKER_OPEN_MS - 1_000, reason: "circuit_open" },
      { kind: "hold", waitMs: BREAKER_OPEN_MS - 1_000, reason: "circuit_open" },
    ]);
    // After the pause: one trial, the rest still held.
    const t = 1_000 + BREAKER_OPEN_MS;
    expect(admit(g, c, first(["x", "y"]), t).map((a) => a.kind)).toEqual(["go", "hold"]);
    expect(g.breaker.state).toBe("half_open");
    release(g, "x", "succeeded", 80, t + 80);
    expect(g.breaker.state).toBe("closed");
    expect(admit(g, c, first(["y", "z"]), t + 100).map((a) => a.kind)).toEqual(["go", "go"]);
  });

  it("a failed trial opens it again for twice as long, up to the maximum; successes mixed in keep it closed", () => {
    const g = emptyGate();
    const c = cfg({ maxInFlight: 1000 });
    fail(g, BREAKER_MIN_ATTEMPTS, 0);
    let now = BREAKER_OPEN_MS;
    let pause = BREAKER_OPEN_MS;
    for (let i = 0; i < 6; i++) {
      expect(admit(g, c, first([`t${i}`]), now)[0]!.kind).toBe("go");
      release(g, `t${i}`, "failed", 15_000, now);
      pause = Math.min(pause * 2, BREAKER_OPEN_MAX_MS);
      expect(g.breaker).toMatchObject({ state: "open", until: now + pause });
      now += pause;
    }
    expect(pause).toBe(BREAKER_OPEN_MAX_MS);

    const h = emptyGate();
    for (let i = 0; i < 30; i++) {
      admit(h, c, first([`m${i}`]), 0);
      release(h, `m${i}`, i % 3 === 0 ? "failed" : "succeeded", 100, 0); // a third fail
    }
    expect(h.breaker.state).toBe("closed");
  });

  it("while open, retries of deliveries already attempted keep their schedule (they still exhaust), and one that succeeds closes it", () => {
    const g = emptyGate();
    const c = cfg({ maxInFlight: 1000 });
    fail(g, BREAKER_MIN_ATTEMPTS, 0);
    expect(g.breaker.state).toBe("open");
    const a = admit(g, c, [{ id: "new", retry: false }, { id: "d0", retry: true }], 1_000);
    expect(a.map((x) => x.kind)).toEqual(["hold", "go"]);
    release(g, "d0", "failed", 15_000, 2_000);
    expect(g.breaker.state).toBe("open");
    expect(admit(g, c, [{ id: "d1", retry: true }], 3_000)[0]!.kind).toBe("go");
    release(g, "d1", "succeeded", 50, 3_050);
    expect(g.breaker.state).toBe("closed");
    expect(admit(g, c, first(["new"]), 3_100)[0]!.kind).toBe("go");
  });

  it("an endpoint that answers, even with errors, never opens it: only attempts with no answer count", () => {
    const g = emptyGate();
    for (const id of ids(30)) {
      admit(g, cfg({ maxInFlight: 1000 }), first([id]), 0);
      release(g, id, "answered", 5, 0); // a 410 or a 503, in 5 ms
    }
    expect(g.breaker.state).toBe("closed");
  });

  it("failures older than the window are forgotten", () => {
    const g = emptyGate();
    fail(g, BREAKER_MIN_ATTEMPTS - 1, 0);
    fail(g, 1, 61_000, 50);
    expect(g.breaker.state).toBe("closed");
  });
});

describe("lanes", () => {
  const shared = cfg({ lane: "shared" });
  it("a destination that answers fast is attempted from the shared queues", () => {
    const g = emptyGate();
    expect(admit(g, shared, first(["a"]), 0)).toEqual([{ kind: "go", startInMs: 0 }]);
    release(g, "a", "succeeded", 120, 120);
    expect(isSlow(g, shared.leaseMs, 200)).toBe(false);
    expect(admit(g, shared, first(["b"]), 200)[0]!.kind).toBe("go");
  });

  it("startSlow: a destination none of whose attempts has answered within SLOW_ATTEMPT_MS is slow; one fast answer proves it", () => {
    const g = emptyGate();
    const c = cfg({ lane: "shared", startSlow: true });
    // One probe to the slow lane; the others wait a second where they are.
    expect(admit(g, c, first(["a", "a2"]), 0)).toEqual([
      { kind: "hold", waitMs: 0, reason: "slow" },
      { kind: "hold", waitMs: 1_000, reason: "in_flight" },
    ]);
    expect(admit(g, c, first(["a2"]), 500)[0]).toEqual({ kind: "hold", waitMs: 1_000, reason: "in_flight" });
    expect(admit(g, cfg({ lane: "slow", startSlow: true }), first(["a"]), 0)[0]!.kind).toBe("go");
    release(g, "a", "failed", 300, 300); // refused at once: no answer proves nothing
    expect(g.proven).toBeUndefined();
    // Tried and not proven: everything of it goes to the slow lane.
    expect(admit(g, c, first(["a2"]), 400)[0]).toEqual({ kind: "hold", waitMs: 0, reason: "slow" });
    admit(g, cfg({ lane: "slow" }), first(["b"]), 400);
    release(g, "b", "answered", SLOW_ATTEMPT_MS + 1, 400 + SLOW_ATTEMPT_MS + 1); // answered, but slowly
    expect(g.proven).toBeUndefined();
    admit(g, cfg({ lane: "slow" }), first(["c"]), 3_000);
    release(g, "c", "answered", 80, 3_080); // a quick 500 is an endpoint that answers
    expect(g.proven).toBe(true);
    expect(admit(g, c, first(["d"]), 3_100)[0]!.kind).toBe("go");
  });

  it("one attempt in flight for longer than SLOW_ATTEMPT_MS: the next deliveries move to the slow lane, and there they start", () => {
    const g = emptyGate();
    expect(admit(g, shared, first(["a"]), 0)[0]!.kind).toBe("go");
    // Not yet slow: the attempt is young.
    expect(admit(g, shared, first(["b"]), SLOW_ATTEMPT_MS - 1)[0]!.kind).toBe("go");
    expect(admit(g, shared, first(["c", "d"]), SLOW_ATTEMPT_MS + 1)).toEqual([
      { kind: "hold", waitMs: 0, reason: "slow" },
      { kind: "hold", waitMs: 0, reason: "slow" },
    ]);
    // The slow lane keeps them, under the same cap and breaker.
    expect(admit(g, cfg({ lane: "slow" }), first(["c", "d"]), SLOW_ATTEMPT_MS + 1).map((a) => a.kind)).toEqual(["go", "go"]);
    // Without a lane given (a deployment with no slow lane), nothing moves.
    expect(admit(g, cfg(), first(["e"]), SLOW_ATTEMPT_MS + 2)[0]!.kind).toBe("go");
  });

  it("attempts that took over SLOW_ATTEMPT_MS on average, or an open circuit, keep it in the slow lane until it answers fast again", () => {
    const g = emptyGate();
    for (const id of ids(3)) {
      admit(g, cfg({ lane: "slow" }), first([id]), 0);
      release(g, id, "answered", 4_000, 10);
    }
    expect(g.meanMs).toBeGreaterThan(SLOW_ATTEMPT_MS);
    expect(admit(g, shared, first(["x"]), 20)[0]).toEqual({ kind: "hold", waitMs: 0, reason: "slow" });
    // Fast answers bring the mean down: back to the shared queues.
    for (const id of ids(10, 10)) {
      admit(g, cfg({ lane: "slow" }), first([id]), 30);
      release(g, id, "succeeded", 50, 40);
    }
    expect(admit(g, shared, first(["y"]), 50)[0]!.kind).toBe("go");
    release(g, "y", "succeeded", 50, 60);

    const dead = emptyGate();
    for (const id of ids(BREAKER_MIN_ATTEMPTS)) {
      admit(dead, cfg({ lane: "slow", maxInFlight: 1000 }), first([id]), 0);
      release(dead, id, "failed", 200, 0); // refused at once: fast, but no answer
    }
    expect(dead.breaker.state).toBe("open");
    expect(dead.meanMs).toBeLessThan(SLOW_ATTEMPT_MS);
    // Its retries (which pass an open circuit) go to the slow lane too.
    expect(admit(dead, shared, [{ id: "d0", retry: true }], 100)[0]).toEqual({ kind: "hold", waitMs: 0, reason: "slow" });
    expect(admit(dead, cfg({ lane: "slow" }), [{ id: "d0", retry: true }], 100)[0]!.kind).toBe("go");
  });
});
