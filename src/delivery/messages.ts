/** What travels on the queues: ids only. Payloads are read from D1 (a queue message holds at most 128 KB). */

/** krafter-fanout: one per ingested event (and per redeliver / replay request). */
export interface FanoutMessage {
  kind: "fanout";
  event_id: string;
  /** Only these destinations (redeliver, replay), whatever their filter; omitted = every matching enabled destination. */
  destination_ids?: string[];
  /** Send again even where a delivery exists already (it goes back to pending, at the start of the schedule). */
  redeliver?: boolean;
}

/** krafter-deliver: one per (event, destination). */
export interface DeliverMessage {
  kind: "deliver";
  delivery_id: string;
  event_id: string;
  destination_id: string;
}

/** Queue sendBatch takes at most 100 messages: send any number, 100 at a time. */
export async function sendAll<T>(queue: Queue<T>, bodies: T[]): Promise<void> {
  for (let i = 0; i < bodies.length; i += 100) {
    await queue.sendBatch(bodies.slice(i, i + 100).map((body) => ({ body })));
  }
}
