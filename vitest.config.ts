import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// A fixed key for tests only; `npm start` writes a fresh one into .dev.vars.
export const TEST_ENCRYPTION_KEY = "X65T5qhmuOXz+pMQo0TVgTWJ3J1dhQ9bby66tWugSp4=";

export default defineConfig(async () => {
  const migrations = await readD1Migrations("./drizzle");
  return {
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
              // Real loopback receivers stand in for customers' endpoints; tests of the
              // SSRF guard run with this off (see test/helpers/api.ts `envWith`).
              ALLOW_PRIVATE_DESTINATIONS: "true",
              DOH_URL: `${origin}/dns-query`,
              RETRY_SCHEDULE: "1,1,1",
              DELIVERY_TIMEOUT_MS: "2000",
              TEST_TIMEOUT_MS: "2000",
            },
          },
        };
      }),
    ],
    test: {
      globalSetup: ["./test/global-setup.ts"],
      setupFiles: ["./test/apply-migrations.ts"],
      include: ["test/unit/**/*.test.ts", "test/integration/**/*.test.ts"],
      testTimeout: 30_000,
      hookTimeout: 30_000,
    },
  };
});
