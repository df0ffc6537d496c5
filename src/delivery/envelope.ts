/**
 * The body forwarded to destinations: `{"event": type, "data": payload, "source_id": id}`,
 * the same shape as the test endpoint's. A JSON payload is spliced in as the provider
 * sent it, never parsed and serialized again: big integers, `1e400`, `1.0`, duplicate
 * keys, escapes and deep nesting arrive byte for byte, and no copy of the payload is
 * parsed into objects. Any other payload (text, or JSON behind a byte-order mark) is
 * forwarded as a JSON string of the raw text.
 */
export function envelope(type: string, payload: string, payloadIsJson: boolean, sourceId: string): string {
  const data = payloadIsJson ? payload : JSON.stringify(payload);
  return `{"event":${JSON.stringify(type)},"data":${data},"source_id":${JSON.stringify(sourceId)}}`;
}

/** The UTF-8 size of the envelope of a payload of `payloadBytes`, for memory accounting. */
export function envelopeBytes(type: string, payloadBytes: number, sourceId: string): number {
  // Escaping a non-JSON payload can at most double it (every byte a two-byte escape) plus
  // \u escapes of controls: six bytes each; budget for the worst case.
  return 48 + type.length * 6 + payloadBytes * 6 + sourceId.length;
}
