/** `/api/v1/webhooks/sources`: where providers send events. */
import { Hono } from "hono";
import { z } from "zod";
import { isId } from "../db/ids";
import { ALERTS_PROVIDER, invalidSigningSecret, sourceProviders, takesRequests, type SourceProvider } from "../ingest/providers";
import { secretContext } from "../security/secrets";
import type { Services } from "../services";
import { createAlertsSource, createSource, deleteSource, getSource, listSources, underSourceQuota, updateSource, type SourceRow } from "../db/sources";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { KrafterError, NotFoundError, ValidationError } from "../errors";
import { rfc3339 } from "../time";
import { page, paginationQuery } from "./pagination";
import { validate } from "./validation";
import { doc, list, one, Source } from "./openapi";

const tags = ["Sources"];

const name = z.string().trim().min(1).max(200);
const provider = z.enum(sourceProviders);
const signingSecret = z.string().min(1).max(1024);

/** A signing secret must be one the provider's scheme can verify with: 422 on signing_secret otherwise. */
const secretFitsProvider = (v: { provider?: SourceProvider | undefined; signing_secret?: string | null | undefined }, ctx: z.RefinementCtx, fallback?: SourceProvider) => {
  const p = v.provider ?? fallback;
  if (p === undefined || typeof v.signing_secret !== "string") return;
  const why = invalidSigningSecret(p, v.signing_secret);
  if (why) ctx.addIssue({ code: "custom", path: ["signing_secret"], message: `for a ${p} source, ${why}`, params: { code: "invalid_signing_secret" } });
};

const createSourceBody = z
  .strictObject({
    name,
    provider: provider.default("generic"),
    signing_secret: signingSecret.nullable().optional(),
  })
  .superRefine((v, ctx) => secretFitsProvider(v, ctx));

const updateSourceBody = z.strictObject({
  name: name.optional(),
  provider: provider.optional(),
  /** null removes it: signatures are no longer checked. */
  signing_secret: signingSecret.nullable().optional(),
});

/**
 * The ingest URL is a write capability (whoever holds it injects events): only keys that
 * may write see it; a read-only key gets null. The alerts source has none: Krafter
 * itself feeds it.
 */
function sourceJson(row: SourceRow, origin: string, canWrite: boolean) {
  return {
    id: row.id,
    name: row.name,
    provider: row.provider,
    ingest_url: canWrite && takesRequests(row.provider) ? `${origin}/in/${row.ingestKey}` : null,
    verifies_signatures: row.signingSecretCiphertext !== null,
    created_at: rfc3339(row.createdAt),
    updated_at: rfc3339(row.updatedAt),
  };
}

/** The source named in the path, if it exists and belongs to the caller; otherwise 404. */
export async function ownedSource(c: { var: AppEnv["Variables"] }, id: string | undefined): Promise<SourceRow> {
  if (!isId(id)) throw new NotFoundError("source");
  const row = await getSource(c.var.services, c.var.principal.accountId, id);
  if (!row) throw new NotFoundError("source");
  return row;
}

const origin = (url: string) => new URL(url).origin;
const canWrite = (c: { var: AppEnv["Variables"] }) => c.var.principal.scopes.has("webhooks:write");

/** After a PATCH, the source's secret (new, or the one it has) must fit its provider (new, or the one it has). */
async function assertSecretFits(s: Services, row: SourceRow, patch: { provider?: SourceProvider | undefined; signing_secret?: string | null | undefined }): Promise<void> {
  const provider = patch.provider ?? row.provider;
  const secret =
    patch.signing_secret !== undefined ? patch.signing_secret : row.signingSecretCiphertext === null ? null : await s.secrets.decrypt(row.signingSecretCiphertext, secretContext.source(row.id));
  const why = secret === null ? null : invalidSigningSecret(provider, secret);
  if (why) {
    const kept = patch.signing_secret === undefined ? " (the source's current secret): send a new signing_secret, or null" : "";
    throw new ValidationError([
      { field: "signing_secret", code: "invalid_signing_secret", message: `for a ${provider} source, ${why}${kept}` },
    ]);
  }
}

/**
 * The alerts source stays one (its provider cannot change), and no other source becomes
 * it: its ingest key would still take requests. 422 on provider otherwise.
 */
function assertProviderChange(row: SourceRow, to: SourceProvider | undefined): void {
  if (to === undefined || to === row.provider || (takesRequests(row.provider) && takesRequests(to))) return;
  const message =
    row.provider === ALERTS_PROVIDER
      ? "the alerts source's provider cannot change (delete it to stop alerts)"
      : "a source cannot become the alerts source: create it with POST and provider krafter (one per account)";
  throw new ValidationError([{ field: "provider", code: "provider_fixed", message }]);
}

export const sourceRoutes = new Hono<AppEnv>()
  .post(
    "/",
    doc(
      {
        tags,
        summary: "Create a source",
        description:
          "`provider: krafter` creates the account's alerts source: Krafter itself feeds it with alert events about the account's destinations (`destination.failing`, `destination.disabled`, `destination.recovered`, `delivery.exhausted`). It has no ingest URL (`null`) and takes no signing secret; an account has at most one (a second is a 409).",
        ok: { 201: { description: "Created.", schema: one(Source) } },
      },
      [400, 409, 413, 415, 422],
    ),
    requireScope("webhooks:write"),
    validate("json", createSourceBody),
    async (c) => {
      const body = c.req.valid("json");
      const s = c.var.services;
      const accountId = c.var.principal.accountId;
      let row: SourceRow;
      const quota = () =>
        new KrafterError("quota_exceeded", `This account has ${s.config.maxSourcesPerAccount} sources, the most MAX_SOURCES_PER_ACCOUNT allows: delete one first.`);
      if (takesRequests(body.provider)) {
        const created = await createSource(s, accountId, { ...body, provider: body.provider });
        if (created === "quota_exceeded") throw quota();
        row = created;
      } else {
        if (!(await underSourceQuota(s, accountId))) throw quota();
        const created = await createAlertsSource(s, accountId, body.name);
        if (!created) throw new KrafterError("conflict", "This account has an alerts source already (provider krafter): an account has at most one.");
        row = created;
      }
      return c.json({ data: sourceJson(row, origin(c.req.url), canWrite(c)) }, 201);
    },
  )
  .get("/", doc({ tags, summary: "List sources", description: "Newest first.", ok: { 200: { description: "A page of sources.", schema: list(Source) } } }, [422]), requireScope("webhooks:read"), validate("query", paginationQuery), async (c) => {
    const { limit, cursor } = c.req.valid("query");
    const rows = await listSources(c.var.services, c.var.principal.accountId, limit, cursor);
    const { items, nextCursor } = page(rows, limit);
    const o = origin(c.req.url);
    const write = canWrite(c);
    return c.json({ data: items.map((r) => sourceJson(r, o, write)), next_cursor: nextCursor }, 200);
  })
  .get("/:source_id", doc({ tags, summary: "Get a source", ok: { 200: { description: "The source.", schema: one(Source) } } }, [404]), requireScope("webhooks:read"), async (c) => {
    const row = await ownedSource(c, c.req.param("source_id"));
    return c.json({ data: sourceJson(row, origin(c.req.url), canWrite(c)) }, 200);
  })
  .patch("/:source_id", doc({ tags, summary: "Update a source", description: "Any subset of the create fields; `signing_secret: null` stops signature checks.", ok: { 200: { description: "The updated source.", schema: one(Source) } } }, [400, 404, 413, 415, 422]), requireScope("webhooks:write"), validate("json", updateSourceBody), async (c) => {
    const row = await ownedSource(c, c.req.param("source_id"));
    const body = c.req.valid("json");
    assertProviderChange(row, body.provider);
    await assertSecretFits(c.var.services, row, body);
    const { provider, ...rest } = body;
    const updated = await updateSource(c.var.services, row, provider !== undefined && takesRequests(provider) ? { ...rest, provider } : rest);
    return c.json({ data: sourceJson(updated, origin(c.req.url), canWrite(c)) }, 200);
  })
  .delete("/:source_id", doc({ tags, summary: "Delete a source", description: "Cascades to its destinations, events and delivery attempts.", ok: { 204: { description: "Deleted." } } }, [404]), requireScope("webhooks:write"), async (c) => {
    const row = await ownedSource(c, c.req.param("source_id"));
    await deleteSource(c.var.services, row);
    return c.body(null, 204);
  });
