/** The typed client (src/client.ts) against the Worker: paths, bodies and responses typed end to end. */
import { describe, expect, it } from "vitest";
import { krafterClient } from "../../src/client";
import { createAccount, mailbox, workerFetch } from "../helpers/api";

/** Sends the client's requests to the Worker's fetch handler, as the network would. */
const viaWorker = workerFetch();

describe("krafterClient", () => {
  it("creates a source and a destination, lists, tests and reads back, typed", async () => {
    const account = await createAccount();
    const krafter = krafterClient("https://krafter.test", account.key, { fetch: viaWorker });

    const created = await krafter.api.v1.webhooks.sources.$post({ json: { name: "typed", provider: "stripe" } });
    expect(created.status).toBe(201);
    const source = (await created.json()).data;
    expect(source.provider).toBe("stripe");

    const box = await mailbox();
    const destinations = krafter.api.v1.webhooks.sources[":source_id"].destinations;
    const d = await destinations.$post({ param: { source_id: source.id }, json: { url: box.url, event_filter: ["invoice.*"] } });
    expect(d.status).toBe(201);
    const destination = (await d.json()).data;
    expect(destination.secret).toMatch(/^whsec_/);
    expect(destination.event_filter).toEqual(["invoice.*"]);

    const listed = await destinations.$get({ param: { source_id: source.id }, query: {} });
    const page = await listed.json();
    expect(page.data.map((x) => x.id)).toEqual([destination.id]);
    expect(page.next_cursor).toBeNull();

    const test = await destinations[":id"].test.$post({ param: { source_id: source.id, id: destination.id } });
    expect(test.status).toBe(200);
    expect(await test.json()).toEqual({ ok: true, status: 200 });

    const patched = await destinations[":id"].$patch({ param: { source_id: source.id, id: destination.id }, json: { enabled: false } });
    expect((await patched.json()).data.enabled).toBe(false);

    // A payload filter and a header, typed like the rest; the header comes back masked.
    const filtered = await destinations.$post({
      param: { source_id: source.id },
      json: { url: box.url, payload_filter: { data: { object: { amount_paid: { $gt: 10000 } } } }, headers: { Authorization: "Bearer t" } },
    });
    const f = (await filtered.json()).data;
    expect(f.payload_filter).toEqual({ data: { object: { amount_paid: { $gt: 10000 } } } });
    expect(f.headers).toEqual({ Authorization: "********" });

    const other = await createAccount();
    const stranger = krafterClient("https://krafter.test", other.key, { fetch: viaWorker });
    const hidden = await stranger.api.v1.webhooks.sources[":source_id"].$get({ param: { source_id: source.id } });
    expect(hidden.status).toBe(404);
  });
});
