/**
 * The console's server side (src/console), through the Worker's own fetch handler: the
 * session cookie and what never carries the key, cross-site request refusals (with the
 * stored state checked afterwards), a read-only key refused by the API behind it, the
 * security headers, and the per-hour counts of a destination after real deliveries to a
 * loopback receiver (the stats route, and the attempt timeline of one event).
 */
import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import worker from "../../src/index";
import type { Env } from "../../src/config";
import { CONSOLE_CSP, consoleRoutes } from "../../src/console/routes";
import { HOUR_MS, KEEP_HOURS } from "../../src/delivery/attempt-counts";
import type { DestinationHealth } from "../../src/destination-health";
import { addKey, call, createAccount, createDestination, createSource, expectError, json, mailbox, ORIGIN, revokeKey, type Account } from "../helpers/api";
import { destinationRow, insertDelivery, insertEvent, runQueue } from "../helpers/delivery";

async function send(url: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await worker.fetch(new Request(url, { redirect: "manual", ...init }) as Request<unknown, IncomingRequestCfProperties>, env as unknown as Env, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

/** name=value of each Set-Cookie, and its attributes. */
function cookies(res: Response): Map<string, { value: string; attrs: string[] }> {
  const out = new Map<string, { value: string; attrs: string[] }>();
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(";").map((p) => p.trim());
    const i = pair!.indexOf("=");
    out.set(pair!.slice(0, i), { value: pair!.slice(i + 1), attrs: attrs.map((a) => a.toLowerCase()) });
  }
  return out;
}

interface Browser {
  origin: string;
  jar: Map<string, string>;
}

function cookieHeader(b: Browser): string {
  return [...b.jar].map(([k, v]) => `${k}=${v}`).join("; ");
}

function keep(b: Browser, res: Response): void {
  for (const [name, c] of cookies(res)) {
    if (c.attrs.includes("max-age=0") || c.value === "") b.jar.delete(name);
    else b.jar.set(name, c.value);
  }
}

/** GET /console, as a browser would open it: the sign-in form's token and cookie. */
async function openSignIn(origin = ORIGIN): Promise<{ browser: Browser; csrf: string; res: Response; html: string }> {
  const browser: Browser = { origin, jar: new Map() };
  const res = await send(`${origin}/console`);
  keep(browser, res);
  const html = await res.text();
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1];
  if (!csrf) throw new Error("no sign-in token in the form");
  return { browser, csrf, res, html };
}

async function signIn(key: string, origin = ORIGIN): Promise<{ browser: Browser; res: Response; csrf: string }> {
  const { browser, csrf } = await openSignIn(origin);
  const res = await send(`${origin}/console/sign-in`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", origin, "sec-fetch-site": "same-origin", cookie: cookieHeader(browser) },
    body: new URLSearchParams({ key, csrf }).toString(),
  });
  keep(browser, res);
  const page = await send(`${origin}/console`, { headers: { cookie: cookieHeader(browser) } });
  const token = /name="krafter-csrf" content="([^"]+)"/.exec(await page.text())?.[1] ?? "";
  return { browser, res, csrf: token };
}

/** A call of the page's script: same origin, the session cookie and its token, unless told otherwise. */
function consoleCall(b: Browser, method: string, path: string, o: { token?: string | null; headers?: Record<string, string>; body?: unknown } = {}) {
  const headers: Record<string, string> = { cookie: cookieHeader(b), origin: b.origin, "sec-fetch-site": "same-origin", ...(o.body !== undefined ? { "content-type": "application/json" } : {}) };
  if (o.token) headers["x-csrf-token"] = o.token;
  return send(`${b.origin}/console/api${path}`, { method, headers: { ...headers, ...o.headers }, ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}) });
}

async function sourceCount(account: Account): Promise<number> {
  return (await json(await call("GET", "/api/v1/webhooks/sources", { key: account.key }))).data.length;
}

let account: Account;

beforeEach(async () => {
  account = await createAccount();
});

describe("sign-in", () => {
  it("sets an HttpOnly, SameSite=Strict, Secure session cookie for /console, and never sends the key back", async () => {
    const { res, browser } = await signIn(account.key);
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/console");
    const session = cookies(res).get("krafter_session");
    expect(session).toBeDefined();
    expect(session!.attrs).toEqual(expect.arrayContaining(["httponly", "samesite=strict", "secure", "path=/console"]));
    expect(session!.value).not.toContain(account.key);
    expect(session!.value).not.toContain(account.key.slice(4));
    // Neither the answer nor any page after it holds the key.
    const everything = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n") + (await res.text());
    expect(everything).not.toContain(account.key);
    const page = await send(`${ORIGIN}/console`, { headers: { cookie: cookieHeader(browser) } });
    const html = await page.text();
    expect(page.status).toBe(200);
    expect(html).toContain('data-can-write="true"');
    expect(html).toContain('<script src="/console/console.js" defer></script>');
    expect(html).not.toContain(account.key);
    expect([...page.headers].map(([, v]) => v).join("\n")).not.toContain(account.key);
  });

  it("leaves Secure off on 127.0.0.1, where npm start serves plain http", async () => {
    const { res } = await signIn(account.key, "http://127.0.0.1:8787");
    const session = cookies(res).get("krafter_session");
    expect(session!.attrs).toEqual(expect.arrayContaining(["httponly", "samesite=strict", "path=/console"]));
    expect(session!.attrs).not.toContain("secure");
  });

  it("answers 401 to a bad key, sets no session and does not echo the key typed", async () => {
    const wrong = "krf_" + "A".repeat(43);
    const { browser, csrf } = await openSignIn();
    const res = await send(`${ORIGIN}/console/sign-in`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN, cookie: cookieHeader(browser) },
      body: new URLSearchParams({ key: wrong, csrf }).toString(),
    });
    expect(res.status).toBe(401);
    expect(cookies(res).has("krafter_session")).toBe(false);
    const html = await res.text();
    expect(html).toContain("Invalid API key");
    expect(html).not.toContain(wrong);
  });

  it("refuses a revoked key's session at the next page", async () => {
    const { browser } = await signIn(account.key);
    await revokeKey(account.keyId);
    const page = await send(`${ORIGIN}/console`, { headers: { cookie: cookieHeader(browser) } });
    expect(await page.text()).toContain('action="/console/sign-in"');
  });

  it("sign-out clears the cookie and the session's calls are then refused", async () => {
    const { browser, csrf } = await signIn(account.key);
    const before = { ...Object.fromEntries(browser.jar) };
    const res = await send(`${ORIGIN}/console/sign-out`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN, cookie: cookieHeader(browser) },
      body: new URLSearchParams({ csrf }).toString(),
    });
    expect(res.status).toBe(303);
    const cleared = cookies(res).get("krafter_session");
    expect(cleared!.value).toBe("");
    expect(cleared!.attrs).toContain("max-age=0");
    keep(browser, res);
    expect(browser.jar.has("krafter_session")).toBe(false);
    await expectError(await consoleCall(browser, "GET", "/sources", { token: csrf }), 401, "unauthorized");
    // The cookie itself still decrypts until it expires: clearing it is what signs out.
    expect(before.krafter_session).toBeTruthy();
  });
});

describe("logs", () => {
  afterEach(() => vi.restoreAllMocks());

  it("no log line of a sign-in, the console's calls or a sign-out carries the key or the session cookie", async () => {
    const lines: string[] = [];
    for (const level of ["log", "info", "warn", "error", "debug"] as const) {
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(" ")));
    }
    const { browser, csrf } = await signIn(account.key);
    await consoleCall(browser, "POST", "/sources", { token: csrf, body: { name: "logged" } });
    await consoleCall(browser, "GET", "/sources", { token: csrf });
    await send(`${ORIGIN}/console/sign-out`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN, cookie: cookieHeader(browser) }, body: `csrf=${csrf}` });
    expect(lines.filter((l) => l.includes('"request"')).length).toBeGreaterThanOrEqual(4);
    const all = lines.join("\n");
    expect(all).not.toContain(account.key);
    expect(all).not.toContain(browser.jar.get("krafter_session") ?? "no session?");
    expect(all).not.toContain(csrf);
  });
});

describe("cross-site requests", () => {
  it("refuses a POST from another origin, a cross-site or same-site one, and one without the token: 403, nothing created", async () => {
    const { browser, csrf } = await signIn(account.key);
    const body = { name: "planted" };
    await expectError(await consoleCall(browser, "POST", "/sources", { token: csrf, body, headers: { origin: "https://evil.example", "sec-fetch-site": "cross-site" } }), 403, "forbidden");
    await expectError(await consoleCall(browser, "POST", "/sources", { token: csrf, body, headers: { origin: "https://evil.example" } }), 403, "forbidden");
    await expectError(await consoleCall(browser, "POST", "/sources", { token: csrf, body, headers: { "sec-fetch-site": "cross-site" } }), 403, "forbidden");
    await expectError(await consoleCall(browser, "POST", "/sources", { token: csrf, body, headers: { "sec-fetch-site": "same-site" } }), 403, "forbidden");
    await expectError(await consoleCall(browser, "POST", "/sources", { token: null, body }), 403, "forbidden");
    await expectError(await consoleCall(browser, "POST", "/sources", { token: "not-the-token", body }), 403, "forbidden");
    expect(await sourceCount(account)).toBe(0);
    // The same request, from the console itself, goes through.
    expect((await consoleCall(browser, "POST", "/sources", { token: csrf, body })).status).toBe(201);
    expect(await sourceCount(account)).toBe(1);
  });

  it("refuses a cross-site PATCH of a destination: still enabled", async () => {
    const sourceId = (await createSource(account)).id;
    const dest = await createDestination(account, sourceId, { url: (await mailbox()).url });
    const { browser, csrf } = await signIn(account.key);
    const path = `/sources/${sourceId}/destinations/${dest.id}`;
    await expectError(await consoleCall(browser, "PATCH", path, { token: csrf, body: { enabled: false }, headers: { origin: "https://evil.example" } }), 403, "forbidden");
    await expectError(await consoleCall(browser, "PATCH", path, { body: { enabled: false } }), 403, "forbidden");
    expect(await destinationRow(dest.id)).toMatchObject({ enabled: 1 });
  });

  it("refuses every state-changing console route from another origin and without a token", async () => {
    const sourceId = (await createSource(account)).id;
    const dest = await createDestination(account, sourceId, { url: (await mailbox()).url });
    const eventId = await insertEvent(sourceId);
    const { browser, csrf } = await signIn(account.key);
    const routes = consoleRoutes(() => new Response(null)).routes.filter((r) => r.method !== "GET" && r.method !== "ALL");
    expect(routes.map((r) => `${r.method} ${r.path}`).sort()).toEqual(
      [
        "DELETE /api/sources/:source_id/destinations/:id",
        "PATCH /api/sources/:source_id/destinations/:id",
        "POST /api/sources",
        "POST /api/sources/:source_id/destinations",
        "POST /api/sources/:source_id/destinations/:id/replay",
        "POST /api/sources/:source_id/destinations/:id/test",
        "POST /api/sources/:source_id/events/:event_id/redeliver",
        "POST /sign-in",
        "POST /sign-out",
      ].sort(),
    );
    const box = await mailbox();
    for (const r of routes) {
      const path = "/console" + r.path.replace(":source_id", sourceId).replace(":id", dest.id).replace(":event_id", eventId);
      const asForm = { "content-type": "application/x-www-form-urlencoded", cookie: cookieHeader(browser) };
      // A form posted by a page elsewhere (the browser names its origin).
      const form = await send(`${ORIGIN}${path}`, { method: r.method, headers: { ...asForm, origin: "https://evil.example", "sec-fetch-site": "cross-site" }, body: `csrf=${csrf}&key=${account.key}&name=x` });
      await expectError(form, 403, "forbidden");
      // A fetch from another origin that knows the token even.
      const fetched = await send(`${ORIGIN}${path}`, { method: r.method, headers: { cookie: cookieHeader(browser), origin: box.url.replace(/\/r\/.*/, ""), "sec-fetch-site": "same-site", "x-csrf-token": csrf, "content-type": "application/json" }, body: "{}" });
      await expectError(fetched, 403, "forbidden");
      // Same origin, no token.
      if (r.path.startsWith("/api/")) await expectError(await send(`${ORIGIN}${path}`, { method: r.method, headers: { cookie: cookieHeader(browser), origin: ORIGIN, "content-type": "application/json" }, body: "{}" }), 403, "forbidden");
    }
    // Nothing changed: the destination is there and enabled, nothing was sent, no second source.
    expect(await destinationRow(dest.id)).toMatchObject({ enabled: 1 });
    expect(await sourceCount(account)).toBe(1);
    expect(await box.requests()).toEqual([]);
    // And the session survived the forged sign-out.
    expect((await consoleCall(browser, "GET", "/sources", { token: csrf })).status).toBe(200);
  });

  it("refuses a sign-in form posted from elsewhere", async () => {
    const { browser, csrf } = await openSignIn();
    const res = await send(`${ORIGIN}/console/sign-in`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: "https://evil.example", cookie: cookieHeader(browser) },
      body: new URLSearchParams({ key: account.key, csrf }).toString(),
    });
    await expectError(res, 403, "forbidden");
    expect(cookies(res).has("krafter_session")).toBe(false);
  });
});

describe("a read-only key", () => {
  it("sees the console without change rights, and the API refuses its changes", async () => {
    const sourceId = (await createSource(account)).id;
    const dest = await createDestination(account, sourceId, { url: (await mailbox()).url });
    const { key } = await addKey(account.id, ["webhooks:read"]);
    const { browser, csrf } = await signIn(key);
    const page = await (await send(`${ORIGIN}/console`, { headers: { cookie: cookieHeader(browser) } })).text();
    expect(page).toContain('data-can-write="false"');
    expect(page).toContain("read only");
    expect((await consoleCall(browser, "GET", `/sources/${sourceId}/destinations`, { token: csrf })).status).toBe(200);
    const refused = await expectError(await consoleCall(browser, "POST", "/sources", { token: csrf, body: { name: "nope" } }), 403, "forbidden");
    expect(refused.error.message).toContain("webhooks:write");
    await expectError(await consoleCall(browser, "PATCH", `/sources/${sourceId}/destinations/${dest.id}`, { token: csrf, body: { enabled: false } }), 403, "forbidden");
    await expectError(await consoleCall(browser, "DELETE", `/sources/${sourceId}/destinations/${dest.id}`, { token: csrf }), 403, "forbidden");
    expect(await sourceCount(account)).toBe(1);
    expect(await destinationRow(dest.id)).toMatchObject({ enabled: 1 });
  });
});

describe("headers", () => {
  it("every console response has the strict CSP and nosniff, and the shell has no inline script or style", async () => {
    const { browser, csrf } = await signIn(account.key);
    const responses = [
      await send(`${ORIGIN}/console`),
      await send(`${ORIGIN}/console`, { headers: { cookie: cookieHeader(browser) } }),
      await send(`${ORIGIN}/console/console.js`),
      await send(`${ORIGIN}/console/console.css`),
      await consoleCall(browser, "GET", "/sources", { token: csrf }),
      await consoleCall(browser, "POST", "/sources", { token: null, body: {} }),
      await send(`${ORIGIN}/console/no-such-page`),
      await consoleCall(browser, "GET", "/no-such-route", { token: csrf }),
    ];
    expect(responses.slice(-2).map((r) => r.status)).toEqual([404, 404]);
    for (const res of responses) {
      expect(res.headers.get("content-security-policy")).toBe(CONSOLE_CSP);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    }
    expect(CONSOLE_CSP).toContain("script-src 'self';");
    expect(CONSOLE_CSP).not.toMatch(/unsafe-(inline|eval)/);
    for (const d of ["default-src 'self'", "style-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"]) expect(CONSOLE_CSP).toContain(d);
    expect(responses[2]!.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(responses[3]!.headers.get("content-type")).toMatch(/^text\/css/);
    for (const res of responses.slice(0, 2)) {
      const html = await res.text();
      expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
      expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);
    }
    const js = await responses[2]!.text();
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/);
  });
});

describe("the 24-hour counts", () => {
  it("counts each attempt as it ends, succeeded or failed, in the current hour, served by the stats route", async () => {
    const sourceId = (await createSource(account)).id;
    const box = await mailbox({ script: [{ status: 200 }, { status: 500, body: "down" }, { status: 200 }] });
    const dest = await createDestination(account, sourceId, { url: box.url, event_filter: [] });
    const other = await createDestination(account, sourceId, { url: (await mailbox()).url });
    const events = [await insertEvent(sourceId), await insertEvent(sourceId), await insertEvent(sourceId)];
    for (const eventId of events) await runQueue("krafter-deliver", [await insertDelivery(eventId, dest.id)]);
    expect((await box.requests()).map((r) => r.answered)).toEqual([200, 500, 200]);

    const res = await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}/stats`, { key: account.key });
    expect(res.status).toBe(200);
    const { data } = await json(res);
    expect(data.destination_id).toBe(dest.id);
    expect(data.hours).toHaveLength(24);
    const hour = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000).toISOString().replace(".000Z", "Z");
    expect(data.hours.at(-1)).toEqual({ hour, succeeded: 2, failed: 1 });
    expect(data.hours.slice(0, -1).every((h: { succeeded: number; failed: number }) => h.succeeded === 0 && h.failed === 0)).toBe(true);
    expect({ succeeded: data.succeeded, failed: data.failed }).toEqual({ succeeded: 2, failed: 1 });
    // Another destination's counts are its own.
    const quiet = await json(await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${other.id}/stats`, { key: account.key }));
    expect({ succeeded: quiet.data.succeeded, failed: quiet.data.failed }).toEqual({ succeeded: 0, failed: 0 });

    // The console reads the same through its proxy.
    const { browser, csrf } = await signIn(account.key);
    const viaConsole = await json(await consoleCall(browser, "GET", `/sources/${sourceId}/destinations/${dest.id}/stats`, { token: csrf }));
    expect(viaConsole.data.hours.at(-1)).toEqual({ hour, succeeded: 2, failed: 1 });

    // The timeline of one event: its attempts only.
    const timeline = await json(await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}/attempts?event_id=${events[1]}`, { key: account.key }));
    expect(timeline.data.map((a: { event_id: string; status_code: number; response_body: string }) => [a.event_id, a.status_code, a.response_body])).toEqual([[events[1], 500, "down"]]);
    await expectError(await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}/attempts?event_id=nope`, { key: account.key }), 422, "validation_failed");
  });

  it("keeps hours apart, counts no cancelled delivery, fills empty hours with zeros and drops rows past 48 hours", async () => {
    const id = crypto.randomUUID();
    const stub = env.DESTINATION_HEALTH.get(env.DESTINATION_HEALTH.idFromName(id));
    const t0 = Date.UTC(2026, 11, 1, 0, 30);
    await runInDurableObject(stub, async (instance: DestinationHealth, state) => {
      const at = async (ms: number, ends: ("succeeded" | "failed" | "answered" | "none")[]) => {
        instance.now = () => ms;
        await instance.release(id, ends.map((end, i) => ({ deliveryId: `d${ms}-${i}`, end, durationMs: 5 })));
      };
      await at(t0, ["succeeded", "failed", "none"]);
      await at(t0 + 10 * 60_000, ["answered", "succeeded"]);
      await at(t0 + 2 * HOUR_MS, ["failed"]);
      instance.now = () => t0 + 2 * HOUR_MS;
      const hours = await instance.hourlyCounts();
      expect(hours).toHaveLength(24);
      expect(hours.at(-1)).toEqual({ hour: t0 - 30 * 60_000 + 2 * HOUR_MS, succeeded: 0, failed: 1 });
      expect(hours.at(-2)).toEqual({ hour: t0 - 30 * 60_000 + HOUR_MS, succeeded: 0, failed: 0 });
      expect(hours.at(-3)).toEqual({ hour: t0 - 30 * 60_000, succeeded: 2, failed: 2 });
      // A day later the first hour is out of the chart; past KEEP_HOURS it is out of storage too.
      await at(t0 + (KEEP_HOURS + 1) * HOUR_MS, ["succeeded"]);
      const rows = state.storage.sql.exec<{ hour: number }>("SELECT hour FROM attempt_counts ORDER BY hour").toArray().map((r) => r.hour);
      expect(rows).toEqual([t0 - 30 * 60_000 + 2 * HOUR_MS, t0 - 30 * 60_000 + (KEEP_HOURS + 1) * HOUR_MS]);
      expect((await instance.hourlyCounts()).reduce((n, h) => n + h.succeeded + h.failed, 0)).toBe(1);
    });
  });

  it("is 404 for another account's destination and needs webhooks:read", async () => {
    const sourceId = (await createSource(account)).id;
    const dest = await createDestination(account, sourceId, { url: (await mailbox()).url });
    const stranger = await createAccount();
    await expectError(await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}/stats`, { key: stranger.key }), 404, "not_found");
    await expectError(await call("GET", `/api/v1/webhooks/sources/${sourceId}/destinations/${dest.id}/stats`), 401, "unauthorized");
  });
});
