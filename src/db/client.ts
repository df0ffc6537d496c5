/** The drizzle client over D1. D1 has no interactive transactions: use db.batch(), which is atomic. */
import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema";

export type Database = ReturnType<typeof database>;

export function database(d1: D1Database) {
  return drizzle(d1, { schema });
}
