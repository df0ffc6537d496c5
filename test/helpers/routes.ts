/**
 * The API's routes, read from the app itself, so tests that walk "every route" cover a
 * new route the day it is added. Each gets its path filled with a fixture's real ids.
 */
import { uniqueSymbol } from "hono-openapi";
import { createApp } from "../../src/app";
import type { Account } from "./api";

export interface Route {
  method: string;
  path: string;
}

/** Routes anyone may call: no API key. Everything else under /api must require a scope. */
export const PUBLIC_ROUTES = new Set(["GET /api/v1/openapi.json"]);

/** The scope a route's requireScope() declares (it carries it for the OpenAPI document). */
function scopeOf(handler: unknown): string | undefined {
  return (handler as Record<symbol, { spec?: Record<string, unknown> } | undefined>)[uniqueSymbol]?.spec?.["x-required-scope"] as string | undefined;
}

/** Every API route (method + path pattern) once each, with the scope it requires. */
export function allApiRoutes(): (Route & { scope: string | undefined })[] {
  const byKey = new Map<string, Route & { scope: string | undefined }>();
  for (const r of createApp().routes) {
    if (r.method === "ALL" || !r.path.startsWith("/api/")) continue;
    const key = `${r.method} ${r.path}`;
    const entry = byKey.get(key) ?? { method: r.method, path: r.path, scope: undefined };
    entry.scope ??= scopeOf(r.handler);
    byKey.set(key, entry);
  }
  return [...byKey.values()];
}

/** Every authenticated API route, once each. */
export function apiRoutes(): Route[] {
  return allApiRoutes()
    .filter((r) => !PUBLIC_ROUTES.has(`${r.method} ${r.path}`))
    .map(({ method, path }) => ({ method, path }));
}

export interface Fixture {
  account: Account;
  sourceId: string;
  destinationId: string;
  eventId: string;
}

export function fill(path: string, f: Pick<Fixture, "sourceId" | "destinationId" | "eventId">, override: Partial<Record<string, string>> = {}): string {
  const params: Record<string, string> = { source_id: f.sourceId, id: f.destinationId, event_id: f.eventId, ...override };
  return path.replace(/:([a-z_]+)/g, (_, name: string) => {
    const v = params[name];
    if (v === undefined) throw new Error(`no fixture value for :${name} in ${path}: add one in test/helpers/routes.ts`);
    return encodeURIComponent(v);
  });
}

export const isWrite = (r: Route) => r.method !== "GET" && r.method !== "HEAD";

/** Routes that upgrade to a WebSocket: asked with `Upgrade: websocket`, they answer 101 when allowed. */
export const UPGRADE_ROUTES = new Set(["GET /api/v1/webhooks/sources/:source_id/listen"]);
export const isUpgrade = (r: Route) => UPGRADE_ROUTES.has(`${r.method} ${r.path}`);

/** A body each write route accepts, so "the right key" gets a success. */
export function validBody(r: Route): unknown {
  const key = `${r.method} ${r.path.replace("/api/v1/webhooks", "")}`;
  const bodies: Record<string, unknown> = {
    "POST /sources": { name: "matrix" },
    "PATCH /sources/:source_id": { name: "renamed" },
    "POST /sources/:source_id/destinations": { url: "https://hooks.example.com/matrix" },
    "PATCH /sources/:source_id/destinations/:id": { enabled: true },
    "POST /sources/:source_id/destinations/:id/replay": { since: "2020-01-01T00:00:00Z" },
    "POST /sources/:source_id/events/:event_id/redeliver": {},
  };
  return bodies[key];
}
