/// <reference types="node" />
/**
 * Errors in layers (ARCHITECTURE.md, "Habits from the first review"): src/http is the
 * API surface and depends on the core, never the other way round. Every import of
 * every module under src/ is read with TypeScript's own pre-processor (static imports,
 * re-exports, dynamic `import()`), resolved, and checked:
 * - nothing outside src/http imports from src/http, but src/app.ts: the composition
 *   root, where the routes are mounted and the error handler installed (the Worker entry
 *   and the typed client reach the API through it, and something has to);
 * - the core (src/errors.ts and security/, db/, store/, delivery/, ingest/, alerts/)
 *   imports no `hono`: it throws domain errors and knows no HTTP framework.
 * Runs in Node (the e2e project) because it reads the source tree.
 */
import { readdir, readFile } from "node:fs/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SRC = join(ROOT, "src");
const HTTP = join(SRC, "http");
/** The one module that mounts src/http (see above). */
const ROOT_OF_APP = join(SRC, "app.ts");
const CORE = ["errors.ts", "security", "db", "store", "delivery", "ingest", "alerts"].map((p) => join(SRC, p));

async function modules(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await modules(path)));
    else if (/\.(ts|mts|js|mjs)$/.test(entry.name) && !entry.name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

const inside = (path: string, dir: string) => path === dir || path.startsWith(dir + sep);
const rel = (path: string) => relative(ROOT, path).split(sep).join("/");

async function importsOf(file: string): Promise<string[]> {
  const info = ts.preProcessFile(await readFile(file, "utf8"), true, true);
  return info.importedFiles.map((f) => f.fileName);
}

describe("layers", () => {
  it("reads the imports it checks (the checker sees real edges)", async () => {
    // app.ts mounts the API's routes: if this found nothing, the checks below would pass vacuously.
    expect(await importsOf(join(SRC, "app.ts"))).toEqual(expect.arrayContaining(["./http/errors", "./http/sources", "hono"]));
    expect((await modules(SRC)).length).toBeGreaterThan(50);
  });

  it("nothing outside src/http (but src/app.ts, which mounts it) imports from src/http", async () => {
    const offenders: string[] = [];
    for (const file of await modules(SRC)) {
      if (inside(file, HTTP) || file === ROOT_OF_APP) continue;
      for (const spec of await importsOf(file)) {
        if (!spec.startsWith(".")) continue;
        const target = resolve(dirname(file), spec);
        if (inside(target, HTTP)) offenders.push(`${rel(file)} imports ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it("the core (errors, security, db, store, delivery, ingest, alerts) imports no hono", async () => {
    const offenders: string[] = [];
    for (const file of await modules(SRC)) {
      if (!CORE.some((dir) => inside(file, dir))) continue;
      for (const spec of await importsOf(file)) {
        if (spec === "hono" || spec.startsWith("hono/") || spec.startsWith("hono-") || spec.startsWith("@hono/")) offenders.push(`${rel(file)} imports ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
