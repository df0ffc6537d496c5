import { defineConfig } from "drizzle-kit";

// The partitions' schema (each EventStore Durable Object's own SQLite). drizzle-kit's
// durable-sqlite driver writes the SQL files and a migrations.js that bundles them; the
// object applies them when it starts (src/store/event-store.ts).
export default defineConfig({
  dialect: "sqlite",
  driver: "durable-sqlite",
  schema: "./src/store/schema.ts",
  out: "./drizzle/store",
});
