/** Queries and rules for destinations. Callers have already checked the source belongs to the account. */
import { and, desc, eq, lt } from "drizzle-orm";
import type { Services } from "../services";
import { secretContext } from "../security/secrets";
import { generateSecret } from "../security/signing";
import { newId } from "./ids";
import { destinations } from "./schema";

export type DestinationRow = typeof destinations.$inferSelect;

/** How long the secret before a rotation keeps signing alongside the new one. */
export const ROTATION_GRACE_MS = 24 * 60 * 60 * 1000;

export interface DestinationInput {
  url: string;
  secret?: string | undefined;
  event_filter?: string[] | undefined;
  enabled?: boolean | undefined;
}

export async function createDestination(
  s: Services,
  sourceId: string,
  input: DestinationInput,
): Promise<{ row: DestinationRow; secret: string }> {
  const now = s.now();
  const id = newId(now);
  const secret = input.secret ?? generateSecret();
  const row: DestinationRow = {
    id,
    sourceId,
    url: input.url,
    secretCiphertext: await s.secrets.encrypt(secret, secretContext.destination(id)),
    previousSecretCiphertext: null,
    secretRotatedAt: null,
    eventFilter: JSON.stringify(input.event_filter ?? []),
    enabled: input.enabled ?? true,
    failureCount: 0,
    createdAt: now,
    updatedAt: now,
  };
  await s.db.insert(destinations).values(row).run();
  return { row, secret };
}

export async function getDestination(s: Services, sourceId: string, id: string) {
  return s.db
    .select()
    .from(destinations)
    .where(and(eq(destinations.id, id), eq(destinations.sourceId, sourceId)))
    .get();
}

export function listDestinations(s: Services, sourceId: string, limit: number, cursor?: string) {
  return s.db
    .select()
    .from(destinations)
    .where(and(eq(destinations.sourceId, sourceId), cursor ? lt(destinations.id, cursor) : undefined))
    .orderBy(desc(destinations.id))
    .limit(limit + 1);
}

export async function updateDestination(
  s: Services,
  current: DestinationRow,
  patch: Partial<DestinationInput>,
): Promise<DestinationRow> {
  const now = s.now();
  const set: Partial<DestinationRow> = { updatedAt: now };
  if (patch.url !== undefined) set.url = patch.url;
  if (patch.event_filter !== undefined) set.eventFilter = JSON.stringify(patch.event_filter);
  // enabled: true does not reset failure_count: the first success afterwards does.
  if (patch.enabled !== undefined) set.enabled = patch.enabled;
  if (patch.secret !== undefined) {
    set.secretCiphertext = await s.secrets.encrypt(patch.secret, secretContext.destination(current.id));
    set.previousSecretCiphertext = current.secretCiphertext;
    set.secretRotatedAt = now;
  }
  const updated = await s.db
    .update(destinations)
    .set(set)
    .where(eq(destinations.id, current.id))
    .returning()
    .get();
  return updated ?? { ...current, ...set };
}

export async function deleteDestination(s: Services, id: string): Promise<void> {
  await s.db.delete(destinations).where(eq(destinations.id, id)).run();
}

/** The secrets to sign with, newest first: the previous one too while the rotation's grace lasts. */
export async function signingSecrets(
  s: Services,
  row: Pick<DestinationRow, "id" | "secretCiphertext" | "previousSecretCiphertext" | "secretRotatedAt">,
): Promise<string[]> {
  const ctx = secretContext.destination(row.id);
  const current = await s.secrets.decrypt(row.secretCiphertext, ctx);
  if (row.previousSecretCiphertext && row.secretRotatedAt !== null && s.now() - row.secretRotatedAt < ROTATION_GRACE_MS) {
    const previous = await s.secrets.decrypt(row.previousSecretCiphertext, ctx);
    if (previous !== current) return [current, previous];
  }
  return [current];
}
