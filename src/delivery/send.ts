/**
 * The outbound HTTP client: one signed POST to a destination, used by the test endpoint
 * and by every delivery attempt. It re-checks the URL against the SSRF guard first,
 * never follows redirects, bounds the whole exchange (headers and body) by a timeout,
 * and keeps only the first 4 KiB of the response body, reading no more than that.
 */
import { checkDestinationUrl } from "../security/ssrf";
import { signedHeaders } from "../security/signing";
import type { Services } from "../services";

const RESPONSE_EXCERPT_BYTES = 4096;
export const USER_AGENT = "Krafter-Webhooks/1.0 (+https://krafter.dev)";

interface SendRequest {
  url: string;
  /** The exact JSON text sent and signed. */
  body: string;
  /** webhook-id: the event id, the same on every retry. */
  msgId: string;
  /** Newest first; more than one during a rotation's grace period. */
  secrets: string[];
  /** The destination's custom headers (never ones Krafter sets: those are refused at PATCH). */
  headers?: Record<string, string>;
  attempt: number;
  timeoutMs: number;
}

type SendResult =
  | { kind: "response"; status: number; body: string; durationMs: number; retryAfter: string | null }
  | { kind: "error"; error: string; durationMs: number }
  | { kind: "refused"; error: string; durationMs: number }
  /** The resolver could not be asked: nothing was sent, and it is not the destination's doing. */
  | { kind: "unresolved"; error: string; durationMs: number };

export async function sendSigned(s: Services, req: SendRequest): Promise<SendResult> {
  const started = s.now();
  const elapsed = () => Math.max(0, s.now() - started);
  const verdict = await checkDestinationUrl(req.url, {
    production: s.config.production,
    allowPrivate: s.config.allowPrivateDestinations,
    resolver: s.resolver,
  });
  if (!verdict.ok) return { kind: verdict.unresolved ? "unresolved" : "refused", error: `URL refused: ${verdict.reason}`, durationMs: elapsed() };

  const headers = {
    ...req.headers,
    "content-type": "application/json",
    "user-agent": USER_AGENT,
    "krafter-attempt": String(req.attempt),
    ...(await signedHeaders(req.secrets, req.msgId, Math.floor(s.now() / 1000), req.body)),
  };
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), req.timeoutMs);
  try {
    const res = await s.fetch(verdict.url.toString(), {
      method: "POST",
      headers,
      body: req.body,
      redirect: "manual",
      signal: controller.signal,
    });
    const body = await readExcerpt(res, RESPONSE_EXCERPT_BYTES);
    return { kind: "response", status: res.status, body, durationMs: elapsed(), retryAfter: res.headers.get("retry-after") };
  } catch (err) {
    const error = controller.signal.aborted ? `timed out after ${req.timeoutMs} ms` : describeFetchError(err);
    return { kind: "error", error, durationMs: elapsed() };
  } finally {
    clearTimeout(timer);
  }
}

/** Reads at most `limit` bytes of the body, then cancels the rest: memory stays bounded. */
async function readExcerpt(res: Response, limit: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
  const all = new Uint8Array(Math.min(size, limit));
  let offset = 0;
  for (const c of chunks) {
    const part = c.subarray(0, all.length - offset);
    all.set(part, offset);
    offset += part.length;
    if (offset >= all.length) break;
  }
  // A cut multi-byte character becomes U+FFFD rather than an error.
  return new TextDecoder().decode(all);
}

function describeFetchError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // Keep it short and free of anything but the transport's own words.
  return `transport error: ${message}`.slice(0, 500);
}
