/**
 * The sources ingest needs, by ingest key, from a per-isolate cache: the ingest path
 * reads D1 at most once per SOURCE_CACHE_TTL_MS per source and isolate. So a deleted
 * source, a new signing secret or a changed provider takes effect on every isolate
 * within that time (at once on the isolate that made the change, which forgets its
 * entry); unknown keys are remembered as unknown for the same time.
 */
import { eq } from "drizzle-orm";
import { sources, type Provider } from "../db/schema";
import type { Services } from "../services";
import { TtlCache } from "../ttl-cache";

export const SOURCE_CACHE_TTL_MS = 5_000;
/** Entries kept per isolate; the oldest go first. */
const SOURCE_CACHE_ENTRIES = 10_000;

export interface IngestSource {
  id: string;
  /** Whose quota its events count against (MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY). */
  accountId: string;
  provider: Provider;
  secretCiphertext: string | null;
}

const cache = new TtlCache<string, IngestSource | null>(SOURCE_CACHE_ENTRIES);

export async function sourceForIngest(s: Services, ingestKey: string): Promise<IngestSource | null> {
  const hit = cache.get(ingestKey, s.now());
  if (hit) return hit.value;
  const row = await s.db
    .select({ id: sources.id, accountId: sources.accountId, provider: sources.provider, secretCiphertext: sources.signingSecretCiphertext })
    .from(sources)
    .where(eq(sources.ingestKey, ingestKey))
    .get();
  // A failed read throws and is not remembered.
  cache.set(ingestKey, row ?? null, s.now() + SOURCE_CACHE_TTL_MS);
  return row ?? null;
}

/** Forgets a source in this isolate (after it changed here, or ingest found it gone). */
export function forgetIngestSource(ingestKey: string): void {
  cache.delete(ingestKey);
}
