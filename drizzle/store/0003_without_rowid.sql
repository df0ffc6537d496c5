-- Deliveries and attempts become WITHOUT ROWID tables: their text primary key is then the
-- table's own b-tree, not a rowid table plus an index on id, so each insert writes one
-- row fewer (rows written are what a partition costs, docs/scale.md). Their rows are
-- small (an attempt keeps at most 4 KiB of response), which is what WITHOUT ROWID suits;
-- events, whose payloads run to megabytes, keep their rowid.
-- Hand-written (drizzle-kit generate --custom): drizzle's schema cannot say WITHOUT ROWID,
-- so src/store/schema.ts is unchanged and a test reads the tables' shape back.
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_deliveries` (
	`id` text PRIMARY KEY NOT NULL,
	`event_id` text NOT NULL,
	`destination_id` text NOT NULL,
	`status` text DEFAULT 'pending' NOT NULL,
	`token` text NOT NULL,
	`claimed_by` text,
	`claimed_until` integer DEFAULT 0 NOT NULL,
	`attempt_count` integer DEFAULT 0 NOT NULL,
	`attempts_in_run` integer DEFAULT 0 NOT NULL,
	`next_attempt_at` integer,
	`last_attempt_id` text,
	`last_attempt_at` integer,
	`last_outcome` text,
	`last_status_code` integer,
	`last_error` text,
	`last_duration_ms` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
) WITHOUT ROWID;
--> statement-breakpoint
INSERT INTO `__new_deliveries` SELECT `id`, `event_id`, `destination_id`, `status`, `token`, `claimed_by`, `claimed_until`, `attempt_count`, `attempts_in_run`, `next_attempt_at`, `last_attempt_id`, `last_attempt_at`, `last_outcome`, `last_status_code`, `last_error`, `last_duration_ms`, `created_at`, `updated_at` FROM `deliveries`;--> statement-breakpoint
DROP TABLE `deliveries`;--> statement-breakpoint
ALTER TABLE `__new_deliveries` RENAME TO `deliveries`;--> statement-breakpoint
CREATE UNIQUE INDEX `deliveries_event_destination_idx` ON `deliveries` (`event_id`,`destination_id`);--> statement-breakpoint
CREATE TABLE `__new_attempts` (
	`id` text PRIMARY KEY NOT NULL,
	`delivery_id` text NOT NULL,
	`event_id` text NOT NULL,
	`destination_id` text NOT NULL,
	`number` integer NOT NULL,
	`outcome` text NOT NULL,
	`status_code` integer,
	`error` text,
	`duration_ms` integer NOT NULL,
	`response_body` text,
	`created_at` integer NOT NULL
) WITHOUT ROWID;
--> statement-breakpoint
INSERT INTO `__new_attempts` SELECT `id`, `delivery_id`, `event_id`, `destination_id`, `number`, `outcome`, `status_code`, `error`, `duration_ms`, `response_body`, `created_at` FROM `attempts`;--> statement-breakpoint
DROP TABLE `attempts`;--> statement-breakpoint
ALTER TABLE `__new_attempts` RENAME TO `attempts`;--> statement-breakpoint
CREATE INDEX `attempts_destination_idx` ON `attempts` (`destination_id`,`id`);--> statement-breakpoint
CREATE INDEX `attempts_destination_outcome_idx` ON `attempts` (`destination_id`,`outcome`,`id`);--> statement-breakpoint
PRAGMA foreign_keys=ON;
