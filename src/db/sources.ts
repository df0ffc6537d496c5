/** Queries and rules for sources: every read is scoped to the owning account. */
import { and, desc, eq, lt } from "drizzle-orm";
import type { Services } from "../services";
import { bytesToBase64Url, randomBytes } from "../security/encoding";
import { secretContext } from "../security/secrets";
import { forgetIngestSource } from "../ingest/sources";
import { newId } from "./ids";
import { deleteWithRemoval } from "./removals";
import { sources, type Provider } from "./schema";

export type SourceRow = typeof sources.$inferSelect;

/** 192 random bits: the ingest URL is the only credential a provider holds. */
export function generateIngestKey(): string {
  return "src_" + bytesToBase64Url(randomBytes(24));
}

export async function createSource(
  s: Services,
  accountId: string,
  input: { name: string; provider: Provider; signing_secret?: string | null | undefined },
): Promise<SourceRow> {
  const now = s.now();
  const id = newId(now);
  const row: SourceRow = {
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
  await s.db.insert(sources).values(row).run();
  return row;
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
      provider: next.provider,
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
