/**
 * The Worker's bindings and its configuration, parsed once per isolate with zod.
 * A configuration that is unsafe (private destinations allowed in production) or
 * unusable makes the Worker refuse to serve rather than run half-configured.
 */
import ipaddr from "ipaddr.js";
import { z } from "zod";
import type { DestinationHealth } from "./destination-health";
import type { RateLimiter } from "./rate-limiter";
import type { BreakerConfig } from "./delivery/gate";
import type { DeliverMessage, WorkMessage } from "./delivery/messages";
import type { ListenHub } from "./listen/hub";
import type { EventStore } from "./store/event-store";
import { isPowerOfTwo, MAX_DAY_SHARDS } from "./store/shards";

export interface Env {
  DB: D1Database;
  DELIVER_QUEUE: Queue<DeliverMessage>;
  /** More deliver queues, DELIVER_QUEUE_1 … DELIVER_QUEUE_N, as many as bound (docs/scale.md): each carries at most 5,000 messages a second. */
  DELIVER_QUEUE_1?: Queue<DeliverMessage>;
  DELIVER_QUEUE_2?: Queue<DeliverMessage>;
  DELIVER_QUEUE_3?: Queue<DeliverMessage>;
  /** The slow lane: slow destinations' deliveries, out of the shared queues (delivery/gate.ts). */
  DELIVER_SLOW_QUEUE?: Queue<DeliverMessage>;
  WORK_QUEUE: Queue<WorkMessage>;
  DESTINATION_HEALTH: DurableObjectNamespace<DestinationHealth>;
  RATE_LIMITER: DurableObjectNamespace<RateLimiter>;
  EVENT_STORE: DurableObjectNamespace<EventStore>;
  /** One per source: the WebSockets of `krafter listen` (src/listen/hub.ts). */
  LISTEN_HUB: DurableObjectNamespace<ListenHub>;
  ENVIRONMENT?: string;
  ENCRYPTION_KEY?: string;
  /** Older keys, comma-separated, still accepted for decryption after a rotation. */
  ENCRYPTION_KEYS_PREVIOUS?: string;
  ALLOW_PRIVATE_DESTINATIONS?: string;
  RETRY_SCHEDULE?: string;
  RETENTION_DAYS?: string;
  MAX_BODY_BYTES?: string;
  DELIVERY_TIMEOUT_MS?: string;
  TEST_TIMEOUT_MS?: string;
  DOH_URL?: string;
  EVENT_SHARDS?: string;
  PARTITION_SPLIT_BYTES?: string;
  /** Count billed operations for the benchmark (src/meter.ts). Never in production. */
  METER?: string;
  MAX_IN_FLIGHT_PER_DESTINATION?: string;
  /** "false" lets a destination's first attempts run in the shared deliver queues (delivery/gate.ts). */
  NEW_DESTINATIONS_START_SLOW?: string;
  CIRCUIT_MIN_ATTEMPTS?: string;
  CIRCUIT_FAILURE_PERCENT?: string;
  CIRCUIT_OPEN_SECONDS?: string;
  CIRCUIT_OPEN_MAX_SECONDS?: string;
  MAX_DESTINATIONS_PER_SOURCE?: string;
  API_RATE_LIMIT?: string;
  ACCOUNT_API_RATE_LIMIT?: string;
  INGEST_RATE_LIMIT?: string;
  MAX_SOURCES_PER_ACCOUNT?: string;
  MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY?: string;
  STORED_BYTES_FLUSH_MS?: string;
}

/**
 * Fails safe: only the names of local environments relax the rules (http destinations,
 * ALLOW_PRIVATE_DESTINATIONS). Anything else, a typo or "staging" included, is production.
 */
const NON_PRODUCTION = new Set(["development", "dev", "test", "local"]);
export const isProduction = (environment: string) => !NON_PRODUCTION.has(environment.trim().toLowerCase());

/**
 * The largest event body: a partition's row holds it with its kept headers (at most
 * 64 × 1.25 KiB, ingest/headers.ts) within SQLite's 2 MiB per row in a Durable Object.
 */
export const MAX_EVENT_BODY_BYTES = 2 * 1024 * 1024 - 128 * 1024;

const DEFAULT_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000];

const intFrom = (fallback: number, min: number, max: number) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v.trim() === "") return fallback;
      const n = Number(v);
      if (!Number.isInteger(n) || n < min || n > max) {
        ctx.addIssue({ code: "custom", message: `must be an integer between ${min} and ${max}` });
        return z.NEVER;
      }
      return n;
    });

const configSchema = z
  .object({
    ENVIRONMENT: z.string().optional().default("production"),
    ALLOW_PRIVATE_DESTINATIONS: z
      .string()
      .optional()
      .transform((v) => v === "true" || v === "1"),
    RETRY_SCHEDULE: z
      .string()
      .optional()
      .transform((v, ctx) => {
        if (v === undefined || v.trim() === "") return DEFAULT_RETRY_SCHEDULE;
        const parts = v.split(",").map((p) => Number(p.trim()));
        // Queue delays go up to 24 h; retries up to 100.
        if (parts.length > 99 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 86_400)) {
          ctx.addIssue({ code: "custom", message: "comma-separated whole seconds between 0 and 86400" });
          return z.NEVER;
        }
        return parts;
      }),
    RETENTION_DAYS: intFrom(30, 1, 3650),
    MAX_BODY_BYTES: intFrom(1_048_576, 1024, MAX_EVENT_BODY_BYTES),
    DELIVERY_TIMEOUT_MS: intFrom(15_000, 100, 120_000),
    TEST_TIMEOUT_MS: intFrom(10_000, 100, 120_000),
    EVENT_SHARDS: intFrom(1, 1, MAX_DAY_SHARDS).refine(isPowerOfTwo, "must be a power of two"),
    // A partition that would pass this by the end of its day doubles the day's shards.
    PARTITION_SPLIT_BYTES: intFrom(4 * 1024 ** 3, 1024, 8 * 1024 ** 3),
    DOH_URL: z.url().optional().default("https://cloudflare-dns.com/dns-query"),
    // Isolation and quotas (README, Limits and quotas).
    MAX_IN_FLIGHT_PER_DESTINATION: intFrom(10, 1, 1000),
    NEW_DESTINATIONS_START_SLOW: z
      .string()
      .optional()
      .transform((v) => !(v === "false" || v === "0")),
    CIRCUIT_MIN_ATTEMPTS: intFrom(10, 1, 1_000_000),
    CIRCUIT_FAILURE_PERCENT: intFrom(50, 1, 100),
    CIRCUIT_OPEN_SECONDS: intFrom(30, 1, 3600),
    CIRCUIT_OPEN_MAX_SECONDS: intFrom(300, 1, 86_400),
    MAX_DESTINATIONS_PER_SOURCE: intFrom(50, 1, 10_000),
    API_RATE_LIMIT: intFrom(1000, 1, 1_000_000),
    // Every key of an account together: three keys at full speed (README, Limits).
    ACCOUNT_API_RATE_LIMIT: intFrom(3000, 1, 1_000_000),
    INGEST_RATE_LIMIT: intFrom(5000, 1, 10_000_000),
    MAX_SOURCES_PER_ACCOUNT: intFrom(100, 1, 100_000),
    // Bytes of event bodies and kept headers an account stores per UTC day. No "unlimited":
    // the largest value (1 TiB) is as good as none.
    MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: intFrom(10 * 1024 ** 3, 1, 1024 ** 4),
    // How often an isolate reports the bytes it stored to the accounts' counters (ingest/stored-bytes.ts).
    STORED_BYTES_FLUSH_MS: intFrom(1000, 0, 10_000),
    METER: z
      .string()
      .optional()
      .transform((v) => v === "true"),
  })
  .superRefine((c, ctx) => {
    if (isProduction(c.ENVIRONMENT) && c.ALLOW_PRIVATE_DESTINATIONS) {
      ctx.addIssue({
        code: "custom",
        path: ["ALLOW_PRIVATE_DESTINATIONS"],
        message: "must not be set when ENVIRONMENT=production",
      });
    }
    // The resolver's answers decide what the SSRF guard lets through: in production they
    // travel over TLS, unless the resolver is on this machine.
    const doh = new URL(c.DOH_URL);
    if (isProduction(c.ENVIRONMENT) && doh.protocol !== "https:" && !isLoopbackHost(doh.hostname)) {
      ctx.addIssue({ code: "custom", path: ["DOH_URL"], message: "must be https in production unless it points at a loopback address" });
    }
  });

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  return h === "localhost" || (ipaddr.isValid(h) && ipaddr.parse(h).range() === "loopback");
}

export interface Config {
  environment: string;
  production: boolean;
  allowPrivateDestinations: boolean;
  retrySchedule: number[];
  retentionDays: number;
  maxBodyBytes: number;
  deliveryTimeoutMs: number;
  testTimeoutMs: number;
  /** The fewest shards a source's day starts with. */
  eventShards: number;
  /** A partition projected to hold more than this by the end of its day splits. */
  partitionSplitBytes: number;
  dohUrl: string;
  meter: boolean;
  /** Attempts to one destination in flight at once, across every consumer (its gate). */
  maxInFlightPerDestination: number;
  /** A destination is attempted from the slow lane until one attempt has answered within SLOW_ATTEMPT_MS. */
  newDestinationsStartSlow: boolean;
  /** A destination's circuit breaker (delivery/gate.ts). */
  breaker: BreakerConfig;
  maxDestinationsPerSource: number;
  /** Requests per API key per 60 s. */
  apiRateLimit: number;
  /** Requests per account per 60 s, all its keys together. */
  accountApiRateLimit: number;
  /** Events per source per 10 s. */
  ingestRateLimit: number;
  maxSourcesPerAccount: number;
  /** Bytes stored per account per UTC day (event bodies and kept headers). */
  maxStoredBytesPerAccountPerDay: number;
  /** An isolate sends its stored bytes to the accounts' counters at most this often. */
  storedBytesFlushMs: number;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const cache = new WeakMap<object, Config>();

/** Parses the configuration from the bindings; throws ConfigError when it is unsafe or invalid. */
export function loadConfig(env: Env): Config {
  const hit = cache.get(env);
  if (hit) return hit;
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new ConfigError(`invalid configuration: ${why}`);
  }
  const c = parsed.data;
  const config: Config = {
    environment: c.ENVIRONMENT,
    production: isProduction(c.ENVIRONMENT),
    allowPrivateDestinations: c.ALLOW_PRIVATE_DESTINATIONS,
    retrySchedule: c.RETRY_SCHEDULE,
    retentionDays: c.RETENTION_DAYS,
    maxBodyBytes: c.MAX_BODY_BYTES,
    deliveryTimeoutMs: c.DELIVERY_TIMEOUT_MS,
    testTimeoutMs: c.TEST_TIMEOUT_MS,
    eventShards: c.EVENT_SHARDS,
    partitionSplitBytes: c.PARTITION_SPLIT_BYTES,
    dohUrl: c.DOH_URL,
    meter: c.METER && !isProduction(c.ENVIRONMENT),
    maxInFlightPerDestination: c.MAX_IN_FLIGHT_PER_DESTINATION,
    newDestinationsStartSlow: c.NEW_DESTINATIONS_START_SLOW,
    breaker: {
      minAttempts: c.CIRCUIT_MIN_ATTEMPTS,
      failureRatio: c.CIRCUIT_FAILURE_PERCENT / 100,
      openMs: c.CIRCUIT_OPEN_SECONDS * 1000,
      openMaxMs: Math.max(c.CIRCUIT_OPEN_SECONDS, c.CIRCUIT_OPEN_MAX_SECONDS) * 1000,
    },
    maxDestinationsPerSource: c.MAX_DESTINATIONS_PER_SOURCE,
    apiRateLimit: c.API_RATE_LIMIT,
    accountApiRateLimit: c.ACCOUNT_API_RATE_LIMIT,
    ingestRateLimit: c.INGEST_RATE_LIMIT,
    maxSourcesPerAccount: c.MAX_SOURCES_PER_ACCOUNT,
    maxStoredBytesPerAccountPerDay: c.MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY,
    storedBytesFlushMs: c.STORED_BYTES_FLUSH_MS,
  };
  cache.set(env, config);
  return config;
}
