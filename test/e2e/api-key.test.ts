/**
 * `npm run api-key`: the keys it creates work against a running relay, as the README
 * promises; list never shows a key or its hash; revoke takes effect; bad usage fails
 * loudly without printing a key.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runApiKey, startDev, type Dev } from "./harness";

const KEY_SHAPE = /^krf_[A-Za-z0-9_-]{43}$/;

let dev: Dev;

beforeAll(async () => {
  dev = await startDev();
});

afterAll(async () => {
  await dev?.stop();
});

function api(path: string, key: string, init: { method?: string; body?: unknown } = {}) {
  return fetch(`${dev.origin}/api/v1${path}`, {
    method: init.method ?? "GET",
    headers: {
      authorization: `Bearer ${key}`,
      ...(init.body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
}

const lastLine = (s: string) => s.trimEnd().split("\n").at(-1) ?? "";

/** The id column of the `list` row for the key with this prefix. */
function idOfKey(listOutput: string, key: string): string {
  const row = listOutput.split("\n").find((line) => line.includes(key.slice(0, 12)));
  const id = row?.trim().split(/\s+/)[0];
  if (!id) throw new Error(`no row for ${key.slice(0, 12)} in:\n${listOutput}`);
  return id;
}

describe("api-key create", () => {
  it("prints the key alone on the last line of stdout, and the key works", async () => {
    const r = await runApiKey(["create", "--account", "acme", "--scopes", "webhooks:read,webhooks:write"], dev.persistTo);
    expect(r.code, r.stderr).toBe(0);
    const key = lastLine(r.stdout);
    expect(key).toMatch(KEY_SHAPE);
    // Nothing but the key on stdout: the human text goes to stderr.
    expect(r.stdout).toBe(`${key}\n`);

    const created = await api("/webhooks/sources", key, { method: "POST", body: { name: "x" } });
    expect(created.status).toBe(201);
    const source = ((await created.json()) as { data: { id: string; name: string } }).data;
    expect(source.name).toBe("x");

    const listed = await api("/webhooks/sources", key);
    expect(listed.status).toBe(200);
    const list = (await listed.json()) as { data: { id: string }[]; next_cursor: string | null };
    expect(list.data.map((s) => s.id)).toContain(source.id);
  });

  it("a read-only key can read but not write", async () => {
    const key = await dev.apiKey("webhooks:read", "reader");
    const post = await api("/webhooks/sources", key, { method: "POST", body: { name: "x" } });
    expect(post.status).toBe(403);
    const body = (await post.json()) as { error: { code: string; message: string } };
    expect(body.error.message).toContain("webhooks:write");

    const get = await api("/webhooks/sources", key);
    expect(get.status).toBe(200);
    // A new account sees none of acme's sources.
    expect(((await get.json()) as { data: unknown[] }).data).toEqual([]);
  });

  it("two keys of one account see the same sources", async () => {
    const writer = await dev.apiKey("webhooks:write", "shared");
    const reader = await dev.apiKey("webhooks:read", "shared");
    const created = await api("/webhooks/sources", writer, { method: "POST", body: { name: "shared" } });
    expect(created.status).toBe(201);
    const { id } = ((await created.json()) as { data: { id: string } }).data;
    const get = await api(`/webhooks/sources/${id}`, reader);
    expect(get.status).toBe(200);
  });
});

describe("api-key list and revoke", () => {
  it("list shows the key's prefix, never the key or its hash", async () => {
    const key = await dev.apiKey("webhooks:read,webhooks:write", "lister");
    expect((await api("/webhooks/sources", key)).status).toBe(200); // sets last_used_at
    const r = await runApiKey(["list"], dev.persistTo);
    expect(r.code, r.stderr).toBe(0);
    const hash = createHash("sha256").update(key).digest("hex");
    expect(r.stdout).toContain(key.slice(0, 12));
    expect(r.stdout).not.toContain(key);
    expect(r.stdout).not.toContain(hash);
    expect(r.stderr).not.toContain(hash);
    const row = r.stdout.split("\n").find((l) => l.includes(key.slice(0, 12)))!;
    expect(row).toContain("lister");
    expect(row).toContain("webhooks:read,webhooks:write");
    // Created and last used are shown; not revoked.
    expect(row.match(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/g)).toHaveLength(2);
    expect(row.trimEnd().endsWith("-")).toBe(true);

    // --account narrows it down.
    const only = await runApiKey(["list", "--account", "lister"], dev.persistTo);
    expect(only.code).toBe(0);
    expect(only.stdout).toContain(key.slice(0, 12));
    expect(only.stdout).not.toContain("acme");
  });

  it("revoke ID makes the key fail with 401; revoking again fails", async () => {
    const created = await runApiKey(["create", "--account", "revoker", "--scopes", "webhooks:read"], dev.persistTo);
    expect(created.code, created.stderr).toBe(0);
    const key = lastLine(created.stdout);
    // Written by another process (wrangler d1 execute): on a loaded machine the relay's next
    // read may come a moment later. What this test checks is the revoke.
    const deadline = Date.now() + 10_000;
    let first = await api("/webhooks/sources", key);
    while (first.status === 401 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      first = await api("/webhooks/sources", key);
    }
    expect(first.status).toBe(200);
    // create names the key's id on stderr; list shows the same id.
    const id = /Created API key ([0-9a-f-]{36})/.exec(created.stderr)?.[1];
    expect(id).toBeDefined();
    expect(idOfKey((await runApiKey(["list", "--account", "revoker"], dev.persistTo)).stdout, key)).toBe(id);

    const revoked = await runApiKey(["revoke", id!], dev.persistTo);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toMatch(/revoked/i);

    const after = await api("/webhooks/sources", key);
    expect(after.status).toBe(401);
    expect(((await after.json()) as { error: { code: string } }).error.code).toBe("unauthorized");

    const again = await runApiKey(["revoke", id!], dev.persistTo);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already revoked/i);

    const unknown = await runApiKey(["revoke", "01900000-0000-7000-8000-000000000000"], dev.persistTo);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/no api key/i);
  });
});

describe("api-key bad usage", () => {
  const cases: [string, string[], RegExp][] = [
    ["an unknown scope", ["create", "--account", "x", "--scopes", "webhooks:admin"], /unknown scope/i],
    ["no scope at all", ["create", "--account", "x", "--scopes", ","], /at least one/i],
    ["a missing --account", ["create", "--scopes", "webhooks:read"], /--account/],
    ["a missing --scopes", ["create", "--account", "x"], /--scopes/],
    ["a too long account name", ["create", "--account", "a".repeat(101), "--scopes", "webhooks:read"], /1 to 100/],
    ["an unknown option", ["create", "--account", "x", "--scopes", "webhooks:read", "--admin"], /unknown option/i],
    ["an unknown command", ["mint"], /unknown command/i],
    ["revoke without an id", ["revoke"], /exactly one key id/],
    ["revoke with a malformed id", ["revoke", "1; DROP TABLE api_keys"], /not a key id/i],
  ];
  for (const [what, args, message] of cases) {
    it(`exits non-zero, without a key, on ${what}`, async () => {
      const r = await runApiKey(args, dev.persistTo);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).not.toMatch(/krf_/);
    });
  }

  it("an account name with quotes and semicolons is stored as given", async () => {
    const name = "O'Brien; DROP TABLE accounts; --";
    const key = await dev.apiKey("webhooks:read", name);
    expect((await api("/webhooks/sources", key)).status).toBe(200);
    const r = await runApiKey(["list", "--account", name], dev.persistTo);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(name);
    expect(r.stdout).toContain(key.slice(0, 12));
  });
});
