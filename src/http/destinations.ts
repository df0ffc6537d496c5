/**
 * `/api/v1/webhooks/sources/:source_id/destinations`: exactly the reference page
 * (shared/spec/destinations-api.md), with PRODUCT.md's decisions where it is silent.
 */
import { Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { z } from "zod";
import { isId } from "../db/ids";
import {
  createDestination,
  deleteDestination,
  getDestination,
  listDestinations,
  openHeaders,
  signingSecrets,
  updateDestination,
  type DestinationRow,
} from "../db/destinations";
import { invalidFilterEntry, MAX_FILTER_ENTRIES, normalizeFilter } from "../delivery/filter";
import { invalidCustomHeader, MASK, MAX_CUSTOM_HEADERS } from "../delivery/headers";
import { validatePayloadFilter } from "../delivery/payload-filter";
import { sendSigned } from "../delivery/send";
import { newId } from "../db/ids";
import { checkDestinationUrl, checkUrlSyntax } from "../security/ssrf";
import { secretKeyBytes } from "../security/signing";
import type { Services } from "../services";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { KrafterError, NotFoundError, ValidationError } from "../errors";
import { rfc3339 } from "../time";
import { page, paginationQuery } from "./pagination";
import { ownedSource } from "./sources";
import { issuesToDetails, validate } from "./validation";
import { Destination, DestinationWithSecret, doc, list, one, TestFailed, TestOk } from "./openapi";

const tags = ["Destinations"];

/**
 * Syntax here (absolute http(s), length, no credentials), so a bad url is listed with the
 * other fields' errors; the scheme for the environment and the SSRF guard come after.
 */
const url = z
  .string()
  .superRefine((v, ctx) => {
    const syntax = checkUrlSyntax(v, false);
    if (!syntax.ok) ctx.addIssue({ code: "custom", message: `url ${syntax.reason}.`, params: { code: "invalid_url" } });
  })
  .describe("HTTPS URL (http too outside production), at most 2048 characters, no user:pass@. SSRF-checked: private, link-local and loopback addresses fail.");
const secret = z
  .string()
  .max(200)
  .refine((v) => secretKeyBytes(v) !== null, "must be whsec_ followed by the base64 of 24 to 64 bytes")
  .describe("whsec_ + base64 of 24 to 64 bytes. Encrypted at rest. If omitted, one is generated. On PATCH, rotates the secret: for 24 h both the new and the old one sign.");
const eventFilter = z
  .array(
    z.string().superRefine((v, ctx) => {
      const why = invalidFilterEntry(v);
      if (why) ctx.addIssue({ code: "custom", message: why });
    }),
  )
  .max(MAX_FILTER_ENTRIES)
  .transform(normalizeFilter)
  .describe("Event types to forward; [] forwards everything. Exact names, `*`, or a trailing `.*` (`invoice.*`). At most 100 entries of 1 to 255 characters; duplicates are dropped.");

/** Each fault of a payload filter is a detail naming its JSON path (`payload_filter.data.x.$gtx`). */
const payloadFilter = z
  .record(z.string(), z.unknown())
  .nullable()
  .superRefine((v, ctx) => {
    if (v === null) return;
    for (const issue of validatePayloadFilter(v, "")) {
      ctx.addIssue({ code: "custom", message: issue.message, path: issue.field.split(".").filter((p) => p !== ""), params: { code: issue.code } });
    }
  })
  .describe(
    "A filter on the payload (JSON, at most 4 KB and 10 levels deep), or null for none: the event is forwarded only if it also matches. A plain value matches by equality; an object's keys must all match; a scalar matches an array that contains it. Operators: $eq $neq $gt $gte $lt $lte $in $nin $startsWith $endsWith $exist $or $and $not.",
  );

const headers = z
  .record(z.string(), z.string())
  .superRefine((v, ctx) => {
    const names = Object.keys(v);
    if (names.length > MAX_CUSTOM_HEADERS) ctx.addIssue({ code: "custom", message: `at most ${MAX_CUSTOM_HEADERS} headers`, params: { code: "too_many_headers" } });
    const seen = new Set<string>();
    for (const name of names) {
      const why = invalidCustomHeader(name, v[name]!);
      if (why) ctx.addIssue({ code: "custom", message: why.message, path: [name], params: { code: why.code } });
      else if (seen.has(name.toLowerCase())) ctx.addIssue({ code: "custom", message: `header ${name} is given twice (names are not case-sensitive)`, path: [name], params: { code: "duplicate_header" } });
      seen.add(name.toLowerCase());
    }
  })
  .describe(
    "Headers sent with every forward and test, e.g. an Authorization token: at most 20, values of at most 1,024 characters. Stored encrypted; reads show each value as \"********\". On PATCH, replaces the whole set; {} removes them. Names Krafter sets itself (content-type, content-length, host, user-agent, webhook-*, krafter-*) and hop-by-hop headers are refused.",
  );

const rateLimit = z
  .number()
  .int("must be an integer from 1 to 1000, or null")
  .min(1, "must be an integer from 1 to 1000, or null")
  .max(1000, "must be an integer from 1 to 1000, or null")
  .nullable()
  .describe("Attempts started per second at most (1–1,000), or null for no limit (the default). Deliveries over it wait, as pending, without using retries.");

const ordering = z
  .enum(["none", "fifo"], { error: 'must be "none" or "fifo"' })
  .describe('"none" (the default), or "fifo": each event is attempted only after every earlier one (in ingest order) succeeded or was given up, one attempt at a time.');

const createDestinationBody = z.strictObject({
  url,
  secret: secret.optional(),
  event_filter: eventFilter.optional(),
  payload_filter: payloadFilter.optional(),
  headers: headers.optional(),
  rate_limit: rateLimit.optional(),
  ordering: ordering.optional(),
  enabled: z.boolean().optional().describe("Disabled destinations are skipped during fan-out. Default true."),
});

const updateDestinationBody = z.strictObject({
  url: url.optional(),
  secret: secret.optional(),
  event_filter: eventFilter.optional(),
  payload_filter: payloadFilter.optional(),
  headers: headers.optional(),
  rate_limit: rateLimit.optional(),
  ordering: ordering.optional(),
  enabled: z.boolean().optional(),
});

/** The test endpoint takes no fields: no body, an empty body, or `{}`. */
const testBody = z.strictObject({});

/**
 * For the test endpoint: an absent or empty body is fine; anything else must be JSON
 * (400 otherwise) and carry no fields (422), as every other body of the API.
 */
const emptyBody = createMiddleware<AppEnv>(async (c, next) => {
  const text = c.req.raw.body === null ? "" : await c.req.text();
  if (text.length > 0) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new KrafterError("invalid_json", "The request body is not valid JSON.");
    }
    const parsed = testBody.safeParse(value);
    if (!parsed.success) throw new ValidationError(issuesToDetails(parsed.error.issues));
  }
  await next();
});

function destinationJson(row: DestinationRow) {
  return {
    id: row.id,
    source_id: row.sourceId,
    url: row.url,
    event_filter: row.eventFilter,
    payload_filter: row.payloadFilter ?? null,
    headers: Object.fromEntries(row.headerNames.map((n) => [n, MASK])),
    rate_limit: row.rateLimit ?? null,
    ordering: row.ordering,
    enabled: row.enabled,
    failure_count: row.failureCount,
    created_at: rfc3339(row.createdAt),
    updated_at: rfc3339(row.updatedAt),
  };
}

/** Syntax, scheme for the environment, then the SSRF guard: 422 on the `url` field otherwise. */
async function assertAcceptableUrl(s: Services, raw: string): Promise<void> {
  const syntax = checkUrlSyntax(raw, s.config.production);
  const verdict = syntax.ok
    ? await checkDestinationUrl(raw, {
        production: s.config.production,
        allowPrivate: s.config.allowPrivateDestinations,
        resolver: s.resolver,
      })
    : syntax;
  if (!verdict.ok) {
    throw new ValidationError([
      { field: "url", code: syntax.ok ? "url_refused" : "invalid_url", message: `url ${verdict.reason}.` },
    ]);
  }
}

/** A URL as stored and shown: WHATWG-normalized (scheme and host lower-cased, default port dropped), as it is sent to. */
const normalizedUrl = (raw: string) => new URL(raw).href;

/** The destination named in the path, if its source belongs to the caller; otherwise 404. */
export async function ownedDestination(c: { var: AppEnv["Variables"] }, sourceId: string | undefined, id: string | undefined) {
  const source = await ownedSource(c, sourceId);
  if (!isId(id)) throw new NotFoundError("destination");
  const row = await getDestination(c.var.services, source.id, id);
  if (!row) throw new NotFoundError("destination");
  return row;
}

export const destinationRoutes = new Hono<AppEnv>()
  .post(
    "/",
    doc(
      {
        tags,
        summary: "Create a destination",
        description: "The `secret` is returned only in this response. The URL is SSRF-checked: private, link-local and loopback addresses fail; http is rejected in production.",
        ok: { 201: { description: "Created, with its secret.", schema: one(DestinationWithSecret) } },
      },
      [400, 404, 413, 415, 422],
    ),
    requireScope("webhooks:write"),
    validate("json", createDestinationBody),
    async (c) => {
    const source = await ownedSource(c, c.req.param("source_id"));
    const body = c.req.valid("json");
    await assertAcceptableUrl(c.var.services, body.url);
    const created = await createDestination(c.var.services, source.id, { ...body, url: normalizedUrl(body.url) });
    if (created === "quota_exceeded") {
      throw new KrafterError("quota_exceeded", `This source has ${c.var.services.config.maxDestinationsPerSource} destinations, the most MAX_DESTINATIONS_PER_SOURCE allows: delete one first.`);
    }
    const { row, secret } = created;
    return c.json({ data: { ...destinationJson(row), secret } }, 201);
  },
  )
  .get("/", doc({ tags, summary: "List destinations", description: "Destination objects, no `secret` field. Newest first.", ok: { 200: { description: "A page of destinations.", schema: list(Destination) } } }, [404, 422]), requireScope("webhooks:read"), validate("query", paginationQuery), async (c) => {
    const source = await ownedSource(c, c.req.param("source_id"));
    const { limit, cursor } = c.req.valid("query");
    const { items, nextCursor } = page(await listDestinations(c.var.services, source.id, limit, cursor), limit);
    return c.json({ data: items.map(destinationJson), next_cursor: nextCursor }, 200);
  })
  .get("/:id", doc({ tags, summary: "Get a destination", description: "Returns the destination object without secret.", ok: { 200: { description: "The destination.", schema: one(Destination) } } }, [404]), requireScope("webhooks:read"), async (c) => {
    const row = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    return c.json({ data: destinationJson(row) }, 200);
  })
  .patch("/:id", doc({ tags, summary: "Update a destination", description: "Accepts the same body as create. To rotate the secret, send a new secret value; the response does not echo it. `enabled: true` does not reset `failure_count`: the first successful delivery does.", ok: { 200: { description: "The updated destination, without secret.", schema: one(Destination) } } }, [400, 404, 413, 415, 422]), requireScope("webhooks:write"), validate("json", updateDestinationBody), async (c) => {
    const row = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    const body = c.req.valid("json");
    if (body.url !== undefined && body.url !== row.url) await assertAcceptableUrl(c.var.services, body.url);
    const updated = await updateDestination(c.var.services, row, body.url === undefined ? body : { ...body, url: normalizedUrl(body.url) });
    return c.json({ data: destinationJson(updated) }, 200);
  })
  .delete("/:id", doc({ tags, summary: "Delete a destination", description: "Cascades to all delivery attempts.", ok: { 204: { description: "No Content." } } }, [404]), requireScope("webhooks:write"), async (c) => {
    const row = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    await deleteDestination(c.var.services, row);
    return c.body(null, 204);
  })
  .post(
    "/:id/test",
    doc(
      {
        tags,
        summary: "Test a destination",
        description: "Sends a synthetic signed POST `{event: \"test\", data: {message, timestamp}, source_id}` to the destination URL, re-checked for SSRF safety at send time. Does not touch `failure_count`.",
        ok: {
          200: { description: "The destination answered: `ok` is true for a 2xx.", schema: TestOk },
          422: { description: "Transport error, timeout, 5xx, or URL refused at send time.", schema: TestFailed },
        },
      },
      [400, 404],
    ),
    requireScope("webhooks:write"),
    emptyBody,
    async (c) => {
    const row = await ownedDestination(c, c.req.param("source_id"), c.req.param("id"));
    const s = c.var.services;
    const body = JSON.stringify({
      event: "test",
      data: { message: "Test delivery from Krafter", timestamp: rfc3339(s.now()) },
      source_id: row.sourceId,
    });
    const result = await sendSigned(s, {
      url: row.url,
      body,
      msgId: newId(s.now()),
      headers: await openHeaders(s, row),
      secrets: await signingSecrets(s, row),
      attempt: 1,
      timeoutMs: s.config.testTimeoutMs,
    });
    // 2xx: ok. Other statuses below 500: the receiver answered, so 200 with ok:false.
    // 5xx, transport errors, timeouts and refused URLs: 422.
    if (result.kind === "response" && result.status < 500) {
      const ok = result.status >= 200 && result.status < 300;
      return c.json({ ok, status: result.status }, 200);
    }
    const error = result.kind === "response" ? `destination answered HTTP ${result.status}` : result.error;
    return c.json({ ok: false, error }, 422);
  },
  );
