/**
 * `npm run bench -- --against REF`: another commit of the relay measured alongside this
 * one, in the same rounds and on the same machine, for ratios that survive the noise.
 *
 * REF is checked out as a detached git worktree in the run's temporary directory, with
 * this checkout's node_modules linked in when REF locks the same dependencies (the same
 * package-lock.json), or its own installed (`npm ci`) when it does not: a dependency one
 * side dropped is still there for the other. public/ (the generated static assets
 * wrangler.toml serves) is linked in; REF is bundled like every other Worker
 * (wrangler.ts `snapshot`). Its own wrangler.toml, drizzle/ migrations and code are used;
 * only its vars come from the benchmark (settings.ts RELAY_VARS: what a local relay of
 * either design needs). The worktree is removed at the end of the run.
 */
import { existsSync } from "node:fs";
import { readFile, symlink } from "node:fs/promises";
import { join } from "node:path";
import { ROOT, run } from "../../tools/process.ts";

export interface RefCheckout {
  ref: string;
  /** the short commit */
  commit: string;
  dir: string;
  config: string;
  /** its own scripts/api-key.mjs, which applies its own migrations */
  apiKeyScript: string;
  remove(): Promise<void>;
}

async function git(args: string[]): Promise<string> {
  const r = await run("git", ["-C", ROOT, ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`git ${args.join(" ")} failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout.trim();
}

export async function checkoutRef(ref: string, dir: string): Promise<RefCheckout> {
  const commit = await git(["rev-parse", "--short", `${ref}^{commit}`]);
  await git(["worktree", "add", "--detach", dir, commit]);
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    await git(["worktree", "remove", "--force", dir]).catch(() => git(["worktree", "prune"]));
  };
  try {
    // The same dependencies when REF locks the same ones (the benchmark compares code, not installs).
    const lock = (d: string) => readFile(join(d, "package-lock.json"), "utf8").catch(() => "");
    if ((await lock(dir)) === (await lock(ROOT))) await symlink(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
    else {
      const r = await run("npm", ["ci", "--prefix", dir, "--no-audit", "--no-fund"], { timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`npm ci for ${ref} failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
    if (existsSync(join(ROOT, "public")) && !existsSync(join(dir, "public"))) await symlink(join(ROOT, "public"), join(dir, "public"), "dir");
    const config = join(dir, "wrangler.toml");
    if (!existsSync(config)) throw new Error(`${ref} has no wrangler.toml`);
    return { ref, commit, dir, config, apiKeyScript: join(dir, "scripts", "api-key.mjs"), remove };
  } catch (err) {
    await remove();
    throw err;
  }
}
