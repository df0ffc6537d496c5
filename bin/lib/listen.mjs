/**
 * `krafter listen`: a source's events forwarded to a local URL, live over a WebSocket
 * (GET …/sources/:source_id/listen, src/listen/protocol.ts), and on every (re)connect
 * first the ones missed since the last event handled, in order, through the events API.
 *
 * What "handled" means is kept on disk per source (state dir, sources/<id>.json), written
 * after each forward and before the next: the ids handled within the last minute of event
 * time (live pushes of several shards may arrive slightly out of order) and where the next
 * catch-up starts. A catch-up lists from there, newest first, and forwards oldest first
 * what is not in that set; the live events that arrived meanwhile follow, none twice.
 * An event forwarded and then lost with the process before its state is written would be
 * forwarded again: at least once, as the relay itself promises destinations.
 *
 * Listener traffic is the developer's: it touches no destination, no failure_count and no
 * attempt log; the local result is reported back to the relay, which only logs it.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { connectWebSocket, UpgradeRefused } from "./websocket.mjs";
import { envelope, forwardHeaders, generateSecret, isSecret, payloadJsonOf } from "./webhook.mjs";

/** Event time kept in the handled set; and its most ids (then the window shrinks). */
const WINDOW_MS = 60_000;
const MAX_RECENT = 5_000;
const BACKOFF_MS = [500, 1_000, 2_000, 4_000, 8_000];
const MAX_BACKOFF_MS = 10_000;
const HEARTBEAT_MS = 15_000;
const HEARTBEAT_TIMEOUT_MS = 10_000;
const READY_TIMEOUT_MS = 15_000;
const FORWARD_TIMEOUT_MS = 30_000;
const API_TIMEOUT_MS = 30_000;
/** Close codes of the relay after which reconnecting cannot help (src/listen/protocol.ts CLOSE). */
const FATAL_CLOSE = new Map([
  [4401, "the API key was revoked"],
  [4404, "the source was deleted"],
]);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** The time in an event id (UUIDv7: its first 48 bits, Unix ms). */
const msOf = (id) => parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
const seconds = (iso) => String(iso).replace(/\.\d+Z$/, "Z");

export function defaultStateDir(env = process.env) {
  if (env.KRAFTER_STATE_DIR) return env.KRAFTER_STATE_DIR;
  const base = env.XDG_CONFIG_HOME || join(homedir(), ".config");
  return join(base, "krafter");
}

/** The listener secret and each source's progress, on disk. */
export class StateStore {
  constructor(dir) {
    this.dir = dir;
  }

  /** The machine's listener secret: made once, then the same on every run. */
  secret() {
    const file = join(this.dir, "listener-secret");
    if (existsSync(file)) {
      const s = readFileSync(file, "utf8").trim();
      if (isSecret(s)) return s;
    }
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const s = generateSecret();
    writeFileSync(file, s + "\n", { mode: 0o600 });
    chmodSync(file, 0o600);
    return s;
  }

  file(sourceId) {
    return join(this.dir, "sources", `${sourceId}.json`);
  }

  load(sourceId) {
    try {
      const v = JSON.parse(readFileSync(this.file(sourceId), "utf8"));
      if (typeof v.since_ms === "number" && Array.isArray(v.recent)) return { sinceMs: v.since_ms, recent: v.recent.filter((x) => typeof x === "string") };
    } catch {
      // None yet, or unreadable: start from now.
    }
    return null;
  }

  /** Written whole and renamed into place: a crash leaves the old state or the new one. */
  save(sourceId, state) {
    const file = this.file(sourceId);
    mkdirSync(join(this.dir, "sources"), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ since_ms: state.sinceMs, recent: state.recent }));
    renameSync(tmp, file);
  }
}

class Fatal extends Error {}

/** The message of the relay's error envelope, if the body is one. */
function envelopeMessage(body) {
  try {
    const e = JSON.parse(body).error;
    if (e && typeof e.message === "string") return `${e.code}: ${e.message}`;
  } catch {
    // Not JSON.
  }
  return body.slice(0, 200);
}

function describeError(err) {
  const cause = err?.cause;
  if (cause?.code) return cause.code;
  if (err?.name === "TimeoutError") return "timed out";
  return err?.code ?? err?.message ?? String(err);
}

/** One source: its connection, reconnected with backoff, and its events, one at a time, in order. */
class SourceListener {
  constructor(run, sourceId) {
    this.run = run;
    this.id = sourceId;
    const saved = run.store.load(sourceId);
    this.state = saved ?? null;
    this.recent = new Set(saved?.recent ?? []);
    /** Every id handled by this process (the on-disk set keeps a window only). */
    this.handled = new Set();
    this.conn = null;
    this.first = true;
    this.work = Promise.resolve();
  }

  api(path) {
    return `${this.run.url}/api/v1/webhooks/sources/${encodeURIComponent(this.id)}${path}`;
  }

  async loop() {
    let failures = 0;
    while (!this.run.stopping) {
      let lostBecause;
      try {
        const { ready, close } = await this.session();
        if (ready) failures = 0;
        lostBecause = `connection closed (${close.code}${close.reason ? ` ${close.reason}` : ""})`;
      } catch (err) {
        if (err instanceof Fatal) throw err;
        lostBecause = err instanceof UpgradeRefused ? `HTTP ${err.status}` : describeError(err);
      }
      if (this.run.stopping) return;
      const delay = (BACKOFF_MS[failures] ?? MAX_BACKOFF_MS) * (0.8 + Math.random() * 0.4);
      failures++;
      this.run.err(`${this.id}: ${lostBecause}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
      await this.run.sleep(delay);
    }
  }

  /** One connection, until it closes. Resolves whether it got as far as "ready", and how it closed. */
  async session() {
    let conn;
    try {
      conn = await connectWebSocket(this.api("/listen"), { headers: { authorization: `Bearer ${this.run.apiKey}`, "user-agent": "krafter-listen/1" } });
    } catch (err) {
      // A refusal that another try cannot change (key, scope, source, request): stop.
      if (err instanceof UpgradeRefused && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
        throw new Fatal(`${this.id}: ${envelopeMessage(err.body)} (HTTP ${err.status})`);
      }
      throw err;
    }
    this.conn = conn;
    this.fatal = null;
    let caughtUp = false;
    const pending = [];
    let lastSeen = Date.now();
    let onReady;
    const ready = new Promise((r) => (onReady = r));
    const closed = new Promise((resolve) => conn.once("close", (code, reason) => resolve({ code, reason })));
    const live = (m) =>
      this.enqueue(() => this.handle(m, false)).catch((err) => {
        // Not forwarded (its body unreadable just now): a new connection's catch-up has it.
        if (err instanceof Fatal) this.fatal = err;
        else this.run.err(`${this.id}: ${m.id} not forwarded (${describeError(err)})`);
        conn.terminate();
      });
    conn.on("pong", () => (lastSeen = Date.now()));
    conn.on("message", (text) => {
      lastSeen = Date.now();
      if (text === "pong") return;
      let m;
      try {
        m = JSON.parse(text);
      } catch {
        return;
      }
      if (m?.type === "ready") onReady(m);
      else if (m?.type === "event" && typeof m.id === "string") {
        if (caughtUp) live(m);
        else pending.push(m);
      }
    });
    conn.start();
    // A relay that went silent (a sleeping laptop, a dead network) is dropped and dialled again.
    const heartbeat = setInterval(() => {
      if (Date.now() - lastSeen > HEARTBEAT_MS + HEARTBEAT_TIMEOUT_MS) conn.terminate();
      else conn.send("ping");
    }, HEARTBEAT_MS);
    try {
      if (this.run.stopping) conn.close(1000, "bye");
      const hello = await Promise.race([ready, closed.then(() => null), sleep(READY_TIMEOUT_MS).then(() => null)]);
      if (!hello) {
        conn.terminate();
        const c = await closed;
        this.throwIfFatal(c);
        return { ready: false, close: c };
      }
      const overridden = this.first && this.run.since !== undefined;
      const firstRun = !this.state;
      if (overridden) {
        // --since: from that time, whatever was handled before.
        this.state = { sinceMs: this.run.since, recent: [] };
        this.recent.clear();
        this.newest = undefined;
        this.save();
      } else if (firstRun) {
        // Never run for this source: from the relay's now on.
        this.state = { sinceMs: hello.now, recent: [] };
        this.save();
      }
      this.first = false;
      this.run.out(`Ready: ${this.id}${hello.name ? ` (${hello.name})` : ""} → ${this.run.forwardTo}`);
      // Stored before "ready": missed; from then on the relay pushes them (and a catch-up
      // that lists one too forwards it once, in order).
      this.readyAt = hello.now;
      const { forwarded, complete } = firstRun && !overridden ? { forwarded: 0, complete: true } : await this.enqueue(() => this.catchUp(this.state.sinceMs, closed));
      if (complete && !firstRun) this.run.out(`${this.id}: caught up on ${forwarded} missed event${forwarded === 1 ? "" : "s"}`);
      // Then the live ones that came meanwhile, in id order, and the rest as they come;
      // unless the connection dropped first: the next catch-up has them all, in order.
      if (complete) {
        caughtUp = true;
        pending.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        for (const m of pending.splice(0)) live(m);
      }
      const c = await closed;
      await this.work;
      if (this.fatal) throw this.fatal;
      this.throwIfFatal(c);
      return { ready: true, close: c };
    } finally {
      clearInterval(heartbeat);
      // Left early (the events API failing during a catch-up): this connection is done too.
      if (!conn.closed) conn.terminate();
      this.conn = null;
    }
  }

  throwIfFatal(c) {
    const why = FATAL_CLOSE.get(c.code);
    if (why) throw new Fatal(`${this.id}: ${why} (${c.reason || c.code})`);
  }

  /** Serializes the work of this source: one event at a time, in the order queued. */
  enqueue(fn) {
    const p = this.work.then(fn);
    this.work = p.catch(() => undefined);
    return p;
  }

  /** A GET of the events API; null for a 404 when `missingOk` (an event no longer stored). */
  async getJson(path, missingOk = false) {
    const res = await fetch(this.api(path), { headers: { authorization: `Bearer ${this.run.apiKey}` }, signal: AbortSignal.timeout(API_TIMEOUT_MS) });
    const text = await res.text();
    if (res.status === 404 && missingOk) return null;
    if (res.status === 401 || res.status === 403 || res.status === 404) throw new Fatal(`${this.id}: ${envelopeMessage(text)} (HTTP ${res.status})`);
    if (res.status !== 200) throw new Error(`GET ${path.split("?")[0]}: HTTP ${res.status}`);
    return text;
  }

  /** What was stored since `sinceMs` and not handled, oldest first, forwarded before anything live. */
  async catchUp(sinceMs, closed) {
    let stop = false;
    closed.then(() => (stop = true));
    const missed = [];
    let cursor = null;
    do {
      const q = new URLSearchParams({ since: new Date(sinceMs).toISOString(), limit: "100" });
      if (cursor) q.set("cursor", cursor);
      const page = JSON.parse(await this.getJson(`/events?${q}`));
      for (const e of page.data) if (!this.recent.has(e.id) && !this.handled.has(e.id)) missed.push(e);
      cursor = page.next_cursor;
    } while (cursor && !this.run.stopping);
    missed.reverse();
    let forwarded = 0;
    for (const e of missed) {
      if (this.run.stopping || stop) return { forwarded, complete: false };
      const wasMissed = msOf(e.id) < this.readyAt;
      if (await this.handle({ id: e.id, event_type: e.type, received_at: e.received_at, body: null }, wasMissed)) forwarded += wasMissed ? 1 : 0;
    }
    return { forwarded, complete: !this.run.stopping && !stop };
  }

  /** One event: forwarded once, its line printed, its state written, its result reported. Returns whether it was forwarded now. */
  async handle(m, replayed) {
    if (this.handled.has(m.id) || this.recent.has(m.id) || this.run.stopping) return false;
    let body = m.body;
    if (typeof body !== "string") {
      // Missed, or too large for a frame: the stored event, through the API.
      const text = await this.getJson(`/events/${encodeURIComponent(m.id)}`, true);
      if (text === null) {
        // Gone meanwhile (retention): nothing to forward.
        this.handled.add(m.id);
        this.remember(m.id);
        this.run.out(`${seconds(m.received_at)}  ${m.event_type}  ${m.id}  → skipped: no longer stored`);
        return false;
      }
      body = envelope(m.event_type, payloadJsonOf(text), this.id);
    }
    const result = await this.run.forward(m.id, body);
    this.handled.add(m.id);
    this.remember(m.id);
    const status = result.status !== null ? String(result.status) : `error (${result.error})`;
    this.run.out(`${seconds(m.received_at)}  ${m.event_type}  ${m.id}  → ${status}  ${result.durationMs} ms${replayed ? "  (missed)" : ""}`);
    this.conn?.send(JSON.stringify({ type: "result", event_id: m.id, status: result.status, duration_ms: result.durationMs, ...(result.error ? { error: result.error } : {}), ...(replayed ? { replayed: true } : {}) }));
    return true;
  }

  /** Adds an id to the handled window and writes the state before the next event. */
  remember(id) {
    this.recent.add(id);
    this.newest = Math.max(this.newest ?? this.state.sinceMs, msOf(id));
    let since = Math.max(this.state.sinceMs, this.newest - WINDOW_MS);
    let kept = [...this.recent].filter((r) => msOf(r) >= since).sort();
    if (kept.length > MAX_RECENT) {
      // A burst: keep the newest, and start the next catch-up at the oldest kept (all of its millisecond kept too).
      const cut = msOf(kept[kept.length - MAX_RECENT]);
      kept = kept.filter((r) => msOf(r) >= cut);
      since = cut;
    }
    this.recent = new Set(kept);
    this.state = { sinceMs: since, recent: kept };
    this.save();
  }

  save() {
    this.run.store.save(this.id, this.state);
  }
}

/**
 * Runs the listener until stopped or a fatal refusal. Returns { done, stop }: `done`
 * resolves with the exit code.
 */
export function startListening(o) {
  const run = {
    url: o.url.replace(/\/+$/, ""),
    apiKey: o.apiKey,
    forwardTo: o.forwardTo,
    since: o.since,
    store: new StateStore(o.stateDir ?? defaultStateDir()),
    out: o.out ?? ((l) => process.stdout.write(l + "\n")),
    err: o.err ?? ((l) => process.stderr.write(l + "\n")),
    stopping: false,
    timers: new Set(),
    sleep(ms) {
      return new Promise((resolve) => {
        const t = setTimeout(() => {
          run.timers.delete(w);
          resolve();
        }, ms);
        const w = { t, resolve };
        run.timers.add(w);
      });
    },
    async forward(id, body) {
      const started = performance.now();
      const elapsed = () => Math.round(performance.now() - started);
      try {
        const res = await fetch(run.forwardTo, { method: "POST", headers: forwardHeaders(run.secret, id, body), body, redirect: "manual", signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS) });
        await res.arrayBuffer().catch(() => undefined);
        return { status: res.status, durationMs: elapsed() };
      } catch (err) {
        return { status: null, error: describeError(err), durationMs: elapsed() };
      }
    },
  };
  run.secret = run.store.secret();
  run.out(`Listener secret: ${run.secret} (the same on every run on this machine: verify the forwards with it)`);
  run.out(`Forwarding ${o.sources.join(", ")} to ${o.forwardTo}; Ctrl-C to stop.`);
  const listeners = o.sources.map((id) => new SourceListener(run, id));

  let finish;
  const done = new Promise((r) => (finish = r));
  let finished = false;
  const end = async (code) => {
    if (finished) return;
    finished = true;
    run.stopping = true;
    for (const w of run.timers) {
      clearTimeout(w.t);
      w.resolve();
    }
    for (const l of listeners) l.conn?.close(1000, "bye");
    // The event being forwarded finishes, and its state is written; no more after it.
    await Promise.race([Promise.all(listeners.map((l) => l.work)), sleep(5_000)]);
    finish(code);
  };
  for (const l of listeners) {
    l.loop().catch((err) => {
      run.err(err instanceof Fatal ? `Stopped: ${err.message}` : `Stopped: ${err?.stack ?? err}`);
      void end(1);
    });
  }
  return { done, stop: () => end(0) };
}
