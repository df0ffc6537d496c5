/**
 * One attempt of one delivery, as a typed outcome: the signed POST (send.ts) and the
 * retry policy's decision (retry.ts). Nothing is written here; settling the outcome
 * (records, queue, health) is the consumer's one place for it (deliver.ts).
 */
import type { DeliveryDestination } from "../db/destinations";
import { openHeaders, signingSecrets } from "../db/destinations";
import type { Services } from "../services";
import type { ClaimedEvent } from "../store/types";
import { envelope } from "./envelope";
import type { Limiter } from "./limiter";
import { decide } from "./retry";
import { sendSigned } from "./send";

interface AttemptInput {
  destination: DeliveryDestination;
  event: ClaimedEvent;
  sourceId: string;
  /** The attempt's number across every run of this delivery. */
  number: number;
  /** Its place in the current run's retry schedule, from 1. */
  attemptInRun: number;
}

interface Result {
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  responseBody: string | null;
}

export type Outcome =
  | ({ kind: "succeeded" } & Result)
  | ({ kind: "retry"; delaySeconds: number } & Result)
  | ({ kind: "exhausted"; reason: "exhausted" | "gone" } & Result)
  /** Not sent: the destination is disabled. */
  | ({ kind: "cancelled" } & Result)
  /** Our own failure: nothing was attempted; the message is retried as it is. */
  | { kind: "ours"; error: string };

/** `answered`: the response headers are in, and the attempt holds no connection from then on. */
export async function attempt(s: Services, limiter: Limiter, a: AttemptInput, answered?: () => void): Promise<Outcome> {
  if (!a.destination.enabled) {
    // Disabled destinations' queued deliveries are cancelled, and it shows in the attempt log.
    return { kind: "cancelled", statusCode: null, error: "destination is disabled", durationMs: 0, responseBody: null };
  }
  let secrets: string[];
  let headers: Record<string, string>;
  try {
    [secrets, headers] = await Promise.all([signingSecrets(s, a.destination), openHeaders(s, a.destination)]);
  } catch {
    return { kind: "ours", error: "the destination's secret or headers cannot be decrypted" };
  }
  // An http permit while a connection is held: the URL check, and the POST until its headers.
  const result = await sendSigned(
    s,
    {
      url: a.destination.url,
      body: envelope(a.event.type, a.event.payload, a.event.payloadIsJson, a.sourceId),
      msgId: a.event.id,
      secrets,
      headers,
      attempt: a.number,
      timeoutMs: s.config.deliveryTimeoutMs,
    },
    { connection: (fn) => limiter.run("http", fn), ...(answered ? { answered } : {}) },
  );
  // Our resolver down: not an attempt, no retry spent, nothing counted against the destination.
  if (result.kind === "unresolved") return { kind: "ours", error: result.error };
  const statusCode = result.kind === "response" ? result.status : null;
  const detail: Result = {
    statusCode,
    error:
      result.kind !== "response"
        ? result.error
        : statusCode! >= 300 && statusCode! < 400
          ? `redirect not followed (HTTP ${statusCode})`
          : null,
    durationMs: result.durationMs,
    responseBody: result.kind === "response" ? result.body : null,
  };
  const decision = decide(
    { status: statusCode, retryAfter: result.kind === "response" ? result.retryAfter : null },
    a.attemptInRun,
    s.config.retrySchedule,
    s.now(),
  );
  if (decision.retry) return { kind: "retry", delaySeconds: decision.delaySeconds, ...detail };
  if (decision.reason === "succeeded") return { kind: "succeeded", ...detail };
  return { kind: "exhausted", reason: decision.reason, ...detail };
}
