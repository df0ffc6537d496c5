/**
 * Operation counts for the benchmark's cost figure (bench/, docs/scale.md): what
 * Cloudflare bills, counted as it happens when METER=true (never in production's
 * wrangler.toml). Worker requests and queue batches, queue messages sent, D1 queries
 * and the rows they read and wrote (D1's own `meta`), Durable Object calls and alarms,
 * and the rows their SQLite read and wrote (the cursors' own counts). `GET /__meter`
 * answers the totals of this isolate (wrangler dev runs the Worker and its Durable
 * Objects in one).
 */
export const meter = {
  workerRequests: 0,
  queueBatches: 0,
  queueMessagesReceived: 0,
  queueMessagesSent: 0,
  d1Queries: 0,
  d1RowsRead: 0,
  d1RowsWritten: 0,
  doRequests: 0,
  doAlarms: 0,
  doRowsRead: 0,
  doRowsWritten: 0,
};

type Meta = { meta?: { rows_read?: number; rows_written?: number } };

function countD1(result: unknown): void {
  const results = Array.isArray(result) ? (result as Meta[]) : [result as Meta];
  for (const r of results) {
    meter.d1Queries++;
    meter.d1RowsRead += r?.meta?.rows_read ?? 0;
    meter.d1RowsWritten += r?.meta?.rows_written ?? 0;
  }
}

/** A D1 binding that counts every query and its rows. */
export function meteredD1(db: D1Database): D1Database {
  const statement = (s: D1PreparedStatement): D1PreparedStatement =>
    new Proxy(s, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (typeof v !== "function") return v;
        if (prop === "bind") return (...args: unknown[]) => statement((v as (...a: unknown[]) => D1PreparedStatement).apply(target, args));
        if (prop === "all" || prop === "run") {
          return async (...args: unknown[]) => {
            const r = await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            countD1(r);
            return r;
          };
        }
        if (prop === "first" || prop === "raw") {
          // No meta on these: count the query, and the rows it returned as read.
          return async (...args: unknown[]) => {
            const r = await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            meter.d1Queries++;
            meter.d1RowsRead += Array.isArray(r) ? r.length : r === null ? 0 : 1;
            return r;
          };
        }
        return v.bind(target);
      },
    });
  return new Proxy(db, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (prop === "prepare") return (sql: string) => statement(target.prepare(sql));
      if (prop === "batch") {
        return async (statements: D1PreparedStatement[]) => {
          const r = await target.batch(statements);
          countD1(r);
          return r;
        };
      }
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** A queue producer that counts the messages it sends. */
export function meteredQueue<T>(queue: Queue<T>): Queue<T> {
  return new Proxy(queue, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (prop === "send") return (body: T, o?: QueueSendOptions) => (meter.queueMessagesSent++, target.send(body, o));
      if (prop === "sendBatch") return (msgs: Iterable<MessageSendRequest<T>>, o?: QueueSendBatchOptions) => {
        const list = [...msgs];
        meter.queueMessagesSent += list.length;
        return target.sendBatch(list, o);
      };
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** A Durable Object stub that counts its calls. */
export function meteredStub<T extends object>(stub: T): T {
  return new Proxy(stub, {
    get(target, prop) {
      const v = Reflect.get(target, prop) as unknown;
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        meter.doRequests++;
        // Reflect.apply: a stub answers any property, `apply` included, as an RPC method.
        return Reflect.apply(v as (...a: unknown[]) => unknown, target, args);
      };
    },
  });
}

/**
 * An object's SQL storage whose cursors are counted once consumed (drizzle reads each
 * cursor synchronously, so a microtask later its counts are final).
 */
export function meteredSql(storage: DurableObjectStorage): void {
  const sql = storage.sql;
  const exec = sql.exec.bind(sql);
  (sql as { exec: typeof sql.exec }).exec = ((query: string, ...bindings: unknown[]) => {
    const cursor = exec(query, ...bindings);
    queueMicrotask(() => {
      meter.doRowsRead += cursor.rowsRead;
      meter.doRowsWritten += cursor.rowsWritten;
    });
    return cursor;
  }) as typeof sql.exec;
}
