/**
 * The console (GET /console) in a real headless Chromium (test/support/browser.ts)
 * against `wrangler dev`, with real deliveries to a loopback receiver:
 * - an operator signs in, creates a source and a destination, sends events and watches
 *   them arrive without a reload, opens one, sees each attempt, redelivers, replays,
 *   tests, disables and enables, and signs out;
 * - a read-only key sees no button that changes anything, and the API refuses it anyway;
 * - payloads, headers, names and responses made of HTML and script show as text and run
 *   nothing (no dialog, no page error, no console error, no CSP violation);
 * - a page of another origin (the receiver's: same site, so it even gets the
 *   SameSite=Strict cookie; and localhost: cross-site) cannot change anything through
 *   any state-changing console route, by form or by fetch.
 * Screenshots of the main views at 1280 and 390 px go to $KRAFTER_CONSOLE_SCREENSHOTS
 * (default <tmpdir>/krafter-console); the README's, checked in, are refreshed with
 * KRAFTER_CONSOLE_SCREENSHOTS=docs/console, so a test run leaves the tree as it was.
 */
import { execFile } from "node:child_process";
import { mkdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchBrowser } from "../support/browser";
import { startReceiver, type ReceiverHandle, type Received } from "../support/receiver";
import { Api } from "./flow";
import { ROOT, startDev, type Dev } from "./harness";

const SHOTS = process.env.KRAFTER_CONSOLE_SCREENSHOTS ? join(ROOT, process.env.KRAFTER_CONSOLE_SCREENSHOTS) : join(tmpdir(), "krafter-console");

// The functions given to page.evaluate run in the page; the project's types (Workers and Node) have no DOM.
declare const document: any;
declare const window: any;

let dev: Dev;
let browser: Browser;
let receiver: ReceiverHandle;
let writeKey: string;
let readKey: string;
let api: Api;

async function mailbox(spec: Record<string, unknown> = {}) {
  const res = await fetch(`${receiver.origin}/control/mailboxes`, { method: "POST", body: JSON.stringify(spec) });
  const { id, url } = (await res.json()) as { id: string; url: string };
  return {
    id,
    url,
    async requests(): Promise<Received[]> {
      return ((await (await fetch(`${receiver.origin}/control/mailboxes/${id}`)).json()) as { requests: Received[] }).requests;
    },
  };
}

async function ingest(url: string, body: unknown, headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  const json = (await res.json()) as { data?: { event_id?: string } };
  if (res.status !== 202 || !json.data?.event_id) throw new Error(`ingest: ${res.status} ${JSON.stringify(json)}`);
  return json.data.event_id;
}

/** Everything that would show that something ran or was blocked: dialogs, errors, CSP reports. */
function watch(context: BrowserContext, page: Page) {
  const seen: string[] = [];
  page.on("dialog", (d) => {
    seen.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  page.on("pageerror", (e) => seen.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") seen.push(`console error: ${m.text()}`);
  });
  void context.addInitScript("document.addEventListener('securitypolicyviolation', (e) => console.error('csp violation ' + e.violatedDirective + ' ' + e.blockedURI));");
  return seen;
}

async function signIn(page: Page, key: string): Promise<void> {
  await page.goto(`${dev.origin}/console`);
  await page.locator("#key").fill(key);
  await Promise.all([page.waitForURL(`${dev.origin}/console`), page.locator("#sign-in").click()]);
  await page.locator("#account").waitFor();
}

async function shoot(page: Page, name: string): Promise<void> {
  const width = page.viewportSize()!.width;
  await page.screenshot({ path: join(SHOTS, `${name}-${width}.png`), fullPage: true });
  // Usable at that width: nothing wider than the screen.
  const scroll = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(scroll, `${name} at ${width} px scrolls sideways`).toBeLessThanOrEqual(width);
}

beforeAll(async () => {
  [dev, browser, receiver] = await Promise.all([startDev({ cronEveryMs: 0 }), launchBrowser(), startReceiver()]);
  writeKey = await dev.apiKey("webhooks:read,webhooks:write", "console");
  readKey = await dev.apiKey("webhooks:read", "console");
  api = new Api(dev.origin, writeKey);
  await mkdir(SHOTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await receiver?.close();
  await dev?.stop();
});

describe("the console's page script", () => {
  it("is the bundle of src/console/browser as checked in (npm run build:console)", async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, "scripts", "build-console.mjs"), "--print"], { maxBuffer: 8 << 20 });
    expect(stdout === (await readFile(join(ROOT, "src", "console", "script.ts"), "utf8")), "src/console/script.ts is stale: run npm run build:console").toBe(true);
  });
});

describe("the README", () => {
  it("says how to open the console and shows its screenshots, which exist", async () => {
    const text = await readFile(join(ROOT, "README.md"), "utf8");
    const start = text.indexOf("\n## Console\n");
    expect(start).toBeGreaterThan(0);
    const section = text.slice(start, text.indexOf("\n## ", start + 1));
    expect(section).toContain("npm start");
    expect(section).toContain("http://localhost:8787/console");
    expect(section).toContain("npm run api-key -- create --account me --scopes webhooks:read,webhooks:write");
    const images = [...section.matchAll(/!\[[^\]]*\]\((docs\/console\/[a-z0-9-]+\.png)\)/g)].map((m) => m[1]!);
    expect(images).toContain("docs/console/event-1280.png");
    expect(images).toContain("docs/console/events-390.png");
    for (const image of images) expect((await readFile(join(ROOT, image))).subarray(1, 4).toString()).toBe("PNG");
  });
});

describe("an operator in the console", () => {
  let sourceId: string;
  let destinationId: string;
  let eventIds: string[] = [];

  it("signs in, creates a source and a destination, watches events arrive, inspects, recovers, toggles and signs out", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems = watch(context, page);
    try {
      await signIn(page, writeKey);
      expect(await page.locator("#access").textContent()).toBe("read and write");
      // The key is nowhere the page's scripts can read it.
      expect(await page.evaluate(() => document.cookie)).toBe("");
      expect(await page.evaluate(() => [window.localStorage.length, window.sessionStorage.length])).toEqual([0, 0]);
      expect(await page.content()).not.toContain(writeKey);
      const cookie = (await context.cookies()).find((c) => c.name === "krafter_session")!;
      expect(cookie).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/console" });
      expect(page.url()).not.toContain("krf_");

      // A source.
      await page.locator("#source-name").fill("Shop (generic)");
      await page.locator("#create-source button[type=submit]").click();
      const item = page.locator("#sources li", { hasText: "Shop (generic)" });
      await item.waitFor();
      const ingestUrl = await item.locator(".ingest-url").inputValue();
      expect(ingestUrl).toMatch(new RegExp(`^${dev.origin}/in/`));
      sourceId = (await item.getAttribute("data-source-id"))!;
      // The alerts source, too.
      await page.locator("#create-alerts-source").click();
      await page.locator("#sources li", { hasText: "alerts source" }).waitFor();
      await shoot(page, "sources");

      // A destination to the receiver; its secret shown once.
      const box = await mailbox({ repeat: { status: 200, body: "thanks" } });
      await item.locator("a", { hasText: "Destinations" }).click();
      await page.locator("#destination-url").fill(box.url);
      await page.locator("#create-destination button[type=submit]").click();
      const secret = (await page.locator("#new-secret-value").textContent())!;
      expect(secret).toMatch(/^whsec_/);
      const card = page.locator("#destinations li.destination");
      await card.waitFor();
      destinationId = (await card.getAttribute("data-destination-id"))!;
      await expect.poll(() => card.locator(".badge.enabled").count()).toBe(1);
      expect(await card.locator(".failure-count").textContent()).toBe("failure_count 0");

      // Events, sent while the page is open, appear without a reload.
      await page.locator("#tab-events").click();
      await page.locator("#events").waitFor();
      await page.evaluate(() => (window.marker = 42));
      for (let i = 0; i < 3; i++) eventIds.push(await ingest(ingestUrl, { type: `order.created`, id: `ord_${i}`, total: 10 * i }));
      await expect.poll(() => page.locator("#events li.event").count(), { timeout: 30_000 }).toBe(3);
      expect(await page.evaluate(() => window.marker)).toBe(42);
      await expect.poll(async () => (await box.requests()).length, { timeout: 30_000 }).toBe(3);
      await shoot(page, "events");

      // Filters: by type, and by time.
      await page.locator("#filter-type").fill("invoice.paid");
      await page.locator("#event-filters button[type=submit]").click();
      await expect.poll(() => page.locator("#events li.event").count()).toBe(0);
      await page.locator("#filter-type").fill("order.created");
      await page.locator("#filter-since").fill(new Date(Date.now() + 3600_000).toISOString().slice(0, 16));
      await page.locator("#event-filters button[type=submit]").click();
      await expect.poll(() => page.locator("#events li.event").count()).toBe(0);
      await page.locator("#filter-since").fill(new Date(Date.now() - 3600_000).toISOString().slice(0, 16));
      await page.locator("#event-filters button[type=submit]").click();
      await expect.poll(() => page.locator("#events li.event").count()).toBe(3);

      // One event: payload, headers, the delivery and its attempt.
      await page.locator(`#events li[data-event-id="${eventIds[0]}"] a`).click();
      await page.locator("#event-type").waitFor();
      expect(JSON.parse((await page.locator("#event-payload").textContent())!)).toEqual({ type: "order.created", id: "ord_0", total: 0 });
      expect(JSON.parse((await page.locator("#event-headers").textContent())!)["content-type"]).toBe("application/json");
      const delivery = page.locator(`#deliveries li[data-destination-id="${destinationId}"]`);
      await expect.poll(() => delivery.locator(".timeline > li.attempt").count(), { timeout: 30_000 }).toBe(1);
      expect(await delivery.locator(".badge.succeeded").first().textContent()).toBe("succeeded");
      expect(await delivery.locator(".status-code").first().textContent()).toBe("HTTP 200");
      expect(await delivery.locator(".response-body").first().textContent()).toBe("thanks");

      // Redeliver: a second attempt appears in the timeline by itself.
      await page.locator("#redeliver").click();
      await expect.poll(() => page.locator("#event-message").textContent()).toContain("1 queued");
      await expect.poll(() => delivery.locator(".timeline > li.attempt").count(), { timeout: 30_000 }).toBe(2);
      await expect.poll(async () => (await box.requests()).filter((r) => r.headers["webhook-id"] === eventIds[0]).length).toBe(2);
      await shoot(page, "event");

      // The destination: chart, replay, test, disable and enable.
      await page.locator(`#deliveries li[data-destination-id="${destinationId}"] a`).first().click();
      await page.locator("#destination-url").waitFor();
      await expect.poll(async () => Number(await page.locator(".stats").getAttribute("data-succeeded")), { timeout: 30_000 }).toBe(4);
      expect(await page.locator(".stats").getAttribute("data-failed")).toBe("0");
      expect(await page.locator(".chart g.hour").count()).toBe(24);
      await page.locator("#replay button[type=submit]").click();
      await expect.poll(() => page.locator("#destination-message").textContent()).toContain("3 queued");
      await expect.poll(async () => (await box.requests()).length, { timeout: 30_000 }).toBe(7);
      await expect.poll(() => page.locator("#attempts li.attempt").count(), { timeout: 30_000 }).toBe(7);

      await page.locator("[data-action=test]").click();
      await expect.poll(() => page.locator("#destination-message").textContent(), { timeout: 30_000 }).toContain("Test: HTTP 200, ok");

      await page.locator("[data-action=disable]").click();
      await expect.poll(() => page.locator("#destination-message").textContent()).toContain("Destination disabled.");
      await expect.poll(async () => (await api.call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${destinationId}`)).body.data.enabled).toBe(false);
      await page.locator("[data-action=enable]").waitFor();
      await shoot(page, "destination");
      await page.locator("[data-action=enable]").click();
      await expect.poll(() => page.locator("#destination-message").textContent()).toContain("Destination enabled.");
      await expect.poll(async () => (await api.call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${destinationId}`)).body.data.enabled).toBe(true);

      // Edit a destination's filter, and delete another (two clicks, no dialog).
      const spare = await api.createDestination(sourceId, { url: (await mailbox()).url });
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/destinations`);
      const mine = page.locator(`#destinations li[data-destination-id="${destinationId}"]`);
      await mine.locator(".stats").waitFor();
      await shoot(page, "destinations");
      await mine.locator("[data-action=edit]").click();
      await mine.locator(".edit-filter").fill("order.*, refund.created");
      await mine.locator("form.edit button[type=submit]").click();
      await expect.poll(() => page.locator("#destinations-message").textContent()).toContain("Destination saved.");
      expect((await api.call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${destinationId}`)).body.data.event_filter).toEqual(["order.*", "refund.created"]);
      const other = page.locator(`#destinations li[data-destination-id="${spare.id}"]`);
      await other.locator("[data-action=delete]").click();
      await other.locator("[data-action=delete]", { hasText: "Click again to delete" }).click();
      await expect.poll(() => page.locator("#destinations-message").textContent()).toContain("Destination deleted.");
      expect((await api.call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${spare.id}`)).status).toBe(404);
      await expect.poll(() => page.locator("#destinations li.destination").count()).toBe(1);

      // The same views on a phone.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.locator(`#destinations li[data-destination-id="${destinationId}"] .stats`).waitFor();
      await shoot(page, "destinations");
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/destinations/${destinationId}`);
      await page.locator("#destination-url").waitFor();
      await shoot(page, "destination");
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/events/${eventIds[0]}`);
      await page.locator("#deliveries .timeline").waitFor();
      await shoot(page, "event");
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/events`);
      await expect.poll(() => page.locator("#events li.event").count()).toBe(3);
      await shoot(page, "events");
      await page.goto(`${dev.origin}/console#/`);
      await page.locator("#sources li").first().waitFor();
      await shoot(page, "sources");

      // The secret was shown once: no view has it now.
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/destinations`);
      await page.locator("#destinations li.destination").waitFor();
      expect(await page.content()).not.toContain(secret);

      // Sign out: the cookie is gone and the console's calls are refused.
      await Promise.all([page.waitForURL(`${dev.origin}/console`), page.locator("#sign-out").click()]);
      await page.locator("#key").waitFor();
      expect(problems).toEqual([]);
      expect((await context.cookies()).some((c) => c.name === "krafter_session")).toBe(false);
      expect(await page.evaluate(async () => (await fetch("/console/api/sources")).status)).toBe(401);
    } finally {
      await context.close();
    }
  });

  it("with a read-only key shows everything and no button that changes anything; the API refuses anyway", async () => {
    expect(sourceId).toBeTruthy();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems = watch(context, page);
    try {
      await signIn(page, readKey);
      expect(await page.locator("#access").textContent()).toBe("read only");
      await page.locator(`#sources li[data-source-id="${sourceId}"]`).waitFor();
      const changers = "#create-source, #create-alerts-source, #create-destination, #redeliver, #replay, [data-action]";
      expect(await page.locator(changers).count()).toBe(0);
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/destinations`);
      await page.locator("#destinations li.destination").waitFor();
      expect(await page.locator(changers).count()).toBe(0);
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/events/${eventIds[0]}`);
      await page.locator("#deliveries .timeline > li").first().waitFor();
      expect(await page.locator(changers).count()).toBe(0);
      await page.goto(`${dev.origin}/console#/sources/${sourceId}/destinations/${destinationId}`);
      await page.locator("#attempts li.attempt").first().waitFor();
      expect(await page.locator(changers).count()).toBe(0);

      expect(problems).toEqual([]);
      // What a button would have sent, sent by hand from the page: the API says no.
      const refused = await page.evaluate(
        async ({ sourceId, destinationId, eventId }) => {
          const token = (document.querySelector('meta[name="krafter-csrf"]') as { content: string }).content;
          const call = async (method: string, path: string, body?: unknown) => {
            const r = await fetch(`/console/api${path}`, { method, headers: { "x-csrf-token": token, "content-type": "application/json" }, ...(body ? { body: JSON.stringify(body) } : {}) });
            return `${r.status} ${((await r.json()) as { error?: { code: string } }).error?.code}`;
          };
          const d = `/sources/${sourceId}/destinations/${destinationId}`;
          return [
            await call("PATCH", d, { enabled: false }),
            await call("POST", `/sources/${sourceId}/events/${eventId}/redeliver`, {}),
            await call("POST", `${d}/replay`, { since: new Date(Date.now() - 3600_000).toISOString() }),
            await call("DELETE", d),
          ];
        },
        { sourceId, destinationId, eventId: eventIds[0]! },
      );
      expect(refused).toEqual(["403 forbidden", "403 forbidden", "403 forbidden", "403 forbidden"]);
      expect((await api.call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${destinationId}`)).body.data.enabled).toBe(true);
    } finally {
      await context.close();
    }
  });
});

describe("outside data in the console", () => {
  it("shows HTML and script from payloads, headers, names and responses as text, and runs none of it", async () => {
    const img = "<img src=x onerror=alert(1)>";
    const breakout = "</script><script>alert(2)</script>";
    const source = await api.createSource({ name: `${img}${breakout}` });
    const box = await mailbox({ repeat: { status: 200, headers: { "content-type": "text/html" }, body: `${breakout}<img src=x onerror=alert(3)>` } });
    const dest = await api.createDestination(source.id, { url: `${box.url}?q=${encodeURIComponent(img)}`, event_filter: [] });
    const eventId = await ingest(source.ingest_url, { type: `${breakout}.created`, html: img, nested: { s: breakout } }, { "x-note": `${img}${breakout}` });
    await expect.poll(async () => (await box.requests()).length, { timeout: 30_000 }).toBe(1);

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems = watch(context, page);
    try {
      await signIn(page, writeKey);
      await page.locator("#sources li", { hasText: img }).waitFor();
      expect(await page.locator(`#sources li[data-source-id="${source.id}"] .source-name`).textContent()).toBe(`${img}${breakout}`);
      await page.goto(`${dev.origin}/console#/sources/${source.id}/events`);
      await page.locator("#events li.event .event-type", { hasText: breakout }).waitFor();
      await page.goto(`${dev.origin}/console#/sources/${source.id}/events/${eventId}`);
      const delivery = page.locator(`#deliveries li[data-destination-id="${dest.id}"]`);
      await delivery.locator(".timeline > li.attempt").waitFor({ timeout: 30_000 });
      await delivery.locator("details summary").click();
      expect(await delivery.locator(".response-body").textContent()).toBe(`${breakout}<img src=x onerror=alert(3)>`);
      expect(await page.locator("#event-type").textContent()).toBe(`${breakout}.created`);
      expect(JSON.parse((await page.locator("#event-payload").textContent())!)).toEqual({ type: `${breakout}.created`, html: img, nested: { s: breakout } });
      expect(JSON.parse((await page.locator("#event-headers").textContent())!)["x-note"]).toBe(`${img}${breakout}`);
      expect(await delivery.locator("a .mono").textContent()).toContain("onerror");
      await page.goto(`${dev.origin}/console#/sources/${source.id}/destinations`);
      await page.locator("#destinations li.destination").waitFor();
      // Not one element made from it: the page holds no img and only its own script.
      expect(await page.locator("img").count()).toBe(0);
      expect(await page.evaluate(() => [...document.scripts].map((s: { getAttribute(n: string): string | null }) => s.getAttribute("src")))).toEqual(["/console/console.js"]);
      // A poll or two more, so whatever would run has had its chance.
      await page.waitForTimeout(3500);
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });
});

describe("another origin", () => {
  it("cannot change anything through any state-changing console route, by form or fetch, even with the session cookie", async () => {
    const source = await api.createSource({ name: "target" });
    const target = await mailbox();
    const dest = await api.createDestination(source.id, { url: target.url });
    const eventId = await ingest(source.ingest_url, { type: "x.y" });
    await expect.poll(async () => (await target.requests()).length, { timeout: 30_000 }).toBe(1);
    const attacker = await mailbox({ repeat: { status: 200, headers: { "content-type": "text/html" }, body: "<!doctype html><title>elsewhere</title><p>nothing to see</p>" } });
    const sourcesBefore = (await api.call("GET", "/api/v1/webhooks/sources?limit=100")).body.data.length;

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    try {
      await signIn(page, writeKey);
      const d = `/console/api/sources/${source.id}/destinations/${dest.id}`;
      const posts = [
        "/console/sign-in",
        "/console/sign-out",
        "/console/api/sources",
        `/console/api/sources/${source.id}/destinations`,
        `${d}/test`,
        `${d}/replay`,
        `/console/api/sources/${source.id}/events/${eventId}/redeliver`,
      ];
      // The receiver's origin is another port of the same host: same site, so the browser
      // sends the SameSite=Strict cookie along; localhost is another site altogether.
      for (const origin of [receiver.origin, receiver.origin.replace("127.0.0.1", "localhost")]) {
        const from = attacker.url.replace(receiver.origin, origin);
        for (const path of posts) {
          await page.goto(from);
          const [res] = await Promise.all([
            page.waitForResponse((r) => r.url() === `${dev.origin}${path}`),
            page.evaluate(
              ({ action, key }) => {
                const form = document.createElement("form");
                form.method = "POST";
                form.action = action;
                for (const [name, value] of Object.entries({ key, name: "planted", url: "http://127.0.0.1:9/x", since: "2020-01-01T00:00:00Z", csrf: "guess" })) {
                  const input = document.createElement("input");
                  input.name = name;
                  input.value = value;
                  form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
              },
              { action: `${dev.origin}${path}`, key: writeKey },
            ),
          ]);
          expect(res.status(), `form POST ${path} from ${origin}`).toBe(403);
          expect(((await res.json()) as { error: { code: string } }).error.code).toBe("forbidden");
        }
        await page.goto(from);
        const fetched = await page.evaluate(
          async ({ base, posts, d }) => {
            const tries: [string, string][] = [...posts.map((p): [string, string] => ["POST", p]), ["PATCH", d], ["DELETE", d]];
            const out: string[] = [];
            for (const [method, path] of tries) {
              // no-cors: sent as a simple request (no preflight), the answer unreadable: the server must refuse it.
              const simple = method === "POST";
              try {
                const init = { method, credentials: "include", mode: simple ? "no-cors" : "cors", ...(simple ? { body: "name=planted" } : { headers: { "content-type": "application/json" }, body: JSON.stringify({ enabled: false }) }) };
                const r = await fetch(base + path, init as unknown as RequestInit);
                out.push(`${method} ${path}: ${r.type} ${r.status}`);
              } catch (err) {
                out.push(`${method} ${path}: refused (${(err as Error).name})`);
              }
            }
            return out;
          },
          { base: dev.origin, posts, d },
        );
        // PATCH and DELETE need a preflight, which the console never grants: the browser does not send them.
        expect(fetched.filter((f) => f.startsWith("PATCH") || f.startsWith("DELETE")).every((f) => f.includes("refused"))).toBe(true);
      }

      // Nothing changed: no source or destination added, the destination still enabled,
      // no test, replay or redelivery sent, and the session was not signed out.
      expect((await api.call("GET", "/api/v1/webhooks/sources?limit=100")).body.data.length).toBe(sourcesBefore);
      const dests = (await api.call("GET", `/api/v1/webhooks/sources/${source.id}/destinations`)).body.data;
      expect(dests.map((x: { id: string; enabled: boolean }) => [x.id, x.enabled])).toEqual([[dest.id, true]]);
      await new Promise((r) => setTimeout(r, 2000));
      expect((await target.requests()).length).toBe(1);
      await page.goto(`${dev.origin}/console`);
      await page.locator("#account").waitFor();
      expect(await page.evaluate(async () => (await fetch("/console/api/sources", { headers: { "x-csrf-token": (document.querySelector('meta[name="krafter-csrf"]') as { content: string }).content } })).status)).toBe(200);
    } finally {
      await context.close();
    }
  });
});
