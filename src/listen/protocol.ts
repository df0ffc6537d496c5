/**
 * What travels on a listener's WebSocket (`GET …/sources/:source_id/listen`), both ways,
 * and between a source's partitions and its ListenHub. `krafter listen` (bin/krafter.mjs)
 * speaks it; this is the one place that names its messages and close codes.
 *
 * Relay → listener, JSON text frames:
 *   {"type":"ready","source_id","name","now"}        once, after the source's partitions
 *                                                    know it is listened to: from then on
 *                                                    every new event is pushed
 *   {"type":"event","id","event_type","received_at","body"}
 *                                                    an event just stored; `body` is the
 *                                                    exact envelope a destination gets
 *                                                    (delivery/envelope.ts), or null when
 *                                                    too large for one frame (then read it
 *                                                    through GET …/events/:event_id)
 *   "pong"                                           the answer to "ping", sent by the
 *                                                    runtime without waking the object
 * Listener → relay:
 *   "ping"                                           a heartbeat
 *   {"type":"result","event_id","status","duration_ms","error"?,"replayed"?}
 *                                                    what the local forward did; logged,
 *                                                    never an attempt, a retry or a count
 */

/** A partition's view of whether its source is listened to: the answer with the highest epoch wins. */
export interface ListenState {
  on: boolean;
  /**
   * Bumped by the hub each time its first listener connects. Within one epoch the
   * listeners only dwindle, so for the same epoch "off" is the later word.
   */
  epoch: number;
}

/** An event as a partition hands it to the hub. */
export interface ListenEvent {
  id: string;
  type: string;
  receivedAt: number;
  /** The envelope, built once by the partition. */
  body: string;
}

/** Close codes the hub uses; the listener gives up on these rather than reconnect. */
export const CLOSE = {
  keyRevoked: 4401,
  sourceGone: 4404,
} as const;

/**
 * A frame larger than this carries a reference instead of the body: WebSocket peers cap
 * the messages they accept (workerd at 1 MiB by default), so the body of a large event is
 * read through the events API instead.
 */
export const MAX_FRAME_BYTES = 1_000_000;

export const PING = "ping";
export const PONG = "pong";
