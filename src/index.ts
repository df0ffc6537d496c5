/**
 * The Worker: the HTTP app (API and ingest), the queue consumers (fan-out, deliver,
 * dead letters), the cron trigger (sweep and retention) and the DestinationHealth class.
 */
import { createApp } from "./app";
import type { Env } from "./config";
import { deadLetter } from "./delivery/dead-letter";
import { deliverBatch } from "./delivery/deliver";
import { fanout, fanoutMany } from "./delivery/fanout";
import type { DeliverMessage, FanoutMessage } from "./delivery/messages";
import { housekeeping } from "./housekeeping";
import { log } from "./log";
import { servicesFor } from "./services";

export { DestinationHealth } from "./destination-health";

const app = createApp();

type AnyMessage = FanoutMessage | DeliverMessage;

export async function handleQueue(batch: MessageBatch<AnyMessage>, env: Env, _ctx?: ExecutionContext): Promise<void> {
  const s = servicesFor(env);
  if (batch.queue.endsWith("dead-letter")) {
    for (const m of batch.messages) {
      await deadLetter(s, m.body);
      m.ack();
    }
    return;
  }
  if (batch.queue.endsWith("fanout")) {
    // The plain first fan-outs of the batch together (two D1 round trips per event
    // become three per batch); redelivers, replays and retries one by one.
    const plain = batch.messages.filter((m) => m.body.kind === "fanout" && !m.body.destination_ids && !m.body.redeliver && m.attempts <= 1);
    const together = new Set(plain);
    if (plain.length > 0) {
      try {
        await fanoutMany(s, plain.map((m) => m.body as FanoutMessage));
        for (const m of plain) m.ack();
      } catch (err) {
        log("error", "fanout_failed", { events: plain.length, error: err instanceof Error ? err.message : String(err) });
        // Retried one by one, as retries (they queue what an earlier run inserted).
        for (const m of plain) m.retry({ delaySeconds: 5 });
      }
    }
    for (const m of batch.messages) {
      if (together.has(m)) continue;
      try {
        if (m.body.kind !== "fanout") throw new Error("unexpected message on the fan-out queue");
        await fanout(s, m.body, m.attempts > 1);
        m.ack();
      } catch (err) {
        log("error", "fanout_failed", { event_id: (m.body as FanoutMessage).event_id, error: err instanceof Error ? err.message : String(err) });
        m.retry({ delaySeconds: 5 });
      }
    }
    return;
  }
  const messages = batch.messages as readonly Message<DeliverMessage>[];
  await deliverBatch(
    s,
    messages.map((m) => m.body),
    (i, settle) => {
      const m = messages[i]!;
      if (settle.ack) m.ack();
      else m.retry({ delaySeconds: settle.delaySeconds });
    },
  );
}

export default {
  fetch: app.fetch,
  queue: handleQueue,
  async scheduled(_controller, env, ctx) {
    ctx.waitUntil(housekeeping(servicesFor(env)).then(() => undefined));
  },
} satisfies ExportedHandler<Env, AnyMessage>;
