/**
 * The work consumer: removes a deleted source's or destination's data from the
 * partitions of one chunk of a removal job (db/removals.ts). A source's partitions are
 * dropped whole; a destination's deliveries and attempts are deleted from each, a few
 * thousand rows per call until none is left. Every step can run twice harmlessly.
 */
import { chunkDone } from "../db/removals";
import type { Services } from "../services";
import type { WorkMessage } from "./messages";

/** Calls to one partition per message, each removing a bounded number of rows. */
const MAX_PURGE_CALLS = 20;

export async function carryOutRemoval(s: Services, msg: WorkMessage): Promise<void> {
  for (const [day, shard] of msg.partitions) {
    const store = s.store({ sourceId: msg.source_id, day, shard });
    if (msg.destination_id === null) {
      await store.drop();
      continue;
    }
    let done = false;
    for (let i = 0; i < MAX_PURGE_CALLS && !done; i++) done = await store.purgeDestination(msg.destination_id);
    if (!done) throw new Error("removal not finished: retried");
  }
  await chunkDone(s, msg.removal_id, msg.chunk);
}
