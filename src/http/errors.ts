/**
 * The one error envelope of the API, `{ error: { code, message, details? } }`, with
 * every machine-readable code mapped to its HTTP status here and nowhere else.
 * Routes throw ApiError; the app's error handler turns it (and anything unexpected)
 * into the envelope, so no stack trace or internal message ever reaches a client.
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

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
  destination_refused: 422,
  quota_exceeded: 422,
  rate_limited: 429,
  internal_error: 500,
  encryption_unavailable: 500,
  misconfigured: 500,
} as const satisfies Record<string, ContentfulStatusCode>;

export type ErrorCode = keyof typeof errorStatus;

export interface ErrorDetail {
  /** Dotted path of the offending field, e.g. `event_filter.2`; empty for the whole body. */
  field: string;
  code: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: ErrorDetail[],
  ) {
    super(message);
    this.name = "ApiError";
  }

  get status(): ContentfulStatusCode {
    return errorStatus[this.code];
  }
}

export const notFound = (what = "resource") => new ApiError("not_found", `No such ${what}.`);

export function errorBody(code: ErrorCode, message: string, details?: ErrorDetail[], requestId?: string) {
  return {
    error: {
      code,
      message,
      ...(details && details.length > 0 ? { details } : {}),
      ...(requestId ? { request_id: requestId } : {}),
    },
  };
}

export function errorResponse(c: Context, err: ApiError) {
  const requestId = err.status >= 500 ? (c.get("requestId" as never) as string | undefined) : undefined;
  return c.json(errorBody(err.code, err.message, err.details, requestId), err.status);
}
