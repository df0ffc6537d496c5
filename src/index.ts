/**
 * The Worker: the HTTP app (API and ingest), the queue consumers (deliver, work, dead
 * letters), the cron trigger (housekeeping) and the Durable Object classes.
 */
import { createApp } from "./app";
import type { Env } from "./config";
import { deadLetter } from "./delivery/dead-letter";
import { deliverBatch } from "./delivery/deliver";
import type { DeliverMessage, WorkMessage } from "./delivery/messages";
import { carryOutRemoval } from "./delivery/removal";
import { housekeeping } from "./housekeeping";
import { log } from "./log";
import { meter } from "./meter";
import { servicesFor } from "./services";

export { DestinationHealth } from "./destination-health";
export { EventStore } from "./store/event-store";
export { ListenHub } from "./listen/hub";
export { RateLimiter } from "./rate-limiter";

const app = createApp();

type AnyMessage = DeliverMessage | WorkMessage;

export async function handleQueue(batch: MessageBatch<AnyMessage>, env: Env, _ctx?: ExecutionContext): Promise<void> {
  const s = servicesFor(env);
  if (s.config.meter) {
    meter.queueBatches++;
    meter.queueMessagesReceived += batch.messages.length;
  }
  switch (queueName(batch.queue)) {
    case "deliver":
    case "deliver-slow": {
      const messages = batch.messages as readonly Message<DeliverMessage>[];
      const report = await deliverBatch(
        s,
        messages.map((m) => ({ id: m.id, body: m.body, attempts: m.attempts })),
        (i, settle) => {
          const m = messages[i]!;
          if (settle.ack) m.ack();
          else m.retry({ delaySeconds: settle.delaySeconds });
        },
        undefined,
        queueName(batch.queue) === "deliver-slow" ? "slow" : "shared",
      );
      // Storage refusing us: every message is settled (acked or retried) already; failing
      // the invocation tells the queue's autoscaler to send fewer at once.
      if (report.ours > 0) throw new Error(`storage overloaded: ${report.ours} of ${messages.length} messages retried`);
      return;
    }
    case "work":
      for (const m of batch.messages as readonly Message<WorkMessage>[]) {
        try {
          await carryOutRemoval(s, m.body);
          m.ack();
        } catch (err) {
          log("error", "removal_failed", { removal_id: m.body.removal_id, error: err instanceof Error ? err.name : "unknown" });
          m.retry();
        }
      }
      return;
    case "dead-letter":
      for (const m of batch.messages) {
        await deadLetter(s, m.body);
        m.ack();
      }
      return;
    default:
      throw new Error(`no consumer for queue ${batch.queue}`);
  }
}

/** `krafter-deliver-2` → `deliver`: the queue's role, whatever prefix or number a deployment gives its queues. */
function queueName(queue: string): string {
  return queue.replace(/^.*?krafter-/, "").replace(/-\d+$/, "");
}

export default {
  fetch: app.fetch,
  queue: handleQueue,
  async scheduled(_controller, env, ctx) {
    ctx.waitUntil(housekeeping(servicesFor(env)).then(() => undefined));
  },
} satisfies ExportedHandler<Env, AnyMessage>;
