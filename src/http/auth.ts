/**
 * API key authentication and scope checks, applied per route so each route states the
 * scope it needs, as the reference page does. `Authorization: Bearer krf_…`; the key is
 * looked up by its SHA-256 hash; revoked keys fail like unknown ones. Then the request
 * body's type and size: 401 and 403 come before 415 and 413.
 */
import { eq } from "drizzle-orm";
import { createMiddleware } from "hono/factory";
import { apiKeys } from "../db/schema";
import { grantedScopes, hashApiKey, looksLikeApiKey, type Scope } from "../security/api-keys";
import type { AppEnv } from "./context";
import { KrafterError, RateLimitedError } from "../errors";
import { apiBodyGuard, apiBodyLimit } from "./validation";
import { uniqueSymbol } from "hono-openapi";
import { scopeSpec } from "./openapi";

/** last_used_at is refreshed at most this often per key, off the request path. */
const LAST_USED_RESOLUTION_MS = 60_000;

export function requireScope(scope: Scope) {
  const middleware = createMiddleware<AppEnv>(async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      throw new KrafterError("unauthorized", "Missing API key: send `Authorization: Bearer krf_…`.");
    }
    const key = match[1]!;
    if (!looksLikeApiKey(key)) throw new KrafterError("unauthorized", "Invalid API key.");
    const { db, now } = c.var.services;
    const row = await db
      .select({ id: apiKeys.id, accountId: apiKeys.accountId, scopes: apiKeys.scopes, revokedAt: apiKeys.revokedAt, lastUsedAt: apiKeys.lastUsedAt })
      .from(apiKeys)
      .where(eq(apiKeys.keyHash, await hashApiKey(key)))
      .get();
    if (!row || row.revokedAt !== null) throw new KrafterError("unauthorized", "Invalid API key.");

    const scopes = grantedScopes(row.scopes);
    if (!scopes.has(scope)) {
      throw new KrafterError("forbidden", `This API key lacks the required scope: ${scope}.`);
    }
    const t = now();
    if (row.lastUsedAt === null || t - row.lastUsedAt > LAST_USED_RESOLUTION_MS) {
      const update = db.update(apiKeys).set({ lastUsedAt: t }).where(eq(apiKeys.id, row.id)).run();
      c.executionCtx.waitUntil(update.catch(() => undefined));
    }
    c.set("principal", { accountId: row.accountId, keyId: row.id, scopes });
    // Who asks is known: now how often. API_RATE_LIMIT per key and ACCOUNT_API_RATE_LIMIT
    // per account, per 60 s; 401 and 403 come first. Both objects are asked at once (one
    // round trip, not two); a request one of them refuses is given back to the other, so
    // a key over its own limit does not spend its account's share for the other keys.
    const { apiRateLimit, accountApiRateLimit } = c.var.services.config;
    const keyLimiter = c.var.services.rateLimiter(row.id);
    const accountLimiter = c.var.services.accountRateLimiter(row.accountId);
    const [byKey, byAccount] = await Promise.all([keyLimiter.hit(apiRateLimit), accountLimiter.hit(accountApiRateLimit)]);
    if (!byKey.ok || !byAccount.ok) {
      if (byKey.ok) c.executionCtx.waitUntil(keyLimiter.refund(byKey.window).catch(() => undefined));
      if (byAccount.ok) c.executionCtx.waitUntil(accountLimiter.refund(byAccount.window).catch(() => undefined));
      // Let through again only once both windows allow it.
      const retryAfter = Math.max(byKey.retryAfterSeconds, byAccount.retryAfterSeconds);
      throw new RateLimitedError(
        !byKey.ok
          ? `This API key made ${apiRateLimit} requests in the last minute, the most API_RATE_LIMIT allows: retry after ${retryAfter} s.`
          : `This account's API keys made ${accountApiRateLimit} requests in the last minute, the most ACCOUNT_API_RATE_LIMIT allows: retry after ${retryAfter} s.`,
        retryAfter,
      );
    }
    // Then the body: who may ask comes before what they sent (docs/decisions.md).
    await apiBodyGuard(c, async () => {
      await apiBodyLimit(c, next);
    });
  });
  // The OpenAPI document learns each route's scope from here.
  return Object.assign(middleware, { [uniqueSymbol]: { spec: scopeSpec(scope) } });
}
