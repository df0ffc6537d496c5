/**
 * Domain errors: what went wrong, by a machine-readable code that every layer can throw
 * (security/, db/, store/, delivery/, ingest/ and the routes alike). Nothing here knows
 * HTTP: src/http/errors.ts maps each code to its status, and only the app's error
 * handler turns a thrown KrafterError into the API's envelope.
 */

export const errorCodes = [
  "invalid_json",
  "bad_request",
  "unauthorized",
  "forbidden",
  "not_found",
  "method_not_allowed",
  "conflict",
  "payload_too_large",
  "unsupported_media_type",
  "validation_failed",
  "quota_exceeded",
  "rate_limited",
  "internal_error",
  "encryption_unavailable",
  "misconfigured",
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export interface ErrorDetail {
  /** Dotted path of the offending field, e.g. `event_filter.2`; empty for the whole body. */
  field: string;
  code: string;
  message: string;
}

export class KrafterError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: ErrorDetail[],
  ) {
    super(message);
    this.name = "KrafterError";
  }
}

/** A resource that does not exist, or is not the caller's (the two look the same). */
export class NotFoundError extends KrafterError {
  constructor(what = "resource") {
    super("not_found", `No such ${what}.`);
    this.name = "NotFoundError";
  }
}

/** A request refused field by field: one detail per offending field. */
export class ValidationError extends KrafterError {
  constructor(details: ErrorDetail[]) {
    super("validation_failed", "The request is not valid.", details);
    this.name = "ValidationError";
  }
}

/** Over a limit: `retryAfterSeconds` says when the same request may succeed. */
export class RateLimitedError extends KrafterError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super("rate_limited", message);
    this.name = "RateLimitedError";
  }
}

/** No usable ENCRYPTION_KEY, or a stored secret none of the configured keys opens. */
export class EncryptionUnavailableError extends KrafterError {
  constructor(message: string) {
    super("encryption_unavailable", message);
    this.name = "EncryptionUnavailableError";
  }
}
