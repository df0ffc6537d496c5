DROP INDEX `attempts_delivery_idx`;--> statement-breakpoint
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_outbox` (
	`seq` integer PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`queue_key` text NOT NULL,
	`body` text NOT NULL,
	`delay_seconds` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
INSERT INTO `__new_outbox`("seq", "kind", "queue_key", "body", "delay_seconds", "created_at") SELECT "seq", "kind", "destination_id", "body", "delay_seconds", "created_at" FROM `outbox`;--> statement-breakpoint
DROP TABLE `outbox`;--> statement-breakpoint
ALTER TABLE `__new_outbox` RENAME TO `outbox`;--> statement-breakpoint
PRAGMA foreign_keys=ON;