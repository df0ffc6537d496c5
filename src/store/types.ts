/**
 * What crosses the boundary of a partition (an EventStore Durable Object): the requests
 * its RPC methods take and the rows they return. Plain data only (structured clone).
 */
import type { AttemptOutcome, DeliveryStatus, EventStatus } from "./schema";

export interface IngestRequest {
  type: string;
  dedupeKey: string | null;
  payload: string;
  payloadIsJson: boolean;
  headers: Record<string, string>;
  receivedAt: number;
}

export type IngestResult =
  | { kind: "stored"; eventId: string }
  | { kind: "duplicate"; eventId: string }
  /** This partition's day is over (another partition already checked its keys): use the next day's. */
  | { kind: "sealed" }
  /** The day has more shards than the router knew: the key belongs to another one. */
  | { kind: "moved"; shards: number }
  /** The source no longer exists. */
  | { kind: "source_gone" }
  /** Over this partition's share of INGEST_RATE_LIMIT: nothing stored. */
  | { kind: "rate_limited"; retryAfterSeconds: number };

/** One attempt as a delivery's summary shows it, and as a settlement records it. */
export interface AttemptSummary {
  id: string;
  number: number;
  outcome: AttemptOutcome;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  createdAt: number;
}

export interface EventSummary {
  id: string;
  type: string;
  status: EventStatus;
  receivedAt: number;
}

export interface DeliverySummary {
  id: string;
  destinationId: string;
  status: DeliveryStatus;
  attemptCount: number;
  lastAttempt: AttemptSummary | null;
}

export interface EventDetail extends EventSummary {
  payload: string;
  payloadIsJson: boolean;
  headers: Record<string, string>;
  deliveries: DeliverySummary[];
}

export interface AttemptRow {
  id: string;
  deliveryId: string;
  eventId: string;
  destinationId: string;
  number: number;
  outcome: AttemptOutcome;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  responseBody: string | null;
  createdAt: number;
}

/** Keyset bounds over ids: `low` inclusive, `high` exclusive, newest first. */
export interface IdRange {
  low?: string | undefined;
  high?: string | undefined;
  limit: number;
}

/** What a partition needs to know about a destination to fan out to it. */
export interface TargetDestination {
  id: string;
  eventFilter: string[];
  payloadFilter?: Record<string, unknown> | null;
}

export interface ClaimItem {
  deliveryId: string;
  token: string;
  /** The queue message (Message.id) asking: it holds the claim. */
  messageId: string;
}

export type ClaimResult =
  | {
      kind: "claimed";
      deliveryId: string;
      eventId: string;
      destinationId: string;
      attemptCount: number;
      attemptsInRun: number;
    }
  /** Nothing to do: the message is older than the delivery's current one, or the delivery is settled or gone. */
  | { kind: "drop"; deliveryId: string; reason: "stale" | "settled" | "gone" }
  /** Another message holds a live claim: ask again after `retryInMs`. */
  | { kind: "busy"; deliveryId: string; retryInMs: number }
  /** Not claimed in this call: over the byte budget. Claim it in a later call. */
  | { kind: "deferred"; deliveryId: string };

export interface ClaimedEvent {
  id: string;
  type: string;
  payload: string;
  payloadIsJson: boolean;
}

export interface ClaimResponse {
  results: ClaimResult[];
  /** Each event of the claimed deliveries once. */
  events: ClaimedEvent[];
}

/** The new state of a claimed delivery after its attempt. */
export interface Settlement {
  deliveryId: string;
  token: string;
  messageId: string;
  status: DeliveryStatus;
  attempt: AttemptSummary;
  /** Queue the next attempt after this many seconds (status stays pending). */
  retryAfterSeconds?: number;
}

export interface RecordRequest {
  /** Attempts made on this partition's day for deliveries of this shard. */
  attempts: AttemptRow[];
  /** Deliveries of this partition whose attempt ended. */
  settlements: Settlement[];
}

export interface RecoveryResult {
  queued: number;
  alreadyPending: number;
}

export interface ReplayQuery {
  destination: TargetDestination;
  low: string;
  high: string;
  onlyFailed: boolean;
}
