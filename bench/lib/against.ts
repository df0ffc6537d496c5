/**
 * `npm run bench -- --against REF`: another commit of the relay measured alongside this
 * one, in the same rounds and on the same machine, for ratios that survive the noise.
 *
 * REF is checked out as a detached git worktree in the run's temporary directory, with
 * this checkout's node_modules (and public/, the generated static assets wrangler.toml
 * serves) linked in rather than installed again, and bundled like every other Worker
 * (wrangler.ts `snapshot`). Its own wrangler.toml, drizzle/ migrations and code are used;
 * only its vars come from the benchmark (settings.ts RELAY_VARS: what a local relay of
 * either design needs). The worktree is removed at the end of the run.
 */
import { existsSync } from "node:fs";
import { symlink } from "node:fs/promises";
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
    // The same dependencies (the benchmark compares code, not installs).
    await symlink(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
    if (existsSync(join(ROOT, "public")) && !existsSync(join(dir, "public"))) await symlink(join(ROOT, "public"), join(dir, "public"), "dir");
    const config = join(dir, "wrangler.toml");
    if (!existsSync(config)) throw new Error(`${ref} has no wrangler.toml`);
    return { ref, commit, dir, config, apiKeyScript: join(dir, "scripts", "api-key.mjs"), remove };
  } catch (err) {
    await remove();
    throw err;
  }
}
