import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// A fixed key for tests only; `npm start` writes a fresh one into .dev.vars.
export const TEST_ENCRYPTION_KEY = "X65T5qhmuOXz+pMQo0TVgTWJ3J1dhQ9bby66tWugSp4=";

/**
 * Two projects:
 * - workers: unit and integration tests inside workerd (the Worker, real local D1,
 *   Queues and Durable Objects), with a real loopback receiver started in Node.
 * - e2e: Node tests that drive `wrangler dev` and the scripts as processes.
 */
export default defineConfig(async () => {
  const migrations = await readD1Migrations("./drizzle");
  return {
    test: {
      testTimeout: 30_000,
      hookTimeout: 60_000,
      // The Worker's structured logs, shown only for failing tests.
      silent: "passed-only" as const,
      projects: [
        {
          plugins: [
            cloudflareTest(({ inject }) => {
              const origin = `http://127.0.0.1:${inject("receiverPort")}`;
              return {
                wrangler: { configPath: "./wrangler.toml" },
                miniflare: {
                  bindings: {
                    TEST_MIGRATIONS: migrations,
                    RECEIVER_ORIGIN: origin,
                    ENVIRONMENT: "test",
                    ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
                    // Real loopback receivers stand in for customers' endpoints; tests of
                    // the SSRF guard turn this off per request (test/helpers/api.ts envWith).
                    ALLOW_PRIVATE_DESTINATIONS: "true",
                    DOH_URL: `${origin}/dns-query`,
                    RETRY_SCHEDULE: "1,1,1",
                    DELIVERY_TIMEOUT_MS: "2000",
                    TEST_TIMEOUT_MS: "2000",
                    // Fan-out tests give one source up to 103 destinations; the quota's own
                    // test sets it lower (test/integration/flow-control.test.ts).
                    MAX_DESTINATIONS_PER_SOURCE: "200",
                    // The property tests make thousands of requests with one key; the limit's own test sets it.
                    API_RATE_LIMIT: "1000000",
                    // Most tests run a batch of a shared deliver queue and look at its attempts
                    // at once; the slow lane's own tests (test/integration/lanes.test.ts) turn this on.
                    NEW_DESTINATIONS_START_SLOW: "false",
                    ACCOUNT_API_RATE_LIMIT: "1000000",
                    // Each ingest's bytes reach its account's counter before call() returns,
                    // without waiting out the 1 s coalescing (the quota's test sets it back).
                    STORED_BYTES_FLUSH_MS: "0",
                  },
                },
              };
            }),
          ],
          test: {
            name: "workers",
            globalSetup: ["./test/global-setup.ts"],
            setupFiles: ["./test/apply-migrations.ts"],
            include: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts"],
            testTimeout: 30_000,
            hookTimeout: 60_000,
          },
        },
        {
          test: {
            name: "e2e",
            environment: "node",
            include: ["test/e2e/**/*.test.ts"],
            testTimeout: 180_000,
            hookTimeout: 180_000,
            // Each file starts its own wrangler dev: one at a time on 2 cores.
            fileParallelism: false,
          },
        },
      ],
    },
  };
});
