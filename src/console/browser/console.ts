/**
 * The console's page script (bundled into src/console/script.ts by
 * scripts/build-console.mjs, served as /console/console.js). It reads and changes
 * nothing but through /console/api, the public API with the session's key.
 *
 * Safe by construction: every value that came from outside (names, URLs, payloads,
 * headers, response bodies) reaches the page as a text node or an attribute set with
 * setAttribute; no innerHTML, no eval, no inline handlers (the CSP forbids them anyway).
 * Live: the current view polls every POLL_MS and redraws its data, not its forms.
 */

const POLL_MS = 3000;
/** The charts change by the hour: asked again at most this often per destination, so polling stays well under API_RATE_LIMIT. */
const STATS_MS = 30_000;
const csrf = document.querySelector<HTMLMetaElement>('meta[name="krafter-csrf"]')?.content ?? "";
const canWrite = document.body.dataset.canWrite === "true";

// ---- DOM, text only ----------------------------------------------------------------

type Child = Node | string | number | null | undefined | false;
type Props = { [k: string]: string | number | boolean | undefined | ((e: Event) => void) };

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") node.addEventListener(k.replace(/^on/, ""), v);
    else if (k === "value" && (node instanceof HTMLInputElement || node instanceof HTMLTextAreaElement || node instanceof HTMLSelectElement)) node.value = String(v);
    else if (k === "checked" && node instanceof HTMLInputElement) node.checked = Boolean(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
}

function fill(node: Element, ...children: Child[]): void {
  node.replaceChildren();
  append(node, children);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag: string, attrs: Record<string, string | number>, ...children: (Node | string)[]): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}

const badge = (text: string, cls = text) => el("span", { class: `badge ${cls}` }, text);
const link = (href: string, ...children: Child[]) => el("a", { href }, ...children);
const notice = (text: string, bad = false) => el("div", { class: bad ? "notice bad" : "notice", role: "status" }, text);

// ---- the API, through the console ---------------------------------------------------

interface ApiResult<T = any> {
  status: number;
  body: T;
}

async function api<T = any>(method: string, path: string, body?: unknown): Promise<ApiResult<T>> {
  const headers: Record<string, string> = { "x-csrf-token": csrf, accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`/console/api${path}`, { method, headers, credentials: "same-origin", ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  if (res.status === 401) {
    // The session ended (signed out elsewhere, expired, key revoked): sign in again.
    location.assign("/console");
  }
  if (res.status === 429) {
    // Over the key's rate limit: polling pauses for as long as the API asks.
    pausedUntil = Date.now() + 1000 * Math.max(1, Number(res.headers.get("retry-after")) || 10);
  }
  const text = await res.text();
  let parsed: any = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { error: { message: text } };
  }
  return { status: res.status, body: parsed };
}

/** The API's error, in words: its message and each field's. */
function errorText(r: ApiResult): string {
  const e = r.body?.error;
  if (!e) return `HTTP ${r.status}`;
  const details = Array.isArray(e.details) ? e.details.map((d: any) => `${d.field}: ${d.message}`).join("; ") : "";
  return `${e.message ?? e.code}${details ? ` (${details})` : ""}`;
}

const enc = encodeURIComponent;
const pretty = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));
/** datetime-local (read as UTC) to RFC 3339. */
const utc = (v: string) => (v ? `${v.length === 16 ? `${v}:00` : v}Z` : "");
const when = (iso: string | null | undefined) => (iso ? iso.replace("T", " ").replace("Z", " UTC") : "—");

// ---- views ----------------------------------------------------------------------------

interface View {
  refresh?: () => Promise<void>;
}

const viewNode = document.getElementById("view")!;
const crumbs = document.getElementById("crumbs")!;
let current: View = {};
let pausedUntil = 0;
let generation = 0;

function setCrumbs(...parts: (Node | string)[]): void {
  fill(crumbs, link("#/", "Sources"), ...parts.map((p) => (typeof p === "string" ? el("span", {}, p) : p)));
}

const sourceCache = new Map<string, any>();
async function loadSource(id: string): Promise<any | null> {
  if (sourceCache.has(id)) return sourceCache.get(id);
  const r = await api("GET", "/sources?limit=100");
  if (r.status === 200) for (const s of r.body.data) sourceCache.set(s.id, s);
  return sourceCache.get(id) ?? null;
}

async function route(): Promise<void> {
  const gen = ++generation;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  let view: View;
  viewNode.replaceChildren();
  if (parts[0] === "sources" && parts[1]) {
    const source = await loadSource(parts[1]);
    if (gen !== generation) return;
    if (!source) {
      setCrumbs("Not found");
      fill(viewNode, notice("No such source.", true));
      return;
    }
    if (parts[2] === "events" && parts[3]) view = eventView(source, parts[3]);
    else if (parts[2] === "destinations" && parts[3]) view = destinationView(source, parts[3]);
    else if (parts[2] === "destinations") view = destinationsView(source);
    else view = eventsView(source);
  } else {
    view = sourcesView();
  }
  current = view;
  await view.refresh?.();
}

async function poll(): Promise<void> {
  const view = current;
  try {
    if (document.visibilityState === "visible" && Date.now() >= pausedUntil) await view.refresh?.();
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// ---- sources ----------------------------------------------------------------------------

const PROVIDERS = ["generic", "stripe", "github", "shopify", "standard-webhooks"];

function sourcesView(): View {
  setCrumbs();
  const list = el("ul", { class: "list", id: "sources" });
  const msg = el("div");
  const body = el("section", { class: "card" }, el("h1", {}, "Sources"), msg, list);
  const side: Node[] = [];
  let hasAlerts = true;
  const alertsButton = el("button", {
    id: "create-alerts-source",
    type: "button",
    onclick: async () => {
      const r = await api("POST", "/sources", { name: "Alerts", provider: "krafter" });
      fill(msg, r.status === 201 ? notice("Alerts source created: add a destination to it to receive destination.failing, destination.disabled, destination.recovered and delivery.exhausted.") : notice(errorText(r), true));
      await view.refresh!();
    },
  }, "Create the alerts source");
  if (canWrite) {
    const name = el("input", { id: "source-name", name: "name", required: true, maxlength: 200, placeholder: "Stripe production" });
    const provider = el("select", { id: "source-provider", name: "provider" }, ...PROVIDERS.map((p) => el("option", { value: p }, p)));
    const secret = el("input", { id: "source-secret", name: "signing_secret", type: "password", autocomplete: "off", placeholder: "optional: the provider's signing secret" });
    const form = el(
      "form",
      {
        id: "create-source",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const payload: Record<string, unknown> = { name: name.value, provider: provider.value };
          if (secret.value) payload.signing_secret = secret.value;
          const r = await api("POST", "/sources", payload);
          if (r.status === 201) {
            form.reset();
            fill(msg, notice(`Source created: ${r.body.data.name}`));
            sourceCache.set(r.body.data.id, r.body.data);
          } else fill(msg, notice(errorText(r), true));
          await view.refresh!();
        },
      },
      el("h2", {}, "New source"),
      el("label", { for: "source-name" }, "Name"),
      name,
      el("label", { for: "source-provider" }, "Provider (how its signatures and event types are read)"),
      provider,
      el("label", { for: "source-secret" }, "Signing secret"),
      secret,
      el("button", { type: "submit", class: "primary" }, "Create source"),
    );
    side.push(el("section", { class: "card" }, form, el("div", { id: "alerts-slot" })));
  }
  fill(viewNode, el("div", { class: "grid two" }, body, ...side));

  const view: View = {
    async refresh() {
      const r = await api("GET", "/sources?limit=100");
      if (r.status !== 200) return fill(list, el("li", {}, notice(errorText(r), true)));
      const sources: any[] = r.body.data;
      for (const s of sources) sourceCache.set(s.id, s);
      if (sources.length === 0) fill(list, el("li", { class: "muted" }, canWrite ? "No source yet: create one." : "No source yet."));
      else fill(list, ...sources.map(sourceItem));
      hasAlerts = sources.some((s) => s.provider === "krafter");
      const slot = document.getElementById("alerts-slot");
      if (slot) fill(slot, hasAlerts ? null : el("div", {}, el("h2", {}, "Alerts"), el("p", { class: "muted" }, "The alerts source receives Krafter's own events about your destinations."), alertsButton));
    },
  };
  return view;
}

function copyButton(text: () => string, label = "Copy"): HTMLButtonElement {
  const b = el("button", {
    type: "button",
    class: "copy",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text());
        b.textContent = "Copied";
      } catch {
        b.textContent = "Select and copy";
      }
      setTimeout(() => (b.textContent = label), 1500);
    },
  }, label);
  return b;
}

function sourceItem(s: any): HTMLLIElement {
  const alerts = s.provider === "krafter";
  const ingest = s.ingest_url
    ? el("div", { class: "row" }, el("input", { class: "grow mono ingest-url", readonly: true, value: s.ingest_url, "aria-label": "Ingest URL", onfocus: (e: Event) => (e.target as HTMLInputElement).select() }), copyButton(() => s.ingest_url, "Copy URL"))
    : el("p", { class: "muted" }, alerts ? "Fed by Krafter itself: no ingest URL." : "Ingest URL hidden: it is a credential, shown to keys with webhooks:write.");
  return el(
    "li",
    { "data-source-id": s.id },
    el("div", { class: "row" }, el("a", { href: `#/sources/${enc(s.id)}/events`, class: "source-name" }, el("strong", {}, s.name)), badge(alerts ? "alerts source" : s.provider, alerts ? "warn" : ""), s.verifies_signatures ? badge("verifies signatures", "ok") : null),
    ingest,
    el("div", { class: "row" }, link(`#/sources/${enc(s.id)}/events`, "Events"), link(`#/sources/${enc(s.id)}/destinations`, "Destinations")),
  );
}

function sourceHeader(source: any, tab: "events" | "destinations"): HTMLElement {
  return el(
    "div",
    {},
    el("h1", { class: "wrap" }, source.name, " ", badge(source.provider === "krafter" ? "alerts source" : source.provider, source.provider === "krafter" ? "warn" : "")),
    el(
      "div",
      { class: "tabs" },
      el("a", { href: `#/sources/${enc(source.id)}/events`, class: tab === "events" ? "active" : "", id: "tab-events" }, "Events"),
      el("a", { href: `#/sources/${enc(source.id)}/destinations`, class: tab === "destinations" ? "active" : "", id: "tab-destinations" }, "Destinations"),
    ),
  );
}

// ---- destinations --------------------------------------------------------------------

const destinationCache = new Map<string, any[]>();
async function loadDestinations(sourceId: string, fresh = false): Promise<any[]> {
  if (!fresh && destinationCache.has(sourceId)) return destinationCache.get(sourceId)!;
  const r = await api("GET", `/sources/${enc(sourceId)}/destinations?limit=100`);
  const list = r.status === 200 ? (r.body.data as any[]) : [];
  destinationCache.set(sourceId, list);
  return list;
}

const filterList = (v: string) => v.split(",").map((x) => x.trim()).filter(Boolean);

function destinationsView(source: any): View {
  setCrumbs(link(`#/sources/${enc(source.id)}/events`, source.name), "Destinations");
  const list = el("ul", { class: "list", id: "destinations" });
  const msg = el("div", { id: "destinations-message" });
  const main = el("section", { class: "card" }, sourceHeader(source, "destinations"), msg, list);
  const side: Node[] = [];
  if (canWrite) {
    const url = el("input", { id: "destination-url", name: "url", required: true, type: "url", placeholder: "https://example.com/webhooks" });
    const filter = el("input", { id: "destination-filter", name: "event_filter", placeholder: "optional: invoice.paid, customer.*" });
    const secret = el("input", { id: "destination-secret", name: "secret", type: "password", autocomplete: "off", placeholder: "optional: whsec_… (generated if empty)" });
    const form = el(
      "form",
      {
        id: "create-destination",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const payload: Record<string, unknown> = { url: url.value, event_filter: filterList(filter.value) };
          if (secret.value) payload.secret = secret.value;
          const r = await api("POST", `/sources/${enc(source.id)}/destinations`, payload);
          if (r.status === 201) {
            form.reset();
            // The one time the API returns it: shown here, never fetched again.
            const value = String(r.body.data.secret);
            fill(
              msg,
              el(
                "div",
                { class: "secret", id: "new-secret" },
                el("strong", {}, "Destination created. Its signing secret, shown this once:"),
                el("pre", { id: "new-secret-value" }, value),
                copyButton(() => value, "Copy secret"),
                el("button", { type: "button", onclick: () => fill(msg) }, "I have saved it"),
              ),
            );
          } else fill(msg, notice(errorText(r), true));
          await view.refresh!();
        },
      },
      el("h2", {}, "New destination"),
      el("label", { for: "destination-url" }, "URL"),
      url,
      el("label", { for: "destination-filter" }, "Event filter (comma-separated; empty forwards everything)"),
      filter,
      el("label", { for: "destination-secret" }, "Secret"),
      secret,
      el("button", { type: "submit", class: "primary" }, "Create destination"),
    );
    side.push(el("section", { class: "card" }, form));
  }
  fill(viewNode, el("div", { class: "grid two" }, main, ...side));

  const editing = new Set<string>();
  const view: View = {
    async refresh() {
      if (editing.size > 0) return; // never redraw a form being filled in
      const dests = await loadDestinations(source.id, true);
      const stats = await Promise.all(dests.map((d) => statsOf(source.id, d.id)));
      if (dests.length === 0) return fill(list, el("li", { class: "muted" }, "No destination yet."));
      fill(list, ...dests.map((d, i) => destinationItem(source, d, stats[i], msg, view, editing)));
    },
  };
  return view;
}

const statsCache = new Map<string, { at: number; data: any }>();
/** A destination's 24-hour counts, asked again once STATS_MS old (or when `fresh`). */
async function statsOf(sourceId: string, destinationId: string, fresh = false): Promise<any | null> {
  const hit = statsCache.get(destinationId);
  if (!fresh && hit && Date.now() - hit.at < STATS_MS) return hit.data;
  const r = await api("GET", `/sources/${enc(sourceId)}/destinations/${enc(destinationId)}/stats`);
  if (r.status !== 200) return hit?.data ?? null;
  statsCache.set(destinationId, { at: Date.now(), data: r.body.data });
  return r.body.data;
}

function destinationState(d: any): HTMLElement {
  return el(
    "span",
    { class: "row" },
    badge(d.enabled ? "enabled" : "disabled"),
    el("span", { class: d.failure_count > 0 ? "badge bad failure-count" : "badge failure-count" }, `failure_count ${d.failure_count}`),
    d.ordering === "fifo" ? badge("fifo") : null,
    d.rate_limit ? badge(`${d.rate_limit}/s`) : null,
  );
}

/** Deletes asked for once (the second click deletes), kept across the view's redraws. */
const armedDeletes = new Set<string>();

/** The buttons that change a destination: none for a read-only key. */
function destinationActions(source: any, d: any, msg: HTMLElement, after: () => Promise<void>, onEdit?: () => void): HTMLElement | null {
  if (!canWrite) return null;
  const path = `/sources/${enc(source.id)}/destinations/${enc(d.id)}`;
  const say = (n: Node) => fill(msg, n);
  const del: HTMLButtonElement = el("button", {
    type: "button",
    class: "danger",
    "data-action": "delete",
    onclick: async () => {
      // Two clicks, no confirm() dialog.
      if (!armedDeletes.has(d.id)) {
        armedDeletes.add(d.id);
        del.textContent = "Click again to delete";
        return;
      }
      armedDeletes.delete(d.id);
      const r = await api("DELETE", path);
      say(r.status === 204 ? notice("Destination deleted.") : notice(errorText(r), true));
      await after();
    },
  }, armedDeletes.has(d.id) ? "Click again to delete" : "Delete");
  return el(
    "div",
    { class: "row actions" },
    el("button", {
      type: "button",
      "data-action": d.enabled ? "disable" : "enable",
      onclick: async () => {
        const r = await api("PATCH", path, { enabled: !d.enabled });
        say(r.status === 200 ? notice(`Destination ${r.body.data.enabled ? "enabled" : "disabled"}.`) : notice(errorText(r), true));
        await after();
      },
    }, d.enabled ? "Disable" : "Enable"),
    el("button", {
      type: "button",
      "data-action": "test",
      onclick: async () => {
        say(notice("Sending a test…"));
        const r = await api("POST", `${path}/test`);
        if (r.status === 200) say(notice(`Test: HTTP ${r.body.status}, ${r.body.ok ? "ok" : "not a 2xx"}.`, !r.body.ok));
        else say(notice(`Test failed: ${r.body?.error && typeof r.body.error === "string" ? r.body.error : errorText(r)}`, true));
      },
    }, "Test"),
    onEdit ? el("button", { type: "button", "data-action": "edit", onclick: onEdit }, "Edit") : null,
    del,
  );
}

function editForm(source: any, d: any, msg: HTMLElement, done: () => void): HTMLFormElement {
  const url = el("input", { name: "url", type: "url", value: d.url, required: true, class: "edit-url" });
  const filter = el("input", { name: "event_filter", value: d.event_filter.join(", "), class: "edit-filter" });
  return el(
    "form",
    {
      class: "edit",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const r = await api("PATCH", `/sources/${enc(source.id)}/destinations/${enc(d.id)}`, { url: url.value, event_filter: filterList(filter.value) });
        fill(msg, r.status === 200 ? notice("Destination saved.") : notice(errorText(r), true));
        if (r.status === 200) done();
      },
    },
    el("label", {}, "URL"),
    url,
    el("label", {}, "Event filter"),
    filter,
    el("button", { type: "submit", class: "primary" }, "Save"),
    el("button", { type: "button", onclick: done }, "Cancel"),
  );
}

function destinationItem(source: any, d: any, stats: any, msg: HTMLElement, view: View, editing: Set<string>): HTMLLIElement {
  const li = el("li", { "data-destination-id": d.id, class: "destination" });
  const draw = () => {
    fill(
      li,
      el("div", { class: "row" }, el("a", { href: `#/sources/${enc(source.id)}/destinations/${enc(d.id)}`, class: "grow wrap mono destination-url" }, d.url), destinationState(d)),
      el("div", { class: "muted wrap" }, d.event_filter.length ? `Filter: ${d.event_filter.join(", ")}` : "Every event"),
      stats ? chart(stats) : null,
      destinationActions(source, d, msg, () => view.refresh!(), () => {
        editing.add(d.id);
        fill(li, editForm(source, d, msg, () => {
          editing.delete(d.id);
          void view.refresh!();
        }));
      }),
    );
  };
  draw();
  return li;
}

/** Succeeded (green) over failed (red) attempts per hour, the last 24 hours: an SVG drawn from the stats route's counts. */
function chart(stats: any): HTMLElement {
  const hours: { hour: string; succeeded: number; failed: number }[] = stats.hours;
  const max = Math.max(1, ...hours.map((h) => h.succeeded + h.failed));
  const W = 12;
  const H = 60;
  const bars = hours.flatMap((h, i) => {
    const okH = (h.succeeded / max) * H;
    const badH = (h.failed / max) * H;
    const x = i * W + 1;
    const title = svg("title", {}, `${when(h.hour)}: ${h.succeeded} succeeded, ${h.failed} failed`);
    return [
      svg("g", { class: "hour", "data-hour": h.hour, "data-succeeded": h.succeeded, "data-failed": h.failed }, title, svg("rect", { class: "ok", x, y: H - okH, width: W - 2, height: okH }), svg("rect", { class: "bad", x, y: H - okH - badH, width: W - 2, height: badH })),
    ];
  });
  const labels = [0, 6, 12, 18].map((i) => svg("text", { x: i * W + 1, y: H + 11 }, hours[i]!.hour.slice(11, 16)));
  labels.push(svg("text", { x: hours.length * W, y: H + 11, "text-anchor": "end" }, "now"));
  const graphic = svg("svg", { class: "chart", viewBox: `0 0 ${hours.length * W} ${H + 14}`, role: "img", "aria-label": `Attempts per hour, last 24 hours: ${stats.succeeded} succeeded, ${stats.failed} failed` }, svg("line", { class: "axis", x1: 0, y1: H + 0.5, x2: hours.length * W, y2: H + 0.5 }), ...bars, ...labels);
  return el("div", { class: "stats", "data-succeeded": stats.succeeded, "data-failed": stats.failed }, el("div", { class: "muted" }, `Last 24 h: ${stats.succeeded} succeeded, ${stats.failed} failed (UTC hours)`), graphic);
}

function destinationView(source: any, destinationId: string): View {
  setCrumbs(link(`#/sources/${enc(source.id)}/events`, source.name), link(`#/sources/${enc(source.id)}/destinations`, "Destinations"), "Destination");
  const head = el("div");
  const msg = el("div", { id: "destination-message" });
  const attempts = el("ul", { class: "list", id: "attempts" });
  const outcome = el("select", { id: "attempt-outcome", onchange: () => void view.refresh!() }, el("option", { value: "" }, "every outcome"), el("option", { value: "succeeded" }, "succeeded"), el("option", { value: "failed" }, "failed"), el("option", { value: "cancelled" }, "cancelled"));
  const sections: Node[] = [el("section", { class: "card" }, head, msg)];
  if (canWrite) {
    const hourAgo = new Date(Date.now() - 3600_000).toISOString().slice(0, 16);
    const since = el("input", { id: "replay-since", type: "datetime-local", value: hourAgo, required: true });
    const until = el("input", { id: "replay-until", type: "datetime-local" });
    const onlyFailed = el("input", { id: "replay-only-failed", type: "checkbox" });
    sections.push(
      el(
        "section",
        { class: "card" },
        el(
          "form",
          {
            id: "replay",
            onsubmit: async (e: Event) => {
              e.preventDefault();
              const body: Record<string, unknown> = { since: utc(since.value), only_failed: onlyFailed.checked };
              if (until.value) body.until = utc(until.value);
              const r = await api("POST", `/sources/${enc(source.id)}/destinations/${enc(destinationId)}/replay`, body);
              fill(msg, r.status === 202 ? notice(`Replay: ${r.body.data.queued} queued, ${r.body.data.already_pending} already pending.`) : notice(errorText(r), true));
            },
          },
          el("h2", {}, "Replay"),
          el("p", { class: "muted" }, "Send this source's events of a window to this destination again (UTC)."),
          el("div", { class: "row" }, el("div", { class: "grow" }, el("label", { for: "replay-since" }, "Since"), since), el("div", { class: "grow" }, el("label", { for: "replay-until" }, "Until (optional)"), until)),
          el("label", { class: "inline" }, onlyFailed, "Only failed or never delivered"),
          el("div", {}, el("button", { type: "submit", class: "primary" }, "Replay")),
        ),
      ),
    );
  }
  sections.push(el("section", { class: "card" }, el("div", { class: "row" }, el("h2", { class: "grow" }, "Attempts"), outcome), attempts));
  fill(viewNode, ...sections);

  let editingNow = false;
  const view: View = {
    async refresh() {
      const path = `/sources/${enc(source.id)}/destinations/${enc(destinationId)}`;
      const q = outcome.value ? `&outcome=${enc(outcome.value)}` : "";
      const [dests, stats, list] = await Promise.all([loadDestinations(source.id, true), statsOf(source.id, destinationId, true), api("GET", `${path}/attempts?limit=50${q}`)]);
      const d = dests.find((x) => x.id === destinationId);
      if (!d) {
        fill(head, notice("No such destination.", true));
        return;
      }
      if (!editingNow) {
        fill(
          head,
          el("h1", { class: "wrap mono", id: "destination-url" }, d.url),
          destinationState(d),
          el("dl", { class: "kv" }, el("dt", {}, "Event filter"), el("dd", {}, d.event_filter.length ? d.event_filter.join(", ") : "every event"), el("dt", {}, "Id"), el("dd", { class: "mono" }, d.id), el("dt", {}, "Updated"), el("dd", {}, when(d.updated_at))),
          stats ? chart(stats) : null,
          destinationActions(source, d, msg, () => view.refresh!(), () => {
            editingNow = true;
            fill(head, editForm(source, d, msg, () => {
              editingNow = false;
              void view.refresh!();
            }));
          }),
        );
      }
      if (list.status !== 200) return fill(attempts, el("li", {}, notice(errorText(list), true)));
      const items: any[] = list.body.data;
      if (items.length === 0) fill(attempts, el("li", { class: "muted" }, "No attempt yet."));
      else
        fill(
          attempts,
          ...items.map((a) =>
            el("li", { class: `attempt ${a.outcome}` }, attemptLine(a), el("div", { class: "muted" }, "Event ", link(`#/sources/${enc(source.id)}/events/${enc(a.event_id)}`, a.event_id)), attemptBody(a)),
          ),
        );
    },
  };
  return view;
}

function attemptLine(a: any): HTMLElement {
  return el(
    "div",
    { class: "row" },
    el("strong", {}, `#${a.number}`),
    badge(a.outcome),
    el("span", { class: "status-code mono" }, a.status_code !== null ? `HTTP ${a.status_code}` : "no answer"),
    el("span", { class: "muted" }, `${a.duration_ms} ms`),
    el("span", { class: "muted" }, when(a.created_at)),
  );
}

function attemptBody(a: any): Node | null {
  return el(
    "div",
    {},
    a.error ? el("div", { class: "error wrap attempt-error" }, a.error) : null,
    a.response_body ? el("details", {}, el("summary", {}, "Response (first 4 KiB)"), el("pre", { class: "response-body" }, a.response_body)) : null,
  );
}

// ---- events ----------------------------------------------------------------------------

function eventsView(source: any): View {
  setCrumbs(link(`#/sources/${enc(source.id)}/events`, source.name), "Events");
  const type = el("input", { id: "filter-type", name: "type", placeholder: "type, e.g. invoice.paid" });
  const since = el("input", { id: "filter-since", name: "since", type: "datetime-local" });
  const until = el("input", { id: "filter-until", name: "until", type: "datetime-local" });
  const list = el("ul", { class: "list", id: "events" });
  const more = el("div");
  const msg = el("div");
  let extra: any[] = [];
  let cursor: string | null = null;
  const seen = new Set<string>();
  let first = true;
  const form = el(
    "form",
    {
      class: "filters",
      id: "event-filters",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        extra = [];
        seen.clear();
        first = true;
        await view.refresh!();
      },
    },
    el("div", {}, el("label", { for: "filter-type" }, "Type"), type),
    el("div", {}, el("label", { for: "filter-since" }, "Since (UTC)"), since),
    el("div", {}, el("label", { for: "filter-until" }, "Until (UTC)"), until),
    el("div", {}, el("button", { type: "submit" }, "Filter")),
  );
  const query = () => {
    const q = new URLSearchParams({ limit: "50" });
    if (type.value.trim()) q.set("type", type.value.trim());
    if (since.value) q.set("since", utc(since.value));
    if (until.value) q.set("until", utc(until.value));
    return q;
  };
  fill(viewNode, el("section", { class: "card" }, sourceHeader(source, "events"), form, msg, el("p", { class: "muted" }, "Newest first; new events appear by themselves."), list, more));

  const row = (e: any) =>
    el(
      "li",
      { class: seen.has(e.id) || first ? "event" : "event new", "data-event-id": e.id },
      el("a", { class: "event-row", href: `#/sources/${enc(source.id)}/events/${enc(e.id)}` }, el("span", { class: "muted" }, when(e.received_at)), el("strong", { class: "wrap event-type" }, e.type), badge(e.status), el("span", { class: "mono muted wrap" }, e.id)),
    );
  const view: View = {
    async refresh() {
      const r = await api("GET", `/sources/${enc(source.id)}/events?${query()}`);
      if (r.status !== 200) return fill(msg, notice(errorText(r), true));
      fill(msg);
      const items: any[] = [...r.body.data, ...extra.filter((x) => !r.body.data.some((y: any) => y.id === x.id))];
      if (extra.length === 0) cursor = r.body.next_cursor;
      if (items.length === 0) fill(list, el("li", { class: "muted" }, "No event yet. Send one to the source's ingest URL."));
      else fill(list, ...items.map(row));
      for (const e of items) seen.add(e.id);
      first = false;
      fill(
        more,
        cursor
          ? el("button", {
              type: "button",
              id: "more-events",
              onclick: async () => {
                const q = query();
                q.set("cursor", cursor!);
                const next = await api("GET", `/sources/${enc(source.id)}/events?${q}`);
                if (next.status === 200) {
                  extra.push(...next.body.data);
                  cursor = next.body.next_cursor;
                  await view.refresh!();
                }
              },
            }, "Older events")
          : null,
      );
    },
  };
  return view;
}

function eventView(source: any, eventId: string): View {
  setCrumbs(link(`#/sources/${enc(source.id)}/events`, source.name), link(`#/sources/${enc(source.id)}/events`, "Events"), "Event");
  const head = el("div");
  const msg = el("div", { id: "event-message" });
  const deliveries = el("ul", { class: "list", id: "deliveries" });
  const headers = el("pre", { id: "event-headers" });
  const payload = el("pre", { id: "event-payload" });
  const redeliverAll = canWrite
    ? el("button", {
        type: "button",
        class: "primary",
        id: "redeliver",
        onclick: async () => {
          const r = await api("POST", `/sources/${enc(source.id)}/events/${enc(eventId)}/redeliver`, {});
          fill(msg, r.status === 202 ? notice(`Redeliver: ${r.body.data.queued} queued, ${r.body.data.already_pending} already pending.`) : notice(errorText(r), true));
          await view.refresh!();
        },
      }, "Redeliver to every matching destination")
    : null;
  fill(
    viewNode,
    el("section", { class: "card" }, head, redeliverAll, msg),
    el("div", { class: "grid two" }, el("section", { class: "card" }, el("h2", {}, "Deliveries"), deliveries), el("section", { class: "card" }, el("h2", {}, "Payload"), payload, el("h2", {}, "Headers"), headers)),
  );

  let drawnPayload = false;
  const timelineCache = new Map<string, { mark: string; result: ApiResult; at: number }>();
  const view: View = {
    async refresh() {
      const r = await api("GET", `/sources/${enc(source.id)}/events/${enc(eventId)}`);
      if (r.status !== 200) return fill(head, notice(errorText(r), true));
      const e = r.body.data;
      fill(head, el("h1", { class: "wrap", id: "event-type" }, e.type), el("div", { class: "row" }, badge(e.status), el("span", { class: "muted" }, when(e.received_at)), el("span", { class: "mono muted wrap" }, e.id)));
      if (!drawnPayload) {
        // Text nodes only: a payload or header full of markup shows as what it is.
        payload.textContent = pretty(e.payload);
        headers.textContent = pretty(e.headers);
        drawnPayload = true;
      }
      const dests = await loadDestinations(source.id, true);
      const byId = new Map(dests.map((d) => [d.id, d]));
      if (e.deliveries.length === 0) return fill(deliveries, el("li", { class: "muted" }, "No delivery: no enabled destination matched, or the fan-out has not run yet."));
      // A delivery's timeline is asked again only when its attempts or status changed.
      const timelines: ApiResult[] = await Promise.all(
        e.deliveries.map(async (d: any) => {
          const mark = `${d.status}/${d.attempt_count}/${d.last_attempt?.id ?? ""}`;
          const hit = timelineCache.get(d.destination_id);
          if (hit && hit.mark === mark && Date.now() - hit.at < STATS_MS) return hit.result;
          const result = await api("GET", `/sources/${enc(source.id)}/destinations/${enc(d.destination_id)}/attempts?event_id=${enc(eventId)}&limit=100`);
          if (result.status === 200) timelineCache.set(d.destination_id, { mark, result, at: Date.now() });
          return result;
        }),
      );
      fill(
        deliveries,
        ...e.deliveries.map((d: any, i: number) => {
          const dest = byId.get(d.destination_id);
          const t = timelines[i]!;
          const attempts: any[] = t.status === 200 ? [...t.body.data].reverse() : [];
          return el(
            "li",
            { class: "delivery", "data-destination-id": d.destination_id },
            el("div", { class: "row" }, link(`#/sources/${enc(source.id)}/destinations/${enc(d.destination_id)}`, el("span", { class: "mono wrap" }, dest ? dest.url : d.destination_id)), badge(d.status), el("span", { class: "muted" }, `${d.attempt_count} attempt${d.attempt_count === 1 ? "" : "s"}`)),
            canWrite && dest?.enabled
              ? el("button", {
                  type: "button",
                  "data-action": "redeliver-one",
                  onclick: async () => {
                    const rr = await api("POST", `/sources/${enc(source.id)}/events/${enc(eventId)}/redeliver`, { destination_ids: [d.destination_id] });
                    fill(msg, rr.status === 202 ? notice(`Redeliver: ${rr.body.data.queued} queued, ${rr.body.data.already_pending} already pending.`) : notice(errorText(rr), true));
                    await view.refresh!();
                  },
                }, "Redeliver here")
              : null,
            attempts.length === 0 ? el("p", { class: "muted" }, "No attempt yet.") : el("ol", { class: "timeline" }, ...attempts.map((a) => el("li", { class: `attempt ${a.outcome}` }, attemptLine(a), attemptBody(a)))),
          );
        }),
      );
    },
  };
  return view;
}

// ---- start --------------------------------------------------------------------------

window.addEventListener("hashchange", () => void route());
void route().then(() => setTimeout(poll, POLL_MS));
