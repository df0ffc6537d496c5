/**
 * `/console`: the web UI for the people who run the relay (PRODUCT.md, The console).
 *
 *   GET  /console              the sign-in form, or the console for a live session
 *   GET  /console/console.js   the page's one script (src/console/browser, bundled)
 *   GET  /console/console.css  its one stylesheet
 *   POST /console/sign-in      key in a form field → session cookie, 303 to /console
 *   POST /console/sign-out     clears it
 *   *    /console/api/…        the page's calls: the session's key as Bearer, through the
 *                              typed client (src/client.ts) into the public API itself
 *
 * The console has no powers of its own: every read and change is an API request made
 * with the operator's key, so a read-only key is refused by the API whatever the page
 * shows. Every response carries a strict CSP (no inline script or style, nothing but
 * this origin) and nosniff; every state change passes csrf.ts.
 */
import { Hono, type Context } from "hono";
import { krafterClient } from "../client";
import type { Env } from "../config";
import { KrafterError, NotFoundError } from "../errors";
import type { Services } from "../services";
import { CSRF_HEADER, crossOrigin, refused, tokenMatches } from "./csrf";
import { consolePage, signInPage } from "./pages";
import script from "./script";
import { CONSOLE_CSS } from "./styles";
import { clearSignInToken, endSession, readSession, SIGN_IN_COOKIE, signInToken, startSession, verifyKey, type Session } from "./session";
import { getCookie } from "hono/cookie";

export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "frame-ancestors 'none'",
  "form-action 'self'",
  "base-uri 'none'",
].join("; ");

/**
 * What the console needs of the app it is mounted in: the bindings, and the services
 * its middleware sets. Its refusals are thrown as domain errors (src/errors.ts), which
 * the app's error handler puts in the API's envelope, as for every other route.
 */
type ConsoleEnv = { Bindings: Env; Variables: { services: Services } };

/** How the console reaches the API: the app's own fetch, in the same invocation (no network hop). */
type AppFetch = (request: Request, from: C) => Response | Promise<Response>;

type C = Context<ConsoleEnv>;
/** What the typed client's calls answer, as far as relaying goes. */
type Answer = { status: number; headers: Headers; arrayBuffer(): Promise<ArrayBuffer> };

/** The typed client with the session's key, whose requests go straight into the app. */
function apiFor(c: C, session: Session, appFetch: AppFetch) {
  const fetcher = ((input: RequestInfo | URL, init?: RequestInit) => appFetch(new Request(input, init), c)) as typeof fetch;
  return krafterClient(new URL(c.req.url).origin, session.key, { fetch: fetcher });
}

/** The API's answer, passed on as it is: status, body, and the headers a page may need. */
async function relay(res: Answer): Promise<Response> {
  const headers = new Headers({ "cache-control": "no-store" });
  for (const h of ["content-type", "retry-after", "x-request-id"]) {
    const v = res.headers.get(h);
    if (v !== null) headers.set(h, v);
  }
  return new Response(res.status === 204 ? null : await res.arrayBuffer(), { status: res.status, headers });
}

async function jsonBody(c: C): Promise<unknown> {
  const text = await c.req.text();
  if (text === "") return {};
  return JSON.parse(text) as unknown;
}

type Api = ReturnType<typeof apiFor>;
type Call = (api: Api, c: C) => Promise<Answer>;

export function consoleRoutes(appFetch: AppFetch) {
  const routes = new Hono<ConsoleEnv>();

  routes.use(async (c, next) => {
    await next();
    c.header("content-security-policy", CONSOLE_CSP);
    c.header("x-content-type-options", "nosniff");
    // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on form posts, which the CSRF check refuses.
    c.header("referrer-policy", "same-origin");
    c.header("x-frame-options", "DENY");
    c.header("cross-origin-opener-policy", "same-origin");
    if (!c.res.headers.has("cache-control")) c.header("cache-control", "no-store");
  });

  routes.get("/", async (c) => {
    const s = c.var.services;
    const session = await readSession(c, s);
    const signed = session ? await verifyKey(s, session.key) : null;
    if (!session || !signed) {
      if (session) endSession(c);
      return c.html(signInPage({ csrf: signInToken(c) }), 200);
    }
    return c.html(consolePage({ csrf: session.csrf, accountName: signed.accountName, keyPrefix: signed.keyPrefix, canWrite: signed.scopes.has("webhooks:write") }), 200);
  });

  routes.get("/console.js", (c) => c.body(script, 200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-cache" }));
  routes.get("/console.css", (c) => c.body(CONSOLE_CSS, 200, { "content-type": "text/css; charset=utf-8", "cache-control": "no-cache" }));

  routes.post("/sign-in", async (c) => {
    const why = crossOrigin(c, true);
    if (why) throw refused(why);
    const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
    const csrf = typeof form.csrf === "string" ? form.csrf : undefined;
    if (!tokenMatches(csrf, getCookie(c, SIGN_IN_COOKIE))) throw refused("no valid sign-in token: reload the page");
    const key = typeof form.key === "string" ? form.key.trim() : "";
    const s = c.var.services;
    const signed = await verifyKey(s, key);
    if (!signed) {
      // The key typed is not put back into the page.
      return c.html(signInPage({ csrf: signInToken(c), error: "Invalid API key: unknown, revoked or mistyped." }), 401);
    }
    await startSession(c, s, key);
    clearSignInToken(c);
    return c.redirect("/console", 303);
  });

  routes.post("/sign-out", async (c) => {
    const why = crossOrigin(c, true);
    if (why) throw refused(why);
    const session = await readSession(c, c.var.services);
    const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
    const csrf = typeof form.csrf === "string" ? form.csrf : c.req.header(CSRF_HEADER);
    if (session && !tokenMatches(csrf, session.csrf)) throw refused("no valid token");
    endSession(c);
    return c.redirect("/console", 303);
  });

  /** Every /console/api call: same origin, the session, its token; then the API itself answers. */
  const api = (write: boolean, call: Call) => async (c: C) => {
    const why = crossOrigin(c, write);
    if (why) throw refused(why);
    const session = await readSession(c, c.var.services);
    if (!tokenMatches(c.req.header(CSRF_HEADER), session?.csrf)) {
      // Without a session there is no token to match: a stale page signs in again.
      if (!session) throw new KrafterError("unauthorized", "Not signed in to the console.");
      throw refused("no valid token");
    }
    try {
      return await relay(await call(apiFor(c, session!, appFetch), c));
    } catch (err) {
      if (err instanceof SyntaxError) throw new KrafterError("invalid_json", "The request body is not valid JSON.");
      throw err;
    }
  };
  const p = (c: C, name: string) => c.req.param(name) ?? "";
  const query = (c: C) => c.req.query() as never;
  const body = async (c: C) => (await jsonBody(c)) as never;
  const sources = (a: Api) => a.api.v1.webhooks.sources;
  const source = (a: Api) => sources(a)[":source_id"];
  const destination = (a: Api) => source(a).destinations[":id"];

  routes.get("/api/sources", api(false, (a, c) => sources(a).$get({ query: query(c) })));
  routes.post("/api/sources", api(true, async (a, c) => sources(a).$post({ json: await body(c) })));
  routes.get("/api/sources/:source_id/destinations", api(false, (a, c) => source(a).destinations.$get({ param: { source_id: p(c, "source_id") }, query: query(c) })));
  routes.post("/api/sources/:source_id/destinations", api(true, async (a, c) => source(a).destinations.$post({ param: { source_id: p(c, "source_id") }, json: await body(c) })));
  const dparam = (c: C) => ({ source_id: p(c, "source_id"), id: p(c, "id") });
  routes.patch("/api/sources/:source_id/destinations/:id", api(true, async (a, c) => destination(a).$patch({ param: dparam(c), json: await body(c) })));
  routes.delete("/api/sources/:source_id/destinations/:id", api(true, (a, c) => destination(a).$delete({ param: dparam(c) })));
  routes.post("/api/sources/:source_id/destinations/:id/test", api(true, (a, c) => destination(a).test.$post({ param: dparam(c) })));
  routes.post("/api/sources/:source_id/destinations/:id/replay", api(true, async (a, c) => destination(a).replay.$post({ param: dparam(c), json: await body(c) })));
  routes.get("/api/sources/:source_id/destinations/:id/attempts", api(false, (a, c) => destination(a).attempts.$get({ param: dparam(c), query: query(c) })));
  routes.get("/api/sources/:source_id/destinations/:id/stats", api(false, (a, c) => destination(a).stats.$get({ param: dparam(c) })));
  routes.get("/api/sources/:source_id/events", api(false, (a, c) => source(a).events.$get({ param: { source_id: p(c, "source_id") }, query: query(c) })));
  const eparam = (c: C) => ({ source_id: p(c, "source_id"), event_id: p(c, "event_id") });
  routes.get("/api/sources/:source_id/events/:event_id", api(false, (a, c) => source(a).events[":event_id"].$get({ param: eparam(c) })));
  routes.post("/api/sources/:source_id/events/:event_id/redeliver", api(true, async (a, c) => source(a).events[":event_id"].redeliver.$post({ param: eparam(c), json: await body(c) })));
  routes.all("/api/*", () => {
    throw new NotFoundError("console route");
  });

  return routes;
}
