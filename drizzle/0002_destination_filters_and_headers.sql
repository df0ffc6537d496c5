ALTER TABLE `destinations` ADD `payload_filter` text;--> statement-breakpoint
ALTER TABLE `destinations` ADD `header_names` text DEFAULT '[]' NOT NULL;--> statement-breakpoint
ALTER TABLE `destinations` ADD `headers_ct` text;