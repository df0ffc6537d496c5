/**
 * Sources: who may do what, on every route. No key, a malformed key, a revoked key → 401;
 * a read-only key on a write route → 403 naming webhooks:write; another account → 404
 * (never revealing existence) with the source unharmed; the right key → success.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { addKey, call, createAccount, createSource, json, expectError } from "../helpers/api";
import { keyCases, sendAs, type GuardedRoute } from "../helpers/key-cases";

const SOURCES = "/api/v1/webhooks/sources";



async function row(id: string) {
  return env.DB.prepare("SELECT * FROM sources WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

async function countOf(accountId: string) {
  return (await env.DB.prepare("SELECT count(*) AS n FROM sources WHERE account_id = ?").bind(accountId).first<{ n: number }>())!.n;
}

async function world() {
  const owner = await createAccount();
  const source = await createSource(owner, { name: "mine", provider: "stripe", signing_secret: "whsec_owner_secret_0123456789ab" });
  // A destination under it, to show a refused DELETE cascades nothing.
  const dest = await call("POST", `${SOURCES}/${source.id}/destinations`, { key: owner.key, body: { url: "https://example.com/h" } });
  expect(dest.status).toBe(201);
  return { owner, source };
}

type World = Awaited<ReturnType<typeof world>>;

interface Route extends GuardedRoute<World> {
  hasId: boolean;
}

const routes: Route[] = [
  { name: "POST /sources", scope: "webhooks:write", method: "POST", path: () => SOURCES, body: { name: "new" }, ok: 201, hasId: false },
  { name: "GET /sources", scope: "webhooks:read", method: "GET", path: () => SOURCES, ok: 200, hasId: false },
  { name: "GET /sources/:id", scope: "webhooks:read", method: "GET", path: (w) => `${SOURCES}/${w.source.id}`, ok: 200, hasId: true },
  { name: "PATCH /sources/:id", scope: "webhooks:write", method: "PATCH", path: (w) => `${SOURCES}/${w.source.id}`, body: { name: "taken", signing_secret: null }, ok: 200, hasId: true },
  { name: "DELETE /sources/:id", scope: "webhooks:write", method: "DELETE", path: (w) => `${SOURCES}/${w.source.id}`, ok: 204, hasId: true },
];

const send = sendAs<World>;

/** The owner's source and what hangs under it are exactly as they were. */
async function expectUnharmed(w: World, before: Record<string, unknown> | null) {
  expect(await row(w.source.id)).toStrictEqual(before);
  expect(await countOf(w.owner.id)).toBe(1);
  const dests = await env.DB.prepare("SELECT count(*) AS n FROM destinations WHERE source_id = ?").bind(w.source.id).first<{ n: number }>();
  expect(dests!.n).toBe(1);
}

for (const r of routes) {
  describe(`${r.name} (requires ${r.scope})`, () => {
    keyCases(r, { world, snapshot: (w) => row(w.source.id), expectUnharmed });

    if (r.hasId) {
      it("another account's key → 404, and the source unharmed", async () => {
        const w = await world();
        const stranger = await createAccount();
        const before = await row(w.source.id);
        await expectError(await send(r, w, stranger.key), 404, "not_found");
        await expectUnharmed(w, before);
        const mine = await json(await call("GET", `${SOURCES}/${w.source.id}`, { key: w.owner.key }));
        expect(mine.data).toMatchObject({ id: w.source.id, name: "mine", verifies_signatures: true });
      });

      it("another account's key gets the same 404 as an id that does not exist", async () => {
        const w = await world();
        const stranger = await createAccount();
        const theirs = await expectError(await send(r, w, stranger.key), 404, "not_found");
        const ghost: World = { ...w, source: { ...w.source, id: crypto.randomUUID() } };
        const none = await expectError(await send(r, ghost, w.owner.key), 404, "not_found");
        expect(theirs).toStrictEqual(none);
      });
    } else {
      it("another account's key sees and touches only its own", async () => {
        const w = await world();
        const stranger = await createAccount();
        const before = await row(w.source.id);
        const res = await send(r, w, stranger.key);
        expect(res.status).toBe(r.ok);
        const body = await json(res);
        expect(JSON.stringify(body)).not.toContain(w.source.id);
        if (r.method === "GET") expect(body.data).toEqual([]);
        else expect(await countOf(stranger.id)).toBe(1);
        await expectUnharmed(w, before);
      });
    }

    it("the right key → success", async () => {
      const w = await world();
      const res = await send(r, w, w.owner.key);
      expect(res.status).toBe(r.ok);
      expect(res.headers.get("x-request-id")).toBeTruthy();
      if (r.method === "DELETE") expect(await row(w.source.id)).toBeNull();
      if (r.method === "PATCH") expect(await row(w.source.id)).toMatchObject({ name: "taken", signing_secret_ct: null });
      if (r.method === "POST") expect(await countOf(w.owner.id)).toBe(2);
      if (r.method === "GET") expect(JSON.stringify(await json(res))).toContain(w.source.id);
    });
  });
}

describe("Keys and accounts", () => {
  it("last_used_at is recorded for a key that is used", async () => {
    const a = await createAccount();
    expect((await call("GET", SOURCES, { key: a.key })).status).toBe(200);
    const k = await env.DB.prepare("SELECT last_used_at FROM api_keys WHERE id = ?").bind(a.keyId).first<{ last_used_at: number | null }>();
    expect(k!.last_used_at).toEqual(expect.any(Number));
  });

  it("a key of one account never lists another's sources, even with many", async () => {
    const a = await createAccount();
    const b = await createAccount();
    const mine = [];
    for (let i = 0; i < 3; i++) mine.push((await createSource(a, { name: `a${i}` })).id);
    for (let i = 0; i < 3; i++) await createSource(b, { name: `b${i}` });
    const list = await json(await call("GET", `${SOURCES}?limit=100`, { key: a.key }));
    expect(list.data.map((s: any) => s.id).sort()).toEqual(mine.sort());
  });

  it("a cursor from another account's list reveals nothing of theirs", async () => {
    const a = await createAccount();
    const b = await createAccount();
    for (let i = 0; i < 3; i++) await createSource(b, { name: `b${i}` });
    const theirs = await json(await call("GET", `${SOURCES}?limit=1`, { key: b.key }));
    const res = await call("GET", `${SOURCES}?limit=100&cursor=${theirs.next_cursor}`, { key: a.key });
    expect(res.status).toBe(200);
    expect((await json(res)).data).toEqual([]);
  });

  it("an error response never echoes the key", async () => {
    const a = await createAccount();
    const k = await addKey(a.id, ["webhooks:read"]);
    const res = await call("POST", SOURCES, { key: k.key, body: { name: "x" } });
    const text = await res.text();
    expect(res.status).toBe(403);
    expect(text).not.toContain(k.key);
    expect(text).not.toContain(k.key.slice(4));
  });
});
