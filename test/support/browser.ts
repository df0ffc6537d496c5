/// <reference types="node" />
/**
 * A headless Chromium for the browser tests, driven by playwright-core (which downloads
 * no browser of its own). By default the one the npm package @sparticuz/chromium ships
 * inside its tarball, so `npm install && npm test` needs no system package and no root:
 *
 *   const browser = await launchBrowser();
 *
 * KRAFTER_BROWSER picks another:
 *   npm (or unset)  the npm-shipped Chromium
 *   system          Debian's /usr/bin/chromium (apt-get install chromium)
 *   /a/path         any Chromium executable
 *
 * The package's own executablePath() unpacks its brotli files into os.tmpdir() and takes
 * an existing tmpdir()/chromium as done, so a second caller while the first is still
 * writing (or after one was killed halfway) would start a truncated binary. Here it
 * unpacks in a child process whose TMPDIR is a fresh folder, which is then renamed into
 * node_modules/.cache/krafter-chromium/<version>: that folder exists only complete, and
 * concurrent callers each unpack and keep whichever rename came first.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { chromium, type Browser } from "playwright-core";

export const SYSTEM_CHROMIUM = "/usr/bin/chromium";

/**
 * As root, on a closed network: no sandbox, and none of Chromium's own connections
 * (refused here, many at a time, and looked up at every start).
 */
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--no-first-run",
];

/** Launches the Chromium KRAFTER_BROWSER names (the npm-shipped one by default). */
export async function launchBrowser(): Promise<Browser> {
  const choice = process.env.KRAFTER_BROWSER || "npm";
  if (choice === "npm") {
    const dir = await npmChromium();
    return chromium.launch({
      executablePath: join(dir, "chromium"),
      headless: true,
      args: ARGS,
      // Its fonts beside the system's, so text renders on a machine with none.
      env: { ...process.env, FONTCONFIG_PATH: dir },
    });
  }
  if (choice !== "system" && !choice.startsWith("/")) {
    throw new Error(`KRAFTER_BROWSER=${choice}: expected npm, system or an absolute path`);
  }
  const executablePath = choice === "system" ? SYSTEM_CHROMIUM : choice;
  if (!existsSync(executablePath)) {
    throw new Error(`KRAFTER_BROWSER=${choice}: ${executablePath} is missing (unset KRAFTER_BROWSER for the npm-shipped Chromium)`);
  }
  return chromium.launch({ executablePath, headless: true, args: ARGS });
}

let unpacked: Promise<string> | undefined;

/** The folder of the unpacked npm-shipped Chromium: chromium, its GL libraries, fonts. */
function npmChromium(): Promise<string> {
  unpacked ??= unpack().catch((err: unknown) => {
    unpacked = undefined;
    throw err;
  });
  return unpacked;
}

async function unpack(): Promise<string> {
  const entry = createRequire(import.meta.url).resolve("@sparticuz/chromium");
  const pkg = join(dirname(entry), "..");
  const { version } = JSON.parse(await readFile(join(pkg, "package.json"), "utf8")) as { version: string };
  const root = join(pkg, "..", "..", ".cache", "krafter-chromium");
  const dir = join(root, version);
  if (existsSync(join(dir, "chromium"))) return dir;

  await mkdir(root, { recursive: true });
  const staging = await mkdtemp(join(root, `${version}.partial-`));
  try {
    const script = `const { default: c } = await import(${JSON.stringify(entry)}); await c.executablePath();`;
    await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, TMPDIR: staging },
      timeout: 120_000,
    });
    // The package's fonts.conf names /tmp/fonts; this one names where they are.
    await writeFile(
      join(staging, "fonts.conf"),
      `<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n` +
        `  <dir>${join(dir, "fonts")}</dir>\n  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n` +
        `  <cachedir>${join(dir, "fonts-cache")}</cachedir>\n</fontconfig>\n`,
    );
    try {
      await rename(staging, dir);
    } catch (err) {
      // Another process got there first: keep its copy.
      if (!existsSync(join(dir, "chromium"))) throw err;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  // What a run killed while unpacking left (about 200 MB each).
  for (const name of await readdir(root)) {
    if (!name.includes(".partial-")) continue;
    const path = join(root, name);
    const age = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
    if (age > 10 * 60_000) await rm(path, { recursive: true, force: true });
  }
  return dir;
}
