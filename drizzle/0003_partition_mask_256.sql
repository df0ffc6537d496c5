-- A day's shards as one character each ("1": the partition exists), up to 256 shards.
-- The default only serves the ALTER (SQLite needs one for NOT NULL); every insert sets it.
ALTER TABLE `partitions` ADD `mask` text NOT NULL DEFAULT '';--> statement-breakpoint
UPDATE `partitions` SET `mask` = (
  WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 255)
  SELECT group_concat(CASE WHEN i < 32 THEN (`mask_lo` >> i) & 1 WHEN i < 64 THEN (`mask_hi` >> (i - 32)) & 1 ELSE 0 END, '') FROM n
);--> statement-breakpoint
ALTER TABLE `partitions` DROP COLUMN `mask_lo`;--> statement-breakpoint
ALTER TABLE `partitions` DROP COLUMN `mask_hi`;
