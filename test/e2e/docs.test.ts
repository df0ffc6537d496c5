/**
 * GET /docs in a real headless browser: the Chromium that the npm package
 * @sparticuz/chromium ships (or the one KRAFTER_BROWSER names), driven by playwright-core;
 * see test/support/browser.ts. The page must load from the relay alone (no CDN, no fonts,
 * no telemetry: every request the page makes goes to the relay's origin) and list the
 * destinations operations by their OpenAPI summaries.
 *
 * A screenshot of the rendered page is left at $KRAFTER_DOCS_SCREENSHOT (default
 * <tmpdir>/docs.png) for a human to look at.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchBrowser } from "../support/browser";
import { startDev, type Dev } from "./harness";

const SCREENSHOT = process.env.KRAFTER_DOCS_SCREENSHOT || join(tmpdir(), "docs.png");

const DESTINATION_OPERATIONS = [
  "Create a destination",
  "List destinations",
  "Get a destination",
  "Update a destination",
  "Delete a destination",
  "Test a destination",
];

describe("GET /docs in Chromium", () => {
  let dev: Dev;
  let browser: Browser;

  beforeAll(async () => {
    [dev, browser] = await Promise.all([startDev({ cronEveryMs: 0 }), launchBrowser()]);
  });

  afterAll(async () => {
    await browser?.close();
    await dev?.stop();
  });

  it("loads from the relay's origin alone and lists the destinations operations", async () => {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    try {
      // Every request of the page (and of any worker it starts), by URL.
      const requested: string[] = [];
      const failed: string[] = [];
      context.on("request", (req) => requested.push(req.url()));
      context.on("requestfailed", (req) => failed.push(`${req.url()}: ${req.failure()?.errorText}`));
      // A request the page's CSP blocks never reaches the network (nor the list above):
      // record the violations too, so a blocked attempt to reach another host fails as well.
      await context.addInitScript(
        "window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));",
      );
      const page = await context.newPage();
      const errors: string[] = [];
      page.on("pageerror", (err) => errors.push(err.message));

      const response = await page.goto(`${dev.origin}/docs`, { waitUntil: "load", timeout: 60_000 });
      expect(response?.status()).toBe(200);
      expect(response?.headers()["content-type"]).toMatch(/^text\/html/);
      expect(await response?.text()).toContain("<title>Krafter API reference</title>");

      for (const text of DESTINATION_OPERATIONS) {
        await page.getByText(text, { exact: true }).first().waitFor({ state: "visible", timeout: 30_000 });
      }
      await page.screenshot({ path: SCREENSHOT });

      // The bundle and the OpenAPI document came from the relay itself.
      expect(requested).toContain(`${dev.origin}/docs/scalar.js`);
      expect(requested).toContain(`${dev.origin}/api/v1/openapi.json`);
      const elsewhere = requested.filter((url) => {
        const u = new URL(url);
        // data: and blob: URLs name no host.
        return u.protocol !== "data:" && u.protocol !== "blob:" && u.origin !== dev.origin;
      });
      expect(elsewhere, `requests to other hosts: ${elsewhere.join(", ")}`).toEqual([]);
      // Only blocked loads count: the bundle's zod probes `Function("")` once (its JIT
      // check, caught and harmless), which the CSP reports as "script-src eval".
      const violations = await page.evaluate<string[]>("window.__violations");
      const blockedLoads = violations.filter((v) => /^\S+ (https?|wss?):/.test(v));
      expect(blockedLoads, "loads the page's Content-Security-Policy blocked").toEqual([]);
      expect(failed, "failed requests").toEqual([]);
      expect(errors, "uncaught errors in the page").toEqual([]);
    } finally {
      await context.close();
    }
  });
});
