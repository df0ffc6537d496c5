/**
 * The outbound HTTP client: one signed POST to a destination, used by the test endpoint
 * and by every delivery attempt. It re-checks the URL against the SSRF guard first,
 * never follows redirects, bounds the whole exchange (headers and body) by a timeout,
 * and keeps only the first 4 KiB of the response body, reading no more than that.
 *
 * A caller that counts connections (the deliver consumer's limiter) passes `connection`:
 * it wraps what holds one, the URL check (its resolver may ask over HTTPS) and the POST
 * until its response headers arrive, as Cloudflare counts them; `answered` hears when
 * they have. Signing before, and reading the excerpt after, hold none.
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

/** Runs what holds an outbound connection; the default holds nothing back. */
type Connection = <T>(fn: () => Promise<T>) => Promise<T>;
const unlimited: Connection = (fn) => fn();

interface Connections {
  connection?: Connection;
  /** Called once the response headers are in (the connection no longer waits). */
  answered?: () => void;
}

export async function sendSigned(s: Services, req: SendRequest, { connection = unlimited, answered }: Connections = {}): Promise<SendResult> {
  let started = s.now();
  const elapsed = () => Math.max(0, s.now() - started);
  const verdict = await connection(() =>
    checkDestinationUrl(req.url, {
      production: s.config.production,
      allowPrivate: s.config.allowPrivateDestinations,
      resolver: s.resolver,
    }),
  );
  if (!verdict.ok) return { kind: verdict.unresolved ? "unresolved" : "refused", error: `URL refused: ${verdict.reason}`, durationMs: elapsed() };

  const headers = {
    ...req.headers,
    "content-type": "application/json",
    "user-agent": USER_AGENT,
    "krafter-attempt": String(req.attempt),
    ...(await signedHeaders(req.secrets, req.msgId, Math.floor(s.now() / 1000), req.body)),
  };
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // The time limit and the duration start once the request has its connection.
    const res = await connection(() => {
      started = s.now();
      timer = setTimeout(() => controller.abort(), req.timeoutMs);
      return s.fetch(verdict.url.toString(), {
        method: "POST",
        headers,
        body: req.body,
        redirect: "manual",
        signal: controller.signal,
      });
    });
    answered?.();
    const body = await readExcerpt(res, RESPONSE_EXCERPT_BYTES);
    return { kind: "response", status: res.status, body, durationMs: elapsed(), retryAfter: res.headers.get("retry-after") };
  } catch (err) {
    const error = controller.signal.aborted ? `timed out after ${req.timeoutMs} ms` : describeFetchError(err);
    return { kind: "error", error, durationMs: elapsed() };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/** Reads at most `limit` bytes of the body, then cancels the rest: memory stays bounded. */
async function readExcerpt(res: Response, limit: number): Promise<string> {
  if (!res.body) return "";
  // A declared length within the limit is read whole, in one step: the runtime never
  // passes more body than the Content-Length it framed the response with.
  const declared = Number(res.headers.get("content-length") ?? NaN);
  if (Number.isInteger(declared) && declared >= 0 && declared <= limit && !res.headers.has("content-encoding")) {
    return new TextDecoder().decode(new Uint8Array(await res.arrayBuffer()).subarray(0, limit));
  }
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
