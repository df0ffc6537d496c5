CREATE TABLE `partitions` (
	`source_id` text NOT NULL,
	`day` integer NOT NULL,
	`shards` integer NOT NULL,
	`base_shards` integer NOT NULL,
	`mask_lo` integer DEFAULT 0 NOT NULL,
	`mask_hi` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`source_id`, `day`),
	FOREIGN KEY (`source_id`) REFERENCES `sources`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `partitions_day_idx` ON `partitions` (`day`);--> statement-breakpoint
CREATE TABLE `removals` (
	`id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`source_id` text NOT NULL,
	`destination_id` text,
	`partitions` text NOT NULL,
	`chunks` integer NOT NULL,
	`done_mask` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL,
	`queued_at` integer NOT NULL
);
--> statement-breakpoint
DROP TABLE `delivery_attempts`;--> statement-breakpoint
DROP TABLE `deliveries`;--> statement-breakpoint
DROP TABLE `events`;