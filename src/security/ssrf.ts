/**
 * The SSRF guard: decides whether Krafter may send a request to a destination URL.
 * Run at create, at every URL change, and again before every send (the DNS answer of
 * a name can change between the two).
 *
 * The rule: after WHATWG URL normalisation (which already turns `2130706433`,
 * `0x7f.1` and `017700000001` into `127.0.0.1`), the host must be a public unicast
 * address, or a name whose every A and AAAA answer is one. Classification is
 * ipaddr.js's range tables; IPv6 forms that embed an IPv4 address (mapped,
 * compatible, NAT64, 6to4, Teredo) are judged by the IPv4 address they carry.
 */
import ipaddr from "ipaddr.js";

/** Resolves a host name to all of its A and AAAA addresses. Throws when the lookup itself fails. */
export type Resolver = (hostname: string) => Promise<string[]>;

export interface UrlPolicy {
  /** https only. */
  production: boolean;
  /** Skip the address checks (local development, never production). */
  allowPrivate: boolean;
  resolver: Resolver;
}

/** `unresolved`: the lookup itself failed (the resolver, not the destination): ours to retry. */
type UrlVerdict = { ok: true; url: URL } | { ok: false; reason: string; unresolved?: true };

export const MAX_URL_LENGTH = 2048;

const BLOCKED_SUFFIXES = [".localhost", ".local", ".internal", ".home.arpa", ".localdomain"];
const BLOCKED_NAMES = new Set(["localhost", "localhost.localdomain", "local", "internal", "home.arpa"]);

/** Syntax only: absolute http(s) URL, length, no credentials. No network. */
export function checkUrlSyntax(raw: string, production: boolean): UrlVerdict {
  if (raw.length > MAX_URL_LENGTH) return { ok: false, reason: `must be at most ${MAX_URL_LENGTH} characters` };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: "must be an absolute URL" };
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return { ok: false, reason: "must use https" + (production ? "" : " or http") };
  }
  if (production && url.protocol !== "https:") return { ok: false, reason: "must use https in production" };
  if (url.username !== "" || url.password !== "" || /^[a-z]+:\/\/[^/?#]*@/i.test(raw.trim())) {
    return { ok: false, reason: "must not contain credentials (user:pass@)" };
  }
  if (url.hostname === "") return { ok: false, reason: "must have a host" };
  return { ok: true, url };
}

/** Why an IP address is refused, or null when it is public unicast. */
export function refusedAddress(address: string): string | null {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.parse(address);
  } catch {
    return "is not a valid IP address";
  }
  if (addr.kind() === "ipv4") {
    const range = addr.range();
    return range === "unicast" ? null : `is a ${range} address`;
  }
  const v6 = addr as ipaddr.IPv6;
  const embedded = embeddedIPv4(v6);
  if (embedded !== undefined) {
    if (embedded === null) return `is a ${v6.range()} address`;
    for (const v4 of embedded) {
      const why = refusedAddress(v4.toString());
      if (why) return `embeds ${v4.toString()}, which ${why}`;
    }
    return null;
  }
  const range = v6.range();
  if (range !== "unicast") return `is a ${range} address`;
  // Only 2000::/3 is global unicast today; anything else is unassigned or reserved.
  if (!v6.match(ipaddr.IPv6.parse("2000::"), 3)) return "is outside global unicast space (2000::/3)";
  return null;
}

/**
 * The IPv4 addresses an IPv6 address carries, for the forms that carry one;
 * undefined when it is not such a form, null when it is a form we refuse outright.
 */
function embeddedIPv4(v6: ipaddr.IPv6): ipaddr.IPv4[] | null | undefined {
  const p = v6.parts;
  const v4 = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  const range = v6.range();
  switch (range) {
    case "ipv4Mapped": // ::ffff:a.b.c.d
    case "rfc6145": // ::ffff:0:a.b.c.d (SIIT)
      return [v4(p[6]!, p[7]!)];
    case "rfc6052": // 64:ff9b::/96 NAT64; 64:ff9b:1::/48 is local-use
      return p[2] === 1 ? null : [v4(p[6]!, p[7]!)];
    case "6to4": // 2002:AABB:CCDD::/48
      return [v4(p[1]!, p[2]!)];
    case "teredo": // 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC (client bits inverted)
      return [v4(p[2]!, p[3]!), v4(p[6]! ^ 0xffff, p[7]! ^ 0xffff)];
  }
  // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291), other than :: and ::1.
  if (p.slice(0, 6).every((x) => x === 0) && (p[6] !== 0 || p[7]! > 1)) return [v4(p[6]!, p[7]!)];
  return undefined;
}

/** Why a host name is refused before any lookup, or null. */
function refusedName(host: string): string | null {
  if (BLOCKED_NAMES.has(host) || BLOCKED_SUFFIXES.some((s) => host.endsWith(s))) {
    return "is a local or internal name";
  }
  if (!host.includes(".")) return "is not a fully qualified public name";
  return null;
}

/** The whole check: syntax, then the host or every address it resolves to. */
export async function checkDestinationUrl(raw: string, policy: UrlPolicy): Promise<UrlVerdict> {
  const syntax = checkUrlSyntax(raw, policy.production);
  if (!syntax.ok || policy.allowPrivate) return syntax;
  const url = syntax.url;
  // Trailing dots name the same host (`localhost.`, `127.0.0.1.`); judge it without them.
  let host = url.hostname.replace(/\.+$/, "");
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  if (host === "") return { ok: false, reason: "must have a host" };

  if (ipaddr.isValid(host)) {
    const why = refusedAddress(host);
    if (why) return { ok: false, reason: `host ${host} ${why}` };
    // Cloudflare's Workers can fetch host names only, not IP addresses ("Fetch to IP
    // addresses", Workers known issues): every attempt would fail for a day.
    if (policy.production) return { ok: false, reason: `host ${host} is an IP address: in production use a host name (Cloudflare Workers cannot fetch IP addresses)` };
    return syntax;
  }
  const nameWhy = refusedName(host);
  if (nameWhy) return { ok: false, reason: `host ${host} ${nameWhy}` };

  let addresses: string[];
  try {
    addresses = await policy.resolver(host);
  } catch {
    return { ok: false, reason: `host ${host} could not be resolved`, unresolved: true };
  }
  if (addresses.length === 0) return { ok: false, reason: `host ${host} does not resolve to any address` };
  for (const a of addresses) {
    const why = refusedAddress(a);
    if (why) return { ok: false, reason: `host ${host} resolves to ${a}, which ${why}` };
  }
  return syntax;
}

interface DohAnswer {
  Status?: number;
  Answer?: { type: number | string; data: string; TTL?: number }[];
}

/** Answers kept per isolate, and for at most this long whatever their TTL. */
const DOH_CACHE_ENTRIES = 1000;
const DOH_CACHE_MAX_SECONDS = 300;

/**
 * A DNS-over-HTTPS resolver (the JSON API of Cloudflare's and Google's resolvers),
 * asking A and AAAA at once. NXDOMAIN or NODATA for both gives no addresses. Answers are
 * kept for the smallest TTL among them (at most DOH_CACHE_MAX_SECONDS, none when a TTL is
 * 0), so a batch of deliveries to one host costs one lookup, not two per attempt.
 */
export function dohResolver(endpoint: string, fetcher: typeof fetch, timeoutMs = 5000, now: () => number = Date.now): Resolver {
  const cache = new Map<string, { addresses: string[]; expires: number }>();
  const ask = async (name: string, type: "A" | "AAAA"): Promise<{ addresses: string[]; ttl: number }> => {
    const url = new URL(endpoint);
    url.searchParams.set("name", name);
    url.searchParams.set("type", type);
    const res = await fetcher(url.toString(), {
      headers: { accept: "application/dns-json" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!res.ok) throw new Error(`DoH lookup failed with HTTP ${res.status}`);
    const body = (await res.json()) as DohAnswer;
    if (body.Status !== undefined && body.Status !== 0 && body.Status !== 3) {
      throw new Error(`DoH lookup failed with DNS status ${body.Status}`);
    }
    const want = type === "A" ? 1 : 28;
    // Some resolvers write the type by name: read it rather than drop the answer.
    const typeOf = (t: number | string) => (typeof t === "string" ? ({ A: 1, AAAA: 28, CNAME: 5 } as Record<string, number>)[t.toUpperCase()] ?? -1 : t);
    const answers = (body.Answer ?? []).filter((a) => typeOf(a.type) === want);
    const ttl = Math.min(DOH_CACHE_MAX_SECONDS, ...answers.map((a) => (typeof a.TTL === "number" && a.TTL >= 0 ? a.TTL : 0)));
    return { addresses: answers.map((a) => a.data), ttl: answers.length > 0 ? ttl : 0 };
  };
  return async (hostname) => {
    const t = now();
    const hit = cache.get(hostname);
    if (hit && hit.expires > t) return hit.addresses;
    const [a, aaaa] = await Promise.all([ask(hostname, "A"), ask(hostname, "AAAA")]);
    const addresses = [...a.addresses, ...aaaa.addresses];
    const ttl = Math.min(a.addresses.length > 0 ? a.ttl : DOH_CACHE_MAX_SECONDS, aaaa.addresses.length > 0 ? aaaa.ttl : DOH_CACHE_MAX_SECONDS);
    cache.delete(hostname);
    if (addresses.length > 0 && ttl > 0) {
      cache.set(hostname, { addresses, expires: t + ttl * 1000 });
      if (cache.size > DOH_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
    }
    return addresses;
  };
}
