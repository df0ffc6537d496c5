CREATE TABLE `attempts` (
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
);
--> statement-breakpoint
CREATE INDEX `attempts_destination_idx` ON `attempts` (`destination_id`,`id`);--> statement-breakpoint
CREATE INDEX `attempts_destination_outcome_idx` ON `attempts` (`destination_id`,`outcome`,`id`);--> statement-breakpoint
CREATE INDEX `attempts_delivery_idx` ON `attempts` (`delivery_id`,`id`);--> statement-breakpoint
CREATE TABLE `deliveries` (
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
);
--> statement-breakpoint
CREATE UNIQUE INDEX `deliveries_event_destination_idx` ON `deliveries` (`event_id`,`destination_id`);--> statement-breakpoint
CREATE INDEX `deliveries_destination_idx` ON `deliveries` (`destination_id`,`event_id`);--> statement-breakpoint
CREATE TABLE `events` (
	`id` text PRIMARY KEY NOT NULL,
	`type` text NOT NULL,
	`dedupe_key` text,
	`payload` text NOT NULL,
	`payload_is_json` integer NOT NULL,
	`headers` text NOT NULL,
	`status` text DEFAULT 'pending' NOT NULL,
	`received_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `events_type_idx` ON `events` (`type`,`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `events_dedupe_idx` ON `events` (`dedupe_key`) WHERE dedupe_key IS NOT NULL;--> statement-breakpoint
CREATE INDEX `events_pending_idx` ON `events` (`status`,`id`) WHERE status = 'pending';--> statement-breakpoint
CREATE TABLE `outbox` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`destination_id` text NOT NULL,
	`body` text NOT NULL,
	`delay_seconds` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL
);
