/**
 * The invocation's outbound connections and storage calls, as two separate pools.
 *
 * - http: a Worker invocation may have at most six connections waiting for response
 *   headers (wrangler dev does not enforce it; Cloudflare queues the seventh). What the
 *   platform counts toward it is fetch() (destinations, DNS over HTTPS), KV, Cache, R2,
 *   queue sends and TCP sockets; calls to Durable Objects and D1 are not on that list.
 *   So every request to a destination or a resolver takes one of the six permits, from
 *   the request until its headers arrive, and a time limit starts only once its request
 *   has one.
 * - storage: calls to partitions, health objects and D1 never wait behind a destination,
 *   and a destination never waits behind them; they have their own STORAGE_PERMITS, so
 *   a fan-out over many partitions (a list, a replay) stays bounded all the same.
 */
export const CONNECTIONS_PER_INVOCATION = 6;
/** Storage calls of one invocation in flight at once. */
export const STORAGE_PERMITS = 6;

class Pool {
  private inUse = 0;
  private readonly waiting: (() => void)[] = [];
  /** The most permits ever held at once. */
  peak = 0;

  constructor(readonly size: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.waiting.length === 0 && this.inUse < this.size) this.take();
    else await new Promise<void>((go) => this.waiting.push(go)); // release() takes it for us
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  private take(): void {
    this.inUse++;
    this.peak = Math.max(this.peak, this.inUse);
  }

  private release(): void {
    this.inUse--;
    const next = this.waiting.shift();
    if (next) {
      this.take();
      next();
    }
  }
}

export class Limiter {
  private readonly http: Pool;
  private readonly storage: Pool;

  constructor(
    readonly httpPermits = CONNECTIONS_PER_INVOCATION,
    readonly storagePermits = STORAGE_PERMITS,
  ) {
    this.http = new Pool(httpPermits);
    this.storage = new Pool(storagePermits);
  }

  /** Runs `fn` once a permit of its kind is free. */
  run<T>(kind: "http" | "storage", fn: () => Promise<T>): Promise<T> {
    return (kind === "http" ? this.http : this.storage).run(fn);
  }

  /** The most connections waiting for headers at once (what the platform limit counts; tests assert it never passes it). */
  get peak(): number {
    return this.http.peak;
  }

  /** The most storage calls in flight at once. */
  get storagePeak(): number {
    return this.storage.peak;
  }
}
