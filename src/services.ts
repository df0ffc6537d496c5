/**
 * Everything with a side effect that the API, ingest and delivery code needs, built
 * from the Worker's bindings in one place. The clock, DNS and outbound HTTP are fields
 * here so tests and other runtimes can swap them.
 */
import { loadConfig, type Config, type Env } from "./config";
import type { DestinationHealth } from "./destination-health";
import type { EventStore } from "./store/event-store";
import { database, type Database } from "./db/client";
import type { DeliverMessage, WorkMessage } from "./delivery/messages";
import { meteredD1, meteredQueue, meteredStub } from "./meter";
import { partitionName, type PartitionRef } from "./store/ids";
import { secretBox, type SecretBox } from "./security/secrets";
import { dohResolver, type Resolver } from "./security/ssrf";

export interface Services {
  env: Env;
  config: Config;
  db: Database;
  secrets: SecretBox;
  resolver: Resolver;
  fetch: typeof fetch;
  now: () => number;
  queues: { deliver: Queue<DeliverMessage>; work: Queue<WorkMessage> };
  /** The partition holding a source's events of one day and shard. */
  store: (ref: PartitionRef) => DurableObjectStub<EventStore>;
  /** The Durable Object of one destination: failure_count and auto-disable. */
  health: (destinationId: string) => DurableObjectStub<DestinationHealth>;
}

const cache = new WeakMap<Env, Services>();

export function servicesFor(env: Env): Services {
  let s = cache.get(env);
  if (!s) {
    const config = loadConfig(env);
    const m = config.meter;
    s = {
      env,
      config,
      db: database(m ? meteredD1(env.DB) : env.DB),
      secrets: secretBox(env.ENCRYPTION_KEY, env.ENCRYPTION_KEYS_PREVIOUS),
      resolver: dohResolver(config.dohUrl, (input, init) => fetch(input, init)),
      fetch: (input, init) => fetch(input, init),
      now: () => Date.now(),
      queues: m ? { deliver: meteredQueue(env.DELIVER_QUEUE), work: meteredQueue(env.WORK_QUEUE) } : { deliver: env.DELIVER_QUEUE, work: env.WORK_QUEUE },
      store: m ? (ref) => meteredStub(env.EVENT_STORE.getByName(partitionName(ref))) : (ref) => env.EVENT_STORE.getByName(partitionName(ref)),
      health: m ? (id) => meteredStub(env.DESTINATION_HEALTH.getByName(id)) : (id) => env.DESTINATION_HEALTH.getByName(id),
    };
    cache.set(env, s);
  }
  return s;
}
