/**
 * The cron trigger's work, bounded: removal jobs left unfinished are queued again, and the
 * bookkeeping rows of days past retention go (each partition drops itself with its alarm
 * and clears its own bit; this catches a row that outlived that). Nothing here scans
 * partitions: each one carries its own fan-out retries and retention.
 */
import { lt } from "drizzle-orm";
import { requeueStaleRemovals } from "./db/removals";
import { partitions } from "./db/schema";
import { log } from "./log";
import type { Services } from "./services";
import { dayOf } from "./store/ids";

interface HousekeepingReport {
  removals_requeued: number;
  partition_rows_expired: number;
}

export async function housekeeping(s: Services): Promise<HousekeepingReport> {
  const now = s.now();
  const expired = await s.db
    .delete(partitions)
    .where(lt(partitions.day, dayOf(now) - s.config.retentionDays - 2))
    .run();
  const report = {
    removals_requeued: await requeueStaleRemovals(s, now),
    partition_rows_expired: expired.meta.changes ?? 0,
  };
  log("info", "housekeeping", { ...report });
  return report;
}
