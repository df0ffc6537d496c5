/**
 * The API-key cases every guarded route must pass, shared by the sources and the
 * destinations security suites: no key, malformed keys and a revoked key → 401; a
 * read-only key → 403 naming webhooks:write on a write route, success on a read route.
 * Every refusal leaves the caller's world exactly as it was (`expectUnharmed`).
 */
import { env } from "cloudflare:workers";
import { expect, it } from "vitest";
import { addKey, call, expectError, type Account } from "./api";

export interface GuardedRoute<W> {
  name: string;
  scope: "webhooks:read" | "webhooks:write";
  method: string;
  path: (w: W) => string;
  body?: unknown;
  /** The status the route answers with the right key. */
  ok: number;
}

/** Calls the route as `key` (null: no authorization header), with extra headers. */
export const sendAs = <W>(r: GuardedRoute<W>, w: W, key: string | null, headers?: Record<string, string>) =>
  call(r.method, r.path(w), { key, ...(r.body !== undefined ? { body: r.body } : {}), ...(headers ? { headers } : {}) });

/** Authorization headers that must all be refused as no key at all. */
function malformed(key: string): Record<string, string>[] {
  return [
    ...[
      "Bearer",
      "Bearer ",
      "Bearer krf_",
      "Bearer krf_tooshort",
      `Bearer ${key.toUpperCase()}`,
      `Bearer ${key}=`,
      `Bearer ${key}x`,
      `Bearer ${key.slice(0, -1)}`,
      `Bearer ${key} ${key}`,
      `Bearer sk_live_${key.slice(4)}`,
      `Bearer ${key.replace("krf_", "KRF_")}`,
      `Bearer ${"krf_" + "-".repeat(43)}`,
      `Bearer krf_${"A".repeat(43)}`, // well-formed, unknown
      `Token ${key}`,
      `Basic ${btoa(`${key}:`)}`,
      `Basic ${btoa("user:pass")}`,
      key, // no scheme
    ].map((authorization) => ({ authorization })),
    { "x-api-key": key },
  ];
}

export function keyCases<W extends { owner: Account }>(
  r: GuardedRoute<W>,
  o: {
    world: () => Promise<W>;
    /** What `expectUnharmed` compares against (the guarded row). */
    snapshot: (w: W) => Promise<Record<string, unknown> | null>;
    expectUnharmed: (w: W, before: Record<string, unknown> | null) => Promise<void>;
  },
): void {
  it("no key → 401, nothing changed", async () => {
    const w = await o.world();
    const before = await o.snapshot(w);
    const body = await expectError(await sendAs(r, w, null), 401, "unauthorized");
    expect(body.error.message).toMatch(/Bearer/);
    await o.expectUnharmed(w, before);
  });

  it("malformed keys → 401, nothing changed", async () => {
    const w = await o.world();
    const before = await o.snapshot(w);
    for (const headers of malformed(w.owner.key)) await expectError(await sendAs(r, w, null, headers), 401, "unauthorized");
    await o.expectUnharmed(w, before);
  });

  it("revoked key → 401 (as an unknown key), nothing changed", async () => {
    const w = await o.world();
    const k = await addKey(w.owner.id, ["webhooks:read", "webhooks:write"]);
    expect((await call("GET", "/api/v1/webhooks/sources", { key: k.key })).status).toBe(200); // works before
    await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?").bind(Date.now(), k.keyId).run();
    const before = await o.snapshot(w);
    const body = await expectError(await sendAs(r, w, k.key), 401, "unauthorized");
    expect(body.error.message).not.toMatch(/revoked/i); // the same as an unknown key
    await o.expectUnharmed(w, before);
  });

  if (r.scope === "webhooks:write") {
    it("read-only key → 403 naming webhooks:write, nothing changed", async () => {
      const w = await o.world();
      const reader = await addKey(w.owner.id, ["webhooks:read"]);
      const before = await o.snapshot(w);
      const body = await expectError(await sendAs(r, w, reader.key), 403, "forbidden");
      expect(body.error.message).toContain("webhooks:write");
      await o.expectUnharmed(w, before);
    });
  } else {
    it("read-only key → success", async () => {
      const w = await o.world();
      const reader = await addKey(w.owner.id, ["webhooks:read"]);
      expect((await sendAs(r, w, reader.key)).status).toBe(r.ok);
    });
  }
}
