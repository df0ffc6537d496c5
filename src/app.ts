/**
 * The Hono app: request id, structured request log, the services, every route, and the
 * not-found, wrong-method and error handlers that keep every failure in the envelope.
 * `createApp()` is used by the Worker and by tests alike.
 */
import { Hono } from "hono";
import { methodNotAllowed } from "hono/method-not-allowed";
import { requestId } from "hono/request-id";
import { ingestRoutes } from "./http/ingest";
import type { AppEnv } from "./http/context";
import { destinationRoutes } from "./http/destinations";
import { docsRoutes } from "./http/docs";
import { eventRoutes } from "./http/events";
import { listenRoutes } from "./http/listen";
import { recoveryRoutes } from "./http/recovery";
import { errorJson, onError } from "./http/errors";
import { log } from "./log";
import { meter } from "./meter";
import { cachedOpenApiDocument } from "./http/openapi";
import { sourceRoutes } from "./http/sources";
import { statsRoutes } from "./http/stats";
import { consoleRoutes } from "./console/routes";
import { servicesFor } from "./services";

export function createApp() {
  const app = new Hono<AppEnv>();

  // Ours, always: a client's X-Request-Id is never echoed as ours or trusted in a log; a
  // well-formed one is logged beside it, for the client's own correlation.
  app.use(requestId({ headerName: "", generator: () => crypto.randomUUID() }));
  app.use(async (c, next) => {
    const started = Date.now();
    c.header("x-request-id", c.var.requestId);
    await next();
    // The ingest key is a credential: never log it.
    const path = c.req.path.startsWith("/in/") ? "/in/:ingest_key" : c.req.path;
    const theirs = c.req.header("x-request-id");
    log("info", "request", {
      request_id: c.var.requestId,
      ...(theirs !== undefined && /^[A-Za-z0-9_-]{1,64}$/.test(theirs) ? { client_request_id: theirs } : {}),
      method: c.req.method,
      path,
      status: c.res.status,
      duration_ms: Date.now() - started,
      account_id: c.var.principal?.accountId,
    });
  });
  app.use(methodNotAllowed({
    app,
    onMethodNotAllowed: (c, methods) =>
      errorJson(c, "method_not_allowed", `Use ${methods.join(", ")} on this path.`, { Allow: methods.join(", ") }),
  }));
  app.use(async (c, next) => {
    // Fails closed: an unsafe configuration serves nothing but the error.
    c.set("services", servicesFor(c.env));
    if (c.var.services.config.meter && c.req.path !== "/__meter") meter.workerRequests++;
    await next();
  });

  app.get("/__meter", (c) => (c.var.services.config.meter ? c.json(meter) : errorJson(c, "not_found", "No such route.")));
  app.get("/api/v1/openapi.json", async (c) => c.json(await cachedOpenApiDocument(app, new URL(c.req.url).origin)));
  app.get("/", (c) =>
    c.json({ data: { name: "krafter", docs: "/docs", api: "/api/v1", environment: c.var.services.config.environment } }),
  );
  app.route("/docs", docsRoutes);
  // Chained, so the app's type carries every route for the typed client (src/client.ts).
  const routes = app
    .route("/api/v1/webhooks/sources", sourceRoutes)
    .route("/api/v1/webhooks/sources/:source_id/destinations", destinationRoutes)
    .route("/api/v1/webhooks/sources/:source_id/destinations", recoveryRoutes)
    .route("/api/v1/webhooks/sources/:source_id/destinations", statsRoutes)
    .route("/api/v1/webhooks/sources/:source_id/events", eventRoutes)
    .route("/api/v1/webhooks/sources/:source_id/listen", listenRoutes)
    .route("/in", ingestRoutes);
  // The console (src/console): its calls go into this same app, with the session's key.
  app.route("/console", consoleRoutes((request, from) => app.fetch(request, from.env, from.executionCtx)));

  app.notFound((c) => errorJson(c, "not_found", "No such route."));

  app.onError(onError);

  return routes;
}

export type App = ReturnType<typeof createApp>;
