/**
 * DestinationHealth: one Durable Object per destination (named by its id), the only
 * writer of `failure_count` and of auto-disable. Each call runs alone
 * (blockConcurrencyWhile spans the D1 write too), so concurrent deliveries never lose
 * a count and the flip to `enabled: false` happens exactly once per crossing.
 *
 * - exhausted: a forward used up its retries. failure_count + 1; at 10 or more, if the
 *   destination is enabled, it is disabled (one log line).
 * - success: failure_count back to 0.
 * PATCH enabled:true does not reset the count, so a re-enabled destination that fails
 * once more is disabled again; its first success resets it.
 * Durable storage holds the count, so it survives eviction; D1 mirrors it for reads.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "./config";
import { log } from "./log";

export const AUTO_DISABLE_THRESHOLD = 10;

export interface HealthState {
  failure_count: number;
  /** true when this call flipped the destination to disabled. */
  disabled_now: boolean;
}

const COUNT = "failure_count";

export class DestinationHealth extends DurableObject<Env> {
  private get count(): number {
    return this.ctx.storage.kv.get<number>(COUNT) ?? 0;
  }

  async exhausted(destinationId: string): Promise<HealthState> {
    return this.ctx.blockConcurrencyWhile(async () => {
      const count = this.count + 1;
      let disabledNow = false;
      if (count >= AUTO_DISABLE_THRESHOLD) {
        const flipped = await this.env.DB.prepare(
          "UPDATE destinations SET failure_count = ?1, enabled = 0, updated_at = ?2 WHERE id = ?3 AND enabled = 1 RETURNING id",
        )
          .bind(count, Date.now(), destinationId)
          .first();
        disabledNow = flipped !== null;
        if (!disabledNow) await this.writeCount(destinationId, count);
      } else {
        await this.writeCount(destinationId, count);
      }
      this.ctx.storage.kv.put(COUNT, count);
      if (disabledNow) {
        log("warn", "destination_auto_disabled", { destination_id: destinationId, failure_count: count });
      }
      return { failure_count: count, disabled_now: disabledNow };
    });
  }

  async success(destinationId: string): Promise<HealthState> {
    return this.ctx.blockConcurrencyWhile(async () => {
      if (this.count !== 0) {
        await this.writeCount(destinationId, 0);
        this.ctx.storage.kv.put(COUNT, 0);
      }
      return { failure_count: 0, disabled_now: false };
    });
  }

  async state(): Promise<{ failure_count: number }> {
    return { failure_count: this.count };
  }

  private async writeCount(destinationId: string, count: number): Promise<void> {
    await this.env.DB.prepare("UPDATE destinations SET failure_count = ?1 WHERE id = ?2")
      .bind(count, destinationId)
      .run();
  }
}

/** The stub for a destination's health object. */
export function healthOf(env: Env, destinationId: string) {
  return env.DESTINATION_HEALTH.get(env.DESTINATION_HEALTH.idFromName(destinationId));
}
