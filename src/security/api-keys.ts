/**
 * API keys: `krf_` + 32 random bytes (base64url). Shown once; stored only as a SHA-256
 * hash; carry scopes, where write implies read.
 */
import { bytesToBase64Url, randomBytes, sha256Hex } from "./encoding";

export const scopes = ["webhooks:read", "webhooks:write"] as const;
export type Scope = (typeof scopes)[number];

const KEY_PREFIX = "krf_";
const KEY_SHAPE = /^krf_[A-Za-z0-9_-]{43}$/;

export function generateApiKey(): string {
  return KEY_PREFIX + bytesToBase64Url(randomBytes(32));
}

export function looksLikeApiKey(key: string): boolean {
  return KEY_SHAPE.test(key);
}

export const hashApiKey = sha256Hex;

/** The scopes a key's stored scope list grants: write implies read. */
export function grantedScopes(stored: string): Set<Scope> {
  const granted = new Set<Scope>();
  for (const s of stored.split(",").map((x) => x.trim())) {
    if (s === "webhooks:write") {
      granted.add("webhooks:write");
      granted.add("webhooks:read");
    } else if (s === "webhooks:read") {
      granted.add("webhooks:read");
    }
  }
  return granted;
}
