/**
 * payload_filter: which events a destination receives by what is inside them, in the
 * syntax Hookdeck's and Outpost's filters share. A pure module: no eval, no regular
 * expression built from the filter, and a cost bounded by the filter (at most
 * MAX_FILTER_BYTES and MAX_FILTER_DEPTH levels; the payload is walked only where the
 * filter points).
 *
 * match(filter, value):
 * - a scalar (string, number, boolean, null) matches an equal value of the same type,
 *   or an array that contains one;
 * - an array matches an array that contains, for each of its elements, an element it
 *   matches;
 * - an object: each key must hold. A key starting with `$` is an operator applied to the
 *   value itself; any other key is a field: an object's field must match (a value that is
 *   not an object has no fields: it matches no field, not even `{$exist: false}`), and an
 *   array matches when one of its elements matches the whole object.
 * Operators: $eq (as a plain value) and $neq; $gt $gte $lt $lte (numbers with numbers,
 * strings with strings); $in and $nin (an array: the value, or one of its elements, is in
 * it); $startsWith $endsWith (strings); $exist (boolean: the field is there or not);
 * $or and $and (non-empty arrays of filters); $not (a filter). A comparison of different
 * types is false, never an error.
 */
export const MAX_FILTER_BYTES = 4096;
export const MAX_FILTER_DEPTH = 10;

export type Filter = Record<string, unknown>;

interface FilterIssue {
  /** Dotted path from the payload_filter field, e.g. `payload_filter.data.amount.$gtx`. */
  field: string;
  code: "not_an_object" | "too_large" | "too_deep" | "unknown_operator" | "invalid_operand";
  message: string;
}

const OPERATORS = new Set(["$eq", "$neq", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$startsWith", "$endsWith", "$exist", "$or", "$and", "$not"]);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isScalar = (v: unknown) => v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean";

/** Every fault of a filter, each with its JSON path; none for a valid one. */
export function validatePayloadFilter(filter: unknown, root = "payload_filter"): FilterIssue[] {
  if (!isObject(filter)) return [{ field: root, code: "not_an_object", message: "must be a JSON object, or null" }];
  const size = new TextEncoder().encode(JSON.stringify(filter)).length;
  if (size > MAX_FILTER_BYTES) return [{ field: root, code: "too_large", message: `must be at most ${MAX_FILTER_BYTES} bytes as JSON (it is ${size})` }];
  const issues: FilterIssue[] = [];
  walk(filter, root, 1, issues);
  return issues;
}

function walk(value: unknown, path: string, depth: number, issues: FilterIssue[]): void {
  if (isScalar(value)) return;
  if (depth > MAX_FILTER_DEPTH) {
    issues.push({ field: path, code: "too_deep", message: `nests deeper than ${MAX_FILTER_DEPTH} levels` });
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((v, i) => walk(v, `${path}.${i}`, depth + 1, issues));
    return;
  }
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const at = `${path}.${key}`;
    if (!key.startsWith("$")) {
      walk(v, at, depth + 1, issues);
      continue;
    }
    if (!OPERATORS.has(key)) {
      issues.push({ field: at, code: "unknown_operator", message: `is not an operator (use one of ${[...OPERATORS].join(" ")})` });
      continue;
    }
    const bad = (message: string) => issues.push({ field: at, code: "invalid_operand", message });
    switch (key) {
      case "$gt":
      case "$gte":
      case "$lt":
      case "$lte":
        if (typeof v !== "number" && typeof v !== "string") bad("takes a number or a string");
        break;
      case "$in":
      case "$nin":
        if (!Array.isArray(v)) bad("takes an array");
        else if (!v.every(isScalar)) bad("takes an array of strings, numbers, booleans or nulls");
        break;
      case "$startsWith":
      case "$endsWith":
        if (typeof v !== "string") bad("takes a string");
        break;
      case "$exist":
        if (typeof v !== "boolean") bad("takes true or false");
        break;
      case "$or":
      case "$and":
        if (!Array.isArray(v) || v.length === 0) bad("takes a non-empty array of filters");
        else v.forEach((f, i) => walk(f, `${at}.${i}`, depth + 1, issues));
        break;
      default: // $eq, $neq, $not: any filter value
        walk(v, at, depth + 1, issues);
    }
  }
}

/** Whether a payload (parsed JSON) matches a filter that validatePayloadFilter accepts. */
export function matchesPayload(filter: Filter, payload: unknown): boolean {
  return match(filter, payload);
}

function match(f: unknown, d: unknown): boolean {
  if (isScalar(f)) return Array.isArray(d) ? d.some((e) => e === f) : d === f;
  if (Array.isArray(f)) return Array.isArray(d) && f.every((x) => d.some((e) => match(x, e)));
  const entries = Object.entries(f as Record<string, unknown>);
  if (Array.isArray(d)) {
    // Operators apply to the array itself; its fields hold when one of its elements
    // matches the whole object (once for all the fields: one pass over the elements).
    const ops = entries.filter(([k]) => k.startsWith("$"));
    return ops.every(([k, v]) => operator(k, v, d)) && (ops.length === entries.length || d.some((e) => match(f, e)));
  }
  return entries.every(([k, v]) => (k.startsWith("$") ? operator(k, v, d) : isObject(d) && match(v, Object.hasOwn(d, k) ? d[k] : undefined)));
}

function operator(op: string, v: unknown, d: unknown): boolean {
  switch (op) {
    case "$eq":
      return match(v, d);
    case "$neq":
      return !operator("$eq", v, d);
    case "$gt":
      return comparable(v, d) && (d as number) > (v as number);
    case "$gte":
      return comparable(v, d) && (d as number) >= (v as number);
    case "$lt":
      return comparable(v, d) && (d as number) < (v as number);
    case "$lte":
      return comparable(v, d) && (d as number) <= (v as number);
    case "$in":
      return inList(v as unknown[], d);
    case "$nin":
      return !inList(v as unknown[], d);
    case "$startsWith":
      return typeof d === "string" && d.startsWith(v as string);
    case "$endsWith":
      return typeof d === "string" && d.endsWith(v as string);
    case "$exist":
      return (d !== undefined) === v;
    case "$or":
      return (v as unknown[]).some((x) => match(x, d));
    case "$and":
      return (v as unknown[]).every((x) => match(x, d));
    case "$not":
      return !match(v, d);
    default:
      return false;
  }
}

const comparable = (v: unknown, d: unknown) => (typeof v === "number" && typeof d === "number") || (typeof v === "string" && typeof d === "string");

function inList(list: unknown[], d: unknown): boolean {
  return Array.isArray(d) ? d.some((e) => list.includes(e)) : isScalar(d) && list.includes(d);
}
