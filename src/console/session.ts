/**
 * The console's session: the API key the operator signed in with, kept in an HttpOnly,
 * SameSite=Strict cookie (Secure outside localhost), encrypted and authenticated with
 * AES-256-GCM under the relay's ENCRYPTION_KEY (security/secrets.ts, its own GCM context),
 * beside the session's CSRF token and an expiry. So no session table, no key in a URL,
 * a log or script-readable storage; and the key is checked against D1 on every request,
 * so a revoked key ends its sessions at once (docs/decisions.md, The console).
 */
import { eq } from "drizzle-orm";
import type { Context } from "hono";
import { getCookie, setCookie, deleteCookie } from "hono/cookie";
import { accounts, apiKeys } from "../db/schema";
import { grantedScopes, hashApiKey, looksLikeApiKey, type Scope } from "../security/api-keys";
import { bytesToBase64Url, randomBytes, timingSafeEqual } from "../security/encoding";
import type { Services } from "../services";

const SESSION_COOKIE = "krafter_session";
/** The sign-in form's CSRF token, before there is a session. */
export const SIGN_IN_COOKIE = "krafter_sign_in";
const COOKIE_PATH = "/console";
const SESSION_TTL_SECONDS = 12 * 3600;
const SIGN_IN_TTL_SECONDS = 3600;
/** The GCM additional data: a session ciphertext decrypts as nothing else, and nothing else as a session. */
const CONTEXT = "console-session:v1";

export interface Session {
  key: string;
  csrf: string;
  /** Unix ms. */
  expiresAt: number;
}

interface Signed {
  accountId: string;
  accountName: string;
  keyPrefix: string;
  scopes: Set<Scope>;
}

const newToken = () => bytesToBase64Url(randomBytes(32));

/** Secure everywhere but on a loopback name, where local development runs over plain http. */
function secureCookies(url: string): boolean {
  const host = new URL(url).hostname;
  return !(host === "localhost" || host === "127.0.0.1" || host === "[::1]" || host.endsWith(".localhost"));
}

/** The key's account and scopes, by the same SHA-256 lookup as the API's requireScope; null for an unknown or revoked key. */
export async function verifyKey(s: Services, key: string): Promise<Signed | null> {
  if (!looksLikeApiKey(key)) return null;
  const row = await s.db
    .select({ accountId: apiKeys.accountId, scopes: apiKeys.scopes, revokedAt: apiKeys.revokedAt, prefix: apiKeys.prefix, name: accounts.name })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(eq(apiKeys.keyHash, await hashApiKey(key)))
    .get();
  if (!row || row.revokedAt !== null) return null;
  return { accountId: row.accountId, accountName: row.name, keyPrefix: row.prefix, scopes: grantedScopes(row.scopes) };
}

export async function startSession(c: Context, s: Services, key: string): Promise<Session> {
  const session: Session = { key, csrf: newToken(), expiresAt: s.now() + SESSION_TTL_SECONDS * 1000 };
  const sealed = await s.secrets.encrypt(JSON.stringify({ k: session.key, t: session.csrf, e: session.expiresAt }), CONTEXT);
  setCookie(c, SESSION_COOKIE, sealed, {
    path: COOKIE_PATH,
    httpOnly: true,
    secure: secureCookies(c.req.url),
    sameSite: "Strict",
    maxAge: SESSION_TTL_SECONDS,
  });
  return session;
}

/** The session the request's cookie holds, if it decrypts and has not expired. */
export async function readSession(c: Context, s: Services): Promise<Session | null> {
  const sealed = getCookie(c, SESSION_COOKIE);
  if (!sealed || sealed.length > 4096) return null;
  try {
    const v = JSON.parse(await s.secrets.decrypt(sealed, CONTEXT)) as { k?: unknown; t?: unknown; e?: unknown };
    if (typeof v.k !== "string" || typeof v.t !== "string" || typeof v.e !== "number" || v.e <= s.now()) return null;
    return { key: v.k, csrf: v.t, expiresAt: v.e };
  } catch {
    // Tampered with, from another key, or not ours: no session.
    return null;
  }
}

export function endSession(c: Context): void {
  deleteCookie(c, SESSION_COOKIE, { path: COOKIE_PATH, httpOnly: true, secure: secureCookies(c.req.url), sameSite: "Strict" });
}

/** A fresh token for the sign-in form, set in its own cookie (double submit, bound to this browser). */
export function signInToken(c: Context): string {
  const token = newToken();
  setCookie(c, SIGN_IN_COOKIE, token, {
    path: COOKIE_PATH,
    httpOnly: true,
    secure: secureCookies(c.req.url),
    sameSite: "Strict",
    maxAge: SIGN_IN_TTL_SECONDS,
  });
  return token;
}

export function clearSignInToken(c: Context): void {
  deleteCookie(c, SIGN_IN_COOKIE, { path: COOKIE_PATH, httpOnly: true, secure: secureCookies(c.req.url), sameSite: "Strict" });
}

export function tokensEqual(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b) return false;
  const enc = new TextEncoder();
  return timingSafeEqual(enc.encode(a), enc.encode(b));
}
