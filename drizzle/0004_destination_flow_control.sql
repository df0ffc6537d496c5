ALTER TABLE `destinations` ADD `rate_limit` integer;--> statement-breakpoint
ALTER TABLE `destinations` ADD `ordering` text DEFAULT 'none' NOT NULL;