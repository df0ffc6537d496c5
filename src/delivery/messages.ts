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
