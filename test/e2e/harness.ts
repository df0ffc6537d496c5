/**
 * What the e2e tests use to run the relay and the scripts as processes. The launcher and
 * the throwaway relay are shared tooling (tools/wrangler.ts, tools/relay.ts: `npm start`,
 * the demo and the bench use them too); this is the tests' one import of them.
 *
 *   const dev = await startDev();             // migrations applied, GET / answers 200
 *   const key = await dev.apiKey("webhooks:read");
 *   await fetch(`${dev.origin}/api/v1/webhooks/sources`, { headers: { authorization: `Bearer ${key}` } });
 *   await dev.stop();                          // kills wrangler and workerd, removes the state
 */
export { childEnv, freePort, ROOT, run, type RunResult } from "../../tools/process.ts";
export { DEFAULT_VARS, E2E_ENCRYPTION_KEY, startDev, type Dev, type StartOptions } from "../../tools/relay.ts";
export { applyMigrations, runApiKey, startWranglerDev, WRANGLER, type WranglerDev } from "../../tools/wrangler.ts";
