/** The Hono environment shared by every route: bindings, and what middleware sets per request. */
import type { Env } from "../config";
import type { Scope } from "../security/api-keys";
import type { Services } from "../services";

export interface Principal {
  accountId: string;
  keyId: string;
  scopes: Set<Scope>;
}

export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    services: Services;
    principal: Principal;
  };
}
