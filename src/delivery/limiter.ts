/**
 * The invocation's outbound connections. A Worker invocation may have at most six
 * connections waiting for response headers (wrangler dev does not enforce it; Cloudflare
 * queues the seventh). Every subrequest of the deliver consumer takes a permit: at most
 * HTTP_PERMITS for destinations and DNS, so storage calls (partitions, D1, health
 * objects) always have one left, and a time limit starts only once its request has a
 * connection.
 */
export const CONNECTIONS_PER_INVOCATION = 6;
const HTTP_PERMITS = CONNECTIONS_PER_INVOCATION - 1;

export class Limiter {
  private inUse = 0;
  private httpInUse = 0;
  private readonly waiting: { http: boolean; go: () => void }[] = [];
  /** The most permits ever held at once (tests assert it never passes the limit). */
  peak = 0;

  constructor(
    readonly permits = CONNECTIONS_PER_INVOCATION,
    readonly httpPermits = HTTP_PERMITS,
  ) {}

  /** Runs `fn` once a permit is free (an http one for `kind: "http"`). */
  async run<T>(kind: "http" | "storage", fn: () => Promise<T>): Promise<T> {
    const http = kind === "http";
    if (this.waiting.length === 0 && this.free(http)) this.take(http);
    else await new Promise<void>((go) => this.waiting.push({ http, go })); // wake() takes it for us
    try {
      return await fn();
    } finally {
      this.inUse--;
      if (http) this.httpInUse--;
      this.wake();
    }
  }

  /** How many http permits are taken. */
  get httpBusy(): number {
    return this.httpInUse;
  }

  private free(http: boolean): boolean {
    return this.inUse < this.permits && (!http || this.httpInUse < this.httpPermits);
  }

  private take(http: boolean): void {
    this.inUse++;
    if (http) this.httpInUse++;
    this.peak = Math.max(this.peak, this.inUse);
  }

  /** Hands freed permits to the waiters, in order, skipping an http one that must still wait. */
  private wake(): void {
    for (let i = 0; i < this.waiting.length; ) {
      const w = this.waiting[i]!;
      if (!this.free(w.http)) {
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      this.take(w.http);
      w.go();
    }
  }
}
