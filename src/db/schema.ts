/**
 * The data model of Krafter, in one place. Every child row cascades from its parent:
 * deleting an account, source, destination or event removes everything under it.
 *
 * D1 holds what accounts configure, and the bookkeeping of where their events are: the
 * events, deliveries and attempts themselves live in partitions (src/store/schema.ts).
 *
 * Times are integers (Unix milliseconds) in the database and RFC 3339 at the API edge.
 * Ids are UUIDv7, so ordering by id is ordering by creation time, and every list is a
 * range scan over an index that starts with the parent's id and ends with `id`.
 */
import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

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
    /** Event types to forward; [] forwards everything. */
    eventFilter: text("event_filter", { mode: "json" }).$type<string[]>().notNull().default([]),
    /** A JSON filter on the payload (delivery/payload-filter.ts), or null for none. */
    payloadFilter: text("payload_filter", { mode: "json" }).$type<Record<string, unknown>>(),
    /** The names of the custom headers, in order (not secret: reads show them, values masked). */
    headerNames: text("header_names", { mode: "json" }).$type<string[]>().notNull().default([]),
    /** The custom headers, names and values, as JSON encrypted like the secret; null for none. */
    headersCiphertext: text("headers_ct"),
    enabled: integer("enabled", { mode: "boolean" }).notNull().default(true),
    /** Attempts started per second at most (1–1,000), or null for no limit: enforced by DestinationHealth. */
    rateLimit: integer("rate_limit"),
    /** "none", or "fifo": one event at a time, in ingest order (DestinationHealth). */
    ordering: text("ordering", { enum: ["none", "fifo"] }).notNull().default("none"),
    /** Written only by the DestinationHealth Durable Object. */
    failureCount: integer("failure_count").notNull().default(0),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [index("destinations_source_idx").on(t.sourceId, t.id)],
);

/**
 * Which partitions (EventStore Durable Objects) exist: one row per source and UTC day
 * that received anything, with the day's shard count (store/shards.ts) and one
 * character per shard, "1" where it exists (up to MAX_DAY_SHARDS).
 * Ingest reads the count to route; lists and deletes read the bits to know where to
 * look; the partitions hold the events themselves.
 */
export const partitions = sqliteTable(
  "partitions",
  {
    sourceId: text("source_id")
      .notNull()
      .references(() => sources.id, { onDelete: "cascade" }),
    day: integer("day").notNull(),
    /** The day's shard count now, and the one it started with (a power of two each). */
    shards: integer("shards").notNull(),
    baseShards: integer("base_shards").notNull(),
    /** One character per shard (MAX_DAY_SHARDS), "1" where its partition exists. */
    mask: text("mask").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.sourceId, t.day] }), index("partitions_day_idx").on(t.day)],
);

/**
 * Background removal of a deleted source's or destination's data from its partitions,
 * written in the same D1 batch as the delete. The work queue carries it out, one
 * message per chunk of partitions; each chunk done sets its bit in `done_mask`, and the
 * row goes when every bit is set. The cron trigger queues again any chunk left undone.
 */
export const removals = sqliteTable("removals", {
  id: text("id").primaryKey(),
  kind: text("kind", { enum: ["source", "destination"] }).notNull(),
  sourceId: text("source_id").notNull(),
  destinationId: text("destination_id"),
  /** [[day, shard], …]: every partition to clean, as the partitions table listed them at the delete. */
  partitions: text("partitions", { mode: "json" }).$type<[number, number][]>().notNull(),
  /** How many messages (chunks of partitions) the job is split into: at most 50. */
  chunks: integer("chunks").notNull(),
  doneMask: integer("done_mask").notNull().default(0),
  createdAt: integer("created_at").notNull(),
  queuedAt: integer("queued_at").notNull(),
});
