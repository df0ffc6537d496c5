import { describe, expect, it } from "vitest";
import { invalidFilterEntry, matchesFilter, normalizeFilter } from "../../src/delivery/filter";
import { decide, MAX_QUEUE_DELAY_SECONDS, parseRetryAfter, withJitter } from "../../src/delivery/retry";
import { parsedPayload, targetsFor } from "../../src/delivery/targets";

const schedule = [5, 300, 1800, 7200, 18000, 36000, 36000];
const noJitter = () => 0;

describe("retry policy", () => {
  it("retries attempts 1 to 7 after the schedule's delays and stops after the 8th", () => {
    const delays = [1, 2, 3, 4, 5, 6, 7].map((n) => decide({ status: 500 }, n, schedule, 0, noJitter));
    expect(delays).toEqual(schedule.map((d) => ({ retry: true, delaySeconds: d })));
    expect(decide({ status: 500 }, 8, schedule, 0, noJitter)).toEqual({ retry: false, reason: "exhausted" });
  });

  it("treats every non-2xx and transport errors as failures, 2xx as success", () => {
    for (const status of [200, 201, 204, 299]) expect(decide({ status }, 1, schedule, 0)).toEqual({ retry: false, reason: "succeeded" });
    for (const status of [100, 301, 302, 304, 400, 401, 404, 409, 500, 502, null]) {
      expect(decide({ status }, 1, schedule, 0, noJitter)).toEqual({ retry: true, delaySeconds: 5 });
    }
  });

  it("stops at once on 410", () => {
    expect(decide({ status: 410 }, 1, schedule, 0)).toEqual({ retry: false, reason: "gone" });
  });

  it("adds at most 10 % jitter", () => {
    expect(withJitter(1000, () => 0)).toBe(1000);
    expect(withJitter(1000, () => 0.999)).toBe(1100);
    for (let i = 0; i < 100; i++) {
      const d = withJitter(300, Math.random);
      expect(d).toBeGreaterThanOrEqual(300);
      expect(d).toBeLessThanOrEqual(330);
    }
  });

  it("never asks the queue for more than its 24 h maximum delay, jitter included", () => {
    expect(MAX_QUEUE_DELAY_SECONDS).toBe(86_400);
    // At the limit: a delay of 86,400 s with the most jitter stays at 86,400.
    expect(withJitter(86_400, () => 0.999)).toBe(86_400);
    expect(decide({ status: 500 }, 1, [86_400], 0, () => 0.999)).toEqual({ retry: true, delaySeconds: 86_400 });
    // One past: 78,600 s plus 10 % would be 86,460; it is cut to 86,400.
    expect(withJitter(78_600, () => 0.999)).toBe(86_400);
    expect(withJitter(78_545, () => 0)).toBe(78_545);
    // Retry-After beyond it, with a schedule that would allow it, is cut too.
    expect(decide({ status: 429, retryAfter: "90000" }, 1, [5, 86_400], 0)).toEqual({ retry: true, delaySeconds: 86_400 });
  });

  it("honours Retry-After only on 429 and 503, within the schedule's bounds", () => {
    expect(decide({ status: 429, retryAfter: "60" }, 1, schedule, 0)).toEqual({ retry: true, delaySeconds: 60 });
    expect(decide({ status: 503, retryAfter: "0" }, 3, schedule, 0)).toEqual({ retry: true, delaySeconds: 5 });
    expect(decide({ status: 429, retryAfter: "10000000" }, 1, schedule, 0)).toEqual({ retry: true, delaySeconds: 36000 });
    expect(decide({ status: 500, retryAfter: "60" }, 1, schedule, 0, noJitter)).toEqual({ retry: true, delaySeconds: 5 });
    expect(decide({ status: 429, retryAfter: "soon" }, 1, schedule, 0, noJitter)).toEqual({ retry: true, delaySeconds: 5 });
    // Still bounded by the number of attempts.
    expect(decide({ status: 429, retryAfter: "60" }, 8, schedule, 0)).toEqual({ retry: false, reason: "exhausted" });
  });

  it("parses Retry-After as seconds or as an HTTP date", () => {
    const now = Date.parse("2026-04-26T09:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120);
    expect(parseRetryAfter("Sun, 26 Apr 2026 09:10:00 GMT", now)).toBe(600);
    expect(parseRetryAfter("Sun, 26 Apr 2026 08:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("-5", now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });
});

describe("event_filter", () => {
  it.each([
    [[], "anything.at.all", true],
    [["invoice.paid"], "invoice.paid", true],
    [["invoice.paid"], "invoice.payment_failed", false],
    [["invoice.*"], "invoice.paid", true],
    [["invoice.*"], "invoice.payment.failed", true],
    [["invoice.*"], "invoice", false],
    [["invoice.*"], "invoices.paid", false],
    [["*"], "customer.created", true],
    [["customer.created", "invoice.*"], "invoice.paid", true],
    [["customer.created", "invoice.*"], "charge.refunded", false],
    [["push"], "push", true],
    [["issues.*"], "issues.opened", true],
  ] as const)("%j matches %s: %s", (filter, type, expected) => {
    expect(matchesFilter(filter, type)).toBe(expected);
  });

  it("validates entries: * alone or a trailing .* only", () => {
    for (const ok of ["invoice.paid", "*", "invoice.*", "a.b.*", "issues.opened"]) expect(invalidFilterEntry(ok)).toBeNull();
    for (const bad of ["", "inv*ice", "*.paid", "invoice*", ".*", "a b", "x".repeat(256), "tab\there"]) {
      expect(invalidFilterEntry(bad)).toEqual(expect.any(String));
    }
  });

  it("de-duplicates, keeping the first occurrence's order", () => {
    expect(normalizeFilter(["b", "a", "b", "*", "a"])).toEqual(["b", "a", "*"]);
  });
});

describe("targetsFor: who gets an event", () => {
  it("parses a 1 MiB payload once for all its destinations, and not at all when no payload filter needs it", () => {
    const big = JSON.stringify({ type: "invoice.paid", data: { amount: 20_000, pad: "x".repeat(1_048_000) } });
    let parses = 0;
    const event = { type: "invoice.paid", payload: () => (parses++, parsedPayload(big, true)) };
    const dests = [
      { id: "a", eventFilter: ["*"], payloadFilter: { data: { amount: { $gt: 10_000 } } } },
      { id: "b", eventFilter: ["invoice.*"], payloadFilter: { data: { amount: { $lt: 10_000 } } } },
      { id: "c", eventFilter: ["invoice.paid"], payloadFilter: { type: "invoice.paid" } },
      { id: "d", eventFilter: ["customer.*"], payloadFilter: { type: "invoice.paid" } },
      { id: "e", eventFilter: ["*"], payloadFilter: null },
    ];
    expect(targetsFor(dests, event)).toEqual(["a", "c", "e"]);
    expect(parses).toBe(1);
    expect(targetsFor([dests[4]!, { id: "f", eventFilter: ["*"] }], event)).toEqual(["e", "f"]);
    expect(parses).toBe(1);
    // Not JSON: no payload filter matches; a destination without one still does.
    expect(targetsFor(dests, { type: "invoice.paid", payload: () => parsedPayload("not json", false) })).toEqual(["e"]);
  });
});
