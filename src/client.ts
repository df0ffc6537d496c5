/**
 * A typed client for TypeScript users: Hono's `hc` over the app's own type, so paths,
 * parameters, bodies and success responses are checked by the compiler.
 *
 *   import { krafterClient } from "krafter/client";
 *   const krafter = krafterClient("https://relay.example.com", process.env.KRAFTER_KEY!);
 *   const res = await krafter.api.v1.webhooks.sources.$post({ json: { name: "Stripe" } });
 *   const { data } = await res.json();
 */
import { hc } from "hono/client";
import type { App } from "./app";

export type { App };

export function krafterClient(baseUrl: string, apiKey: string, options: { fetch?: typeof fetch } = {}) {
  return hc<App>(baseUrl, {
    headers: { authorization: `Bearer ${apiKey}` },
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}
