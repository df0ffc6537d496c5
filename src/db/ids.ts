/**
 * Ids are UUIDv7: time-ordered, so keyset pagination by id is pagination by creation
 * time, and a time bound can be turned into an id bound for a range scan.
 */
import { v7 as uuidv7 } from "uuid";

// Monotonic within a millisecond in this isolate: ids made in the same ms keep their order.
const state = { msecs: -Infinity, seq: 0 };

/** A UUIDv7 for the given time (default now), greater than every earlier one made here. */
export function newId(nowMs: number = Date.now()): string {
  if (nowMs > state.msecs) {
    state.msecs = nowMs;
    state.seq = crypto.getRandomValues(new Uint32Array(1))[0]! >>> 2; // leave room to count up
  } else if (nowMs === state.msecs) {
    state.seq = (state.seq + 1) >>> 0;
  } else {
    // An explicit past time (a backfill, a test): ordered by time, random within its ms.
    return uuidv7({ msecs: nowMs });
  }
  return uuidv7({ msecs: state.msecs, seq: state.seq });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Only canonical lower-case UUIDs are ids; anything else is treated as "no such resource". */
export function isId(value: string | undefined): value is string {
  return value !== undefined && UUID.test(value);
}
