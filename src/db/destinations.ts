/** Queries and rules for destinations. Callers have already checked the source belongs to the account. */
import { and, desc, eq, lt, sql } from "drizzle-orm";
import type { Services } from "../services";
import type { TargetDestination } from "../store/types";
import { secretContext } from "../security/secrets";
import { generateSecret } from "../security/signing";
import { Limiter } from "../delivery/limiter";
import { dayOf } from "../store/ids";
import { newId } from "./ids";
import { partitionDays } from "./partitions";
import { deleteWithRemoval } from "./removals";
import { destinations } from "./schema";
import { TtlCache } from "../ttl-cache";

export type DestinationRow = typeof destinations.$inferSelect;

/** How long the secret before a rotation keeps signing alongside the new one. */
const ROTATION_GRACE_MS = 24 * 60 * 60 * 1000;

interface DestinationInput {
  url: string;
  secret?: string | undefined;
  event_filter?: string[] | undefined;
  payload_filter?: Record<string, unknown> | null | undefined;
  headers?: Record<string, string> | undefined;
  rate_limit?: number | null | undefined;
  ordering?: "none" | "fifo" | undefined;
  enabled?: boolean | undefined;
}

/** Custom headers: their names in the clear (reads show them), the whole set encrypted. */
async function sealHeaders(s: Services, id: string, headers: Record<string, string>): Promise<Pick<DestinationRow, "headerNames" | "headersCiphertext">> {
  const names = Object.keys(headers);
  return {
    headerNames: names,
    headersCiphertext: names.length === 0 ? null : await s.secrets.encrypt(JSON.stringify(headers), secretContext.destinationHeaders(id)),
  };
}

/** A destination's custom headers, decrypted (for sending only: never returned, never logged). */
export async function openHeaders(s: Services, row: Pick<DestinationRow, "id" | "headersCiphertext">): Promise<Record<string, string>> {
  if (row.headersCiphertext === null) return {};
  return JSON.parse(await s.secrets.decrypt(row.headersCiphertext, secretContext.destinationHeaders(row.id))) as Record<string, string>;
}

export async function createDestination(
  s: Services,
  sourceId: string,
  input: DestinationInput,
): Promise<{ row: DestinationRow; secret: string } | "quota_exceeded"> {
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
    eventFilter: input.event_filter ?? [],
    payloadFilter: input.payload_filter ?? null,
    ...(await sealHeaders(s, id, input.headers ?? {})),
    rateLimit: input.rate_limit ?? null,
    ordering: input.ordering ?? "none",
    enabled: input.enabled ?? true,
    failureCount: 0,
    createdAt: now,
    updatedAt: now,
  };
  // Inserted and counted in one atomic batch; one past the quota is taken back at once.
  const [, counted] = await s.db.batch([
    s.db.insert(destinations).values(row),
    s.db.select({ n: sql<number>`count(*)` }).from(destinations).where(eq(destinations.sourceId, sourceId)),
  ]);
  if ((counted[0]?.n ?? 0) > s.config.maxDestinationsPerSource) {
    await s.db.delete(destinations).where(eq(destinations.id, id)).run();
    return "quota_exceeded";
  }
  await invalidateTargets(s, sourceId);
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
  if (patch.event_filter !== undefined) set.eventFilter = patch.event_filter;
  if (patch.payload_filter !== undefined) set.payloadFilter = patch.payload_filter;
  // The whole set is replaced; {} removes them.
  if (patch.headers !== undefined) Object.assign(set, await sealHeaders(s, current.id, patch.headers));
  // enabled: true does not reset failure_count: the first success afterwards does.
  if (patch.enabled !== undefined) set.enabled = patch.enabled;
  // Flow control applies to every delivery not attempted yet (the gate reads it per batch).
  if (patch.rate_limit !== undefined) set.rateLimit = patch.rate_limit;
  if (patch.ordering !== undefined) set.ordering = patch.ordering;
  // Sending the current secret again changes nothing (and so does not end a rotation's grace).
  if (patch.secret !== undefined && patch.secret !== (await s.secrets.decrypt(current.secretCiphertext, secretContext.destination(current.id)))) {
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
  forgetDeliveryDestination(current.id);
  await invalidateTargets(s, current.sourceId);
  // Enabled again, or pointed elsewhere: its circuit breaker starts closed (delivery/gate.ts).
  if ((patch.enabled === true && !current.enabled) || (patch.url !== undefined && patch.url !== current.url)) {
    try {
      await s.health(current.id).resetCircuit(current.id);
    } catch {
      // The breaker then closes on its own, at its next trial.
    }
  }
  return updated ?? { ...current, ...set };
}

/** Deletes the destination and queues the removal of its deliveries and attempts from the source's partitions. */
export async function deleteDestination(s: Services, row: DestinationRow): Promise<void> {
  await deleteWithRemoval(s, "destination", row.sourceId, row.id, s.db.delete(destinations).where(eq(destinations.id, row.id)));
  forgetDeliveryDestination(row.id);
  await invalidateTargets(s, row.sourceId);
}

/**
 * The source's destinations changed: its partitions that can still fan out (yesterday's,
 * today's, tomorrow's, for clocks apart) read them again before their next fan-out.
 */
async function invalidateTargets(s: Services, sourceId: string): Promise<void> {
  const today = dayOf(s.now());
  const days = await partitionDays(s, sourceId, today - 1, today + 1);
  const limiter = new Limiter();
  await Promise.all(
    days.flatMap((d) => d.shards.map((shard) => limiter.run("storage", () => s.store({ sourceId, day: d.day, shard }).invalidateTargets()))),
  );
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

/** What the deliver consumer needs of a destination. */
export type DeliveryDestination = Pick<
  DestinationRow,
  "id" | "sourceId" | "url" | "enabled" | "secretCiphertext" | "previousSecretCiphertext" | "secretRotatedAt" | "headersCiphertext" | "rateLimit" | "ordering"
>;

/**
 * The deliver path reads a destination from D1 at most once per DELIVERY_CACHE_TTL_MS per
 * isolate: a change (disabled, new URL, new secret, deleted) applies to deliveries on
 * every isolate within that time, at once on the isolate that made it.
 */
const DELIVERY_CACHE_TTL_MS = 5_000;
const DELIVERY_CACHE_ENTRIES = 10_000;
const deliveryCache = new TtlCache<string, DeliveryDestination | null>(DELIVERY_CACHE_ENTRIES);

/** Forgets a destination in this isolate's deliver cache (it changed here). */
export function forgetDeliveryDestination(id: string): void {
  deliveryCache.delete(id);
}

/** The destinations of a deliver batch, by id: those not cached in one read, the ids as one JSON parameter (any number within D1's 100 bound parameters). */
export async function destinationsForDelivery(s: Services, ids: string[]): Promise<Map<string, DeliveryDestination>> {
  const now = s.now();
  const out = new Map<string, DeliveryDestination>();
  const missing: string[] = [];
  for (const id of new Set(ids)) {
    const hit = deliveryCache.get(id, now);
    if (hit) {
      if (hit.value) out.set(id, hit.value);
    } else missing.push(id);
  }
  if (missing.length === 0) return out;
  for (const [id, row] of await readDeliveryDestinations(s, missing)) out.set(id, row);
  for (const id of missing) deliveryCache.set(id, out.get(id) ?? null, now + DELIVERY_CACHE_TTL_MS);
  return out;
}

async function readDeliveryDestinations(s: Services, ids: string[]): Promise<Map<string, DeliveryDestination>> {
  const rows = await s.db
    .select({
      id: destinations.id,
      sourceId: destinations.sourceId,
      url: destinations.url,
      enabled: destinations.enabled,
      secretCiphertext: destinations.secretCiphertext,
      previousSecretCiphertext: destinations.previousSecretCiphertext,
      secretRotatedAt: destinations.secretRotatedAt,
      headersCiphertext: destinations.headersCiphertext,
      rateLimit: destinations.rateLimit,
      ordering: destinations.ordering,
    })
    .from(destinations)
    .where(sql`${destinations.id} IN (SELECT value FROM json_each(${JSON.stringify(ids)}))`)
    .all();
  return new Map(rows.map((r) => [r.id, r]));
}

/** The enabled destinations of a source, as fan-out matches them. */
export async function targetsOf(s: Services, sourceId: string): Promise<TargetDestination[]> {
  return s.db
    .select({ id: destinations.id, eventFilter: destinations.eventFilter, payloadFilter: destinations.payloadFilter })
    .from(destinations)
    .where(and(eq(destinations.sourceId, sourceId), eq(destinations.enabled, true)))
    .all();
}

/** The ids of a source's destinations (to hide what belongs to deleted ones). */
export async function destinationIdsOf(s: Services, sourceId: string): Promise<Set<string>> {
  const rows = await s.db.select({ id: destinations.id }).from(destinations).where(eq(destinations.sourceId, sourceId)).all();
  return new Set(rows.map((r) => r.id));
}

/** Which of these ids are destinations of the source, and whether each is enabled (two bound parameters, whatever the number of ids). */
export async function enabledDestinationsNamed(s: Services, sourceId: string, ids: string[]): Promise<Map<string, boolean>> {
  const rows = await s.db
    .select({ id: destinations.id, enabled: destinations.enabled })
    .from(destinations)
    .where(and(eq(destinations.sourceId, sourceId), sql`${destinations.id} IN (SELECT value FROM json_each(${JSON.stringify(ids)}))`))
    .all();
  return new Map(rows.map((r) => [r.id, r.enabled]));
}

/** failure_count as the destination's health object counts it (destination-health.ts, its only writer). */
export async function writeFailureCount(s: Services, id: string, count: number): Promise<void> {
  await s.db.update(destinations).set({ failureCount: count }).where(eq(destinations.id, id));
}

/**
 * failure_count, and the flip to disabled of a destination still enabled, in one
 * statement (so the flip happens once per crossing): true when this call disabled it.
 */
export async function disableForFailures(s: Services, id: string, count: number): Promise<boolean> {
  const flipped = await s.db
    .update(destinations)
    .set({ failureCount: count, enabled: false, updatedAt: s.now() })
    .where(and(eq(destinations.id, id), eq(destinations.enabled, true)))
    .returning({ id: destinations.id })
    .get();
  return flipped !== undefined;
}
