/**
 * The API's routes, read from the app itself, so tests that walk "every route" cover a
 * new route the day it is added. Each gets its path filled with a fixture's real ids.
 */
import { createApp } from "../../src/app";
import type { Account } from "./api";

export interface Route {
  method: string;
  path: string;
}

/** Every authenticated API route (method + path pattern), once each. */
export function apiRoutes(): Route[] {
  const seen = new Set<string>();
  const out: Route[] = [];
  for (const r of createApp().routes) {
    if (r.method === "ALL" || !r.path.startsWith("/api/")) continue;
    const key = `${r.method} ${r.path}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ method: r.method, path: r.path });
  }
  return out;
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
