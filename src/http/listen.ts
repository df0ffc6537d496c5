/**
 * `GET /api/v1/webhooks/sources/:source_id/listen`: a WebSocket of the source's new
 * events, for `krafter listen` (bin/krafter.mjs). The key, its scope and the source's
 * owner are checked like every other API route, before any upgrade: another account's
 * source is a 404, and a request that does not ask to upgrade is a 400 in the envelope.
 * The socket itself lives in the source's ListenHub (src/listen/hub.ts); its messages
 * are in src/listen/protocol.ts.
 */
import { Hono } from "hono";
import { describeRoute, resolver } from "hono-openapi";
import { z } from "zod";
import { LISTENER_HEADERS } from "../listen/hub";
import { requireScope } from "./auth";
import type { AppEnv } from "./context";
import { KrafterError } from "../errors";
import { ErrorEnvelope } from "./openapi";
import { ownedSource } from "./sources";
import { validate } from "./validation";

const error = (description: string) => ({ description, content: { "application/json": { schema: resolver(ErrorEnvelope) } } });

const documented = describeRoute({
  tags: ["Events"],
  summary: "Listen to a source's events (WebSocket)",
  description: [
    "Upgrades to a WebSocket (`Upgrade: websocket`) that pushes each event of the source as it is stored, for `npx krafter listen`.",
    'The relay first sends `{"type":"ready"}`; then one `{"type":"event","id","event_type","received_at","body"}` per event, `body` being the exact envelope a destination gets (null when too large for a frame: read the event with `GET …/events/{event_id}`).',
    'The listener may send `"ping"` (answered `"pong"`) and `{"type":"result","event_id","status","duration_ms"}` after forwarding an event locally: it is logged, and never touches destinations, `failure_count` or the attempt log.',
    "Events stored while no listener was connected are not replayed here: read them with `GET …/events?since=`.",
  ].join("\n\n"),
  responses: {
    101: { description: "Switching Protocols: the WebSocket." },
    400: error("The request does not ask to upgrade to a WebSocket."),
    401: error("No API key, or a malformed, unknown or revoked one."),
    404: error("No such source, a malformed id, or another account's source."),
    422: error("Unknown query parameters."),
    500: error("Something went wrong on our side; `request_id` identifies it."),
  },
} as Parameters<typeof describeRoute>[0]);

export const listenRoutes = new Hono<AppEnv>().get("/", documented, requireScope("webhooks:read"), validate("query", z.strictObject({})), async (c) => {
  const source = await ownedSource(c, c.req.param("source_id"));
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new KrafterError("bad_request", "This route is a WebSocket: send `Upgrade: websocket` (`npx krafter listen` does).");
  }
  const p = c.var.principal;
  const headers = new Headers({
    upgrade: "websocket",
    [LISTENER_HEADERS.keyId]: p.keyId,
    [LISTENER_HEADERS.accountId]: p.accountId,
    [LISTENER_HEADERS.name]: encodeURIComponent(source.name),
  });
  const res = await c.var.services.listenHub(source.id).fetch(new Request(`https://listen.internal/${source.id}`, { headers }));
  // The hub could not tell the source's partitions (storage busy): the listener tries again.
  if (res.status !== 101) throw new KrafterError("internal_error", "The listener could not be set up; try again.");
  return res;
});
