/**
 * `GET /docs`: the browsable API reference (Scalar), rendering the OpenAPI document the
 * Worker serves at `/api/v1/openapi.json`.
 *
 * Self-contained: the page loads Scalar's standalone browser bundle from the relay's own
 * origin, never from a CDN. The bundle is a Workers static asset: `npm install` copies it
 * from the pinned `@scalar/api-reference` package into `public/docs/scalar.js`
 * (scripts/copy-docs-assets.mjs, gitignored output) and wrangler.toml's `[assets]` serves
 * it, before the Worker runs. Scalar's web fonts and telemetry are off, and the page's
 * Content-Security-Policy lets it reach nothing but this origin.
 */
import { Scalar } from "@scalar/hono-api-reference";
import { Hono } from "hono";

/** Where the Scalar bundle is served (public/docs/scalar.js). */
const SCALAR_BUNDLE_PATH = "/docs/scalar.js";
const OPENAPI_PATH = "/api/v1/openapi.json";
const DOCS_TITLE = "Krafter API reference";

const reference = Scalar({
  url: OPENAPI_PATH,
  pageTitle: DOCS_TITLE,
  cdn: SCALAR_BUNDLE_PATH,
  // Every tag open, so the sidebar lists each operation.
  defaultOpenAllTags: true,
  authentication: { preferredSecurityScheme: "apiKey" },
  // Nothing that calls Scalar's services: no web fonts, no telemetry, no AI agent, and
  // no developer toolbar (SDK and MCP generation, sharing).
  withDefaultFonts: false,
  telemetry: false,
  agent: { disabled: true },
  mcp: { disabled: true },
  showDeveloperTools: "never",
});

// The inline scripts and styles are Scalar's own page; everything else is this origin only.
const CSP = [
  "default-src 'self'",
  "script-src 'self' 'unsafe-inline'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "worker-src 'self' blob:",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join("; ");

export const docsRoutes = new Hono().get("/", async (c, next) => {
  const page = await reference(c, next);
  if (!page) return c.notFound();
  // An empty icon: otherwise every visit also asks for /favicon.ico, a 404.
  const html = (await page.text()).replace("</title>", '</title>\n    <link rel="icon" href="data:," />');
  return c.html(html, 200, { "content-security-policy": CSP, "x-content-type-options": "nosniff" });
});
