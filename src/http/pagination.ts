/**
 * Keyset pagination, newest first. Ids are UUIDv7, so `id < cursor ORDER BY id DESC`
 * walks back in time over an index that ends in `id`: new rows arriving meanwhile
 * never shift a page, so nothing repeats and nothing is skipped.
 * The cursor is the last id of the page, base64url-encoded so clients treat it as opaque.
 */
import { z } from "zod";
import { isId } from "../db/ids";

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 100;

export const cursorField = z
  .string()
  .max(200)
  .transform((v, ctx) => {
    let id: string | undefined;
    try {
      id = atob(v.replace(/-/g, "+").replace(/_/g, "/"));
    } catch {
      id = undefined;
    }
    if (!isId(id)) {
      ctx.addIssue({ code: "custom", message: "is not a cursor returned by this API" });
      return z.NEVER;
    }
    return id;
  });

export const limitField = z.coerce
  .number({ error: "must be an integer" })
  .int("must be an integer")
  .min(1)
  .max(MAX_LIMIT)
  .default(DEFAULT_LIMIT);

export const paginationQuery = z.strictObject({
  limit: limitField,
  cursor: cursorField.optional(),
});

export function encodeCursor(id: string): string {
  return btoa(id).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Given `limit + 1` rows, the page and the cursor of the next one. */
export function page<T extends { id: string }>(rows: T[], limit: number): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const nextCursor = rows.length > limit ? encodeCursor(items[items.length - 1]!.id) : null;
  return { items, nextCursor };
}
