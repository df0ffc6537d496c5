/**
 * Load generation and the small statistics the benchmark needs.
 *
 * Fixed-concurrency load is autocannon's: closed loop, each of `connections` keep-alive
 * connections sends its next request as soon as the previous one is answered. The
 * latency of every answer is kept (autocannon's own histogram rounds to whole
 * milliseconds), so percentiles over several rounds are exact.
 */
import autocannon from "autocannon";

export interface LoadResult {
  /** requests answered with the expected status */
  ok: number;
  /** everything else: other statuses, errors, timeouts */
  bad: number;
  statuses: Record<string, number>;
  /** latency (ms) of every answer with the expected status */
  latencies: number[];
  durationS: number;
}

export interface LoadOptions {
  url: string;
  connections: number;
  durationS: number;
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: string;
  /** per request: a fresh body and headers (e.g. a new signature) */
  next?: () => { body: string; headers: Record<string, string> };
  expectStatus: number;
}

export async function load(o: LoadOptions): Promise<LoadResult> {
  const request: Record<string, unknown> = {
    method: o.method ?? "POST",
    ...(o.headers ? { headers: o.headers } : {}),
    ...(o.body !== undefined ? { body: o.body } : {}),
  };
  if (o.next) {
    request.setupRequest = (req: Record<string, unknown>) => {
      const n = o.next!();
      return { ...req, body: n.body, headers: { ...(o.headers ?? {}), ...n.headers } };
    };
  }
  const latencies: number[] = [];
  const instance = autocannon({
    url: o.url,
    connections: o.connections,
    duration: o.durationS,
    requests: [request],
    timeout: 30,
  });
  instance.on("response", (_client: unknown, status: number, _bytes: number, ms: number) => {
    if (status === o.expectStatus) latencies.push(ms);
  });
  const result = await instance;
  const statuses: Record<string, number> = {};
  for (const [code, v] of Object.entries(result.statusCodeStats ?? {})) statuses[code] = (v as { count: number }).count;
  const ok = statuses[String(o.expectStatus)] ?? 0;
  const answered = Object.values(statuses).reduce((a, b) => a + b, 0);
  return { ok, bad: answered - ok + result.errors + result.timeouts, statuses, latencies, durationS: result.duration };
}

/** Nearest-rank percentile of unsorted numbers; NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export function median(values: number[]): number {
  return percentile(values, 50);
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
