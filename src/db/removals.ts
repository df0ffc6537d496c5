/**
 * Removal of a deleted source's or destination's data from its partitions: the job row
 * is written in the same D1 batch as the delete (so the data is hidden at once and its
 * removal cannot be forgotten), then carried out by the work queue, one message per
 * chunk of partitions, and the row goes once every chunk is done. The cron trigger
 * queues again what is still undone after REQUEUE_AFTER_MS.
 */
import { and, asc, eq, lt, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { removalMessage, sendAll, type WorkMessage } from "../delivery/messages";
import { SOURCE_CACHE_TTL_MS } from "../ingest/sources";
import type { Services } from "../services";
import { newId } from "./ids";
import { partitions, removals } from "./schema";
import { shardsOf } from "./partitions";

/** At most this many chunks (bits of done_mask); partitions are spread over them. */
const MAX_CHUNKS = 50;
const MIN_CHUNK = 20;
const REQUEUE_AFTER_MS = 10 * 60_000;
/** The removal waits out the ingest path's source cache, so late events of a deleted source go too. */
const REMOVAL_DELAY_SECONDS = Math.ceil(SOURCE_CACHE_TTL_MS / 1000) + 5;

type Removal = typeof removals.$inferSelect;

function chunksOf(parts: [number, number][]): [number, number][][] {
  const size = Math.max(MIN_CHUNK, Math.ceil(parts.length / MAX_CHUNKS));
  const out: [number, number][][] = [];
  for (let i = 0; i < parts.length; i += size) out.push(parts.slice(i, i + size));
  return out;
}

/**
 * Deletes (the statement given, in the same atomic batch) and records the removal of what
 * it owned in the source's partitions; then queues it.
 */
export async function deleteWithRemoval(
  s: Services,
  kind: "source" | "destination",
  sourceId: string,
  destinationId: string | null,
  remove: BatchItem<"sqlite">,
): Promise<void> {
  const rows = await s.db.select({ day: partitions.day, mask: partitions.mask }).from(partitions).where(eq(partitions.sourceId, sourceId)).all();
  const parts = rows.flatMap((r) => shardsOf(r).map((shard): [number, number] => [r.day, shard]));
  const now = s.now();
  const job: Removal = { id: newId(now), kind, sourceId, destinationId, partitions: parts, chunks: chunksOf(parts).length, doneMask: 0, createdAt: now, queuedAt: now };
  if (parts.length === 0) {
    await remove;
    return;
  }
  await s.db.batch([s.db.insert(removals).values(job), remove]);
  try {
    await queueRemoval(s, job);
  } catch {
    // The job is recorded: the cron trigger queues it.
  }
}

/** Queues every chunk of a job not done yet. */
async function queueRemoval(s: Services, job: Removal, delaySeconds = REMOVAL_DELAY_SECONDS): Promise<void> {
  const msgs: { body: WorkMessage; delaySeconds: number }[] = [];
  chunksOf(job.partitions).forEach((chunk, i) => {
    if (Math.floor(job.doneMask / 2 ** i) % 2 === 0) msgs.push({ body: removalMessage(job.id, i, job.sourceId, job.destinationId, chunk), delaySeconds });
  });
  await sendAll(s.queues.work, msgs);
}

/** One chunk done: its bit set; the job goes once every bit is. */
export async function chunkDone(s: Services, removalId: string, chunk: number): Promise<void> {
  const bit = 2 ** chunk;
  await s.db.batch([
    s.db
      .update(removals)
      .set({ doneMask: sql`${removals.doneMask} | ${bit}` })
      .where(eq(removals.id, removalId)),
    s.db.delete(removals).where(and(eq(removals.id, removalId), sql`${removals.doneMask} = (1 << ${removals.chunks}) - 1`)),
  ]);
}

/** Jobs queued long ago and still not done: queued again (a removal done twice is harmless). */
export async function requeueStaleRemovals(s: Services, now: number): Promise<number> {
  const stale = await s.db.select().from(removals).where(lt(removals.queuedAt, now - REQUEUE_AFTER_MS)).orderBy(asc(removals.queuedAt)).limit(20).all();
  for (const job of stale) {
    await queueRemoval(s, job, 0);
    await s.db.update(removals).set({ queuedAt: now }).where(eq(removals.id, job.id)).run();
  }
  return stale.length;
}
