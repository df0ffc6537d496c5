import { defineConfig } from "drizzle-kit";

// Migrations are generated into flat NNNN_name.sql files, which both
// `wrangler d1 migrations apply` and the test setup (readD1Migrations) read.
export default defineConfig({
  dialect: "sqlite",
  schema: "./src/db/schema.ts",
  out: "./drizzle",
});
