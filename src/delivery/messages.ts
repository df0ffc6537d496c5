/**
 * What travels on the queues, with the constructors that build it: ids only. Payloads
 * stay in their partition (a queue message holds at most 128 KB).
 */
import { partitionName, type PartitionRef } from "../store/ids";

/** krafter-deliver: one attempt of one delivery (an event to one destination). */
export interface DeliverMessage {
  kind: "deliver";
  /** The partition of the event: `source/day/shard`. */
  partition: string;
  delivery_id: string;
  event_id: string;
  destination_id: string;
  /** The delivery's token when this message was sent: an older message is stale. */
  token: string;
}

export function deliverMessage(
  ref: PartitionRef,
  d: { deliveryId: string; eventId: string; destinationId: string; token: string },
): DeliverMessage {
  return { kind: "deliver", partition: partitionName(ref), delivery_id: d.deliveryId, event_id: d.eventId, destination_id: d.destinationId, token: d.token };
}

/** krafter-work: background removal of a deleted source's or destination's data from its partitions. */
export interface WorkMessage {
  kind: "removal";
  removal_id: string;
  /** Which chunk of the job's partitions. */
  chunk: number;
  source_id: string;
  destination_id: string | null;
  /** [day, shard] of each partition this message covers. */
  partitions: [number, number][];
}

export function removalMessage(removalId: string, chunk: number, sourceId: string, destinationId: string | null, parts: [number, number][]): WorkMessage {
  return { kind: "removal", removal_id: removalId, chunk, source_id: sourceId, destination_id: destinationId, partitions: parts };
}

export type Outgoing<T> = { body: T; delaySeconds?: number };

/** Queue sendBatch takes at most 100 messages (and 256 KB): send any number, 100 at a time. */
export async function sendAll<T>(queue: Queue<T>, messages: Outgoing<T>[]): Promise<void> {
  for (let i = 0; i < messages.length; i += 100) {
    await queue.sendBatch(messages.slice(i, i + 100).map((m) => (m.delaySeconds ? { body: m.body, delaySeconds: m.delaySeconds } : { body: m.body })));
  }
}
