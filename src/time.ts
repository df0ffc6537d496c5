/** How timestamps leave Krafter (the API, alerts): RFC 3339 UTC with second precision, as the reference page shows them. */
export function rfc3339(ms: number): string;
export function rfc3339(ms: number | null): string | null;
export function rfc3339(ms: number | null): string | null {
  if (ms === null) return null;
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}
