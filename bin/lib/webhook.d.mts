/** Types of webhook.mjs, for the TypeScript tests that hold it to the Worker's own code. */
export declare const SECRET_PREFIX: "whsec_";
export declare const USER_AGENT: string;
export declare function generateSecret(): string;
export declare function isSecret(s: unknown): boolean;
export declare function envelope(type: string, payloadJson: string, sourceId: string): string;
export declare function payloadJsonOf(detailText: string): string;
export declare function sign(secret: string, id: string, timestampSeconds: number, body: string): string;
export declare function forwardHeaders(secret: string, eventId: string, body: string, nowMs?: number): Record<string, string>;
