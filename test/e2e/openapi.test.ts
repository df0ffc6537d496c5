/// <reference types="node" />
/**
 * The OpenAPI document served by a running relay is a valid OpenAPI 3.1 document, as
 * judged by a maintained validator (@seriousme/openapi-schema-validator), and every
 * $ref in it resolves.
 */
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startDev, type Dev } from "./harness";

let dev: Dev;
beforeAll(async () => {
  dev = await startDev({ cronEveryMs: 0 });
});
afterAll(async () => dev?.stop());

it("GET /api/v1/openapi.json validates as OpenAPI 3.1 with every reference resolved", async () => {
  const res = await fetch(`${dev.origin}/api/v1/openapi.json`);
  expect(res.status).toBe(200);
  const doc = (await res.json()) as { openapi: string; servers: { url: string }[] };
  expect(doc.openapi).toBe("3.1.0");
  expect(doc.servers).toEqual([{ url: dev.origin }]);
  type Spec = Parameters<Validator["validate"]>[0];
  // The validator does reject a broken document (so its "valid" below means something).
  const broken = await new Validator().validate({ openapi: "3.1.0", paths: { "/x": { get: { responses: "nope" } } } } as unknown as Spec);
  expect(broken.valid).toBe(false);
  const validator = new Validator();
  const result = await validator.validate(doc as unknown as Spec);
  expect(result.errors ?? []).toEqual([]);
  expect(result.valid).toBe(true);
  expect(validator.version).toBe("3.1");
  // Every $ref points at something that exists.
  const text = JSON.stringify(doc);
  for (const [, ref] of text.matchAll(/"\$ref":"#\/([^"]+)"/g)) {
    const target = ref!.split("/").reduce<any>((node, key) => node?.[key], doc);
    expect(target, ref).toBeDefined();
  }
});
