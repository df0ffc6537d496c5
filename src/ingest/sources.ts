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

export const SOURCE_CACHE_TTL_MS = 5_000;
/** Entries kept per isolate; the oldest go first. */
export const SOURCE_CACHE_ENTRIES = 10_000;

export interface IngestSource {
  id: string;
  provider: Provider;
  secretCiphertext: string | null;
}

const cache = new Map<string, { value: Promise<IngestSource | null>; expires: number }>();

export function sourceForIngest(s: Services, ingestKey: string): Promise<IngestSource | null> {
  const now = s.now();
  const hit = cache.get(ingestKey);
  if (hit && hit.expires > now) return hit.value;
  const value = s.db
    .select({ id: sources.id, provider: sources.provider, secretCiphertext: sources.signingSecretCiphertext })
    .from(sources)
    .where(eq(sources.ingestKey, ingestKey))
    .get()
    .then((row) => row ?? null);
  cache.delete(ingestKey);
  cache.set(ingestKey, { value, expires: now + SOURCE_CACHE_TTL_MS });
  // A failed read is not remembered.
  value.catch(() => cache.delete(ingestKey));
  if (cache.size > SOURCE_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
  return value;
}

/** Forgets a source in this isolate (after it changed here, or ingest found it gone). */
export function forgetIngestSource(ingestKey: string): void {
  cache.delete(ingestKey);
}
