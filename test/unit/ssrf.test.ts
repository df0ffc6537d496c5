/**
 * The SSRF guard (src/security/ssrf.ts), run inside workerd so the WHATWG URL parser is
 * the Worker's own, against the one table of cases (test/helpers/ssrf-cases.ts, where the
 * sources of the hard cases are listed): every URL in each of the three configurations,
 * every address a name may resolve to. The same table is driven through the API in
 * test/integration/destinations-ssrf.test.ts.
 *
 * DNS over HTTPS, JSON flavour (Cloudflare / Google), for dohResolver below: Status 0
 * NOERROR, 2 SERVFAIL, 3 NXDOMAIN; record types 1 (A), 5 (CNAME), 28 (AAAA).
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
import { ADDRESS_CASES, DNS, label, MODES, URL_CASES, type Mode } from "../helpers/ssrf-cases";

// ---- the fake resolver: the table's DNS ------------------------------------------------

function fakeResolver(): Resolver & { asked: string[] } {
  const asked: string[] = [];
  const resolve = async (name: string) => {
    asked.push(name);
    const answers = DNS[name];
    if (answers === "servfail") throw new Error("SERVFAIL");
    return answers ?? [];
  };
  return Object.assign(resolve, { asked });
}

const policy = (mode: Mode, resolver: Resolver = fakeResolver()): UrlPolicy => ({
  production: mode === "production",
  allowPrivate: mode === "dev",
  resolver,
});

const production = (resolver?: Resolver) => policy("production", resolver);

// ---- the table ---------------------------------------------------------------------------

describe("the table", () => {
  it("has at least 80 URLs refused in production and 20 allowed, each URL once", () => {
    expect(URL_CASES.filter((c) => c.expect.production !== "allowed").length).toBeGreaterThanOrEqual(80);
    expect(URL_CASES.filter((c) => MODES.some((m) => c.expect[m] === "allowed")).length).toBeGreaterThanOrEqual(20);
    expect(new Set(URL_CASES.map((c) => c.url)).size).toBe(URL_CASES.length);
    expect(new Set(ADDRESS_CASES.map((c) => c.address)).size).toBe(ADDRESS_CASES.length);
  });
});

describe.each(MODES)("checkDestinationUrl, %s", (mode) => {
  it.each(URL_CASES.map((c) => [label(c.url), c] as const))("%s", async (_name, c) => {
    const want = c.expect[mode];
    const verdict = await checkDestinationUrl(c.url, policy(mode));
    if (want === "allowed") {
      expect(verdict).toMatchObject({ ok: true });
      if (!verdict.ok) return;
      expect(verdict.url).toBeInstanceOf(URL);
      expect(["https:", "http:"]).toContain(verdict.url.protocol);
      if (mode === "production") expect(verdict.url.protocol).toBe("https:");
      return;
    }
    expect(verdict.ok).toBe(false);
    if (verdict.ok) return;
    expect(verdict.reason.length).toBeGreaterThan(0);
    expect(verdict.reason).toMatch(want.why);
    // The API's detail code: invalid_url exactly when the syntax check alone refuses it.
    expect(checkUrlSyntax(c.url, mode === "production").ok).toBe(want.code === "url_refused");
  });
});

describe("checkDestinationUrl: what it asks DNS", () => {
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

  it("with allowPrivate (dev), never asks DNS, whatever the URL", async () => {
    const resolver = fakeResolver();
    for (const c of URL_CASES) await checkDestinationUrl(c.url, policy("dev", resolver));
    expect(resolver.asked).toEqual([]);
  });

  it("allowPrivate with production (a combination the configuration itself refuses) is still https-only", async () => {
    expect(await checkDestinationUrl("http://localhost/", { production: true, allowPrivate: true, resolver: fakeResolver() })).toMatchObject({ ok: false });
  });
});

// ---- the syntax check ---------------------------------------------------------------------

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

// ---- refusedAddress: the table's addresses ----------------------------------------------

describe("refusedAddress", () => {
  it.each(ADDRESS_CASES.map((c) => [c.address, c] as const))("%j", (_name, c) => {
    const reason = refusedAddress(c.address);
    if (c.refused === null) return expect(reason).toBeNull();
    expect(reason).toEqual(expect.any(String));
    expect(reason).toMatch(c.refused);
  });
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
