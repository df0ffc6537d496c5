// autocannon ships no types: the part of its API the benchmark uses.
declare module "autocannon" {
  interface Result {
    duration: number;
    errors: number;
    timeouts: number;
    statusCodeStats?: Record<string, { count: number }>;
  }
  interface Instance extends PromiseLike<Result> {
    on(event: "response", listener: (client: unknown, status: number, bytes: number, ms: number) => void): Instance;
  }
  function autocannon(options: Record<string, unknown>): Instance;
  export default autocannon;
}
