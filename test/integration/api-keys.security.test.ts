/**
 * API keys and accounts, beyond what the security matrix (security-matrix.test.ts) checks
 * route by route: a used key's last_used_at, one account's lists never showing another's
 * sources (with many of them, and through a cursor from the other's list), and no error
 * echoing the key it refused.
 */
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { apiKeys } from "../../src/db/schema";
import { addKey, clientFor, createAccount, createSource, db, type Account } from "../helpers/api";

const sourcesOf = (a: Pick<Account, "key">) => clientFor(a).api.v1.webhooks.sources;

describe("Keys and accounts", () => {
  it("last_used_at is recorded for a key that is used", async () => {
    const a = await createAccount();
    expect((await sourcesOf(a).$get({ query: {} })).status).toBe(200);
    const k = await db().select({ lastUsedAt: apiKeys.lastUsedAt }).from(apiKeys).where(eq(apiKeys.id, a.keyId)).get();
    expect(k!.lastUsedAt).toEqual(expect.any(Number));
  });

  it("a key of one account never lists another's sources, even with many", async () => {
    const a = await createAccount();
    const b = await createAccount();
    const mine: string[] = [];
    for (let i = 0; i < 3; i++) mine.push((await createSource(a, { name: `a${i}` })).id);
    for (let i = 0; i < 3; i++) await createSource(b, { name: `b${i}` });
    const list = await (await sourcesOf(a).$get({ query: { limit: "100" } })).json();
    expect(list.data.map((s) => s.id).sort()).toEqual(mine.sort());
  });

  it("a cursor from another account's list reveals nothing of theirs", async () => {
    const a = await createAccount();
    const b = await createAccount();
    for (let i = 0; i < 3; i++) await createSource(b, { name: `b${i}` });
    const theirs = await (await sourcesOf(b).$get({ query: { limit: "1" } })).json();
    expect(theirs.next_cursor).toEqual(expect.any(String));
    const res = await sourcesOf(a).$get({ query: { limit: "100", cursor: theirs.next_cursor! } });
    expect(res.status).toBe(200);
    expect((await res.json()).data).toEqual([]);
  });

  it("an error response never echoes the key", async () => {
    const a = await createAccount();
    const k = await addKey(a.id, ["webhooks:read"]);
    const res = await sourcesOf(k).$post({ json: { name: "x" } });
    const text = await res.text();
    expect(res.status).toBe(403);
    expect(text).not.toContain(k.key);
    expect(text).not.toContain(k.key.slice(4));
  });
});
