/**
 * What a value must be to cross the wire unchanged. Messages, start-spec args, replies and handoff
 * state travel as msgpack between nodes (and through the Raft log), but are handed over as they are
 * on one node: a value msgpack would change (a function dropped, a Map turned into an object, a
 * class instance losing its prototype) would then behave differently on 1 node and on N. So the API
 * accepts only what survives the trip: `undefined`, `null`, booleans, numbers, bigints of 64 bits,
 * strings, `Uint8Array`s (Buffers too), `Date`s, arrays of these, and plain objects (prototype
 * `Object.prototype` or `null`) with string keys, nested to any depth without cycles.
 * @module
 */

const INT64_MIN = -(2n ** 63n)
const UINT64_MAX = 2n ** 64n - 1n

/** A problem found at some depth: its reason, and the path to it (innermost first). */
interface Found {
  reason: string
  path: string[]
}

const segment = (k: string): string => (/^[A-Za-z_$][\w$]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`)

/**
 * Why `value` would not arrive unchanged on another node (`at` names it; the answer gives the path
 * to the part, e.g. `args[0].fn is a function`), or undefined when it would. At most `maxValues`
 * values are visited (each takes at least a byte encoded, so a limit in bytes is a fair bound):
 * a value with more (a structure that shares parts many times) is refused as too large.
 */
export function encodingProblem(value: unknown, at: string, maxValues = Number.POSITIVE_INFINITY): string | undefined {
  const seen = new Set<object>()
  let visited = 0
  const walk = (v: unknown, depth: number): Found | undefined => {
    if (++visited > maxValues) return { reason: `is too large: more than ${maxValues} values`, path: [] }
    switch (typeof v) {
      case 'undefined':
      case 'boolean':
      case 'number':
      case 'string':
        return undefined
      case 'bigint':
        return v < INT64_MIN || v > UINT64_MAX ? { reason: 'is a bigint beyond 64 bits', path: [] } : undefined
      case 'function':
        return { reason: 'is a function', path: [] }
      case 'symbol':
        return { reason: 'is a symbol', path: [] }
    }
    if (v === null) return undefined
    const o = v as object
    if (o instanceof Uint8Array || o instanceof Date) return undefined
    if (depth > 256) return { reason: 'is nested more than 256 levels deep', path: [] }
    if (seen.has(o)) return { reason: 'refers back to itself (a cycle)', path: [] }
    seen.add(o)
    let found: Found | undefined
    if (Array.isArray(o)) {
      for (let i = 0; i < o.length && !found; i++) {
        found = walk(o[i], depth + 1)
        found?.path.push(`[${i}]`)
      }
    } else {
      const proto = Object.getPrototypeOf(o) as unknown
      if (proto !== Object.prototype && proto !== null) {
        const name = (o as { constructor?: { name?: unknown } }).constructor?.name
        found = { reason: `is a ${typeof name === 'string' && name ? name : 'class instance'} (only plain objects and arrays keep their shape)`, path: [] }
      } else if (Object.getOwnPropertySymbols(o).length > 0) found = { reason: 'has symbol keys', path: [] }
      else {
        for (const k in o) {
          if (!Object.prototype.hasOwnProperty.call(o, k)) continue
          found = walk((o as Record<string, unknown>)[k], depth + 1)
          if (found) {
            found.path.push(segment(k))
            break
          }
        }
      }
    }
    seen.delete(o)
    return found
  }
  const found = walk(value, 0)
  return found ? `${at}${found.path.reverse().join('')} ${found.reason}` : undefined
}
