/**
 * Request validation: zod schemas through hono-openapi's `validator` (which also puts
 * each schema in the OpenAPI document), with every failure in the error envelope: 422
 * with one detail per field, 400 invalid_json for a body that is not JSON.
 */
import { uniqueSymbol, validator } from "hono-openapi";
import { bodyLimit } from "hono/body-limit";
import { createMiddleware } from "hono/factory";
import type { Context, Next, ValidationTargets } from "hono";
import type { z } from "zod";
import { KrafterError, ValidationError, type ErrorDetail } from "../errors";
import type { AppEnv } from "./context";

/** API request bodies are small; ingest has its own, larger limit. */
const API_BODY_LIMIT = 64 * 1024;

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

/** The validator's hook: a failure is a 422 naming each field (unknown fields included: the schemas are strict). */
const hook = (result: { success: true } | { success: false; error: readonly unknown[] }) => {
  // Zod's Standard Schema issues are its own issue objects, with their codes and paths.
  if (!result.success) throw new ValidationError(issuesToDetails(result.error as z.core.$ZodIssue[]));
};

/** The media types Hono's validator reads as JSON (hono/validator: any other is not parsed), parameters aside. */
const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/i;
const isJsonMediaType = (type: string) => JSON_MEDIA_TYPE.test(type.split(";")[0]!.trim());

/**
 * For every API request that carries a body: JSON by content type, at most 64 KiB.
 * Applied once for the whole API, before routing reaches a validator.
 */
export const apiBodyGuard = createMiddleware<AppEnv>(async (c, next) => {
  if (c.req.raw.body !== null && c.req.header("content-length") !== "0") {
    const type = c.req.header("content-type");
    if (type === undefined || !isJsonMediaType(type)) {
      throw new KrafterError("unsupported_media_type", "Send the request body as JSON, with `content-type: application/json`.");
    }
  }
  await next();
});

export const apiBodyLimit = bodyLimit({
  maxSize: API_BODY_LIMIT,
  onError: () => {
    throw new KrafterError("payload_too_large", `The request body must be at most ${API_BODY_LIMIT} bytes.`);
  },
});

/**
 * A JSON body that does not parse is `invalid_json`, said here. hono-openapi's validator
 * cannot say it: its JSON is read by Hono's validator, which throws an HTTPException 400
 * before the hook is called, and the error handler could tell that 400 from any other
 * only by its message. So the body is parsed here first; Hono keeps the text, and the
 * validator parses it again from there (twice, at most 64 KiB, on API writes only).
 */
async function parseJson(c: Context, next: Next) {
  const type = c.req.header("content-type");
  if (type !== undefined && isJsonMediaType(type)) {
    try {
      await c.req.json();
    } catch {
      throw new KrafterError("invalid_json", "The request body is not valid JSON.");
    }
  }
  await next();
}

/**
 * hono-openapi's validator, with our hook for the 422 envelope; its schema goes into the
 * OpenAPI document, so the document shows exactly what is validated. For a JSON body,
 * parseJson runs first, and the middleware keeps the validator's OpenAPI marker
 * (`uniqueSymbol`, which the library exports for custom middlewares) so it is still
 * documented as the validator.
 */
export function validate<T extends keyof ValidationTargets, S extends z.ZodType>(target: T, schema: S) {
  const check = validator(target, schema, hook);
  if (target !== "json") return check;
  const parseThenCheck = (c: Context, next: Next) => parseJson(c, () => check(c, next) as Promise<void>);
  return Object.assign(parseThenCheck, { [uniqueSymbol]: check[uniqueSymbol as never] }) as unknown as typeof check;
}
