/**
 * payload_filter (src/delivery/payload-filter.ts): matching and validation.
 *
 * The contract, from the spec and the module's header: a plain value matches by equality
 * (same type), or an array that contains it; an array matches an array that contains all
 * of its elements; an object's keys must all hold (`$` keys are operators on the value
 * itself, other keys are fields; an array matches an object of fields when one of its
 * elements matches the whole object). Operators: $eq (as a plain value) $neq $gt $gte $lt
 * $lte $in $nin $startsWith $endsWith $exist $or $and $not. Comparisons of different types
 * are false, never an error. A filter is at most 4096 bytes of JSON and 10 levels deep;
 * every fault is an issue naming its JSON path.
 *
 * The last block checks matchesPayload against a small reference interpreter written in
 * this file from that contract (not from the implementation). Cases where the two are known
 * to read the contract differently are listed under "disagreements" below, and left to the
 * module's owner.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Filter, matchesPayload, MAX_FILTER_BYTES, MAX_FILTER_DEPTH, validatePayloadFilter } from "../../src/delivery/payload-filter";

const m = (filter: Filter, payload: unknown) => matchesPayload(filter, payload);
const utf8Length = (v: unknown) => new TextEncoder().encode(JSON.stringify(v)).length;
const issue = (field: string, code: string) => ({ field, code, message: expect.any(String) });

describe("matchesPayload: operators", () => {
  it("$eq matches an equal value of the same type and nothing else", () => {
    expect(m({ a: { $eq: 5 } }, { a: 5 })).toBe(true);
    expect(m({ a: { $eq: "x" } }, { a: "x" })).toBe(true);
    expect(m({ a: { $eq: null } }, { a: null })).toBe(true);
    expect(m({ a: { $eq: 5 } }, { a: 6 })).toBe(false);
    expect(m({ a: { $eq: 5 } }, { a: "5" })).toBe(false);
    expect(m({ a: { $eq: false } }, { a: 0 })).toBe(false);
  });

  it("$eq with a scalar or array operand behaves as that plain value (array containment included)", () => {
    expect(m({ a: { $eq: "x" } }, { a: ["y", "x"] })).toBe(true);
    expect(m({ a: { $eq: ["x", "y"] } }, { a: ["y", "z", "x"] })).toBe(true);
    expect(m({ a: { $eq: ["x", "q"] } }, { a: ["y", "z", "x"] })).toBe(false);
  });

  it("$neq is the negation of $eq", () => {
    expect(m({ a: { $neq: 5 } }, { a: 6 })).toBe(true);
    expect(m({ a: { $neq: 5 } }, { a: "5" })).toBe(true);
    expect(m({ a: { $neq: 5 } }, {})).toBe(true);
    expect(m({ a: { $neq: 5 } }, { a: 5 })).toBe(false);
    expect(m({ a: { $neq: "x" } }, { a: ["x", "y"] })).toBe(false);
  });

  it("$gt compares numbers with numbers and strings with strings, strictly", () => {
    expect(m({ a: { $gt: 5 } }, { a: 6 })).toBe(true);
    expect(m({ a: { $gt: 5 } }, { a: 5.5 })).toBe(true);
    expect(m({ a: { $gt: 5 } }, { a: 5 })).toBe(false);
    expect(m({ a: { $gt: 5 } }, { a: -6 })).toBe(false);
    expect(m({ a: { $gt: "b" } }, { a: "c" })).toBe(true);
    expect(m({ a: { $gt: "b" } }, { a: "b" })).toBe(false);
    expect(m({ a: { $gt: "b" } }, { a: "a" })).toBe(false);
  });

  it("$gte includes equality", () => {
    expect(m({ a: { $gte: 5 } }, { a: 5 })).toBe(true);
    expect(m({ a: { $gte: 5 } }, { a: 6 })).toBe(true);
    expect(m({ a: { $gte: 5 } }, { a: 4.999 })).toBe(false);
    expect(m({ a: { $gte: "b" } }, { a: "b" })).toBe(true);
    expect(m({ a: { $gte: "b" } }, { a: "a" })).toBe(false);
  });

  it("$lt is strictly less", () => {
    expect(m({ a: { $lt: 5 } }, { a: 4 })).toBe(true);
    expect(m({ a: { $lt: 5 } }, { a: -100 })).toBe(true);
    expect(m({ a: { $lt: 5 } }, { a: 5 })).toBe(false);
    expect(m({ a: { $lt: "b" } }, { a: "a" })).toBe(true);
    expect(m({ a: { $lt: "b" } }, { a: "ba" })).toBe(false);
  });

  it("$lte includes equality", () => {
    expect(m({ a: { $lte: 5 } }, { a: 5 })).toBe(true);
    expect(m({ a: { $lte: 5 } }, { a: 4 })).toBe(true);
    expect(m({ a: { $lte: 5 } }, { a: 5.001 })).toBe(false);
    expect(m({ a: { $lte: "b" } }, { a: "b" })).toBe(true);
    expect(m({ a: { $lte: "b" } }, { a: "c" })).toBe(false);
  });

  it("$in matches a value in the list, or an array with an element in it", () => {
    expect(m({ a: { $in: ["x", "y"] } }, { a: "y" })).toBe(true);
    expect(m({ a: { $in: [1, null] } }, { a: null })).toBe(true);
    expect(m({ a: { $in: ["x", "y"] } }, { a: ["q", "x"] })).toBe(true);
    expect(m({ a: { $in: ["x", "y"] } }, { a: "z" })).toBe(false);
    expect(m({ a: { $in: ["x", "y"] } }, { a: ["q", "r"] })).toBe(false);
    expect(m({ a: { $in: [1] } }, { a: "1" })).toBe(false);
    expect(m({ a: { $in: [] } }, { a: "x" })).toBe(false);
    expect(m({ a: { $in: ["x"] } }, {})).toBe(false);
  });

  it("$nin is the negation of $in", () => {
    expect(m({ a: { $nin: ["x", "y"] } }, { a: "z" })).toBe(true);
    expect(m({ a: { $nin: ["x", "y"] } }, { a: ["q", "r"] })).toBe(true);
    expect(m({ a: { $nin: ["x"] } }, {})).toBe(true);
    expect(m({ a: { $nin: ["x", "y"] } }, { a: "x" })).toBe(false);
    expect(m({ a: { $nin: ["x", "y"] } }, { a: ["q", "y"] })).toBe(false);
  });

  it("$startsWith matches a string with that prefix", () => {
    expect(m({ a: { $startsWith: "inv" } }, { a: "invoice.paid" })).toBe(true);
    expect(m({ a: { $startsWith: "" } }, { a: "anything" })).toBe(true);
    expect(m({ a: { $startsWith: "inv" } }, { a: "customer.created" })).toBe(false);
    expect(m({ a: { $startsWith: "Inv" } }, { a: "invoice.paid" })).toBe(false);
  });

  it("$endsWith matches a string with that suffix", () => {
    expect(m({ a: { $endsWith: ".paid" } }, { a: "invoice.paid" })).toBe(true);
    expect(m({ a: { $endsWith: ".paid" } }, { a: "invoice.created" })).toBe(false);
    expect(m({ a: { $endsWith: "paid" } }, { a: "paid.invoice" })).toBe(false);
  });

  it("$exist: true matches a field that is there, whatever its value (null included)", () => {
    expect(m({ a: { $exist: true } }, { a: 1 })).toBe(true);
    expect(m({ a: { $exist: true } }, { a: null })).toBe(true);
    expect(m({ a: { $exist: true } }, { a: false })).toBe(true);
    expect(m({ a: { $exist: true } }, { b: 1 })).toBe(false);
  });

  it("$exist: false matches a field that is not there", () => {
    expect(m({ a: { $exist: false } }, { b: 1 })).toBe(true);
    expect(m({ a: { $exist: false } }, {})).toBe(true);
    expect(m({ a: { $exist: false } }, { a: null })).toBe(false);
    expect(m({ a: { $exist: false } }, { a: 0 })).toBe(false);
  });

  it("$or needs one of its filters to match", () => {
    expect(m({ $or: [{ a: 1 }, { b: 2 }] }, { b: 2 })).toBe(true);
    expect(m({ $or: [{ a: 1 }, { b: 2 }] }, { a: 1, b: 3 })).toBe(true);
    expect(m({ $or: [{ a: 1 }, { b: 2 }] }, { a: 2, b: 3 })).toBe(false);
    expect(m({ a: { $or: [{ $lt: 0 }, { $gt: 10 }] } }, { a: 11 })).toBe(true);
    expect(m({ a: { $or: [{ $lt: 0 }, { $gt: 10 }] } }, { a: 5 })).toBe(false);
  });

  it("$and needs all of its filters to match", () => {
    expect(m({ $and: [{ a: 1 }, { b: 2 }] }, { a: 1, b: 2 })).toBe(true);
    expect(m({ $and: [{ a: 1 }, { b: 2 }] }, { a: 1, b: 3 })).toBe(false);
    expect(m({ a: { $and: [{ $gt: 0 }, { $lt: 10 }] } }, { a: 5 })).toBe(true);
    expect(m({ a: { $and: [{ $gt: 0 }, { $lt: 10 }] } }, { a: 10 })).toBe(false);
  });

  it("$not inverts its filter", () => {
    expect(m({ $not: { a: 1 } }, { a: 2 })).toBe(true);
    expect(m({ $not: { a: 1 } }, { a: 1 })).toBe(false);
    expect(m({ a: { $not: { $in: ["x", "y"] } } }, { a: "z" })).toBe(true);
    expect(m({ a: { $not: { $in: ["x", "y"] } } }, { a: "x" })).toBe(false);
    expect(m({ a: { $not: "x" } }, {})).toBe(true);
  });

  it("combines operators on one value as AND", () => {
    expect(m({ a: { $gte: 10, $lt: 20, $neq: 15 } }, { a: 12 })).toBe(true);
    expect(m({ a: { $gte: 10, $lt: 20, $neq: 15 } }, { a: 15 })).toBe(false);
    expect(m({ a: { $gte: 10, $lt: 20, $neq: 15 } }, { a: 20 })).toBe(false);
  });
});

describe("matchesPayload: arrays", () => {
  it("a scalar filter value matches an array that contains it", () => {
    expect(m({ tags: "b" }, { tags: ["a", "b", "c"] })).toBe(true);
    expect(m({ tags: 2 }, { tags: [1, 2] })).toBe(true);
    expect(m({ tags: null }, { tags: [1, null] })).toBe(true);
  });

  it("a scalar filter value does not match an array without it (nor one holding it only in a nested array)", () => {
    expect(m({ tags: "d" }, { tags: ["a", "b", "c"] })).toBe(false);
    expect(m({ tags: "1" }, { tags: [1] })).toBe(false);
    expect(m({ tags: "a" }, { tags: [] })).toBe(false);
    expect(m({ tags: "a" }, { tags: [["a"]] })).toBe(false);
  });

  it("an array filter value matches an array containing all its elements, in any order and with extras", () => {
    expect(m({ tags: ["a", "b"] }, { tags: ["a", "b"] })).toBe(true);
    expect(m({ tags: ["b", "a"] }, { tags: ["a", "b", "c"] })).toBe(true);
    expect(m({ tags: ["c"] }, { tags: ["a", "b", "c"] })).toBe(true);
  });

  it("an array filter value fails when one of its elements is missing", () => {
    expect(m({ tags: ["a", "d"] }, { tags: ["a", "b", "c"] })).toBe(false);
    expect(m({ tags: ["a", 1] }, { tags: ["a", "1"] })).toBe(false);
  });

  it("an array filter value does not match a non-array", () => {
    expect(m({ tags: ["a"] }, { tags: "a" })).toBe(false);
    expect(m({ tags: ["a"] }, { tags: { 0: "a" } })).toBe(false);
    expect(m({ tags: ["a"] }, {})).toBe(false);
  });

  it("the elements of an array filter are filters themselves", () => {
    expect(m({ items: [{ sku: "A" }, { qty: { $gt: 1 } }] }, { items: [{ sku: "A", qty: 1 }, { sku: "B", qty: 2 }] })).toBe(true);
    expect(m({ items: [{ sku: "A" }, { qty: { $gt: 5 } }] }, { items: [{ sku: "A", qty: 1 }, { sku: "B", qty: 2 }] })).toBe(false);
  });
});

describe("matchesPayload: fields of objects", () => {
  it("matches a nested path", () => {
    const filter = { data: { object: { amount_paid: { $gte: 10000 } } } };
    expect(m(filter, { data: { object: { amount_paid: 10000, currency: "usd" } } })).toBe(true);
    expect(m(filter, { data: { object: { amount_paid: 25000 } }, other: true })).toBe(true);
    expect(m(filter, { data: { object: { amount_paid: 9999 } } })).toBe(false);
    expect(m(filter, { data: { object: {} } })).toBe(false);
    expect(m(filter, { data: "object" })).toBe(false);
  });

  it("needs every key of an object (AND), at every level", () => {
    const filter = { type: "invoice.paid", data: { currency: "usd", livemode: true } };
    expect(m(filter, { type: "invoice.paid", data: { currency: "usd", livemode: true, extra: 1 } })).toBe(true);
    expect(m(filter, { type: "invoice.paid", data: { currency: "eur", livemode: true } })).toBe(false);
    expect(m(filter, { type: "invoice.paid", data: { currency: "usd" } })).toBe(false);
    expect(m(filter, { type: "invoice.created", data: { currency: "usd", livemode: true } })).toBe(false);
  });

  it("treats an empty object filter as matching everything", () => {
    expect(m({}, { a: 1 })).toBe(true);
    expect(m({}, null)).toBe(true);
    expect(m({ a: {} }, { a: { b: 1 } })).toBe(true);
  });

  it("does not match a field against a payload that is not an object", () => {
    expect(m({ a: 1 }, null)).toBe(false);
    expect(m({ a: 1 }, "a")).toBe(false);
    expect(m({ a: 1 }, 1)).toBe(false);
  });
});

describe("matchesPayload: missing fields", () => {
  it("a missing field fails a plain value", () => {
    expect(m({ a: 1 }, { b: 1 })).toBe(false);
    expect(m({ a: null }, { b: 1 })).toBe(false);
    expect(m({ a: "x", b: 1 }, { b: 1 })).toBe(false);
  });

  it("a missing field passes {$exist: false} and fails {$exist: true}", () => {
    expect(m({ a: { $exist: false } }, { b: 1 })).toBe(true);
    expect(m({ a: { $exist: true } }, { b: 1 })).toBe(false);
    expect(m({ data: { coupon: { $exist: false } } }, { data: { amount: 1 } })).toBe(true);
    expect(m({ data: { coupon: { $exist: true } } }, { data: { amount: 1 } })).toBe(false);
  });

  it("a missing field fails comparisons and string operators", () => {
    for (const op of [{ $gt: 0 }, { $gte: 0 }, { $lt: 0 }, { $lte: 0 }, { $startsWith: "" }, { $endsWith: "" }, { $in: [null] }, { $eq: null }]) {
      expect(m({ a: op }, {})).toBe(false);
    }
  });

  it("an inherited property is not a field", () => {
    expect(m({ toString: { $exist: true } }, {})).toBe(false);
    expect(m({ constructor: { $exist: false } }, {})).toBe(true);
  });
});

describe("matchesPayload: type mismatches are false, never an error", () => {
  const cases: [string, Filter, unknown][] = [
    ['{$gt: 5} against "6"', { a: { $gt: 5 } }, { a: "6" }],
    ['{$gte: "5"} against 6', { a: { $gte: "5" } }, { a: 6 }],
    ["{$lt: 5} against null", { a: { $lt: 5 } }, { a: null }],
    ["{$lte: 5} against true", { a: { $lte: 5 } }, { a: true }],
    ["{$gt: 5} against an object", { a: { $gt: 5 } }, { a: { b: 6 } }],
    ['{$startsWith: "a"} against 1', { a: { $startsWith: "a" } }, { a: 1 }],
    ['{$endsWith: "1"} against 1', { a: { $endsWith: "1" } }, { a: 1 }],
    ['{$startsWith: "a"} against ["abc"]', { a: { $startsWith: "a" } }, { a: ["abc"] }],
    ['"1" against 1', { a: "1" }, { a: 1 }],
    ['1 against "1"', { a: 1 }, { a: "1" }],
    ["true against 1", { a: true }, { a: 1 }],
    ["0 against false", { a: 0 }, { a: false }],
    ['"" against null', { a: "" }, { a: null }],
    ["null against a missing field (undefined)", { a: null }, {}],
    ["null against false", { a: null }, { a: false }],
    ['{$in: [1]} against "1"', { a: { $in: [1] } }, { a: "1" }],
    ["{$in: [null]} against an object", { a: { $in: [null] } }, { a: {} }],
    ["an object against a string", { a: { b: 1 } }, { a: "b" }],
  ];
  it.each(cases)("%s is false", (_name, filter, payload) => {
    expect(() => m(filter, payload)).not.toThrow();
    expect(m(filter, payload)).toBe(false);
  });

  it("null matches null, not undefined", () => {
    expect(m({ a: null }, { a: null })).toBe(true);
    expect(m({ a: null }, { a: undefined })).toBe(false);
  });
});

describe("matchesPayload: $or, $and and $not nested", () => {
  // (status is "paid" AND NOT (amount < 100)) OR (tags contain "vip" AND country in [FR, DE])
  const filter: Filter = {
    $or: [
      { $and: [{ status: "paid" }, { $not: { amount: { $lt: 100 } } }] },
      { $and: [{ tags: "vip" }, { country: { $in: ["FR", "DE"] } }] },
    ],
  };

  it("matches through the first branch", () => {
    expect(m(filter, { status: "paid", amount: 100 })).toBe(true);
    expect(m(filter, { status: "paid" })).toBe(true); // no amount: `amount < 100` fails, its negation holds
  });

  it("matches through the second branch", () => {
    expect(m(filter, { status: "open", amount: 1, tags: ["new", "vip"], country: "DE" })).toBe(true);
  });

  it("fails when neither branch holds", () => {
    expect(m(filter, { status: "paid", amount: 99 })).toBe(false);
    expect(m(filter, { status: "open", tags: ["vip"], country: "US" })).toBe(false);
    expect(m(filter, { status: "open", tags: ["new"], country: "FR" })).toBe(false);
  });

  it("handles $not of $or of $and, three levels deep, inside a field", () => {
    const f: Filter = { data: { $not: { $or: [{ $and: [{ $gte: 10 }, { $lte: 20 }] }, { $in: [0] }] } } };
    expect(m(f, { data: 5 })).toBe(true);
    expect(m(f, { data: 25 })).toBe(true);
    expect(m(f, { data: 15 })).toBe(false);
    expect(m(f, { data: 0 })).toBe(false);
  });

  it("double negation is the filter itself", () => {
    expect(m({ $not: { $not: { a: 1 } } }, { a: 1 })).toBe(true);
    expect(m({ $not: { $not: { a: 1 } } }, { a: 2 })).toBe(false);
  });
});

describe("matchesPayload: an object filter against an array value", () => {
  it("matches when one element matches the whole object", () => {
    const payload = { items: [{ sku: "A", qty: 1 }, { sku: "B", qty: 3 }] };
    expect(m({ items: { sku: "B" } }, payload)).toBe(true);
    expect(m({ items: { sku: "B", qty: { $gt: 2 } } }, payload)).toBe(true);
    expect(m({ items: { qty: { $gt: 2 } } }, payload)).toBe(true);
  });

  it("fails when no single element matches every key, even if different elements match each", () => {
    const payload = { items: [{ sku: "A", qty: 1 }, { sku: "B", qty: 3 }] };
    expect(m({ items: { sku: "A", qty: 3 } }, payload)).toBe(false);
    expect(m({ items: { sku: "C" } }, payload)).toBe(false);
    expect(m({ items: { sku: "A" } }, { items: [] })).toBe(false);
  });

  it("applies at the top level and through nested arrays", () => {
    expect(m({ id: 2 }, [{ id: 1 }, { id: 2 }])).toBe(true);
    expect(m({ id: 3 }, [{ id: 1 }, { id: 2 }])).toBe(false);
    expect(m({ lines: { product: { id: "p2" } } }, { lines: [{ product: { id: "p1" } }, { product: { id: "p2" } }] })).toBe(true);
  });

  it("an operator-only object applies to the array itself", () => {
    expect(m({ items: { $exist: true } }, { items: [] })).toBe(true);
    expect(m({ items: { $in: ["x"] } }, { items: ["y", "x"] })).toBe(true);
  });
});

describe("matchesPayload: the product's example (invoice.paid over 10,000)", () => {
  const filter: Filter = { type: "invoice.paid", data: { object: { amount_paid: { $gt: 10000 } } } };
  const invoice = (type: string, amount: number) => ({
    id: "evt_1",
    type,
    data: { object: { id: "in_1", object: "invoice", amount_paid: amount, currency: "usd" } },
  });

  it("is a valid filter", () => {
    expect(validatePayloadFilter(filter)).toEqual([]);
  });

  it("forwards invoice.paid with amount_paid 10001", () => {
    expect(m(filter, invoice("invoice.paid", 10001))).toBe(true);
  });

  it("drops invoice.paid with amount_paid 10000", () => {
    expect(m(filter, invoice("invoice.paid", 10000))).toBe(false);
  });

  it("drops invoice.created even over 10,000", () => {
    expect(m(filter, invoice("invoice.created", 10001))).toBe(false);
  });
});

describe("matchesPayload: objects against arrays, and $eq with an object", () => {
  it("an object mixing fields and operators matches an array when one element matches it whole", () => {
    expect(m({ items: { sku: "A", $not: { qty: 0 } } }, { items: [{ sku: "A", qty: 1 }] })).toBe(true);
    expect(m({ items: { sku: "A", $exist: true } }, { items: [{ sku: "A" }] })).toBe(true);
  });

  it("its operators apply to the array itself too: each key must hold (fast-check's counterexample)", () => {
    // $not [] on the array: [] matches every array, so $not fails, whatever its elements do.
    expect(m({ $not: [], a: {} }, [{}])).toBe(false);
    expect(m({ $not: [1], a: {} }, [{ a: 2 }])).toBe(true);
    expect(m({ $not: [1], a: {} }, [{ a: 2 }, 1])).toBe(false);
  });

  it("$eq with an object operand matches as that object would as a plain filter", () => {
    const payload = { data: { status: "paid", amount: 5 } };
    expect(m({ data: { status: "paid" } }, payload)).toBe(true);
    expect(m({ data: { $eq: { status: "paid" } } }, payload)).toBe(true);
    expect(validatePayloadFilter({ a: { $eq: { $gt: 1 } } })).toEqual([]);
    expect(m({ a: { $eq: { $gt: 1 } } }, { a: 2 })).toBe(true);
  });
});

describe("validatePayloadFilter", () => {
  it("gives no issues for a valid filter using every operator", () => {
    const filter = {
      type: { $in: ["invoice.paid", "invoice.created"] },
      data: {
        object: {
          amount_paid: { $gt: 0, $gte: 1, $lt: 1e9, $lte: "z" },
          currency: { $neq: "eur", $nin: ["jpy", null] },
          customer: { $startsWith: "cus_", $endsWith: "x" },
          coupon: { $exist: false },
          lines: ["a", 1, null, true, { sku: "A" }],
          status: { $eq: "paid" },
        },
      },
      $or: [{ livemode: true }, { test: { $not: { $eq: false } } }],
      $and: [{ a: 1 }],
      $not: { deleted: true },
    };
    expect(validatePayloadFilter(filter)).toEqual([]);
  });

  it("names an unknown operator by its JSON path", () => {
    expect(validatePayloadFilter({ a: { $gtx: 1 } })).toEqual([issue("payload_filter.a.$gtx", "unknown_operator")]);
    expect(validatePayloadFilter({ $regex: "x" })).toEqual([issue("payload_filter.$regex", "unknown_operator")]);
    expect(validatePayloadFilter({ data: { object: { $exists: true } } })).toEqual([issue("payload_filter.data.object.$exists", "unknown_operator")]);
  });

  it("finds faults inside $or, $and, $not, $eq and arrays, with their indexes in the path", () => {
    expect(validatePayloadFilter({ $or: [{ a: 1 }, { b: { $foo: 1 } }] })).toEqual([issue("payload_filter.$or.1.b.$foo", "unknown_operator")]);
    expect(validatePayloadFilter({ $and: [{ a: { $in: 1 } }] })).toEqual([issue("payload_filter.$and.0.a.$in", "invalid_operand")]);
    expect(validatePayloadFilter({ $not: { $bad: 1 } })).toEqual([issue("payload_filter.$not.$bad", "unknown_operator")]);
    expect(validatePayloadFilter({ a: { $eq: { $bad: 1 } } })).toEqual([issue("payload_filter.a.$eq.$bad", "unknown_operator")]);
    expect(validatePayloadFilter({ a: [1, { b: { $gt: [] } }] })).toEqual([issue("payload_filter.a.1.b.$gt", "invalid_operand")]);
  });

  it("reports every fault, not just the first", () => {
    expect(validatePayloadFilter({ a: { $gtx: 1 }, b: { $in: 3 }, c: { d: { $exist: "yes" } } })).toEqual([
      issue("payload_filter.a.$gtx", "unknown_operator"),
      issue("payload_filter.b.$in", "invalid_operand"),
      issue("payload_filter.c.d.$exist", "invalid_operand"),
    ]);
  });

  const badOperands: [string, Filter, string][] = [
    ["$gt with an object", { a: { $gt: { b: 1 } } }, "payload_filter.a.$gt"],
    ["$gt with an array", { a: { $gt: [1] } }, "payload_filter.a.$gt"],
    ["$gte with null", { a: { $gte: null } }, "payload_filter.a.$gte"],
    ["$lt with a boolean", { a: { $lt: true } }, "payload_filter.a.$lt"],
    ["$lte with an object", { a: { $lte: {} } }, "payload_filter.a.$lte"],
    ["$in with a non-array", { a: { $in: "x" } }, "payload_filter.a.$in"],
    ["$in with an object", { a: { $in: { x: 1 } } }, "payload_filter.a.$in"],
    ["$in with an array holding an object", { a: { $in: [1, { b: 2 }] } }, "payload_filter.a.$in"],
    ["$nin with a non-array", { a: { $nin: 1 } }, "payload_filter.a.$nin"],
    ["$nin with an array holding an array", { a: { $nin: [[1]] } }, "payload_filter.a.$nin"],
    ["$startsWith with a number", { a: { $startsWith: 1 } }, "payload_filter.a.$startsWith"],
    ["$endsWith with null", { a: { $endsWith: null } }, "payload_filter.a.$endsWith"],
    ["$endsWith with an array", { a: { $endsWith: ["x"] } }, "payload_filter.a.$endsWith"],
    ["$exist with a string", { a: { $exist: "true" } }, "payload_filter.a.$exist"],
    ["$exist with a number", { a: { $exist: 1 } }, "payload_filter.a.$exist"],
    ["$or with []", { $or: [] }, "payload_filter.$or"],
    ["$or with a non-array", { $or: { a: 1 } }, "payload_filter.$or"],
    ["$and with []", { a: { $and: [] } }, "payload_filter.a.$and"],
    ["$and with a string", { $and: "a" }, "payload_filter.$and"],
  ];
  it.each(badOperands)("rejects %s as invalid_operand at its path", (_name, filter, field) => {
    expect(validatePayloadFilter(filter)).toEqual([issue(field, "invalid_operand")]);
  });

  it.each([
    ["an array", []],
    ["an array of filters", [{ a: 1 }]],
    ["a string", "a"],
    ["a number", 1],
    ["a boolean", true],
  ] as [string, unknown][])("rejects %s at the top as not_an_object", (_name, filter) => {
    expect(validatePayloadFilter(filter)).toEqual([issue("payload_filter", "not_an_object")]);
  });

  describe("the 4 KB limit", () => {
    // {"a":"…"} is 8 bytes around the string.
    const ofBytes = (n: number) => ({ a: "x".repeat(n - 8) });

    it("is 4096 bytes", () => {
      expect(MAX_FILTER_BYTES).toBe(4096);
    });

    it("accepts a filter of exactly 4096 bytes of JSON", () => {
      const f = ofBytes(4096);
      expect(utf8Length(f)).toBe(4096);
      expect(validatePayloadFilter(f)).toEqual([]);
    });

    it("rejects a filter of 4097 bytes as too_large", () => {
      const f = ofBytes(4097);
      expect(utf8Length(f)).toBe(4097);
      expect(validatePayloadFilter(f)).toEqual([issue("payload_filter", "too_large")]);
    });

    it("counts UTF-8 bytes, not characters", () => {
      const at = { a: "é".repeat(2044) }; // 2-byte characters: 8 + 4088 bytes
      expect(utf8Length(at)).toBe(4096);
      expect(validatePayloadFilter(at)).toEqual([]);
      const over = { a: `${"é".repeat(2044)}x` };
      expect(JSON.stringify(over).length).toBe(2053);
      expect(utf8Length(over)).toBe(4097);
      expect(validatePayloadFilter(over)).toEqual([issue("payload_filter", "too_large")]);
    });
  });

  describe("the depth limit", () => {
    // The top object is level 1; each object or array nested in a field, an array or the
    // operand of $not/$eq/$neq adds one. Scalars are not levels.
    const objects = (levels: number): Filter => (levels === 1 ? { a: 1 } : { a: objects(levels - 1) });
    const arrays = (levels: number): unknown => (levels === 1 ? [1] : [arrays(levels - 1)]);
    const nots = (levels: number): Filter => (levels === 1 ? { a: 1 } : { $not: nots(levels - 1) });
    // $or/$and: each filter in the array is one level below the object holding the $or; the
    // array itself is not a level of its own.
    const ors = (levels: number): Filter => (levels === 1 ? { a: 1 } : { $or: [ors(levels - 1)] });

    it("is 10 levels", () => {
      expect(MAX_FILTER_DEPTH).toBe(10);
    });

    it("accepts 10 nested objects and rejects 11 as too_deep at the 11th", () => {
      expect(validatePayloadFilter(objects(10))).toEqual([]);
      expect(validatePayloadFilter(objects(11))).toEqual([issue(`payload_filter${".a".repeat(10)}`, "too_deep")]);
    });

    it("counts arrays as levels", () => {
      expect(validatePayloadFilter({ a: arrays(9) })).toEqual([]); // 1 object + 9 arrays
      expect(validatePayloadFilter({ a: arrays(10) })).toEqual([issue(`payload_filter.a${".0".repeat(9)}`, "too_deep")]);
    });

    it("counts $not operands as levels", () => {
      expect(validatePayloadFilter(nots(10))).toEqual([]);
      expect(validatePayloadFilter(nots(11))).toEqual([issue(`payload_filter${".$not".repeat(10)}`, "too_deep")]);
    });

    it("counts each filter of $or as one level below its object", () => {
      expect(validatePayloadFilter(ors(10))).toEqual([]);
      expect(validatePayloadFilter(ors(11))).toEqual([issue(`payload_filter${".$or.0".repeat(10)}`, "too_deep")]);
    });

    it("does not count a scalar as a level", () => {
      // Ten objects, the 10th holding only scalars, and a $nin list (an operand of scalars,
      // not walked as a level).
      const f = objects(9);
      let inner = f;
      for (let i = 0; i < 8; i++) inner = inner.a as Filter;
      inner.a = { b: "x", c: null, d: 1, $nin: [1, 2] }; // the 10th object
      expect(validatePayloadFilter(f)).toEqual([]);
      inner.a = { b: "x", c: {} }; // c is an 11th level
      expect(validatePayloadFilter(f)).toEqual([issue(`payload_filter${".a".repeat(9)}.c`, "too_deep")]);
    });
  });

  describe("the root argument", () => {
    it("changes the prefix of every path", () => {
      expect(validatePayloadFilter({ data: { $gtx: 1 } }, "body.filter")).toEqual([issue("body.filter.data.$gtx", "unknown_operator")]);
      expect(validatePayloadFilter({ $or: [] }, "f")).toEqual([issue("f.$or", "invalid_operand")]);
      expect(validatePayloadFilter("x", "f")).toEqual([issue("f", "not_an_object")]);
      expect(validatePayloadFilter({ a: "x".repeat(5000) }, "f")).toEqual([issue("f", "too_large")]);
      expect(validatePayloadFilter({ a: { a: { a: { a: { a: { a: { a: { a: { a: { a: { a: 1 } } } } } } } } } } }, "f")).toEqual([
        issue(`f${".a".repeat(10)}`, "too_deep"),
      ]);
    });

    it("with an empty root gives paths starting with a dot (as the HTTP layer splits them)", () => {
      expect(validatePayloadFilter({ data: { $gtx: 1 } }, "")).toEqual([issue(".data.$gtx", "unknown_operator")]);
    });
  });
});

/*
 * REFERENCE INTERPRETER, written from the documented semantics only.
 *
 * The implementation must agree with it on every generated case. As the header says, a
 * value that is not an object has no fields: {a: {b: {$exist: false}}} fails on {} and on
 * {a: 1}.
 */
const MISSING = Symbol("missing");
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };


function isList(v: unknown): v is unknown[] {
  return Array.isArray(v);
}
function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
/** Two scalars are equal when they have the same type and value. */
function sameScalar(a: unknown, b: unknown): boolean {
  return typeof a === typeof b && a === b;
}

function refMatch(filter: unknown, value: unknown): boolean {
  if (isList(filter)) {
    // An array: the value is an array with, for each filter element, an element it matches.
    if (!isList(value)) return false;
    for (const want of filter) {
      let found = false;
      for (const have of value) if (refMatch(want, have)) found = true;
      if (!found) return false;
    }
    return true;
  }
  if (isRecord(filter)) {
    // An object: every key must hold.
    for (const key of Object.keys(filter)) {
      const ok = key.startsWith("$") ? refOperator(key, filter[key], value) : refField(filter, key, value);
      if (!ok) return false;
    }
    return true;
  }
  // A scalar: an equal value of the same type, or an array holding one.
  if (isList(value)) return value.some((e) => sameScalar(filter, e));
  return sameScalar(filter, value);
}

function refField(filter: Record<string, unknown>, key: string, value: unknown): boolean {
  if (isRecord(value)) return refMatch(filter[key], Object.hasOwn(value, key) ? value[key] : MISSING);
  if (isList(value)) {
    // An array matches when one of its elements matches the whole object.
    return value.some((e) => refMatch(filter, e));
  }
  return false;
}

function refIn(list: unknown[], value: unknown): boolean {
  const inList = (v: unknown) => list.some((x) => sameScalar(x, v));
  return isList(value) ? value.some(inList) : inList(value);
}

function refOperator(op: string, operand: unknown, value: unknown): boolean {
  const bothNumbers = typeof operand === "number" && typeof value === "number";
  const bothStrings = typeof operand === "string" && typeof value === "string";
  const comparable = bothNumbers || bothStrings;
  const v = value as number & string;
  const o = operand as number & string;
  switch (op) {
    case "$eq":
      return refMatch(operand, value); // as a plain value
    case "$neq":
      return !refOperator("$eq", operand, value);
    case "$gt":
      return comparable && v > o;
    case "$gte":
      return comparable && v >= o;
    case "$lt":
      return comparable && v < o;
    case "$lte":
      return comparable && v <= o;
    case "$in":
      return refIn(operand as unknown[], value);
    case "$nin":
      return !refIn(operand as unknown[], value);
    case "$startsWith":
      return typeof value === "string" && value.slice(0, (operand as string).length) === operand;
    case "$endsWith":
      return typeof value === "string" && value.length >= (operand as string).length && value.slice(value.length - (operand as string).length) === operand;
    case "$exist":
      return operand === true ? value !== MISSING : value === MISSING;
    case "$or":
      return (operand as unknown[]).some((f) => refMatch(f, value));
    case "$and":
      return (operand as unknown[]).every((f) => refMatch(f, value));
    case "$not":
      return !refMatch(operand, value);
    default:
      throw new Error(`not an operator: ${op}`);
  }
}

function reference(filter: Filter, payload: unknown): boolean {
  return refMatch(filter, payload);
}

describe("the reference interpreter (sanity)", () => {
  it("reads the product's example as documented", () => {
    const f: Filter = { type: "invoice.paid", data: { object: { amount_paid: { $gt: 10000 } } } };
    expect(reference(f, { type: "invoice.paid", data: { object: { amount_paid: 10001 } } })).toBe(true);
    expect(reference(f, { type: "invoice.paid", data: { object: { amount_paid: 10000 } } })).toBe(false);
  });

  it("reads an object against an array, and $eq with an object, as the header says", () => {
    expect(reference({ items: { sku: "A", $not: { qty: 0 } } }, { items: [{ sku: "A", qty: 1 }] })).toBe(true);
    expect(reference({ data: { $eq: { status: "paid" } } }, { data: { status: "paid", amount: 5 } })).toBe(true);
    expect(reference({ items: { sku: "A" } }, { items: [{ sku: "A" }] })).toBe(true);
  });
});

// ---- Generators ----------------------------------------------------------------------

const KEYS = ["a", "b", "c"] as const;
const key = fc.constantFrom(...KEYS);
// Small domains, so filters and payloads often meet (equal values, prefixes, both sides
// of a comparison), with a few arbitrary values now and then.
const str = fc.oneof({ weight: 8, arbitrary: fc.constantFrom("", "a", "ab", "b", "ba", "1") }, { weight: 1, arbitrary: fc.string({ maxLength: 3 }) });
const num = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(-1, 0, 1, 2, 1.5) }, { weight: 1, arbitrary: fc.integer({ min: -5, max: 5 }) });
const scalar: fc.Arbitrary<Json> = fc.oneof(fc.constant(null), fc.boolean(), num, num, str, str);

const { payload } = fc.letrec<{ payload: Json; list: Json[]; record: { [k: string]: Json } }>((tie) => ({
  payload: fc.oneof(
    { maxDepth: 4, depthSize: "medium", depthIdentifier: "payload", withCrossShrink: true },
    { weight: 3, arbitrary: scalar },
    { weight: 1, arbitrary: tie("list") },
    { weight: 2, arbitrary: tie("record") },
  ),
  list: fc.array(tie("payload"), { maxLength: 3, depthIdentifier: "payload" }),
  record: fc.record({ a: tie("payload"), b: tie("payload"), c: tie("payload") }, { requiredKeys: [] }),
}));
// As parsed from a request body.
const jsonPayload = payload.map((p) => JSON.parse(JSON.stringify(p)) as Json);

type Entry = [string, unknown];
/** Operators whose operand is not a filter, each with a well-typed operand. */
const leafOperator: fc.Arbitrary<Entry> = fc.oneof(
  fc.tuple(fc.constantFrom("$eq", "$neq"), fc.oneof(scalar, fc.array(scalar, { maxLength: 3 }))),
  fc.tuple(fc.constantFrom("$gt", "$gte", "$lt", "$lte"), fc.oneof(num, str)),
  fc.tuple(fc.constantFrom("$in", "$nin"), fc.array(scalar, { maxLength: 3 })),
  fc.tuple(fc.constantFrom("$startsWith", "$endsWith"), str),
  fc.tuple(fc.constant("$exist"), fc.boolean()),
);
const { filter } = fc.letrec<{ node: unknown; list: unknown[]; filter: Filter; entry: Entry }>((tie) => ({
  // What a field, an array element, or the operand of $eq/$neq/$not may hold.
  node: fc.oneof({ maxDepth: 8, depthSize: "medium", depthIdentifier: "filter", withCrossShrink: true }, scalar, tie("list"), tie("filter"), tie("filter")),
  list: fc.array(tie("node"), { maxLength: 3, depthIdentifier: "filter" }),
  filter: fc.array(tie("entry"), { maxLength: 3, depthIdentifier: "filter" }).map((entries) => Object.fromEntries(entries) as Filter),
  entry: fc.oneof(
    { depthIdentifier: "filter" },
    { weight: 4, arbitrary: fc.tuple(key, tie("node")) },
    { weight: 3, arbitrary: leafOperator },
    fc.tuple(fc.constantFrom("$eq", "$neq"), tie("node")), // object operands included
    fc.tuple(fc.constantFrom("$or", "$and"), fc.array(tie("node"), { minLength: 1, maxLength: 3, depthIdentifier: "filter" })),
    fc.tuple(fc.constant("$not"), tie("node")),
  ),
}));
/** One field under one or two leaf operators: {a: {$op: operand, ...}}. */
const fieldOperatorFilter = fc
  .tuple(key, fc.array(leafOperator, { minLength: 1, maxLength: 2 }))
  .map(([k, ops]) => ({ [k]: Object.fromEntries(ops) }) as Filter);
/** A field's value for it: a scalar, an array of scalars, or anything. */
const fieldPayload = fc.record(
  { a: fc.oneof(scalar, scalar, fc.array(scalar, { maxLength: 3 }), payload), b: fc.oneof(scalar, payload) },
  { requiredKeys: [] },
) as fc.Arbitrary<Json>;

// Any JSON at all: any keys (including "__proto__", "constructor", "$x"), deeper values.
const anyJson = fc.jsonValue({ maxDepth: 5 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);

describe("matchesPayload: properties", () => {
  it("the generated filters are valid", () => {
    fc.assert(
      fc.property(filter, (f) => {
        expect(validatePayloadFilter(f)).toEqual([]);
      }),
      { numRuns: 1000 },
    );
  });

  it("agrees with the reference interpreter on generated filters and payloads", () => {
    fc.assert(
      fc.property(filter, jsonPayload, (f, p) => {
        expect(validatePayloadFilter(f)).toEqual([]);
        expect(matchesPayload(f, p)).toBe(reference(f, p));
      }),
      { numRuns: 5000 },
    );
  });

  it("agrees with the reference on every leaf operator applied to a field", () => {
    fc.assert(
      fc.property(fieldOperatorFilter, fieldPayload, (f, p) => {
        expect(validatePayloadFilter(f)).toEqual([]);
        expect(matchesPayload(f, p)).toBe(reference(f, p));
      }),
      { numRuns: 3000 },
    );
  });

  it("agrees with the reference on payloads that are objects holding the filter's keys", () => {
    // Both outcomes must occur often enough for this to mean something.
    let matched = 0;
    let total = 0;
    fc.assert(
      fc.property(filter, fc.dictionary(key, payload, { minKeys: 1, maxKeys: 3, noNullPrototype: true }), (f, p) => {
        const got = matchesPayload(f, p);
        expect(got).toBe(reference(f, p));
        total++;
        if (got) matched++;
      }),
      { numRuns: 1000 },
    );
    expect(matched).toBeGreaterThan(total * 0.05);
    expect(matched).toBeLessThan(total * 0.95);
  });

  it("never throws for a valid filter and any JSON payload", () => {
    const validRandomObject = fc.dictionary(fc.string({ maxLength: 4 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }).filter((f) => validatePayloadFilter(f).length === 0);
    fc.assert(
      fc.property(fc.oneof(filter, validRandomObject as fc.Arbitrary<Filter>), fc.oneof(anyJson, jsonPayload), (f, p) => {
        expect(validatePayloadFilter(f)).toEqual([]);
        expect(typeof matchesPayload(f, p)).toBe("boolean");
      }),
      { numRuns: 1000 },
    );
  });

  it("$not: f is always the negation of f", () => {
    fc.assert(
      fc.property(filter, fc.oneof(jsonPayload, anyJson), (f, p) => {
        expect(validatePayloadFilter({ $not: f })).toEqual([]);
        expect(matchesPayload({ $not: f }, p)).toBe(!matchesPayload(f, p));
      }),
      { numRuns: 1000 },
    );
  });

  it("the keys of a filter are ANDed against an object payload", () => {
    fc.assert(
      fc.property(filter, fc.dictionary(key, payload, { maxKeys: 3, noNullPrototype: true }), (f, p) => {
        const each = Object.entries(f).every(([k, v]) => matchesPayload({ [k]: v }, p));
        expect(matchesPayload(f, p)).toBe(each);
      }),
      { numRuns: 500 },
    );
  });

  it("$or and $and of two filters are the OR and AND of their matches", () => {
    fc.assert(
      fc.property(filter, filter, jsonPayload, (f, g, p) => {
        expect(matchesPayload({ $or: [f, g] }, p)).toBe(matchesPayload(f, p) || matchesPayload(g, p));
        expect(matchesPayload({ $and: [f, g] }, p)).toBe(matchesPayload(f, p) && matchesPayload(g, p));
      }),
      { numRuns: 500 },
    );
  });
});
