/**
 * The data model of Krafter, in one place. Every child row cascades from its parent:
 * deleting an account, source, destination or event removes everything under it.
 *
 * Times are integers (Unix milliseconds) in the database and RFC 3339 at the API edge.
 * Ids are UUIDv7, so ordering by id is ordering by creation time, and every list is a
 * range scan over an index that starts with the parent's id and ends with `id`.
 */
import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

export const accounts = sqliteTable("accounts", {
  id: text("id").primaryKey(),
  name: text("name").notNull().unique(),
  createdAt: integer("created_at").notNull(),
});

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    /** First characters of the key, for recognising it in `api-key list`. Not secret. */
    prefix: text("prefix").notNull(),
    /** SHA-256 of the whole key, hex. The key itself is never stored. */
    keyHash: text("key_hash").notNull().unique(),
    /** Comma-separated: webhooks:read, webhooks:write. */
    scopes: text("scopes").notNull(),
    createdAt: integer("created_at").notNull(),
    lastUsedAt: integer("last_used_at"),
    revokedAt: integer("revoked_at"),
  },
  (t) => [index("api_keys_account_idx").on(t.accountId, t.id)],
);

export const providers = ["generic", "stripe", "github", "shopify", "standard-webhooks"] as const;
export type Provider = (typeof providers)[number];

export const sources = sqliteTable(
  "sources",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    provider: text("provider", { enum: providers }).notNull(),
    /** The capability in the ingest URL: 192 random bits, not the source id. */
    ingestKey: text("ingest_key").notNull().unique(),
    /** The provider's signing secret, AES-256-GCM ciphertext (see security/secrets.ts). */
    signingSecretCiphertext: text("signing_secret_ct"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [index("sources_account_idx").on(t.accountId, t.id)],
);

export const destinations = sqliteTable(
  "destinations",
  {
    id: text("id").primaryKey(),
    sourceId: text("source_id")
      .notNull()
      .references(() => sources.id, { onDelete: "cascade" }),
    url: text("url").notNull(),
    secretCiphertext: text("secret_ct").notNull(),
    /** The secret before the last rotation, still used to sign for 24 h after it. */
    previousSecretCiphertext: text("previous_secret_ct"),
    secretRotatedAt: integer("secret_rotated_at"),
    /** JSON array of strings; [] forwards everything. */
    eventFilter: text("event_filter").notNull().default("[]"),
    enabled: integer("enabled", { mode: "boolean" }).notNull().default(true),
    /** Written only by the DestinationHealth Durable Object. */
    failureCount: integer("failure_count").notNull().default(0),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [index("destinations_source_idx").on(t.sourceId, t.id)],
);

/** pending: fan-out not done yet; dispatched: its delivery rows exist (written with this status, then queued); dead_lettered: fan-out failed for good. */
export const eventStatuses = ["pending", "dispatched", "dead_lettered"] as const;

export const events = sqliteTable(
  "events",
  {
    id: text("id").primaryKey(),
    sourceId: text("source_id")
      .notNull()
      .references(() => sources.id, { onDelete: "cascade" }),
    type: text("type").notNull(),
    /** The provider's delivery id, for de-duplication; null when the provider sent none. */
    dedupeKey: text("dedupe_key"),
    /** The body exactly as received. */
    payload: text("payload").notNull(),
    /** JSON object of the request headers we keep (no credentials, no signatures). */
    headers: text("headers").notNull(),
    /** pending until the fan-out consumer has queued its deliveries; the cron sweep re-enqueues what stays pending. */
    status: text("status", { enum: eventStatuses }).notNull().default("pending"),
    receivedAt: integer("received_at").notNull(),
  },
  (t) => [
    index("events_source_idx").on(t.sourceId, t.id),
    index("events_source_type_idx").on(t.sourceId, t.type, t.id),
    uniqueIndex("events_dedupe_idx").on(t.sourceId, t.dedupeKey),
    index("events_pending_idx").on(t.status, t.receivedAt).where(sql`status = 'pending'`),
  ],
);

export const deliveryStatuses = ["pending", "succeeded", "failed", "cancelled"] as const;
export type DeliveryStatus = (typeof deliveryStatuses)[number];

/** One row per (event, destination): the state of forwarding that event there. */
export const deliveries = sqliteTable(
  "deliveries",
  {
    id: text("id").primaryKey(),
    eventId: text("event_id")
      .notNull()
      .references(() => events.id, { onDelete: "cascade" }),
    destinationId: text("destination_id")
      .notNull()
      .references(() => destinations.id, { onDelete: "cascade" }),
    status: text("status", { enum: deliveryStatuses }).notNull().default("pending"),
    /** Every attempt ever made, across redeliveries: the next attempt's number is this + 1. */
    attemptCount: integer("attempt_count").notNull().default(0),
    /** Attempts since this delivery was last queued (fan-out, redeliver, replay): its place in the retry schedule. */
    attemptsInRun: integer("attempts_in_run").notNull().default(0),
    lastAttemptAt: integer("last_attempt_at"),
    /** When the queue should next hand it to the deliver consumer; the sweep re-queues pending ones long past it. */
    nextAttemptAt: integer("next_attempt_at").notNull(),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    uniqueIndex("deliveries_event_destination_idx").on(t.eventId, t.destinationId),
    index("deliveries_destination_idx").on(t.destinationId, t.status, t.eventId),
    index("deliveries_pending_idx").on(t.status, t.nextAttemptAt).where(sql`status = 'pending'`),
  ],
);

export const attemptOutcomes = ["succeeded", "failed", "cancelled"] as const;
export type AttemptOutcome = (typeof attemptOutcomes)[number];

export const attempts = sqliteTable(
  "delivery_attempts",
  {
    id: text("id").primaryKey(),
    deliveryId: text("delivery_id")
      .notNull()
      .references(() => deliveries.id, { onDelete: "cascade" }),
    eventId: text("event_id")
      .notNull()
      .references(() => events.id, { onDelete: "cascade" }),
    destinationId: text("destination_id")
      .notNull()
      .references(() => destinations.id, { onDelete: "cascade" }),
    number: integer("number").notNull(),
    outcome: text("outcome", { enum: attemptOutcomes }).notNull(),
    statusCode: integer("status_code"),
    error: text("error"),
    durationMs: integer("duration_ms").notNull(),
    /** The first 4 KiB of the response body. */
    responseBody: text("response_body"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    index("attempts_destination_idx").on(t.destinationId, t.id),
    index("attempts_destination_outcome_idx").on(t.destinationId, t.outcome, t.id),
    index("attempts_delivery_idx").on(t.deliveryId, t.id),
    index("attempts_event_idx").on(t.eventId),
  ],
);
