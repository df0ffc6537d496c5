/**
 * Keyset pagination, newest first. Ids are UUIDv7, so `id < cursor ORDER BY id DESC`
 * walks back in time over an index that ends in `id`: new rows arriving meanwhile
 * never shift a page, so nothing repeats and nothing is skipped.
 * The cursor is the last id of the page, base64url-encoded so clients treat it as opaque.
 */
import { z } from "zod";
import { isId } from "../db/ids";

const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 100;

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

/**
 * Plain decimal digits only: `z.coerce.number()` would also take `0x10`, `1e1`, ` 5 `
 * and other spellings of a number that no client means as a page size.
 */
export const limitField = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (v === undefined) return DEFAULT_LIMIT;
    const n = /^[0-9]{1,4}$/.test(v) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) {
      ctx.addIssue({ code: "custom", message: `must be an integer from 1 to ${MAX_LIMIT}` });
      return z.NEVER;
    }
    return n;
  });

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
