/**
 * What travels on the queues, with the constructors that build it: ids only. Payloads
 * stay in their partition (a queue message holds at most 128 KB).
 */
import { partitionName, type PartitionRef } from "../store/ids";

/** One delivery (an event to one destination) a deliver message asks to attempt. */
export interface DeliveryItem {
  delivery_id: string;
  destination_id: string;
  /** The delivery's token when this message was sent: an older message is stale. */
  token: string;
}

/**
 * krafter-deliver: the next attempt of one event's deliveries, one or more. A fan-out
 * sends one message per event, whatever the number of its destinations (queue
 * operations are billed and rate-limited per message); a retry, a redeliver or a replay
 * to one destination sends one with that delivery alone.
 */
export interface DeliverMessage {
  kind: "deliver";
  /** The partition of the event: `source/day/shard`. */
  partition: string;
  event_id: string;
  deliveries: DeliveryItem[];
}

/** At most this many deliveries in one message (a message holds at most 128 KB; each item is under 150 bytes). */
export const MAX_DELIVERIES_PER_MESSAGE = 100;

export function deliverMessage(
  ref: PartitionRef,
  eventId: string,
  items: { deliveryId: string; destinationId: string; token: string }[],
): DeliverMessage {
  return {
    kind: "deliver",
    partition: partitionName(ref),
    event_id: eventId,
    deliveries: items.map((d) => ({ delivery_id: d.deliveryId, destination_id: d.destinationId, token: d.token })),
  };
}

/** A queue key in the slow lane: services.ts sends it to the deliver-slow queue. */
export const SLOW_LANE_PREFIX = "slow:";

/**
 * The queue a message goes to: its destination's when it has one delivery, else its
 * event's; in the slow lane (delivery/gate.ts), the deliver-slow queue.
 */
export function queueKeyOf(msg: DeliverMessage, lane: "shared" | "slow" | undefined = "shared"): string {
  const key = msg.deliveries.length === 1 ? msg.deliveries[0]!.destination_id : msg.event_id;
  return lane === "slow" ? SLOW_LANE_PREFIX + key : key;
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

type Outgoing<T> = { body: T; delaySeconds?: number };

/** Queue sendBatch takes at most 100 messages (and 256 KB): send any number, 100 at a time. */
export async function sendAll<T>(queue: Queue<T>, messages: Outgoing<T>[]): Promise<void> {
  for (let i = 0; i < messages.length; i += 100) {
    await queue.sendBatch(messages.slice(i, i + 100).map((m) => (m.delaySeconds ? { body: m.body, delaySeconds: m.delaySeconds } : { body: m.body })));
  }
}
