/**
 * A per-isolate cache of settled values with an expiry, bounded (the oldest entry goes
 * first). It never holds a pending promise: a promise made by one request and awaited
 * by another is cancelled with the first one, or throws "Cannot perform I/O on behalf of
 * a different request" (workerd). So two requests that miss at once each do their own
 * read, and the later answer is the one kept.
 */
export class TtlCache<K, V> {
  private readonly entries = new Map<K, { value: V; expires: number }>();

  constructor(private readonly maxEntries: number) {}

  /** The value, unless missing or expired at `now`. */
  get(key: K, now: number): { value: V } | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.expires <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return { value: hit.value };
  }

  set(key: K, value: V, expires: number): void {
    this.entries.delete(key);
    this.entries.set(key, { value, expires });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as K);
  }

  delete(key: K): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
