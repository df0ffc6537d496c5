import { defineConfig } from "vitest/config";

/**
 * The longer load suite (`npm run test:load`, also run by .ci/run): 5,000 events from 50
 * concurrent senders through `wrangler dev`, every delivery checked.
 */
export default defineConfig({
  test: {
    name: "load",
    environment: "node",
    include: ["test/load/**/*.test.ts"],
    testTimeout: 900_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
});
