/**
 * Group commit of attempt records, per partition: while one call to a partition is in
 * flight, the records of the attempts that end meanwhile wait, then go together in the
 * next call — one round trip (and one transaction) per group instead of one per attempt.
 * Each caller resumes once its own record is durable, so a message is settled only after
 * its attempt is recorded. Should a group fail, each record of it is written again on
 * its own, so only the one at fault fails.
 */
import type { Services } from "../services";
import { partitionName, type PartitionRef } from "../store/ids";
import type { RecordRequest } from "../store/types";
import type { Limiter } from "./limiter";

export interface RecordWriters {
  /** Resolves once written: true when its settlement (if any) counted. */
  write(ref: PartitionRef, req: RecordRequest): Promise<boolean>;
}

interface Pending {
  req: RecordRequest;
  resolve: (counted: boolean) => void;
  reject: (err: unknown) => void;
}

export function recordWriters(s: Services, limiter: Limiter): RecordWriters {
  const queues = new Map<string, { waiting: Pending[]; writing: boolean }>();

  const send = async (ref: PartitionRef, group: Pending[]): Promise<boolean[]> => {
    const req: RecordRequest = { attempts: group.flatMap((g) => g.req.attempts), settlements: group.flatMap((g) => g.req.settlements) };
    return limiter.run("storage", () => s.store(ref).record(req));
  };

  const drain = async (ref: PartitionRef, q: { waiting: Pending[]; writing: boolean }) => {
    q.writing = true;
    while (q.waiting.length > 0) {
      const group = q.waiting;
      q.waiting = [];
      try {
        const counted = await send(ref, group);
        let i = 0;
        for (const g of group) {
          const mine = counted.slice(i, i + g.req.settlements.length);
          i += g.req.settlements.length;
          g.resolve(mine.every(Boolean));
        }
      } catch (err) {
        if (group.length === 1) group[0]!.reject(err);
        else {
          for (const g of group) {
            try {
              g.resolve((await send(ref, [g])).every(Boolean));
            } catch (one) {
              g.reject(one);
            }
          }
        }
      }
    }
    q.writing = false;
  };

  return {
    write(ref, req) {
      const key = partitionName(ref);
      let q = queues.get(key);
      if (!q) queues.set(key, (q = { waiting: [], writing: false }));
      const queue = q;
      return new Promise<boolean>((resolve, reject) => {
        queue.waiting.push({ req, resolve, reject });
        if (!queue.writing) void drain(ref, queue);
      });
    },
  };
}
