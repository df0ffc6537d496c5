/**
 * The SSRF table: every URL and every resolved address the destination guard
 * (src/security/ssrf.ts) must refuse or allow, with the reason it must give, in each of
 * the three configurations a relay runs in. One table, driven twice:
 * - test/unit/ssrf.test.ts: against checkDestinationUrl and refusedAddress, with a fake
 *   resolver answering DNS below;
 * - test/integration/destinations-ssrf.test.ts: against the API (create and PATCH a
 *   destination, and the test endpoint's send-time re-check), with the loopback
 *   receiver's DoH endpoint answering the same DNS.
 * Add a case here and it is tested everywhere.
 *
 * Where the hard cases come from (paraphrased, nothing copied):
 * - OWASP, "Server-Side Request Forgery Prevention Cheat Sheet"
 *   (cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html):
 *   webhooks as an SSRF vector, alternate IP encodings, cloud metadata endpoints, resolving
 *   names and checking every answer, DNS pinning/rebinding, no redirects.
 * - PortSwigger, "URL validation bypass cheat sheet"
 *   (portswigger.net/web-security/ssrf/url-validation-bypass-cheat-sheet): decimal, octal,
 *   hex and shortened IPv4, IPv6 and IPv4-in-IPv6 forms, `user@host` and `host#@other`
 *   userinfo/fragment confusion, backslash confusion, percent-encoded and Unicode
 *   (full-width / enclosed alphanumeric) hosts.
 * - The WHATWG URL Standard (url.spec.whatwg.org), host parsing: the IPv4 parser and its
 *   "ends in a number" check (why `2130706433`, `0x7f.1`, `017700000001`, `127.1`, `0x`
 *   become dotted quads, and `127.0.0.1..` stays a domain), percent-decoding and UTS #46
 *   mapping of domains, rejection of IPv6 zone identifiers, backslash as a path separator
 *   in special schemes.
 * - RFC 6890 and the IANA IPv4 / IPv6 Special-Purpose Address Registries: 0/8, 10/8,
 *   100.64/10 (RFC 6598), 127/8, 169.254/16 (RFC 3927), 172.16/12, 192.0.0/24, 192.0.2/24,
 *   198.51.100/24, 203.0.113/24 (RFC 5737), 192.88.99/24, 192.168/16, 198.18/15 (RFC 2544),
 *   224/4, 240/4, 255.255.255.255; ::, ::1, 100::/64 (RFC 6666), 2001::/23, 2001:2::/48,
 *   2001:10::/28, 2001:db8::/32 (RFC 3849), 3fff::/20 (RFC 9637), fc00::/7 (RFC 4193),
 *   fe80::/10, fec0::/10 (deprecated by RFC 3879), ff00::/8.
 * - IPv6 forms that carry an IPv4 address: RFC 4291 §2.5.5 (IPv4-compatible ::a.b.c.d and
 *   IPv4-mapped ::ffff:a.b.c.d), RFC 6052 (NAT64 64:ff9b::/96) and RFC 8215 (local-use
 *   64:ff9b:1::/48), RFC 6145/7915 (::ffff:0:a.b.c.d), RFC 3056 (6to4 2002:AABB:CCDD::/48),
 *   RFC 4380 (Teredo 2001:0::/32, server IPv4 in bits 32–63, client IPv4 inverted in the
 *   last 32 bits).
 * - Special-use names: RFC 6761 (localhost, .localhost), RFC 6762 (.local), RFC 8375
 *   (.home.arpa), ICANN's 2024 reservation of .internal; cloud metadata names and
 *   addresses documented by AWS (169.254.169.254, 169.254.170.2, fd00:ec2::254), Google
 *   Cloud (metadata.google.internal, `metadata`), Alibaba Cloud (100.100.100.200) and
 *   Oracle Cloud (192.0.0.192).
 *
 * No imports but MAX_URL_LENGTH: the module is data.
 */
import { MAX_URL_LENGTH } from "../../src/security/ssrf";

export const PUBLIC_V4 = "93.184.215.14";
export const PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c";

/**
 * name → every A and AAAA answer; "servfail": the resolver cannot be asked about it.
 * Names not here do not exist (NXDOMAIN).
 */
export const DNS: Record<string, string[] | "servfail"> = {
  // public
  "example.com": [PUBLIC_V4, PUBLIC_V6],
  "api.example.org": [PUBLIC_V4],
  "v6only.example.net": ["2606:4700:4700::1111"],
  "dual.example.net": ["1.1.1.1", "2606:4700:4700::1001"],
  "xn--bcher-kva.example": [PUBLIC_V4], // bücher.example
  "xn--mnchen-3ya.example": ["8.8.4.4"], // münchen.example
  "localhost.example.com": [PUBLIC_V4],
  "internal.example.com": [PUBLIC_V4],
  "foo.local.example.com": [PUBLIC_V4],
  "hooks.example.com": ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888"],
  // private answers
  "internal-a.example.com": ["10.0.0.5"],
  "internal-b.example.com": ["10.1.2.3"],
  "patch-private.example.com": ["192.168.1.20"],
  "rebind.example.com": ["127.0.0.1"],
  "127.0.0.1.nip.io": ["127.0.0.1"],
  "meta.example.com": ["169.254.169.254"],
  "cgnat.example.com": ["100.64.0.1"],
  "zero.example.com": ["0.0.0.0"],
  "docs.example.com": ["192.0.2.10"],
  "v6loop.example.com": ["::1"],
  "v6private.example.com": ["fd00::1"],
  "linklocal6.example.com": ["fe80::1"],
  "mapped.example.com": ["::ffff:10.0.0.1"],
  "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
  "sixtofour.example.com": ["2002:c0a8:101::1"],
  // one public and one private answer
  "mixed.example.com": [PUBLIC_V4, "10.0.0.1"],
  "mixed-first.example.com": ["192.168.1.1", PUBLIC_V4],
  "mixed6.example.com": [PUBLIC_V4, PUBLIC_V6, "::1"],
  "mixed-v6.example.com": [PUBLIC_V6, "fc00::5"],
  "mixed-ula.example.com": [PUBLIC_V4, "fd00::7"],
  "mixed-meta.example.com": [PUBLIC_V4, "169.254.169.254"],
  // nonsense, nothing, and a resolver that fails
  "garbage.example.com": ["not-an-ip"],
  "empty.example.com": [],
  "servfail.example.com": "servfail",
};

/** A reason the guard must give, and the code of the API's 422 detail on `url` that carries it. */
export interface Reason {
  why: RegExp;
  /** invalid_url: the URL's syntax (checked without DNS); url_refused: what it points at. */
  code: "invalid_url" | "url_refused";
}

const address = (why: RegExp): Reason => ({ why, code: "url_refused" });
const syntax = (why: RegExp): Reason => ({ why, code: "invalid_url" });

export const LOOPBACK = address(/loopback/);
export const PRIVATE = address(/private/);
export const LINK_LOCAL = address(/linkLocal/);
export const UNSPECIFIED = address(/unspecified/);
export const RESERVED = address(/reserved/);
export const CGNAT = address(/carrierGradeNat/);
export const MULTICAST = address(/multicast/);
export const UNIQUE_LOCAL = address(/uniqueLocal/);
export const LOCAL_NAME = address(/local or internal name/);
export const SINGLE_LABEL = address(/fully qualified/);
export const IP_LITERAL = address(/is an IP address: in production use a host name/);
export const CREDENTIALS = syntax(/credentials/);
export const NOT_A_URL = syntax(/absolute URL/);
export const SCHEME = syntax(/must use https/);
export const TOO_LONG = syntax(/at most 2048/);

/**
 * The three configurations:
 * - production: ENVIRONMENT=production, private destinations refused (https only, host names only);
 * - guarded: outside production with ALLOW_PRIVATE_DESTINATIONS=false (http and IP literals too);
 * - dev: outside production with ALLOW_PRIVATE_DESTINATIONS=true (syntax only: no address checks, no DNS).
 */
export const MODES = ["production", "guarded", "dev"] as const;
export type Mode = (typeof MODES)[number];

export type Outcome = "allowed" | Reason;

export interface UrlCase {
  url: string;
  /** What each configuration must do with it. */
  expect: Record<Mode, Outcome>;
}

/** Refused for this reason with the guard on; with it off (dev), refused only for its syntax. */
function refused(url: string, why: Reason | RegExp): UrlCase {
  const reason = why instanceof RegExp ? address(why) : why;
  return { url, expect: { production: reason, guarded: reason, dev: reason.code === "invalid_url" ? reason : "allowed" } };
}

/** An http URL: refused in production for its scheme; outside it, judged like https (with the guard off, by its syntax alone). */
function http(url: string, guarded: Outcome): UrlCase {
  return { url, expect: { production: SCHEME, guarded, dev: guarded !== "allowed" && guarded.code === "invalid_url" ? guarded : "allowed" } };
}

/** A public IP literal: refused in production (Workers cannot fetch IP addresses), fine elsewhere. */
function publicLiteral(url: string): UrlCase {
  return { url, expect: { production: IP_LITERAL, guarded: "allowed", dev: "allowed" } };
}

/** Allowed everywhere. */
function allowed(url: string): UrlCase {
  return { url, expect: { production: "allowed", guarded: "allowed", dev: "allowed" } };
}

export const URL_CASES: UrlCase[] = [

  // IPv4 in every encoding the WHATWG IPv4 parser accepts
  refused("https://2130706433/", LOOPBACK),
  refused("https://017700000001/", LOOPBACK),
  refused("https://0177.0.0.1/", LOOPBACK),
  refused("https://0x7f000001/", LOOPBACK),
  refused("https://0x7f.1/", LOOPBACK),
  refused("https://0x7F.0x0.0x0.0x1/", LOOPBACK),
  refused("https://0177.0.1/", LOOPBACK),
  refused("https://127.1/", LOOPBACK),
  refused("https://127.0.1/", LOOPBACK),
  refused("https://10.1/", PRIVATE),
  refused("https://167772161/", PRIVATE), // 10.0.0.1
  refused("https://0300.0250.0.1/", PRIVATE), // 192.168.0.1
  refused("https://0xc0a80001/", PRIVATE),
  refused("https://192.168.1/", PRIVATE),
  refused("https://%31%32%37.0.0.1/", LOOPBACK), // percent-encoded digits
  refused("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", LOOPBACK), // full-width digits
  refused("https://127.0.0.1%2e/", LOOPBACK), // percent-encoded trailing dot
  refused("https://127%2e0%2e0%2e1/", LOOPBACK),
  refused("https://1\n27.0.0.\t1/", LOOPBACK), // tabs and newlines are stripped
  refused("https:\\\\127.0.0.1/", LOOPBACK), // backslashes as slashes
  refused("https:127.0.0.1", LOOPBACK), // no slashes at all
  refused("https://0x7f.1%2e%2e/", LOOPBACK), // a domain "0x7f.1.." to WHATWG
  refused("https://0/", UNSPECIFIED),
  refused("https://0x/", UNSPECIFIED), // "0x" is a number (zero) to WHATWG
  refused("https://0.0.0.0/", UNSPECIFIED),
  refused("https://0.0.0.0:8080/", UNSPECIFIED),
  // loopback, RFC 1918
  refused("https://127.0.0.1/", LOOPBACK),
  refused("https://127.255.255.254/", LOOPBACK),
  refused("https://127.0.0.1:8080/admin?x=1", LOOPBACK),
  refused("https://127.0.0.1./", LOOPBACK),
  refused("https://127.0.0.1../", LOOPBACK), // a domain to WHATWG, judged without the dots
  refused("https://10.0.0.1/", PRIVATE),
  refused("https://10.255.255.255/", PRIVATE),
  refused("https://172.16.0.1/", PRIVATE),
  refused("https://172.31.255.255/", PRIVATE),
  refused("https://192.168.1.1/", PRIVATE),
  // link-local and cloud metadata
  refused("https://169.254.169.254/latest/meta-data/", LINK_LOCAL),
  refused("https://169.254.170.2/v2/credentials", LINK_LOCAL),
  refused("https://2852039166/", LINK_LOCAL), // 169.254.169.254
  refused("https://0xa9fea9fe/", LINK_LOCAL),
  refused("https://0251.0376.0251.0376/", LINK_LOCAL),
  refused("https://169.254.0.1/", LINK_LOCAL),
  refused("https://metadata.google.internal/computeMetadata/v1/", LOCAL_NAME),
  refused("https://metadata/computeMetadata/v1/", SINGLE_LABEL),
  refused("https://100.100.100.200/latest/meta-data/", CGNAT),
  refused("https://192.0.0.192/opc/v1/instance/", RESERVED),
  refused("https://[fd00:ec2::254]/latest/meta-data/", /uniqueLocal/),
  // CGNAT, broadcast, multicast, reserved, documentation, benchmarking
  refused("https://100.64.0.1/", CGNAT),
  refused("https://100.127.255.254/", CGNAT),
  refused("https://255.255.255.255/", /broadcast/),
  refused("https://224.0.0.1/", MULTICAST),
  refused("https://239.255.255.250/", MULTICAST),
  refused("https://240.0.0.1/", RESERVED),
  refused("https://255.255.255.254/", RESERVED),
  refused("https://192.0.2.1/", RESERVED),
  refused("https://198.51.100.7/", RESERVED),
  refused("https://203.0.113.9/", RESERVED),
  refused("https://198.18.0.1/", RESERVED),
  refused("https://198.19.255.255/", RESERVED),
  refused("https://192.88.99.1/", RESERVED),
  // IPv6
  refused("https://[::1]/", LOOPBACK),
  refused("https://[0:0:0:0:0:0:0:1]:8443/", LOOPBACK),
  refused("https://[::]/", UNSPECIFIED),
  refused("https://[fd00::1]/", /uniqueLocal/),
  refused("https://[fc00::]/", /uniqueLocal/),
  refused("https://[fe80::1]/", LINK_LOCAL),
  refused("https://[fe80::a9fe:a9fe]/", LINK_LOCAL),
  // A zone id: the WHATWG host parser rejects `%25eth0`, so the URL itself is invalid.
  refused("https://[fe80::1%25eth0]/", NOT_A_URL),
  refused("https://[fec0::1]/", /deprecatedSiteLocal/),
  refused("https://[ff02::1]/", MULTICAST),
  refused("https://[ff05::fb]/", MULTICAST),
  refused("https://[2001:db8::1]/", RESERVED),
  refused("https://[2001:db8:85a3::8a2e:370:7334]/", RESERVED),
  refused("https://[3fff::1]/", RESERVED),
  refused("https://[2001:2::1]/", /benchmarking/),
  refused("https://[2001:10::1]/", /Orchid/i),
  refused("https://[100::1]/", /discard/),
  refused("https://[4000::1]/", /2000::\/3/),
  // IPv4 carried in IPv6: mapped, SIIT, compatible, NAT64, 6to4, Teredo
  refused("https://[::ffff:127.0.0.1]/", LOOPBACK),
  refused("https://[::ffff:7f00:1]/", LOOPBACK),
  refused("https://[::ffff:169.254.169.254]/", LINK_LOCAL),
  refused("https://[::ffff:10.0.0.1]/", PRIVATE),
  refused("https://[0:0:0:0:0:ffff:192.168.0.1]/", PRIVATE),
  refused("https://[::ffff:0.0.0.0]/", UNSPECIFIED),
  refused("https://[::ffff:0:7f00:1]/", LOOPBACK), // RFC 6145 ::ffff:0:a.b.c.d
  refused("https://[::127.0.0.1]/", LOOPBACK), // IPv4-compatible
  refused("https://[::a00:1]/", PRIVATE), // IPv4-compatible 10.0.0.1
  refused("https://[::2]/", UNSPECIFIED), // IPv4-compatible 0.0.0.2
  refused("https://[64:ff9b::7f00:1]/", LOOPBACK),
  refused("https://[64:ff9b::a00:1]/", PRIVATE),
  refused("https://[64:ff9b::169.254.169.254]/", LINK_LOCAL),
  refused("https://[64:ff9b:1::a00:1]/", /NAT64|rfc6052/), // local-use NAT64: refused whatever it carries
  refused("https://[64:ff9b:1::808:808]/", /NAT64|rfc6052/),
  refused("https://[2002:7f00:1::]/", LOOPBACK),
  refused("https://[2002:a00:1::]/", PRIVATE),
  refused("https://[2002:a9fe:a9fe::1]/", LINK_LOCAL),
  // Teredo: server 65.54.227.120, client 10.0.0.1 / 127.0.0.1 (inverted in the last 32 bits)
  refused("https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", PRIVATE),
  refused("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", LOOPBACK),
  // Teredo with a private server address (client 8.8.8.8)
  refused("https://[2001:0:a00:1:8000:63bf:f7f7:f7f7]/", PRIVATE),
  // local and internal names
  refused("https://localhost/", LOCAL_NAME),
  refused("https://LOCALHOST/", LOCAL_NAME),
  refused("https://localhost./", LOCAL_NAME),
  refused("https://localhost../", LOCAL_NAME),
  refused("https://localhost:3000/hooks", LOCAL_NAME),
  refused("https://localhost.localdomain/", LOCAL_NAME),
  refused("https://foo.localhost/", LOCAL_NAME),
  refused("https://a.b.localhost/", LOCAL_NAME),
  refused("https://Foo.LocalHost./", LOCAL_NAME),
  refused("https://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/", LOCAL_NAME), // enclosed letters → localhost
  refused("https://localhost\u3002/", LOCAL_NAME), // ideographic full stop → localhost.
  refused("https://local%68ost/", LOCAL_NAME),
  refused("https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", LOCAL_NAME), // full-width letters
  refused("https://local\u00adhost/", LOCAL_NAME), // soft hyphen, mapped away by UTS #46
  refused("https://printer.local/", LOCAL_NAME),
  refused("https://b\u00fccher.local/", LOCAL_NAME),
  refused("https://service.internal/", LOCAL_NAME),
  refused("https://router.home.arpa/", LOCAL_NAME),
  refused("https://intranet/", SINGLE_LABEL),
  refused("https://instance-data/latest/", SINGLE_LABEL),
  // userinfo and fragment tricks
  refused("https://user:pass@example.com/", CREDENTIALS),
  refused("https://user@example.com/", CREDENTIALS),
  refused("https://:pass@example.com/", CREDENTIALS),
  refused("https://@example.com/", CREDENTIALS),
  refused("https://example.com@127.0.0.1/", CREDENTIALS),
  refused("https://example.com:443@127.0.0.1/", CREDENTIALS),
  refused("https://127.0.0.1#@example.com", LOOPBACK),
  refused("https://127.0.0.1?@example.com", LOOPBACK),
  refused("https://127.0.0.1:443\\@example.com/", CREDENTIALS), // host 127.0.0.1 to WHATWG
  refused("https://example.com%2f@127.0.0.1/", CREDENTIALS),
  // WHATWG reads `\` as `/` (host example.com); other parsers read userinfo: refused as ambiguous.
  refused("https://example.com\\@127.0.0.1", CREDENTIALS),
  refused("https://example.com%40127.0.0.1/", NOT_A_URL), // `@` is a forbidden host code point
  // schemes
  // http: refused in production only; outside it, judged like https
  http("http://example.com/", "allowed"),
  http("HTTP://EXAMPLE.COM/", "allowed"),
  http("http://8.8.8.8/", "allowed"),
  http("http://2130706433/", LOOPBACK),
  http("http://localhost:3000/", LOCAL_NAME),
  refused("ftp://example.com/file", SCHEME),
  refused("file:///etc/passwd", SCHEME),
  refused("gopher://127.0.0.1:6379/_INFO", SCHEME),
  refused("dict://127.0.0.1:11211/stats", SCHEME),
  refused("javascript:alert(1)", SCHEME),
  refused("data:text/plain,hello", SCHEME),
  refused("wss://example.com/socket", SCHEME),
  // not URLs, or not absolute
  refused("", NOT_A_URL),
  refused("not a url", NOT_A_URL),
  refused("/relative/path", NOT_A_URL),
  refused("example.com/hook", NOT_A_URL),
  refused("//example.com/hook", NOT_A_URL),
  refused("https://", NOT_A_URL),
  refused("https://exa mple.com/", NOT_A_URL),
  refused("https://[::1/", NOT_A_URL),
  refused("https://1.2.3.4.5/", NOT_A_URL),
  refused("https://256.0.0.1/", NOT_A_URL),
  refused("https://08.0.0.1/", NOT_A_URL),
  refused("https://example.com:99999/", NOT_A_URL),
  // too long
  refused(`https://example.com/${"a".repeat(MAX_URL_LENGTH)}`, TOO_LONG),
  refused(`https://example.com/${"a".repeat(MAX_URL_LENGTH - "https://example.com/".length + 1)}`, TOO_LONG),
  // names whose answers are refused
  refused("https://internal-a.example.com/hooks", /resolves to 10\.0\.0\.5.*private/),
  refused("https://internal-a.example.com./hooks", /resolves to 10\.0\.0\.5/),
  refused("https://rebind.example.com/", /resolves to 127\.0\.0\.1.*loopback/),
  refused("https://127.0.0.1.nip.io/", LOOPBACK),
  refused("https://meta.example.com/latest/meta-data/", LINK_LOCAL),
  refused("https://cgnat.example.com/", CGNAT),
  refused("https://zero.example.com/", UNSPECIFIED),
  refused("https://docs.example.com/", RESERVED),
  refused("https://v6loop.example.com/", LOOPBACK),
  refused("https://v6private.example.com/", /uniqueLocal/),
  refused("https://linklocal6.example.com/", LINK_LOCAL),
  refused("https://mapped.example.com/", PRIVATE),
  refused("https://nat64.example.com/", LINK_LOCAL),
  refused("https://sixtofour.example.com/", PRIVATE),
  refused("https://mixed.example.com/", /resolves to 10\.0\.0\.1/),
  refused("https://mixed-first.example.com/", /resolves to 192\.168\.1\.1/),
  refused("https://mixed6.example.com/", /resolves to ::1/),
  refused("https://mixed-v6.example.com/", /resolves to fc00::5/),
  refused("https://garbage.example.com/", /not a valid IP address/),
  refused("https://empty.example.com/", /does not resolve/),
  refused("https://nxdomain.example.com/", /does not resolve/),
  refused("https://servfail.example.com/", /could not be resolved/),
  // http to what must be refused, as an API client would send it outside production
  http("http://127.0.0.1/x", address(/127\.0\.0\.1 .*loopback/)),
  http("http://127.1.2.3:8080/hook", LOOPBACK),
  http("http://localhost/hook", LOCAL_NAME),
  http("http://api.localhost/hook", LOCAL_NAME),
  http("http://printer.local/hook", LOCAL_NAME),
  http("http://metadata.google.internal/computeMetadata/v1/", LOCAL_NAME),
  http("http://10.0.0.1/hook", PRIVATE),
  http("http://172.16.5.4/hook", PRIVATE),
  http("http://192.168.1.1/hook", PRIVATE),
  http("http://169.254.169.254/latest/meta-data/", LINK_LOCAL),
  http("http://100.64.0.1/hook", CGNAT),
  http("http://0.0.0.0/hook", UNSPECIFIED),
  http("http://2130706433/hook", LOOPBACK),
  http("http://0x7f.1/x", LOOPBACK),
  http("http://017700000001/x", LOOPBACK),
  http("http://[::1]/hook", LOOPBACK),
  http("http://[fe80::1]/hook", LINK_LOCAL),
  http("http://[fc00::1]/hook", UNIQUE_LOCAL),
  http("http://[::ffff:127.0.0.1]/x", LOOPBACK),
  http("http://[::ffff:169.254.169.254]/hook", LINK_LOCAL),
  http("http://[64:ff9b::a00:1]/hook", PRIVATE),
  http("http://224.0.0.1/hook", MULTICAST),
  http("http://255.255.255.255/hook", address(/broadcast/)),
  http("http://192.0.2.10/hook", RESERVED),
  http("http://localhost:3000/hooks", LOCAL_NAME),
  http("http://127.0.0.1:8787/", LOOPBACK),
  // Both are wrong with it: the guard names the scheme first in production, the API's body
  // check (syntax, http allowed) the credentials.
  { url: "http://user:pass@localhost:3000/", expect: { production: syntax(/must use https in production|credentials/), guarded: CREDENTIALS, dev: CREDENTIALS } },
  refused("ftp://localhost/", SCHEME),
  refused("localhost:3000", SCHEME), // scheme "localhost:", not a host
  refused("/hooks", NOT_A_URL),
  refused(`http://localhost/${"a".repeat(MAX_URL_LENGTH)}`, TOO_LONG),
  // more names whose answers are refused
  refused("https://internal-b.example.com/hook", /resolves to 10\.1\.2\.3.*private/),
  refused("https://patch-private.example.com/hooks", /resolves to 192\.168\.1\.20.*private/),
  refused("https://mixed-ula.example.com/", /resolves to fd00::7/),
  refused("https://mixed-meta.example.com/hook", /resolves to 169\.254\.169\.254.*linkLocal/),
  refused("https://10.0.0.5/hooks", PRIVATE),
  refused("https://169.254.169.254/", LINK_LOCAL),
  refused("https://internal-a.example.com/", /resolves to 10\.0\.0\.5/),

  // public IP literals
  publicLiteral("https://8.8.8.8/"),
  publicLiteral("https://1.1.1.1/"),
  publicLiteral("https://93.184.215.14/"),
  publicLiteral("https://93.184.215.14:8443/hooks?x=1"),
  publicLiteral("https://8.8.8.8./"), // trailing dot on a literal
  publicLiteral("https://0x08080808/"), // an odd encoding of a public address is still public
  publicLiteral("https://134744072/"), // 8.8.8.8 in decimal
  publicLiteral("https://[2606:4700:4700::1111]/"),
  publicLiteral("https://[2001:4860:4860::8888]:443/dns-query"),
  publicLiteral("https://[::ffff:8.8.8.8]/"), // mapped public: only mapped forms of refused ranges are refused
  publicLiteral("https://[64:ff9b::808:808]/"), // NAT64 of 8.8.8.8
  publicLiteral("https://[64:ff9b::1.1.1.1]/"),
  publicLiteral("https://[2002:808:808::1]/"), // 6to4 of 8.8.8.8
  publicLiteral("https://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/"), // Teredo, server 65.54.227.120, client 8.8.8.8

  // names resolving only to public addresses
  allowed("https://example.com/"),
  allowed("https://example.com/webhooks/stripe"),
  allowed("https://example.com:8443/hook?a=1&b=2#frag"),
  allowed("https://example.com./"),
  allowed("https://EXAMPLE.COM/Path/To/Hook"),
  allowed("https://Example.Com./hooks?Q=1"),
  allowed("https://api.example.org/v1/hooks"),
  allowed("https://v6only.example.net/"),
  allowed("https://dual.example.net/"),
  allowed("https://hooks.example.com/in"),
  allowed("https://b\u00fccher.example/"), // IDN → xn--bcher-kva.example
  allowed("https://xn--bcher-kva.example/"),
  allowed("https://M\u00dcNCHEN.example/hook"),
  // names that merely contain a blocked word
  allowed("https://localhost.example.com/"),
  allowed("https://internal.example.com/"),
  allowed("https://foo.local.example.com/"),
  // exactly the longest URL
  allowed(`https://example.com/${"a".repeat(MAX_URL_LENGTH - "https://example.com/".length)}`),
];

/** An address a name may resolve to: refused with a reason naming its range, or null for public unicast. */
export interface AddressCase {
  address: string;
  refused: RegExp | null;
}

export const ADDRESS_CASES: AddressCase[] = [
  { address: "127.0.0.1", refused: /loopback/ },
  { address: "10.1.2.3", refused: /private/ },
  { address: "172.20.0.1", refused: /private/ },
  { address: "192.168.0.1", refused: /private/ },
  { address: "169.254.169.254", refused: /linkLocal/ },
  { address: "100.64.0.1", refused: /carrierGradeNat/ },
  { address: "0.0.0.0", refused: /unspecified/ },
  { address: "255.255.255.255", refused: /broadcast/ },
  { address: "224.0.0.251", refused: /multicast/ },
  { address: "240.0.0.1", refused: /reserved/ },
  { address: "192.0.2.1", refused: /reserved/ },
  { address: "198.18.0.1", refused: /reserved/ },
  { address: "::1", refused: /loopback/ },
  { address: "::", refused: /unspecified/ },
  { address: "fd12:3456::1", refused: /uniqueLocal/ },
  { address: "fe80::1", refused: /linkLocal/ },
  { address: "fe80::1%eth0", refused: /linkLocal/ },
  { address: "fec0::1", refused: /deprecatedSiteLocal/ },
  { address: "ff02::1", refused: /multicast/ },
  { address: "2001:db8::1", refused: /reserved/ },
  { address: "::ffff:10.0.0.1", refused: /embeds 10\.0\.0\.1.*private/ },
  { address: "::ffff:7f00:1", refused: /embeds 127\.0\.0\.1.*loopback/ },
  { address: "::7f00:1", refused: /embeds 127\.0\.0\.1/ },
  { address: "64:ff9b::a9fe:a9fe", refused: /embeds 169\.254\.169\.254.*linkLocal/ },
  { address: "64:ff9b:1::1", refused: /NAT64|rfc6052/ },
  { address: "2002:c0a8:101::", refused: /embeds 192\.168\.1\.1/ },
  { address: "2001:0:4136:e378:8000:63bf:f5ff:fffe", refused: /embeds 10\.0\.0\.1/ },
  { address: "not-an-ip", refused: /not a valid IP address/ },
  { address: "", refused: /not a valid IP address/ },
  { address: "8.8.8.8", refused: null },
  { address: PUBLIC_V4, refused: null },
  { address: "2606:4700:4700::1111", refused: null },
  { address: "::ffff:8.8.8.8", refused: null },
  { address: "64:ff9b::808:808", refused: null },
  { address: "2002:808:808::", refused: null },
];

/** The name an address case is published under, for tests that need a name resolving to it. */
export const nameFor = (i: number) => `address-${i}.ssrf-table.example.com`;

/** A test name that shows the URL, with control characters escaped and long URLs cut. */
export function label(url: string): string {
  const shown = /[\u0000-\u001f]/.test(url) ? JSON.stringify(url) : url;
  return shown.length > 120 ? `${shown.slice(0, 60)}… (${url.length} chars)` : shown;
}
