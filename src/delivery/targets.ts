/**
 * Who gets an event: the one rule, used by fan-out, redeliver and replay alike (Svix's
 * `filtered_endpoints`). A destination is a target when it is enabled (the caller passes
 * only enabled ones) and its event_filter matches the event's type.
 */
import type { TargetDestination } from "../store/types";
import { matchesFilter } from "./filter";

export function targetsFor(destinations: readonly TargetDestination[], event: { type: string }): string[] {
  return destinations.filter((d) => matchesFilter(d.eventFilter, event.type)).map((d) => d.id);
}
