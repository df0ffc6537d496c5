/** Starts the loopback receiver and DoH endpoint (Node side) and tells the tests its port. */
import type { TestProject } from "vitest/node";
import { startReceiver } from "./support/receiver";

declare module "vitest" {
  export interface ProvidedContext {
    receiverPort: number;
  }
}

export default async function setup(project: TestProject) {
  const receiver = await startReceiver();
  project.provide("receiverPort", receiver.port);
  return () => receiver.close();
}
