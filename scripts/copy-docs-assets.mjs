#!/usr/bin/env node
/**
 * `postinstall`: copies Scalar's standalone browser bundle from the pinned
 * `@scalar/api-reference` package to public/docs/scalar.js, the Workers static asset that
 * `GET /docs` (src/http/docs.ts) loads, so the API reference never needs a CDN. Runs on
 * every `npm install`/`npm ci` (locally, in CI and in the dashboard's Git builds);
 * public/ is generated and gitignored. Plain Node, no dependencies.
 */
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const from = join(ROOT, "node_modules", "@scalar", "api-reference", "dist", "browser", "standalone.js");
const dir = join(ROOT, "public", "docs");
const to = join(dir, "scalar.js");

if (!existsSync(from)) {
  console.error(`copy-docs-assets: ${from} is missing: is @scalar/api-reference installed? (npm install)`);
  process.exit(1);
}
mkdirSync(dir, { recursive: true });
copyFileSync(from, to);
