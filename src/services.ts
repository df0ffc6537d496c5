/**
 * Everything with a side effect that the API, ingest and delivery code needs, built
 * from the Worker's bindings in one place: nothing else reads the bindings (the Durable
 * Objects, given them by the runtime, build their Services here too). The clock, DNS and
 * outbound HTTP are fields here so tests and other runtimes can swap them.
 */
import { loadConfig, type Config, type Env } from "./config";
import type { DestinationHealth } from "./destination-health";
import type { ListenHub } from "./listen/hub";
import type { RateLimiter } from "./rate-limiter";
import type { EventStore } from "./store/event-store";
import { database, type Database } from "./db/client";
import { SLOW_LANE_PREFIX, type DeliverMessage, type WorkMessage } from "./delivery/messages";
import { meteredD1, meteredQueue, meteredStub } from "./meter";
import { partitionName, shardOfKey, type PartitionRef } from "./store/ids";
import { secretBox, type SecretBox } from "./security/secrets";
import { dohResolver, type Resolver } from "./security/ssrf";

export interface Services {
  config: Config;
  db: Database;
  secrets: SecretBox;
  resolver: Resolver;
  fetch: typeof fetch;
  now: () => number;
  /**
   * The deliver queue of a destination (one of the deliver queues, always the same one;
   * for a key of the slow lane, `slow:…`, the deliver-slow queue), and the work queue.
   */
  queues: { deliver: (key: string) => Queue<DeliverMessage>; work: Queue<WorkMessage>; slowLane: boolean };
  /** The partition holding a source's events of one day and shard. */
  store: (ref: PartitionRef) => DurableObjectStub<EventStore>;
  /** The Durable Object of one destination: failure_count and auto-disable. */
  health: (destinationId: string) => DurableObjectStub<DestinationHealth>;
  /** The Durable Object of one source holding its `krafter listen` sockets. */
  listenHub: (sourceId: string) => DurableObjectStub<ListenHub>;
  /** The request counter of an API key (API_RATE_LIMIT). */
  rateLimiter: (keyId: string) => DurableObjectStub<RateLimiter>;
  /** The request counter of an account, all its keys together (ACCOUNT_API_RATE_LIMIT). */
  accountRateLimiter: (accountId: string) => DurableObjectStub<RateLimiter>;
  /** The counter of the bytes an account stored today (MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY). */
  storedBytes: (accountId: string) => DurableObjectStub<RateLimiter>;
}

const cache = new WeakMap<Env, Services>();

/**
 * The deliver queues the Worker is bound to: DELIVER_QUEUE, then DELIVER_QUEUE_1,
 * DELIVER_QUEUE_2, … in order, as many as wrangler.toml binds (each queue carries at most
 * 5,000 messages a second: docs/scale.md). A destination's messages always go to the
 * same one, picked by its id, for a given number of queues. DELIVER_SLOW_QUEUE is the
 * slow lane: slow destinations' deliveries, moved out of the shared ones (delivery/gate.ts).
 */
export function deliveryQueues(env: Env, metered: boolean): Services["queues"] {
  const wrap = <T>(q: Queue<T>) => (metered ? meteredQueue(q) : q);
  const bound = env as unknown as Record<string, unknown>;
  const deliver: Queue<DeliverMessage>[] = [];
  for (let i = 0; ; i++) {
    const q = bound[i === 0 ? "DELIVER_QUEUE" : `DELIVER_QUEUE_${i}`] as Queue<DeliverMessage> | undefined;
    if (q === undefined) break;
    deliver.push(wrap(q));
  }
  if (deliver.length === 0) throw new Error("no DELIVER_QUEUE binding");
  const shared = deliver.length === 1 ? () => deliver[0]! : (id: string) => deliver[shardOfKey(id, deliver.length)]!;
  // The slow lane (delivery/gate.ts); without its binding, the shared queues take it.
  const slowQueue = bound.DELIVER_SLOW_QUEUE as Queue<DeliverMessage> | undefined;
  const slow = slowQueue ? wrap(slowQueue) : undefined;
  return {
    deliver: (key) => (key.startsWith(SLOW_LANE_PREFIX) ? (slow ?? shared(key.slice(SLOW_LANE_PREFIX.length))) : shared(key)),
    work: wrap(env.WORK_QUEUE),
    slowLane: slow !== undefined,
  };
}

/**
 * How requests to destinations leave the Worker. With private destinations off, through
 * PUBLIC_NETWORK when the runtime binds it: a workerd network service that connects to
 * public addresses only (`npm start` binds it, scripts/lib/dev-public-network.mjs; a
 * self-hosted workerd config can, README, Security). The SSRF guard's DoH answer is then
 * not the last word: the socket itself refuses a private or loopback address, such as the
 * system resolver's answer for a name DoH called public (DNS rebinding). On Cloudflare's
 * network, where nothing binds it, the global fetch cannot reach private addresses anyway.
 * The DoH resolver keeps the global fetch (it may be a local resolver).
 */
export function destinationFetch(env: Env, config: Pick<Config, "allowPrivateDestinations">): typeof fetch {
  const network = (env as unknown as { PUBLIC_NETWORK?: Fetcher }).PUBLIC_NETWORK;
  if (config.allowPrivateDestinations || network === undefined) return (input, init) => fetch(input, init);
  return async (input, init) => {
    try {
      return await network.fetch(input, init);
    } catch (err) {
      // workerd reports a refused address only as an "internal error" (its log says why).
      const message = err instanceof Error ? err.message : String(err);
      if (!/^internal error/i.test(message)) throw err;
      throw new Error(`no public address reachable (PUBLIC_NETWORK refuses private and local ones): ${message}`);
    }
  };
}

export function servicesFor(env: Env): Services {
  let s = cache.get(env);
  if (!s) {
    const config = loadConfig(env);
    const m = config.meter;
    s = {
      config,
      db: database(m ? meteredD1(env.DB) : env.DB),
      secrets: secretBox(env.ENCRYPTION_KEY, env.ENCRYPTION_KEYS_PREVIOUS),
      resolver: dohResolver(config.dohUrl, (input, init) => fetch(input, init)),
      fetch: destinationFetch(env, config),
      now: () => Date.now(),
      queues: deliveryQueues(env, m),
      store: m ? (ref) => meteredStub(env.EVENT_STORE.getByName(partitionName(ref))) : (ref) => env.EVENT_STORE.getByName(partitionName(ref)),
      health: m ? (id) => meteredStub(env.DESTINATION_HEALTH.getByName(id)) : (id) => env.DESTINATION_HEALTH.getByName(id),
      listenHub: m ? (id) => meteredStub(env.LISTEN_HUB.getByName(id)) : (id) => env.LISTEN_HUB.getByName(id),
      rateLimiter: (id) => env.RATE_LIMITER.getByName(`key:${id}`),
      accountRateLimiter: (id) => env.RATE_LIMITER.getByName(`account:${id}`),
      storedBytes: m ? (id) => meteredStub(env.RATE_LIMITER.getByName(`stored:${id}`)) : (id) => env.RATE_LIMITER.getByName(`stored:${id}`),
    };
    cache.set(env, s);
  }
  return s;
}
