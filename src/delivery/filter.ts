/**
 * event_filter: which event types a destination receives. Empty = everything.
 * An entry matches exactly, or is `*` (anything), or ends in `.*` (`invoice.*` matches
 * `invoice.paid` and `invoice.payment.failed`, not `invoice` itself).
 */
export const MAX_FILTER_ENTRIES = 100;
const MAX_FILTER_ENTRY_LENGTH = 255;

/** Why a filter entry is invalid, or null. */
export function invalidFilterEntry(entry: string): string | null {
  if (entry.length < 1 || entry.length > MAX_FILTER_ENTRY_LENGTH) {
    return `must be 1 to ${MAX_FILTER_ENTRY_LENGTH} characters`;
  }
  if (/[\s\u0000-\u001f\u007f]/.test(entry)) return "must not contain whitespace or control characters";
  if (entry === "*") return null;
  const star = entry.indexOf("*");
  if (star !== -1 && !(star === entry.length - 1 && entry.endsWith(".*") && entry.length > 2)) {
    return "may use `*` only alone or as a trailing `.*`";
  }
  return null;
}

/** De-duplicated, first occurrence kept. */
export function normalizeFilter(entries: string[]): string[] {
  return [...new Set(entries)];
}

export function matchesFilter(filter: readonly string[], type: string): boolean {
  if (filter.length === 0) return true;
  for (const f of filter) {
    if (f === "*" || f === type) return true;
    if (f.endsWith(".*") && type.startsWith(f.slice(0, -1))) return true;
  }
  return false;
}
