/** The configuration's limits, each at its bound and one past it: past one, the Worker refuses to serve. */
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, MAX_EVENT_BODY_BYTES, type Env } from "../../src/config";

const env = (vars: Record<string, string>) => ({ ENVIRONMENT: "production", ...vars }) as unknown as Env;

describe("configuration limits", () => {
  it("MAX_BODY_BYTES: up to what a partition's row holds with its headers, not one byte more", () => {
    expect(MAX_EVENT_BODY_BYTES).toBe(2 * 1024 * 1024 - 128 * 1024);
    expect(loadConfig(env({ MAX_BODY_BYTES: String(MAX_EVENT_BODY_BYTES) })).maxBodyBytes).toBe(MAX_EVENT_BODY_BYTES);
    expect(() => loadConfig(env({ MAX_BODY_BYTES: String(MAX_EVENT_BODY_BYTES + 1) }))).toThrow(ConfigError);
    expect(() => loadConfig(env({ MAX_BODY_BYTES: String(MAX_EVENT_BODY_BYTES + 1) }))).toThrow(/MAX_BODY_BYTES/);
  });

  it("RETRY_SCHEDULE: delays up to the queue's 24 h, not one second more", () => {
    expect(loadConfig(env({ RETRY_SCHEDULE: "5,86400" })).retrySchedule).toEqual([5, 86400]);
    expect(() => loadConfig(env({ RETRY_SCHEDULE: "5,86401" }))).toThrow(/RETRY_SCHEDULE/);
  });

  it("DOH_URL: https in production, or a loopback resolver; plain http elsewhere", () => {
    expect(loadConfig(env({ DOH_URL: "https://dns.example/dns-query" })).dohUrl).toBe("https://dns.example/dns-query");
    expect(loadConfig(env({ DOH_URL: "http://127.0.0.1:5353/dns-query" })).dohUrl).toBe("http://127.0.0.1:5353/dns-query");
    expect(loadConfig(env({ DOH_URL: "http://[::1]:5353/dns-query" })).dohUrl).toBe("http://[::1]:5353/dns-query");
    expect(() => loadConfig(env({ DOH_URL: "http://dns.example/dns-query" }))).toThrow(/DOH_URL/);
    expect(loadConfig(env({ ENVIRONMENT: "development", DOH_URL: "http://dns.example/dns-query" })).dohUrl).toBe("http://dns.example/dns-query");
  });

  it("EVENT_SHARDS: a power of two from 1 to 256", () => {
    expect(loadConfig(env({ EVENT_SHARDS: "256" })).eventShards).toBe(256);
    expect(() => loadConfig(env({ EVENT_SHARDS: "512" }))).toThrow(/EVENT_SHARDS/);
    expect(() => loadConfig(env({ EVENT_SHARDS: "3" }))).toThrow(/EVENT_SHARDS/);
  });

  it("ACCOUNT_API_RATE_LIMIT and MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: defaults 3,000 and 10 GiB; no 0 (no unlimited), nothing past the bound", () => {
    const c = loadConfig(env({}));
    expect(c.accountApiRateLimit).toBe(3000);
    expect(c.maxStoredBytesPerAccountPerDay).toBe(10 * 1024 ** 3);
    expect(c.storedBytesFlushMs).toBe(1000);
    expect(loadConfig(env({ MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: String(1024 ** 4) })).maxStoredBytesPerAccountPerDay).toBe(1024 ** 4);
    expect(() => loadConfig(env({ MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: String(1024 ** 4 + 1) }))).toThrow(/MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY/);
    expect(() => loadConfig(env({ MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY: "0" }))).toThrow(/MAX_STORED_BYTES_PER_ACCOUNT_PER_DAY/);
    expect(() => loadConfig(env({ ACCOUNT_API_RATE_LIMIT: "0" }))).toThrow(/ACCOUNT_API_RATE_LIMIT/);
    expect(() => loadConfig(env({ ACCOUNT_API_RATE_LIMIT: "1000001" }))).toThrow(/ACCOUNT_API_RATE_LIMIT/);
    expect(() => loadConfig(env({ STORED_BYTES_FLUSH_MS: "10001" }))).toThrow(/STORED_BYTES_FLUSH_MS/);
  });

  it("METER is off in production whatever it says", () => {
    expect(loadConfig(env({ METER: "true" })).meter).toBe(false);
    expect(loadConfig(env({ ENVIRONMENT: "test", METER: "true" })).meter).toBe(true);
  });
});
