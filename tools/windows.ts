/**
 * Pure helpers for timing figures, shared by the bench and the tests (Node and workerd
 * alike: no imports).
 */

/** The most of these instants (ms) that fall in any window of `ms`. */
export function mostInWindow(instants: number[], ms: number): number {
  const t = [...instants].sort((x, y) => x - y);
  let most = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while (t[i]! - t[j]! >= ms) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}
