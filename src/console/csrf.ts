/**
 * Cross-site request protection for the console, two checks that must both pass on
 * every state-changing request:
 * 1. it comes from the console's own origin: `Origin` equal to ours (browsers send it on
 *    every POST, PATCH, DELETE), or, without one, `Sec-Fetch-Site: same-origin`; any
 *    other `Sec-Fetch-Site` (same-site, cross-site) is refused even with a matching Origin;
 * 2. it carries the session's token (sign-in: the sign-in form's), which a page of
 *    another origin cannot read: in the `x-csrf-token` header, or a form's `csrf` field.
 * SameSite=Strict cookies are a third layer, not relied on: a page on another port of
 * the same host is same-site and gets them.
 */
import type { Context } from "hono";
import { KrafterError } from "../errors";
import { tokensEqual } from "./session";

export const CSRF_HEADER = "x-csrf-token";

/** Why a request is not from our origin, or null when it is. */
export function crossOrigin(c: Context, strict: boolean): string | null {
  const site = c.req.header("sec-fetch-site");
  const origin = c.req.header("origin");
  const ours = new URL(c.req.url).origin;
  if (site !== undefined && site !== "same-origin" && !(site === "none" && !strict)) return `Sec-Fetch-Site is ${site}`;
  if (origin !== undefined) return origin === ours ? null : "Origin is not this console's";
  // A read may come with neither (plain http on a name that is not loopback); a change may not.
  if (strict && site !== "same-origin") return "no Origin";
  return null;
}

/** The refusal to throw: a 403 forbidden in the API's envelope (no-store, as every console answer). */
export const refused = (why: string) => new KrafterError("forbidden", `Cross-site request refused (${why}).`);

export const tokenMatches = (given: string | undefined, expected: string | undefined) => tokensEqual(given, expected);
