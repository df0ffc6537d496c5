/**
 * `npm run demo` (scripts/demo.ts), run as a user would: it starts its own relay and
 * receiver, and must end with exit code 0, having shown every forward verified, the
 * retries, the auto-disable and the recovery.
 */
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { childEnv, ROOT } from "./harness";

const TIMEOUT_MS = 150_000;

function runDemo(): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    // Its own process group: on a timeout, SIGTERM reaches npm and the demo, which then
    // stops its relay and receiver itself.
    const child = spawn("npm", ["run", "demo"], { cwd: ROOT, env: childEnv(), stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (output += d));
    const signal = (s: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, s);
      } catch {
        // Already gone.
      }
    };
    const term = setTimeout(() => signal("SIGTERM"), TIMEOUT_MS);
    const kill = setTimeout(() => signal("SIGKILL"), TIMEOUT_MS + 15_000);
    child.on("error", reject);
    child.on("close", (code, sig) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ code, signal: sig, output, ms: Date.now() - started });
    });
  });
}

describe("npm run demo", () => {
  it(
    "shows events verified at both destinations, retries, the auto-disable and the recovery, and exits 0",
    async () => {
      const { code, signal, output, ms } = await runDemo();
      expect({ code, signal }, output).toEqual({ code: 0, signal: null });
      // No colours and no cursor movements when the output is not a terminal.
      expect(output).not.toMatch(/\x1b\[/);
      expect(output).toContain("✓ a forged event (bad Stripe-Signature) → 401, dropped");
      expect(output).toContain("✓ 20 signed events → 202 Accepted");
      expect(output).toMatch(/✓ invoices {3}\[#{20}\] 10\/10 verified/);
      expect(output).toMatch(/✓ everything \[#{20}\] 20\/20 verified/);
      expect(output).toMatch(/40\/40 failed attempts, 10\/10 events given up/);
      expect(output).toContain('✗ "invoices" auto-disabled: enabled false, failure_count 10');
      for (const n of [1, 2, 3, 4]) expect(output).toMatch(new RegExp(`#${n} .* failed {2}HTTP 500`));
      expect(output).toMatch(/✓ everything \[#{20}\] 30\/30 verified/);
      expect(output).toContain('✓ PATCH {"enabled": true} → enabled true, failure_count 10');
      expect(output).toContain('✓ the next invoice.paid event arrived at "invoices", verified');
      expect(output).toContain("✓ failure_count 0, enabled true");
      expect(output).toMatch(/Done in [\d.]+ s: 31 events in/);
      console.log(`npm run demo took ${(ms / 1000).toFixed(1)} s`);
    },
    TIMEOUT_MS + 30_000,
  );
});
