/**
 * The SSRF guard (src/security/ssrf.ts), proved with a table of URLs that must be refused
 * and URLs that must pass, run inside workerd so the WHATWG URL parser is the Worker's own.
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
 * - DNS over HTTPS, JSON flavour (Cloudflare / Google): Status 0 NOERROR, 2 SERVFAIL,
 *   3 NXDOMAIN; record types 1 (A), 5 (CNAME), 28 (AAAA).
 */
import { describe, expect, it } from "vitest";
import {
  checkDestinationUrl,
  checkUrlSyntax,
  dohResolver,
  MAX_URL_LENGTH,
  refusedAddress,
  type Resolver,
  type UrlPolicy,
} from "../../src/security/ssrf";

// ---- the fake resolver -------------------------------------------------------------

const PUBLIC_V4 = "93.184.215.14";
const PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c";

/** name → every A and AAAA answer. Unknown names: no answers (NXDOMAIN). */
const DNS = new Map<string, string[]>([
  // public
  ["example.com", [PUBLIC_V4, PUBLIC_V6]],
  ["api.example.org", [PUBLIC_V4]],
  ["v6only.example.net", ["2606:4700:4700::1111"]],
  ["dual.example.net", ["1.1.1.1", "2606:4700:4700::1001"]],
  ["xn--bcher-kva.example", [PUBLIC_V4]], // bücher.example
  ["xn--mnchen-3ya.example", ["8.8.4.4"]], // münchen.example
  ["localhost.example.com", [PUBLIC_V4]],
  ["internal.example.com", [PUBLIC_V4]],
  ["foo.local.example.com", [PUBLIC_V4]],
  ["hooks.example.com", ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888"]],
  // private answers
  ["internal-a.example.com", ["10.0.0.5"]],
  ["rebind.example.com", ["127.0.0.1"]],
  ["127.0.0.1.nip.io", ["127.0.0.1"]],
  ["meta.example.com", ["169.254.169.254"]],
  ["cgnat.example.com", ["100.64.0.1"]],
  ["zero.example.com", ["0.0.0.0"]],
  ["docs.example.com", ["192.0.2.10"]],
  ["v6loop.example.com", ["::1"]],
  ["v6private.example.com", ["fd00::1"]],
  ["linklocal6.example.com", ["fe80::1"]],
  ["mapped.example.com", ["::ffff:10.0.0.1"]],
  ["nat64.example.com", ["64:ff9b::a9fe:a9fe"]],
  ["sixtofour.example.com", ["2002:c0a8:101::1"]],
  // one public and one private answer
  ["mixed.example.com", [PUBLIC_V4, "10.0.0.1"]],
  ["mixed-first.example.com", ["192.168.1.1", PUBLIC_V4]],
  ["mixed6.example.com", [PUBLIC_V4, PUBLIC_V6, "::1"]],
  ["mixed-v6.example.com", [PUBLIC_V6, "fc00::5"]],
  // nonsense and nothing
  ["garbage.example.com", ["not-an-ip"]],
  ["empty.example.com", []],
]);

const THROWS = new Set(["servfail.example.com"]);

function fakeResolver(): Resolver & { asked: string[] } {
  const asked: string[] = [];
  const resolve = async (name: string) => {
    asked.push(name);
    if (THROWS.has(name)) throw new Error("SERVFAIL");
    return DNS.get(name) ?? [];
  };
  return Object.assign(resolve, { asked });
}

const production = (resolver: Resolver = fakeResolver()): UrlPolicy => ({
  production: true,
  allowPrivate: false,
  resolver,
});

// ---- the table ---------------------------------------------------------------------

interface Refused {
  url: string;
  /** What the reason must say: the refusal must be for the right cause. */
  why: RegExp;
}

const LOOPBACK = /loopback/;
const PRIVATE = /private/;
const LINK_LOCAL = /linkLocal/;
const UNSPECIFIED = /unspecified/;
const RESERVED = /reserved/;
const CGNAT = /carrierGradeNat/;
const MULTICAST = /multicast/;
const LOCAL_NAME = /local or internal name/;
const SINGLE_LABEL = /fully qualified/;
const CREDENTIALS = /credentials/;
const NOT_A_URL = /absolute URL/;
const SCHEME = /must use https/;

const REFUSED: Refused[] = [
  // IPv4 in every encoding the WHATWG IPv4 parser accepts
  { url: "https://2130706433/", why: LOOPBACK },
  { url: "https://017700000001/", why: LOOPBACK },
  { url: "https://0177.0.0.1/", why: LOOPBACK },
  { url: "https://0x7f000001/", why: LOOPBACK },
  { url: "https://0x7f.1/", why: LOOPBACK },
  { url: "https://0x7F.0x0.0x0.0x1/", why: LOOPBACK },
  { url: "https://0177.0.1/", why: LOOPBACK },
  { url: "https://127.1/", why: LOOPBACK },
  { url: "https://127.0.1/", why: LOOPBACK },
  { url: "https://10.1/", why: PRIVATE },
  { url: "https://167772161/", why: PRIVATE }, // 10.0.0.1
  { url: "https://0300.0250.0.1/", why: PRIVATE }, // 192.168.0.1
  { url: "https://0xc0a80001/", why: PRIVATE },
  { url: "https://192.168.1/", why: PRIVATE },
  { url: "https://%31%32%37.0.0.1/", why: LOOPBACK }, // percent-encoded digits
  { url: "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", why: LOOPBACK }, // full-width digits
  { url: "https://127.0.0.1%2e/", why: LOOPBACK }, // percent-encoded trailing dot
  { url: "https://127%2e0%2e0%2e1/", why: LOOPBACK },
  { url: "https://1\n27.0.0.\t1/", why: LOOPBACK }, // tabs and newlines are stripped
  { url: "https:\\\\127.0.0.1/", why: LOOPBACK }, // backslashes as slashes
  { url: "https:127.0.0.1", why: LOOPBACK }, // no slashes at all
  { url: "https://0x7f.1%2e%2e/", why: LOOPBACK }, // a domain "0x7f.1.." to WHATWG
  { url: "https://0/", why: UNSPECIFIED },
  { url: "https://0x/", why: UNSPECIFIED }, // "0x" is a number (zero) to WHATWG
  { url: "https://0.0.0.0/", why: UNSPECIFIED },
  { url: "https://0.0.0.0:8080/", why: UNSPECIFIED },
  // loopback, RFC 1918
  { url: "https://127.0.0.1/", why: LOOPBACK },
  { url: "https://127.255.255.254/", why: LOOPBACK },
  { url: "https://127.0.0.1:8080/admin?x=1", why: LOOPBACK },
  { url: "https://127.0.0.1./", why: LOOPBACK },
  { url: "https://127.0.0.1../", why: LOOPBACK }, // a domain to WHATWG, judged without the dots
  { url: "https://10.0.0.1/", why: PRIVATE },
  { url: "https://10.255.255.255/", why: PRIVATE },
  { url: "https://172.16.0.1/", why: PRIVATE },
  { url: "https://172.31.255.255/", why: PRIVATE },
  { url: "https://192.168.1.1/", why: PRIVATE },
  // link-local and cloud metadata
  { url: "https://169.254.169.254/latest/meta-data/", why: LINK_LOCAL },
  { url: "https://169.254.170.2/v2/credentials", why: LINK_LOCAL },
  { url: "https://2852039166/", why: LINK_LOCAL }, // 169.254.169.254
  { url: "https://0xa9fea9fe/", why: LINK_LOCAL },
  { url: "https://0251.0376.0251.0376/", why: LINK_LOCAL },
  { url: "https://169.254.0.1/", why: LINK_LOCAL },
  { url: "https://metadata.google.internal/computeMetadata/v1/", why: LOCAL_NAME },
  { url: "https://metadata/computeMetadata/v1/", why: SINGLE_LABEL },
  { url: "https://100.100.100.200/latest/meta-data/", why: CGNAT },
  { url: "https://192.0.0.192/opc/v1/instance/", why: RESERVED },
  { url: "https://[fd00:ec2::254]/latest/meta-data/", why: /uniqueLocal/ },
  // CGNAT, broadcast, multicast, reserved, documentation, benchmarking
  { url: "https://100.64.0.1/", why: CGNAT },
  { url: "https://100.127.255.254/", why: CGNAT },
  { url: "https://255.255.255.255/", why: /broadcast/ },
  { url: "https://224.0.0.1/", why: MULTICAST },
  { url: "https://239.255.255.250/", why: MULTICAST },
  { url: "https://240.0.0.1/", why: RESERVED },
  { url: "https://255.255.255.254/", why: RESERVED },
  { url: "https://192.0.2.1/", why: RESERVED },
  { url: "https://198.51.100.7/", why: RESERVED },
  { url: "https://203.0.113.9/", why: RESERVED },
  { url: "https://198.18.0.1/", why: RESERVED },
  { url: "https://198.19.255.255/", why: RESERVED },
  { url: "https://192.88.99.1/", why: RESERVED },
  // IPv6
  { url: "https://[::1]/", why: LOOPBACK },
  { url: "https://[0:0:0:0:0:0:0:1]:8443/", why: LOOPBACK },
  { url: "https://[::]/", why: UNSPECIFIED },
  { url: "https://[fd00::1]/", why: /uniqueLocal/ },
  { url: "https://[fc00::]/", why: /uniqueLocal/ },
  { url: "https://[fe80::1]/", why: LINK_LOCAL },
  { url: "https://[fe80::a9fe:a9fe]/", why: LINK_LOCAL },
  // A zone id: the WHATWG host parser rejects `%25eth0`, so the URL itself is invalid.
  { url: "https://[fe80::1%25eth0]/", why: NOT_A_URL },
  { url: "https://[fec0::1]/", why: /deprecatedSiteLocal/ },
  { url: "https://[ff02::1]/", why: MULTICAST },
  { url: "https://[ff05::fb]/", why: MULTICAST },
  { url: "https://[2001:db8::1]/", why: RESERVED },
  { url: "https://[2001:db8:85a3::8a2e:370:7334]/", why: RESERVED },
  { url: "https://[3fff::1]/", why: RESERVED },
  { url: "https://[2001:2::1]/", why: /benchmarking/ },
  { url: "https://[2001:10::1]/", why: /Orchid/i },
  { url: "https://[100::1]/", why: /discard/ },
  { url: "https://[4000::1]/", why: /2000::\/3/ },
  // IPv4 carried in IPv6: mapped, SIIT, compatible, NAT64, 6to4, Teredo
  { url: "https://[::ffff:127.0.0.1]/", why: LOOPBACK },
  { url: "https://[::ffff:7f00:1]/", why: LOOPBACK },
  { url: "https://[::ffff:169.254.169.254]/", why: LINK_LOCAL },
  { url: "https://[::ffff:10.0.0.1]/", why: PRIVATE },
  { url: "https://[0:0:0:0:0:ffff:192.168.0.1]/", why: PRIVATE },
  { url: "https://[::ffff:0.0.0.0]/", why: UNSPECIFIED },
  { url: "https://[::ffff:0:7f00:1]/", why: LOOPBACK }, // RFC 6145 ::ffff:0:a.b.c.d
  { url: "https://[::127.0.0.1]/", why: LOOPBACK }, // IPv4-compatible
  { url: "https://[::a00:1]/", why: PRIVATE }, // IPv4-compatible 10.0.0.1
  { url: "https://[::2]/", why: UNSPECIFIED }, // IPv4-compatible 0.0.0.2
  { url: "https://[64:ff9b::7f00:1]/", why: LOOPBACK },
  { url: "https://[64:ff9b::a00:1]/", why: PRIVATE },
  { url: "https://[64:ff9b::169.254.169.254]/", why: LINK_LOCAL },
  { url: "https://[64:ff9b:1::a00:1]/", why: /NAT64|rfc6052/ }, // local-use NAT64: refused whatever it carries
  { url: "https://[64:ff9b:1::808:808]/", why: /NAT64|rfc6052/ },
  { url: "https://[2002:7f00:1::]/", why: LOOPBACK },
  { url: "https://[2002:a00:1::]/", why: PRIVATE },
  { url: "https://[2002:a9fe:a9fe::1]/", why: LINK_LOCAL },
  // Teredo: server 65.54.227.120, client 10.0.0.1 / 127.0.0.1 (inverted in the last 32 bits)
  { url: "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", why: PRIVATE },
  { url: "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", why: LOOPBACK },
  // Teredo with a private server address (client 8.8.8.8)
  { url: "https://[2001:0:a00:1:8000:63bf:f7f7:f7f7]/", why: PRIVATE },
  // local and internal names
  { url: "https://localhost/", why: LOCAL_NAME },
  { url: "https://LOCALHOST/", why: LOCAL_NAME },
  { url: "https://localhost./", why: LOCAL_NAME },
  { url: "https://localhost../", why: LOCAL_NAME },
  { url: "https://localhost:3000/hooks", why: LOCAL_NAME },
  { url: "https://localhost.localdomain/", why: LOCAL_NAME },
  { url: "https://foo.localhost/", why: LOCAL_NAME },
  { url: "https://a.b.localhost/", why: LOCAL_NAME },
  { url: "https://Foo.LocalHost./", why: LOCAL_NAME },
  { url: "https://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/", why: LOCAL_NAME }, // enclosed letters → localhost
  { url: "https://localhost\u3002/", why: LOCAL_NAME }, // ideographic full stop → localhost.
  { url: "https://local%68ost/", why: LOCAL_NAME },
  { url: "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", why: LOCAL_NAME }, // full-width letters
  { url: "https://local\u00adhost/", why: LOCAL_NAME }, // soft hyphen, mapped away by UTS #46
  { url: "https://printer.local/", why: LOCAL_NAME },
  { url: "https://b\u00fccher.local/", why: LOCAL_NAME },
  { url: "https://service.internal/", why: LOCAL_NAME },
  { url: "https://router.home.arpa/", why: LOCAL_NAME },
  { url: "https://intranet/", why: SINGLE_LABEL },
  { url: "https://instance-data/latest/", why: SINGLE_LABEL },
  // userinfo and fragment tricks
  { url: "https://user:pass@example.com/", why: CREDENTIALS },
  { url: "https://user@example.com/", why: CREDENTIALS },
  { url: "https://:pass@example.com/", why: CREDENTIALS },
  { url: "https://@example.com/", why: CREDENTIALS },
  { url: "https://example.com@127.0.0.1/", why: CREDENTIALS },
  { url: "https://example.com:443@127.0.0.1/", why: CREDENTIALS },
  { url: "https://127.0.0.1#@example.com", why: LOOPBACK },
  { url: "https://127.0.0.1?@example.com", why: LOOPBACK },
  { url: "https://127.0.0.1:443\\@example.com/", why: CREDENTIALS }, // host 127.0.0.1 to WHATWG
  { url: "https://example.com%2f@127.0.0.1/", why: CREDENTIALS },
  // WHATWG reads `\` as `/` (host example.com); other parsers read userinfo: refused as ambiguous.
  { url: "https://example.com\\@127.0.0.1", why: CREDENTIALS },
  { url: "https://example.com%40127.0.0.1/", why: NOT_A_URL }, // `@` is a forbidden host code point
  // schemes
  { url: "http://example.com/", why: SCHEME },
  { url: "HTTP://EXAMPLE.COM/", why: SCHEME },
  { url: "http://8.8.8.8/", why: SCHEME },
  { url: "http://2130706433/", why: SCHEME },
  { url: "http://localhost:3000/", why: SCHEME },
  { url: "ftp://example.com/file", why: SCHEME },
  { url: "file:///etc/passwd", why: SCHEME },
  { url: "gopher://127.0.0.1:6379/_INFO", why: SCHEME },
  { url: "dict://127.0.0.1:11211/stats", why: SCHEME },
  { url: "javascript:alert(1)", why: SCHEME },
  { url: "data:text/plain,hello", why: SCHEME },
  { url: "wss://example.com/socket", why: SCHEME },
  // not URLs, or not absolute
  { url: "", why: NOT_A_URL },
  { url: "not a url", why: NOT_A_URL },
  { url: "/relative/path", why: NOT_A_URL },
  { url: "example.com/hook", why: NOT_A_URL },
  { url: "//example.com/hook", why: NOT_A_URL },
  { url: "https://", why: NOT_A_URL },
  { url: "https://exa mple.com/", why: NOT_A_URL },
  { url: "https://[::1/", why: NOT_A_URL },
  { url: "https://1.2.3.4.5/", why: NOT_A_URL },
  { url: "https://256.0.0.1/", why: NOT_A_URL },
  { url: "https://08.0.0.1/", why: NOT_A_URL },
  { url: "https://example.com:99999/", why: NOT_A_URL },
  // too long
  { url: `https://example.com/${"a".repeat(MAX_URL_LENGTH)}`, why: /at most 2048/ },
  { url: `https://example.com/${"a".repeat(MAX_URL_LENGTH - "https://example.com/".length + 1)}`, why: /at most 2048/ },
  // names whose answers are refused
  { url: "https://internal-a.example.com/hooks", why: /resolves to 10\.0\.0\.5.*private/ },
  { url: "https://internal-a.example.com./hooks", why: /resolves to 10\.0\.0\.5/ },
  { url: "https://rebind.example.com/", why: /resolves to 127\.0\.0\.1.*loopback/ },
  { url: "https://127.0.0.1.nip.io/", why: LOOPBACK },
  { url: "https://meta.example.com/latest/meta-data/", why: LINK_LOCAL },
  { url: "https://cgnat.example.com/", why: CGNAT },
  { url: "https://zero.example.com/", why: UNSPECIFIED },
  { url: "https://docs.example.com/", why: RESERVED },
  { url: "https://v6loop.example.com/", why: LOOPBACK },
  { url: "https://v6private.example.com/", why: /uniqueLocal/ },
  { url: "https://linklocal6.example.com/", why: LINK_LOCAL },
  { url: "https://mapped.example.com/", why: PRIVATE },
  { url: "https://nat64.example.com/", why: LINK_LOCAL },
  { url: "https://sixtofour.example.com/", why: PRIVATE },
  { url: "https://mixed.example.com/", why: /resolves to 10\.0\.0\.1/ },
  { url: "https://mixed-first.example.com/", why: /resolves to 192\.168\.1\.1/ },
  { url: "https://mixed6.example.com/", why: /resolves to ::1/ },
  { url: "https://mixed-v6.example.com/", why: /resolves to fc00::5/ },
  { url: "https://garbage.example.com/", why: /not a valid IP address/ },
  { url: "https://empty.example.com/", why: /does not resolve/ },
  { url: "https://nxdomain.example.com/", why: /does not resolve/ },
  { url: "https://servfail.example.com/", why: /could not be resolved/ },
];

/** Public IP literals: accepted outside production, refused in production (Workers cannot fetch IPs). */
const PUBLIC_LITERALS: string[] = [
  "https://8.8.8.8/",
  "https://1.1.1.1/",
  "https://93.184.215.14/",
  "https://93.184.215.14:8443/hooks?x=1",
  "https://8.8.8.8./", // trailing dot on a literal
  "https://0x08080808/", // an odd encoding of a public address is still public
  "https://134744072/", // 8.8.8.8 in decimal
  "https://[2606:4700:4700::1111]/",
  "https://[2001:4860:4860::8888]:443/dns-query",
  "https://[::ffff:8.8.8.8]/", // mapped public: only mapped forms of refused ranges are refused
  "https://[64:ff9b::808:808]/", // NAT64 of 8.8.8.8
  "https://[64:ff9b::1.1.1.1]/",
  "https://[2002:808:808::1]/", // 6to4 of 8.8.8.8
  "https://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/", // Teredo, server 65.54.227.120, client 8.8.8.8
];

const ALLOWED: string[] = [
  // names resolving only to public addresses
  "https://example.com/",
  "https://example.com/webhooks/stripe",
  "https://example.com:8443/hook?a=1&b=2#frag",
  "https://example.com./",
  "https://EXAMPLE.COM/Path/To/Hook",
  "https://Example.Com./hooks?Q=1",
  "https://api.example.org/v1/hooks",
  "https://v6only.example.net/",
  "https://dual.example.net/",
  "https://hooks.example.com/in",
  "https://b\u00fccher.example/", // IDN → xn--bcher-kva.example
  "https://xn--bcher-kva.example/",
  "https://M\u00dcNCHEN.example/hook",
  // names that merely contain a blocked word
  "https://localhost.example.com/",
  "https://internal.example.com/",
  "https://foo.local.example.com/",
];

/** A test name that shows the URL, with control characters escaped and long URLs cut. */
function label(url: string): string {
  const shown = /[\u0000-\u001f]/.test(url) ? JSON.stringify(url) : url;
  return shown.length > 120 ? `${shown.slice(0, 60)}… (${url.length} chars)` : shown;
}

describe("checkDestinationUrl in production with private destinations refused", () => {
  it("has a table of at least 80 refused and 20 allowed URLs", () => {
    expect(REFUSED.length).toBeGreaterThanOrEqual(80);
    expect(ALLOWED.length + PUBLIC_LITERALS.length).toBeGreaterThanOrEqual(20);
    expect(new Set(REFUSED.map((r) => r.url)).size).toBe(REFUSED.length);
    expect(new Set(ALLOWED).size).toBe(ALLOWED.length);
  });

  it.each(REFUSED.map((r) => [label(r.url), r] as const))(
    "refuses %s",
    async (_name, row) => {
      const verdict = await checkDestinationUrl(row.url, production());
      expect(verdict.ok).toBe(false);
      if (verdict.ok) return;
      expect(typeof verdict.reason).toBe("string");
      expect(verdict.reason.length).toBeGreaterThan(0);
      expect(verdict.reason).toMatch(row.why);
    },
  );

  it.each(PUBLIC_LITERALS.map((url) => [label(url), url] as const))("refuses the public IP literal %s, saying why", async (_name, url) => {
    const verdict = await checkDestinationUrl(url, production());
    expect(verdict).toMatchObject({ ok: false, reason: expect.stringMatching(/is an IP address: in production use a host name/) });
  });

  it.each(PUBLIC_LITERALS.map((url) => [label(url), url] as const))("outside production, accepts the public IP literal %s", async (_name, url) => {
    const verdict = await checkDestinationUrl(url, { ...production(), production: false });
    expect(verdict).toMatchObject({ ok: true });
  });

  it.each(ALLOWED.map((url) => [label(url), url] as const))("allows %s", async (_name, url) => {
    const verdict = await checkDestinationUrl(url, production());
    expect(verdict).toMatchObject({ ok: true });
    if (!verdict.ok) return;
    expect(verdict.url).toBeInstanceOf(URL);
    expect(verdict.url.protocol).toBe("https:");
  });

  it("judges IP literals and blocked names without asking DNS", async () => {
    const resolver = fakeResolver();
    for (const url of ["https://127.0.0.1/", "https://[::1]/", "https://8.8.8.8/", "https://localhost/", "https://x.internal/", "https://intranet/"]) {
      await checkDestinationUrl(url, production(resolver));
    }
    expect(resolver.asked).toEqual([]);
  });

  it("asks DNS for the normalised name: lower case, punycode, no trailing dot", async () => {
    const resolver = fakeResolver();
    await checkDestinationUrl("https://EXAMPLE.COM./", production(resolver));
    await checkDestinationUrl("https://b\u00fccher.example/", production(resolver));
    expect(resolver.asked).toEqual(["example.com", "xn--bcher-kva.example"]);
  });

  it("returns the parsed URL that is then fetched", async () => {
    const verdict = await checkDestinationUrl("https://EXAMPLE.com:8443/a?b=c", production());
    expect(verdict.ok && verdict.url.href).toBe("https://example.com:8443/a?b=c");
  });
});

// ---- the syntax check and the development switch ---------------------------------

describe("checkUrlSyntax", () => {
  it("accepts http outside production, and https everywhere", () => {
    expect(checkUrlSyntax("http://localhost:3000/hooks", false)).toMatchObject({ ok: true });
    expect(checkUrlSyntax("http://example.com/", false)).toMatchObject({ ok: true });
    expect(checkUrlSyntax("https://example.com/", false)).toMatchObject({ ok: true });
    expect(checkUrlSyntax("https://example.com/", true)).toMatchObject({ ok: true });
  });

  it("refuses http in production, and other schemes everywhere", () => {
    expect(checkUrlSyntax("http://example.com/", true)).toMatchObject({ ok: false, reason: "must use https in production" });
    for (const production of [false, true]) {
      const v = checkUrlSyntax("ftp://example.com/", production);
      expect(v.ok).toBe(false);
      expect(!v.ok && v.reason).toMatch(/must use https/);
    }
    expect(checkUrlSyntax("ftp://example.com/", false)).toMatchObject({ reason: "must use https or http" });
  });

  it("refuses credentials, relative URLs and URLs over 2048 characters, production or not", () => {
    for (const production of [false, true]) {
      expect(checkUrlSyntax("https://u:p@example.com/", production)).toMatchObject({ ok: false });
      expect(checkUrlSyntax("/hooks", production)).toMatchObject({ ok: false });
      expect(checkUrlSyntax(`https://example.com/${"x".repeat(MAX_URL_LENGTH)}`, production)).toMatchObject({ ok: false });
    }
    const exact = `https://example.com/${"x".repeat(MAX_URL_LENGTH - "https://example.com/".length)}`;
    expect(exact.length).toBe(MAX_URL_LENGTH);
    expect(checkUrlSyntax(exact, true)).toMatchObject({ ok: true });
  });

  it("does no network", () => {
    // An IP literal or a private name passes syntax: the address checks are elsewhere.
    expect(checkUrlSyntax("https://127.0.0.1/", true)).toMatchObject({ ok: true });
    expect(checkUrlSyntax("https://localhost/", true)).toMatchObject({ ok: true });
  });
});

describe("allowPrivate: true (local development)", () => {
  const dev = (resolver: Resolver): UrlPolicy => ({ production: false, allowPrivate: true, resolver });

  it("skips the address checks and never asks DNS", async () => {
    const resolver = fakeResolver();
    for (const url of [
      "http://localhost:3000/hooks",
      "http://127.0.0.1:8787/",
      "https://[::1]/",
      "https://169.254.169.254/",
      "https://internal-a.example.com/",
      "https://nxdomain.example.com/",
    ]) {
      expect(await checkDestinationUrl(url, dev(resolver)), url).toMatchObject({ ok: true });
    }
    expect(resolver.asked).toEqual([]);
  });

  it("still enforces syntax, scheme and no credentials", async () => {
    const resolver = fakeResolver();
    for (const url of [
      "http://user:pass@localhost:3000/",
      "https://example.com@127.0.0.1/",
      "ftp://localhost/",
      "file:///etc/passwd",
      "localhost:3000",
      "/hooks",
      `http://localhost/${"a".repeat(MAX_URL_LENGTH)}`,
    ]) {
      const v = await checkDestinationUrl(url, dev(resolver));
      expect(v.ok, url).toBe(false);
      expect(!v.ok && v.reason.length, url).toBeGreaterThan(0);
    }
    // and https-only when production is (a combination the configuration itself refuses)
    expect(await checkDestinationUrl("http://localhost/", { production: true, allowPrivate: true, resolver })).toMatchObject({
      ok: false,
    });
  });
});

// ---- refusedAddress ------------------------------------------------------------------

describe("refusedAddress", () => {
  it.each([
    ["127.0.0.1", /loopback/],
    ["10.1.2.3", /private/],
    ["172.20.0.1", /private/],
    ["192.168.0.1", /private/],
    ["169.254.169.254", /linkLocal/],
    ["100.64.0.1", /carrierGradeNat/],
    ["0.0.0.0", /unspecified/],
    ["255.255.255.255", /broadcast/],
    ["224.0.0.251", /multicast/],
    ["240.0.0.1", /reserved/],
    ["192.0.2.1", /reserved/],
    ["198.18.0.1", /reserved/],
    ["::1", /loopback/],
    ["::", /unspecified/],
    ["fd12:3456::1", /uniqueLocal/],
    ["fe80::1", /linkLocal/],
    ["fe80::1%eth0", /linkLocal/],
    ["fec0::1", /deprecatedSiteLocal/],
    ["ff02::1", /multicast/],
    ["2001:db8::1", /reserved/],
    ["::ffff:10.0.0.1", /embeds 10\.0\.0\.1.*private/],
    ["::ffff:7f00:1", /embeds 127\.0\.0\.1.*loopback/],
    ["::7f00:1", /embeds 127\.0\.0\.1/],
    ["64:ff9b::a9fe:a9fe", /embeds 169\.254\.169\.254.*linkLocal/],
    ["64:ff9b:1::1", /NAT64|rfc6052/],
    ["2002:c0a8:101::", /embeds 192\.168\.1\.1/],
    ["2001:0:4136:e378:8000:63bf:f5ff:fffe", /embeds 10\.0\.0\.1/],
    ["not-an-ip", /not a valid IP address/],
    ["", /not a valid IP address/],
  ])("refuses %s with a reason naming the range", (ip, why) => {
    const reason = refusedAddress(ip);
    expect(reason).toEqual(expect.any(String));
    expect(reason).toMatch(why);
  });

  it.each(["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"])(
    "accepts the public address %s",
    (ip) => {
      expect(refusedAddress(ip)).toBeNull();
    },
  );
});

// ---- dohResolver -----------------------------------------------------------------------

describe("dohResolver", () => {
  const ENDPOINT = "https://doh.test/dns-query";

  function fakeFetch(answer: (type: string, name: string) => Response | Promise<Response>) {
    const calls: { url: URL; accept: string | null }[] = [];
    const fetcher = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url);
      calls.push({ url, accept: new Headers(init?.headers).get("accept") });
      return answer(url.searchParams.get("type") ?? "", url.searchParams.get("name") ?? "");
    }) as typeof fetch;
    return { fetcher, calls };
  }

  const dnsJson = (body: unknown, status = 200) =>
    new Response(JSON.stringify(body), { status, headers: { "content-type": "application/dns-json" } });

  it("asks A and AAAA and keeps only address records", async () => {
    const { fetcher, calls } = fakeFetch(() =>
      dnsJson({
        Status: 0,
        Answer: [
          { type: 1, data: "1.2.3.4" },
          { type: 5, data: "cname." },
          { type: 28, data: "2606:4700::1" },
        ],
      }),
    );
    const addresses = await dohResolver(ENDPOINT, fetcher)("hooks.example.com");
    // The same body answers both questions: A keeps type 1, AAAA keeps type 28; never the CNAME.
    expect(addresses.sort()).toEqual(["1.2.3.4", "2606:4700::1"]);
    expect(calls.map((c) => c.url.searchParams.get("type")).sort()).toEqual(["A", "AAAA"]);
    for (const c of calls) {
      expect(c.url.origin + c.url.pathname).toBe(ENDPOINT);
      expect(c.url.searchParams.get("name")).toBe("hooks.example.com");
      expect(c.accept).toBe("application/dns-json");
    }
  });

  it("gives each question's own answers", async () => {
    const { fetcher } = fakeFetch((type) =>
      dnsJson(
        type === "A"
          ? { Status: 0, Answer: [{ type: 5, data: "edge.example.net." }, { type: 1, data: "8.8.8.8" }] }
          : { Status: 0, Answer: [{ type: 28, data: "2001:4860:4860::8888" }] },
      ),
    );
    expect(await dohResolver(ENDPOINT, fetcher)("example.com")).toEqual(["8.8.8.8", "2001:4860:4860::8888"]);
  });

  it("reads answers whose type is written by name", async () => {
    const { fetcher } = fakeFetch((type) =>
      dnsJson(type === "A" ? { Status: 0, Answer: [{ type: "CNAME", data: "x." }, { type: "A", data: "10.0.0.9" }] } : { Status: 0, Answer: [{ type: "aaaa", data: "2001:4860:4860::8888" }] }),
    );
    expect(await dohResolver(ENDPOINT, fetcher)("example.com")).toEqual(["10.0.0.9", "2001:4860:4860::8888"]);
  });

  it("keeps answers for their smallest TTL (at most 300 s), and none with a TTL of 0", async () => {
    let t = 1_000_000;
    const answer = (ttl: number) => fakeFetch((type) => dnsJson(type === "A" ? { Status: 0, Answer: [{ type: 1, data: "8.8.8.8", TTL: ttl }] } : { Status: 0, Answer: [{ type: 28, data: "2001:4860:4860::8888", TTL: ttl + 100 }] }));
    const kept = answer(60);
    const resolve = dohResolver(ENDPOINT, kept.fetcher, 5000, () => t);
    await resolve("example.com");
    await resolve("example.com");
    expect(kept.calls).toHaveLength(2); // A and AAAA once
    t += 59_000;
    await resolve("example.com");
    expect(kept.calls).toHaveLength(2);
    t += 2_000; // past the A record's 60 s
    await resolve("example.com");
    expect(kept.calls).toHaveLength(4);

    const long = answer(86_400);
    const r2 = dohResolver(ENDPOINT, long.fetcher, 5000, () => t);
    await r2("example.com");
    t += 301_000;
    await r2("example.com");
    expect(long.calls).toHaveLength(4);

    const none = answer(0);
    const r3 = dohResolver(ENDPOINT, none.fetcher, 5000, () => t);
    await r3("example.com");
    await r3("example.com");
    expect(none.calls).toHaveLength(4);
  });

  it("keeps no failure and no empty answer", async () => {
    const nx = fakeFetch(() => dnsJson({ Status: 3 }));
    const resolve = dohResolver(ENDPOINT, nx.fetcher);
    await resolve("nope.example.com");
    await resolve("nope.example.com");
    expect(nx.calls).toHaveLength(4);
  });

  it("treats NXDOMAIN (Status 3) and NODATA as no addresses", async () => {
    const nx = fakeFetch(() => dnsJson({ Status: 3 }));
    expect(await dohResolver(ENDPOINT, nx.fetcher)("nope.example.com")).toEqual([]);
    const nodata = fakeFetch(() => dnsJson({ Status: 0, Answer: [] }));
    expect(await dohResolver(ENDPOINT, nodata.fetcher)("nodata.example.com")).toEqual([]);
  });

  it("throws on HTTP 500", async () => {
    const { fetcher } = fakeFetch(() => new Response("oops", { status: 500 }));
    await expect(dohResolver(ENDPOINT, fetcher)("example.com")).rejects.toThrow(/HTTP 500/);
  });

  it("throws on SERVFAIL (Status 2), even when only one of the two questions fails", async () => {
    const both = fakeFetch(() => dnsJson({ Status: 2 }));
    await expect(dohResolver(ENDPOINT, both.fetcher)("example.com")).rejects.toThrow(/status 2/);
    const one = fakeFetch((type) => dnsJson(type === "AAAA" ? { Status: 2 } : { Status: 0, Answer: [{ type: 1, data: "8.8.8.8" }] }));
    await expect(dohResolver(ENDPOINT, one.fetcher)("example.com")).rejects.toThrow(/status 2/);
  });

  it("throws when the body is not JSON or the fetch itself fails", async () => {
    const html = fakeFetch(() => new Response("<html>", { status: 200 }));
    await expect(dohResolver(ENDPOINT, html.fetcher)("example.com")).rejects.toThrow();
    const down = fakeFetch(() => Promise.reject(new TypeError("network down")));
    await expect(dohResolver(ENDPOINT, down.fetcher)("example.com")).rejects.toThrow(/network down/);
  });

  it("feeds checkDestinationUrl: a DoH failure refuses the URL, a private answer refuses it", async () => {
    const failing = fakeFetch(() => new Response("", { status: 500 }));
    expect(
      await checkDestinationUrl("https://example.com/", { production: true, allowPrivate: false, resolver: dohResolver(ENDPOINT, failing.fetcher) }),
    ).toMatchObject({ ok: false, reason: expect.stringMatching(/could not be resolved/) });
    const privateAnswer = fakeFetch((type) => dnsJson(type === "A" ? { Status: 0, Answer: [{ type: 1, data: "10.0.0.7" }] } : { Status: 0 }));
    expect(
      await checkDestinationUrl("https://example.com/", { production: true, allowPrivate: false, resolver: dohResolver(ENDPOINT, privateAnswer.fetcher) }),
    ).toMatchObject({ ok: false, reason: expect.stringMatching(/10\.0\.0\.7/) });
  });
});
