// The loopback receiver is shared tooling (tools/receiver.ts): the bench and the demo use it too.
export * from "../../tools/receiver.ts";
