/**
 * How requests to destinations leave the Worker (src/services.ts destinationFetch): through
 * PUBLIC_NETWORK, the public-only network service `npm start` binds, exactly when private
 * destinations are off and it is bound; otherwise the global fetch. The end-to-end proof
 * that the socket then refuses loopback is test/e2e/rebinding.test.ts.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Env } from "../../src/config";
import { destinationFetch } from "../../src/services";

function fakeNetwork(answer: () => Promise<Response>) {
  const calls: { url: string; method: string | undefined }[] = [];
  const network = {
    fetch: (input: RequestInfo | URL, init?: RequestInit) => {
      calls.push({ url: String(input), method: init?.method });
      return answer();
    },
  };
  return { network, calls };
}

const withNetwork = (network: unknown) => ({ ...(env as unknown as Env), PUBLIC_NETWORK: network }) as unknown as Env;
/** The test receiver's DoH endpoint: answers any GET, reachable by the global fetch. */
const loopbackUrl = () => `${env.RECEIVER_ORIGIN}/dns-query?name=nothing.example&type=A`;

describe("destinationFetch", () => {
  it("sends through PUBLIC_NETWORK when private destinations are off and it is bound", async () => {
    const { network, calls } = fakeNetwork(async () => new Response("via network", { status: 203 }));
    const res = await destinationFetch(withNetwork(network), { allowPrivateDestinations: false })("https://hooks.example.com/in", { method: "POST", body: "{}" });
    expect(res.status).toBe(203);
    expect(await res.text()).toBe("via network");
    expect(calls).toEqual([{ url: "https://hooks.example.com/in", method: "POST" }]);
  });

  it("uses the global fetch when private destinations are on, bound or not", async () => {
    const { network, calls } = fakeNetwork(async () => new Response("via network"));
    const res = await destinationFetch(withNetwork(network), { allowPrivateDestinations: true })(loopbackUrl());
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    expect(calls).toEqual([]);
  });

  it("uses the global fetch when nothing binds PUBLIC_NETWORK (Cloudflare's network)", async () => {
    const res = await destinationFetch(env as unknown as Env, { allowPrivateDestinations: false })(loopbackUrl());
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  });

  it("says why when workerd refuses the address (it reports only an internal error)", async () => {
    const { network } = fakeNetwork(async () => {
      throw new Error("internal error; reference = abc123");
    });
    await expect(destinationFetch(withNetwork(network), { allowPrivateDestinations: false })("http://rebind.example/")).rejects.toThrow(
      /^no public address reachable \(PUBLIC_NETWORK refuses private and local ones\): internal error; reference = abc123$/,
    );
  });

  it("passes other errors on as they are", async () => {
    const { network } = fakeNetwork(async () => {
      throw new TypeError("Network connection lost.");
    });
    await expect(destinationFetch(withNetwork(network), { allowPrivateDestinations: false })("https://hooks.example.com/")).rejects.toThrow(TypeError);
  });
});
