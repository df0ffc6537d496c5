/** Queries and rules for sources: every read is scoped to the owning account. */
import { and, desc, eq, lt, sql } from "drizzle-orm";
import type { Services } from "../services";
import { bytesToBase64Url, randomBytes } from "../security/encoding";
import { secretContext } from "../security/secrets";
import { forgetIngestSource } from "../ingest/sources";
import { ALERTS_PROVIDER, type SourceProvider } from "../ingest/providers";
import { newId } from "./ids";
import { deleteWithRemoval } from "./removals";
import { sources, type Provider } from "./schema";

/** A source as stored: its provider may also be krafter (the alerts source), which `Provider` leaves out. */
export type SourceRow = Omit<typeof sources.$inferSelect, "provider"> & { provider: SourceProvider };

/** 192 random bits: the ingest URL is the only credential a provider holds. */
function generateIngestKey(): string {
  return "src_" + bytesToBase64Url(randomBytes(24));
}

export async function createSource(
  s: Services,
  accountId: string,
  input: { name: string; provider: Provider; signing_secret?: string | null | undefined },
): Promise<SourceRow | "quota_exceeded"> {
  const now = s.now();
  const id = newId(now);
  const row: typeof sources.$inferInsert & SourceRow = {
    id,
    accountId,
    name: input.name,
    provider: input.provider,
    ingestKey: generateIngestKey(),
    signingSecretCiphertext: input.signing_secret
      ? await s.secrets.encrypt(input.signing_secret, secretContext.source(id))
      : null,
    createdAt: now,
    updatedAt: now,
  };
  // Inserted and counted in one atomic batch; one past the quota is taken back at once.
  const [, counted] = await s.db.batch([
    s.db.insert(sources).values(row),
    s.db.select({ n: sql<number>`count(*)` }).from(sources).where(eq(sources.accountId, accountId)),
  ]);
  if ((counted[0]?.n ?? 0) > s.config.maxSourcesPerAccount) {
    await s.db.delete(sources).where(eq(sources.id, id)).run();
    return "quota_exceeded";
  }
  return row;
}

/** Whether the account may have one more source (MAX_SOURCES_PER_ACCOUNT). */
export async function underSourceQuota(s: Services, accountId: string): Promise<boolean> {
  const [r] = await s.db.select({ n: sql<number>`count(*)` }).from(sources).where(eq(sources.accountId, accountId));
  return (r?.n ?? 0) < s.config.maxSourcesPerAccount;
}

/**
 * The account's alerts source (provider krafter), unless it has one already: null then.
 * One statement, INSERT … SELECT … WHERE NOT EXISTS: D1 runs statements one at a time,
 * so two requests at once create one source between them, without a unique index (and
 * so without a migration). Its ingest key is no key: `alerts:<id>` is unique, as the
 * column wants, but never the shape of one (`src_` + 32 characters), so no ingest URL
 * reaches it, and it is never shown.
 */
export async function createAlertsSource(s: Services, accountId: string, name: string): Promise<SourceRow | null> {
  const now = s.now();
  const id = newId(now);
  const row: SourceRow = {
    id,
    accountId,
    name,
    provider: ALERTS_PROVIDER,
    ingestKey: `alerts:${id}`,
    signingSecretCiphertext: null,
    createdAt: now,
    updatedAt: now,
  };
  const result = await s.db.run(sql`
    INSERT INTO ${sources} (id, account_id, name, provider, ingest_key, signing_secret_ct, created_at, updated_at)
    SELECT ${row.id}, ${accountId}, ${name}, ${ALERTS_PROVIDER}, ${row.ingestKey}, NULL, ${now}, ${now}
    WHERE NOT EXISTS (SELECT 1 FROM ${sources} WHERE account_id = ${accountId} AND provider = ${ALERTS_PROVIDER})`);
  return result.meta.changes === 1 ? row : null;
}

export async function getSource(s: Services, accountId: string, id: string): Promise<SourceRow | undefined> {
  return s.db
    .select()
    .from(sources)
    .where(and(eq(sources.id, id), eq(sources.accountId, accountId)))
    .get();
}

export function listSources(s: Services, accountId: string, limit: number, cursor?: string) {
  return s.db
    .select()
    .from(sources)
    .where(and(eq(sources.accountId, accountId), cursor ? lt(sources.id, cursor) : undefined))
    .orderBy(desc(sources.id))
    .limit(limit + 1);
}

export async function updateSource(
  s: Services,
  current: SourceRow,
  patch: { name?: string | undefined; provider?: Provider | undefined; signing_secret?: string | null | undefined },
): Promise<SourceRow> {
  const next: SourceRow = { ...current, updatedAt: s.now() };
  if (patch.name !== undefined) next.name = patch.name;
  if (patch.provider !== undefined) next.provider = patch.provider;
  if (patch.signing_secret !== undefined) {
    next.signingSecretCiphertext =
      patch.signing_secret === null ? null : await s.secrets.encrypt(patch.signing_secret, secretContext.source(current.id));
  }
  await s.db
    .update(sources)
    .set({
      name: next.name,
      // The alerts source keeps krafter, and no other source becomes it (http/sources.ts).
      ...(patch.provider !== undefined ? { provider: patch.provider } : {}),
      signingSecretCiphertext: next.signingSecretCiphertext,
      updatedAt: next.updatedAt,
    })
    .where(eq(sources.id, current.id))
    .run();
  // Other isolates see the change within the ingest cache's time (ingest/sources.ts).
  forgetIngestSource(current.ingestKey);
  return next;
}

/** Deletes the source (its destinations with it) and queues the removal of its partitions. */
export async function deleteSource(s: Services, row: SourceRow): Promise<void> {
  await deleteWithRemoval(s, "source", row.id, null, s.db.delete(sources).where(eq(sources.id, row.id)));
  forgetIngestSource(row.ingestKey);
}
