/**
 * Request validation: zod schemas through @hono/zod-validator, with every failure turned
 * into the error envelope (422 with one detail per field; 400 for unparsable JSON,
 * raised by the validator and mapped in the app's error handler).
 */
import { zValidator } from "@hono/zod-validator";
import { resolver, uniqueSymbol } from "hono-openapi";
import { bodyLimit } from "hono/body-limit";
import { createMiddleware } from "hono/factory";
import type { ValidationTargets } from "hono";
import type { z } from "zod";
import type { AppEnv } from "./context";
import { ApiError, type ErrorDetail } from "./errors";

/** API request bodies are small; ingest has its own, larger limit. */
export const API_BODY_LIMIT = 64 * 1024;

export function issuesToDetails(issues: z.core.$ZodIssue[]): ErrorDetail[] {
  const details: ErrorDetail[] = [];
  for (const issue of issues) {
    const base = issue.path.map(String).join(".");
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        details.push({ field: base ? `${base}.${key}` : key, code: "unknown_field", message: "Unknown field." });
      }
    } else {
      // A custom check may name its own code (`params: { code }`), e.g. `invalid_url`.
      const own = issue.code === "custom" ? (issue.params as { code?: unknown } | undefined)?.code : undefined;
      details.push({ field: base, code: typeof own === "string" ? own : issue.code, message: issue.message });
    }
  }
  return details;
}

const hook = (result: { success: boolean; error?: { issues: z.core.$ZodIssue[] } }) => {
  if (!result.success) {
    throw new ApiError("validation_failed", "The request is not valid.", issuesToDetails(result.error!.issues));
  }
};

/**
 * For every API request that carries a body: JSON by content type, at most 64 KiB.
 * Applied once for the whole API, before routing reaches a validator.
 */
export const apiBodyGuard = createMiddleware<AppEnv>(async (c, next) => {
  if (c.req.raw.body !== null && c.req.header("content-length") !== "0") {
    const type = c.req.header("content-type");
    if (type === undefined || !/^application\/([\w.-]+\+)?json\s*(;|$)/i.test(type)) {
      throw new ApiError("unsupported_media_type", "Send the request body as JSON, with `content-type: application/json`.");
    }
  }
  await next();
});

export const apiBodyLimit = bodyLimit({
  maxSize: API_BODY_LIMIT,
  onError: () => {
    throw new ApiError("payload_too_large", `The request body must be at most ${API_BODY_LIMIT} bytes.`);
  },
});

/**
 * zValidator with our error envelope, carrying the schema for the OpenAPI document
 * (the marker hono-openapi's own validator sets), so the document shows exactly what
 * is validated.
 */
export function validate<T extends keyof ValidationTargets, S extends z.ZodType>(target: T, schema: S) {
  return Object.assign(zValidator(target, schema, hook), {
    [uniqueSymbol]: { target, ...resolver(schema as unknown as Parameters<typeof resolver>[0]), options: undefined },
  });
}
