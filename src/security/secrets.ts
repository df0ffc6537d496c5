/**
 * Encryption at rest of the secrets we must be able to read back: destination signing
 * secrets and sources' provider signing secrets. AES-256-GCM through Web Crypto, under
 * the Worker secret ENCRYPTION_KEY (base64 of 32 bytes).
 *
 * Ciphertext format: `v1.<key id>.<iv>.<ciphertext+tag>` (base64url parts). The key id
 * is the first 8 bytes of SHA-256(key), so several keys can be configured at once
 * (ENCRYPTION_KEYS_PREVIOUS) and a rotation only needs the new key put first.
 * Each ciphertext is bound to the row and column it belongs to through the GCM
 * additional data, so a ciphertext copied into another row does not decrypt.
 */
import { EncryptionUnavailableError } from "../errors";
import { base64ToBytes, bytesToBase64Url, base64UrlToBytes, bytesToHex } from "./encoding";

interface KeyEntry {
  id: string;
  key: CryptoKey;
}

export interface SecretBox {
  encrypt(plaintext: string, context: string): Promise<string>;
  decrypt(ciphertext: string, context: string): Promise<string>;
}

/** Imported keys, settled only (a pending import is never shared between requests). */
const cache = new Map<string, KeyEntry[]>();

/**
 * Secrets decrypted in this isolate, by context and ciphertext. A ciphertext names its key,
 * and is only read here while that key is configured, so the answer is the one decrypting
 * would give. It saves a decryption per delivery attempt and per signed ingest. Bounded:
 * an isolate signs and verifies for a limited set of destinations and sources at a time.
 */
const decrypted = new Map<string, string>();
const DECRYPTED_ENTRIES = 1000;

async function importKey(b64: string): Promise<KeyEntry> {
  let raw: Uint8Array;
  try {
    raw = base64ToBytes(b64.trim());
  } catch {
    throw new EncryptionUnavailableError("ENCRYPTION_KEY is not valid base64.");
  }
  if (raw.length !== 32) {
    throw new EncryptionUnavailableError("ENCRYPTION_KEY must be the base64 of exactly 32 bytes.");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
  const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
  return { id: bytesToHex(digest.subarray(0, 8)), key };
}

async function loadKeys(current: string | undefined, previous: string | undefined): Promise<KeyEntry[]> {
  if (!current || current.trim() === "") {
    throw new EncryptionUnavailableError("Secrets cannot be stored: the Worker has no ENCRYPTION_KEY configured.");
  }
  const cacheKey = `${current}|${previous ?? ""}`;
  const hit = cache.get(cacheKey);
  if (hit) return hit;
  const all = [current, ...(previous ?? "").split(",")].filter((k) => k.trim() !== "");
  const keys = await Promise.all(all.map(importKey));
  cache.set(cacheKey, keys);
  return keys;
}

/**
 * A SecretBox over the configured keys. Throws `encryption_unavailable` (a clear 500)
 * on first use when no usable key is configured: nothing is ever stored in plain text.
 */
export function secretBox(current: string | undefined, previous?: string): SecretBox {
  const enc = new TextEncoder();
  return {
    async encrypt(plaintext, context) {
      const [primary] = await loadKeys(current, previous);
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const ct = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: enc.encode(context) },
        primary!.key,
        enc.encode(plaintext),
      );
      return `v1.${primary!.id}.${bytesToBase64Url(iv)}.${bytesToBase64Url(new Uint8Array(ct))}`;
    },
    async decrypt(ciphertext, context) {
      const keys = await loadKeys(current, previous);
      const [version, keyId, iv, ct] = ciphertext.split(".");
      const entry = keys.find((k) => k.id === keyId);
      if (version !== "v1" || !entry || !iv || !ct) {
        throw new EncryptionUnavailableError("A stored secret cannot be decrypted with the configured keys.");
      }
      const memo = `${context}\n${ciphertext}`;
      const hit = decrypted.get(memo);
      if (hit !== undefined) return hit;
      try {
        const plain = new TextDecoder().decode(
          await crypto.subtle.decrypt({ name: "AES-GCM", iv: base64UrlToBytes(iv), additionalData: enc.encode(context) }, entry.key, base64UrlToBytes(ct)),
        );
        if (decrypted.size >= DECRYPTED_ENTRIES) decrypted.clear();
        decrypted.set(memo, plain);
        return plain;
      } catch {
        throw new EncryptionUnavailableError("A stored secret cannot be decrypted with the configured keys.");
      }
    },
  };
}

/** The additional data that binds a ciphertext to its place. */
export const secretContext = {
  destination: (id: string) => `destination:${id}:secret`,
  destinationHeaders: (id: string) => `destination:${id}:headers`,
  source: (id: string) => `source:${id}:signing_secret`,
};
