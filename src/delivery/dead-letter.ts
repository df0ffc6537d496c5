/**
 * The dead-letter consumer: messages the other consumers failed on max_retries times.
 * None is dropped silently: a delivery is marked failed with an attempt saying why (if
 * the message is still its current one); a removal stays recorded in D1, and the cron
 * trigger queues it again.
 */
import { log } from "../log";
import type { Services } from "../services";
import { attemptId, dayOf, parsePartitionName } from "../store/ids";
import type { DeliverMessage, WorkMessage } from "./messages";

export async function deadLetter(s: Services, msg: DeliverMessage | WorkMessage): Promise<void> {
  if (msg.kind === "removal") {
    log("error", "removal_dead_lettered", { removal_id: msg.removal_id, chunk: msg.chunk });
    return;
  }
  const ref = parsePartitionName(msg.partition);
  if (!ref || !Array.isArray(msg.deliveries)) return;
  for (const item of msg.deliveries) {
    const now = s.now();
    const failed = await s.store(ref).deadLetter(item.delivery_id, item.token, {
      id: attemptId(ref.shard, now),
      error: "dead-lettered: the delivery could not be processed after repeated tries",
      createdAt: now,
      sameDay: dayOf(now) === ref.day,
    });
    if (failed) {
      if (!failed.sameDay) await s.store({ ...ref, day: dayOf(now) }).record({ attempts: [failed.attempt], settlements: [] });
      log("error", "delivery_dead_lettered", { delivery_id: item.delivery_id, event_id: msg.event_id, destination_id: item.destination_id });
    }
  }
}
