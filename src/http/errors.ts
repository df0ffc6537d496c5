/**
 * The one error envelope of the API, `{ error: { code, message, details? } }`, with
 * every machine-readable code (src/errors.ts) mapped to its HTTP status here and nowhere
 * else. Code throws domain errors (KrafterError); `onError`, the app's error handler,
 * turns them (and anything unexpected) into the envelope, so no stack trace or internal
 * message ever reaches a client.
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ConfigError } from "../config";
import { KrafterError, RateLimitedError, type ErrorCode, type ErrorDetail } from "../errors";
import { log } from "../log";

export const errorStatus = {
  invalid_json: 400,
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  validation_failed: 422,
  quota_exceeded: 422,
  rate_limited: 429,
  internal_error: 500,
  encryption_unavailable: 500,
  misconfigured: 500,
} as const satisfies Record<ErrorCode, ContentfulStatusCode>;

function errorBody(code: ErrorCode, message: string, details?: ErrorDetail[], requestId?: string) {
  return {
    error: {
      code,
      message,
      ...(details && details.length > 0 ? { details } : {}),
      ...(requestId ? { request_id: requestId } : {}),
    },
  };
}

function errorResponse(c: Context, err: KrafterError) {
  const status = errorStatus[err.code];
  const requestId = status >= 500 ? (c.get("requestId" as never) as string | undefined) : undefined;
  if (err instanceof RateLimitedError) c.header("retry-after", String(err.retryAfterSeconds));
  return c.json(errorBody(err.code, err.message, err.details, requestId), status);
}

/** An error answer built here rather than thrown (not-found and wrong-method handlers). */
export function errorJson(c: Context, code: ErrorCode, message: string, headers?: Record<string, string>) {
  return c.json(errorBody(code, message), errorStatus[code], headers);
}

/** The code of an HTTPException from Hono itself, by its status; any other 4xx is a bad_request. */
const httpExceptionCodes: Partial<Record<number, ErrorCode>> = {
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "payload_too_large",
  415: "unsupported_media_type",
};

/** The app's error handler: the one place a thrown error becomes an HTTP answer. */
export function onError(err: Error, c: Context) {
  if (err instanceof KrafterError) return errorResponse(c, err);
  // Hono's own refusals (a request it cannot route or read): their status and message,
  // in the envelope. A body that is not JSON never gets here: validation.ts says invalid_json.
  if (err instanceof HTTPException && err.status < 500) {
    const code = httpExceptionCodes[err.status] ?? "bad_request";
    return errorJson(c, code, err.message || "Bad request.");
  }
  const requestId = c.get("requestId" as never) as string | undefined;
  if (err instanceof ConfigError) {
    // Our own message: it names the setting at fault, never a value.
    log("error", "misconfigured", { request_id: requestId, message: err.message });
    return c.json(errorBody("misconfigured", "The relay is misconfigured and refuses to serve.", undefined, requestId), errorStatus.misconfigured);
  }
  // The class of the error and a fixed description only: a driver's message can carry
  // SQL and bound values (a payload), and a log is no place for those.
  log("error", "unhandled_error", { request_id: requestId, error: err instanceof Error ? err.name : typeof err, message: "an unexpected error reached the app's error handler" });
  return c.json(errorBody("internal_error", "Something went wrong on our side.", undefined, requestId), errorStatus.internal_error);
}
