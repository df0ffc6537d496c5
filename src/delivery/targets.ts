/**
 * Who gets an event: the one rule, used by fan-out, redeliver and replay alike (Svix's
 * `filtered_endpoints`). A destination is a target when it is enabled (the caller passes
 * only enabled ones), its event_filter matches the event's type, and its payload_filter
 * (if any) matches the payload. The payload is parsed at most once per event, and only
 * when a destination whose type filter matched has a payload filter; a payload that is
 * not JSON matches no payload filter.
 */
import type { TargetDestination } from "../store/types";
import { matchesFilter } from "./filter";
import { matchesPayload } from "./payload-filter";

interface TargetEvent {
  type: string;
  /** The payload as parsed JSON, read only when a payload filter needs it; undefined when it is not JSON. */
  payload?: () => { json: unknown } | undefined;
}

export function targetsFor(destinations: readonly TargetDestination[], event: TargetEvent): string[] {
  let parsed: { json: unknown } | undefined | null = null;
  const payload = () => {
    if (parsed === null) parsed = event.payload?.();
    return parsed;
  };
  return destinations
    .filter((d) => {
      if (!matchesFilter(d.eventFilter, event.type)) return false;
      if (!d.payloadFilter) return true;
      const p = payload();
      return p !== undefined && matchesPayload(d.payloadFilter, p.json);
    })
    .map((d) => d.id);
}

/** The parse of a stored payload for targetsFor: JSON text as received, or nothing. */
export function parsedPayload(payload: string, payloadIsJson: boolean): { json: unknown } | undefined {
  if (!payloadIsJson) return undefined;
  try {
    return { json: JSON.parse(payload) };
  } catch {
    return undefined;
  }
}
