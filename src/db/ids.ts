/**
 * Ids are UUIDv7: time-ordered, so keyset pagination by id is pagination by creation
 * time, and a time bound can be turned into an id bound for a range scan.
 */
import { v7 as uuidv7 } from "uuid";

export function newId(nowMs?: number): string {
  return nowMs === undefined ? uuidv7() : uuidv7({ msecs: nowMs });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Only canonical lower-case UUIDs are ids; anything else is treated as "no such resource". */
export function isId(value: string | undefined): value is string {
  return value !== undefined && UUID.test(value);
}

/** The smallest (edge "low") or largest (edge "high") UUIDv7 of the given millisecond. */
export function idBoundAt(ms: number, edge: "low" | "high"): string {
  const hex = Math.max(0, Math.min(ms, 0xffffffffffff)).toString(16).padStart(12, "0");
  const rest = edge === "low" ? "0000-0000-0000-000000000000" : "ffff-ffff-ffff-ffffffffffff";
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${rest}`;
}
