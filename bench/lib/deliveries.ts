/**
 * The receiving end: mailboxes on the loopback receiver (tools/receiver.ts), a
 * count of arrivals kept in this process (no polling of growing mailboxes while a
 * phase runs), and the check that every expected delivery arrived exactly as sent.
 *
 * A delivery is expected per (event, destination). It counts as delivered when a
 * request with its `webhook-id` reached the destination's mailbox, its signature
 * verifies with the destination's secret (the `standardwebhooks` library, unchanged),
 * and its body is byte for byte the body expected. Copies after the first are
 * duplicates (at-least-once delivery allows them; they are reported, not failed).
 * Anything missing, unsigned, altered or unknown is a loss: the run fails.
 */
import type { IncomingMessage } from "node:http";
import { Webhook } from "standardwebhooks";
import { startReceiver, type ReceiverHandle, type Received, type Step } from "../../tools/receiver.ts";
import { sleep } from "./load.ts";

export interface Mailbox {
  id: string;
  url: string;
  /** the destination's signing secret (whsec_…) */
  secret: string;
}

export interface Expectation {
  /** webhook-id → what must arrive, and when its event was sent */
  events: Map<string, { body: string; sentAt: number }>;
  mailboxes: Mailbox[];
}

export interface Verdict {
  expected: number;
  delivered: number;
  missing: number;
  duplicates: number;
  badSignature: number;
  bodyMismatch: number;
  unexpected: number;
  /** missing + badSignature + bodyMismatch + unexpected: must be 0 */
  lost: number;
  /** ms from sending the event to the first good copy, per delivery */
  latencies: number[];
  /** per event: ms from sending it to the last of its deliveries' first good copies */
  eventLatencies: number[];
  firstSentAt: number;
  /** when the last expected delivery first arrived */
  completedAt: number;
  /** a few examples of what went wrong, for the report */
  problems: string[];
}

export class Receiver {
  private arrivals = new Map<string, number>();
  readonly handle: ReceiverHandle;
  private constructor(handle: ReceiverHandle) {
    this.handle = handle;
    handle.server.on("request", (req: IncomingMessage) => {
      const m = /^\/r\/([^/?]+)/.exec(req.url ?? "");
      if (m) this.arrivals.set(m[1]!, (this.arrivals.get(m[1]!) ?? 0) + 1);
    });
  }

  static async start(): Promise<Receiver> {
    return new Receiver(await startReceiver());
  }

  /** `spec`: how it answers (tools/receiver.ts), 200 at once by default. */
  async mailbox(secret = "", spec: { repeat?: Step } = {}): Promise<Mailbox> {
    const res = await fetch(`${this.handle.origin}/control/mailboxes`, { method: "POST", body: JSON.stringify(spec) });
    const { id, url } = (await res.json()) as { id: string; url: string };
    return { id, url, secret };
  }

  /** How a mailbox answers from now on (test/support/receiver.ts). */
  async script(mailbox: Mailbox, spec: { repeat?: Step }): Promise<void> {
    await fetch(`${this.handle.origin}/control/mailboxes/${mailbox.id}`, { method: "PUT", body: JSON.stringify(spec) });
  }

  arrived(mailboxes: Mailbox[]): number {
    return mailboxes.reduce((n, m) => n + (this.arrivals.get(m.id) ?? 0), 0);
  }

  async requests(mailbox: Mailbox): Promise<Received[]> {
    const res = await fetch(`${this.handle.origin}/control/mailboxes/${mailbox.id}`);
    return ((await res.json()) as { requests: Received[] }).requests;
  }

  /**
   * Waits until every expected delivery has arrived (or nothing new has arrived for
   * `stallMs`), then verifies all of them.
   */
  async await(x: Expectation, o: { stallMs: number; onProgress?: (arrived: number, expected: number) => void }): Promise<Verdict> {
    const expected = x.events.size * x.mailboxes.length;
    let last = -1;
    let lastChange = Date.now();
    let lastReport = 0;
    for (;;) {
      const n = this.arrived(x.mailboxes);
      if (n !== last) {
        last = n;
        lastChange = Date.now();
      }
      if (o.onProgress && Date.now() - lastReport > 5_000) {
        lastReport = Date.now();
        o.onProgress(n, expected);
      }
      if (n >= expected) {
        const v = await this.verify(x);
        if (v.missing === 0 || Date.now() - lastChange > o.stallMs) return v;
      } else if (Date.now() - lastChange > o.stallMs) {
        return this.verify(x);
      }
      await sleep(n >= expected ? 1_000 : 100);
    }
  }

  async verify(x: Expectation): Promise<Verdict> {
    const v: Verdict = {
      expected: x.events.size * x.mailboxes.length,
      delivered: 0,
      missing: 0,
      duplicates: 0,
      badSignature: 0,
      bodyMismatch: 0,
      unexpected: 0,
      lost: 0,
      latencies: [],
      eventLatencies: [],
      firstSentAt: Math.min(...[...x.events.values()].map((e) => e.sentAt)),
      completedAt: 0,
      problems: [],
    };
    const problem = (p: string) => {
      if (v.problems.length < 10) v.problems.push(p);
    };
    const lastOfEvent = new Map<string, number>();
    for (const box of x.mailboxes) {
      const wh = new Webhook(box.secret);
      const seen = new Set<string>();
      for (const r of await this.requests(box)) {
        const id = r.headers["webhook-id"] ?? "";
        const want = x.events.get(id);
        if (!want) {
          v.unexpected++;
          problem(`${box.id}: a request with unknown webhook-id ${JSON.stringify(id)}`);
          continue;
        }
        try {
          wh.verify(r.body, r.headers);
        } catch (err) {
          v.badSignature++;
          problem(`${box.id}: ${id}: signature does not verify (${err instanceof Error ? err.message : String(err)})`);
          continue;
        }
        if (r.body !== want.body) {
          v.bodyMismatch++;
          problem(`${box.id}: ${id}: body differs from what was sent`);
          continue;
        }
        if (seen.has(id)) {
          v.duplicates++;
          continue;
        }
        seen.add(id);
        v.delivered++;
        v.latencies.push(r.at - want.sentAt);
        v.completedAt = Math.max(v.completedAt, r.at);
        lastOfEvent.set(id, Math.max(lastOfEvent.get(id) ?? 0, r.at));
      }
      for (const id of x.events.keys()) {
        if (!seen.has(id)) {
          v.missing++;
          problem(`${box.id}: ${id}: never arrived`);
        }
      }
    }
    for (const [id, e] of x.events) {
      const at = lastOfEvent.get(id);
      if (at !== undefined) v.eventLatencies.push(at - e.sentAt);
    }
    v.lost = v.missing + v.badSignature + v.bodyMismatch + v.unexpected;
    return v;
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
