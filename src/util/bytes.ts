/**
 * Byte helpers.
 * @module
 */

/** The bytes of `parts`, `total` in all, as one array (`parts[0]` itself when it is all of them). */
export function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1 && parts[0]!.length === total) return parts[0]!
  const out = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
