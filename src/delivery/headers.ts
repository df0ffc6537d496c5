/**
 * A destination's custom headers (an Authorization token, a tenant header): which names
 * and values are refused, and the mask every read shows instead of a value. The values
 * may be credentials: they are stored encrypted (db/destinations.ts) and never logged.
 */
export const MAX_CUSTOM_HEADERS = 20;
const MAX_HEADER_VALUE_LENGTH = 1024;
export const MASK = "********";

/** RFC 7230 token characters. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Names Krafter sets itself, and hop-by-hop headers (RFC 7230 §6.1) that mean nothing end to end. */
const OURS = new Set(["content-type", "content-length", "host", "user-agent"]);
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);

/** Why a custom header is refused, or null. */
export function invalidCustomHeader(name: string, value: string): { code: string; message: string } | null {
  if (!TOKEN.test(name)) return { code: "invalid_header_name", message: `header "${name.slice(0, 100)}" is not a valid header name` };
  const lower = name.toLowerCase();
  if (OURS.has(lower) || lower.startsWith("webhook-") || lower.startsWith("krafter-")) {
    return { code: "reserved_header", message: `header ${name} is set by Krafter and cannot be overridden` };
  }
  if (HOP_BY_HOP.has(lower)) return { code: "reserved_header", message: `header ${name} is hop-by-hop and cannot be forwarded` };
  if (value.length > MAX_HEADER_VALUE_LENGTH) return { code: "header_value_too_long", message: `header ${name}'s value must be at most ${MAX_HEADER_VALUE_LENGTH} characters` };
  if (/[\r\n\0]/.test(value)) return { code: "invalid_header_value", message: `header ${name}'s value must not contain CR, LF or NUL` };
  return null;
}
