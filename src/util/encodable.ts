/**
 * What a value must be to cross the wire unchanged. Messages, start-spec args and handoff state
 * travel as msgpack between nodes (and through the Raft log), but are handed over as they are on
 * one node: a value msgpack would change (a function dropped, a Map turned into an object, a class
 * instance losing its prototype) would then behave differently on 1 node and on N. So the API
 * accepts only what survives the trip: `undefined`, `null`, booleans, numbers, bigints of 64 bits,
 * strings, `Uint8Array`s (Buffers too), `Date`s, arrays of these, and plain objects (prototype
 * `Object.prototype` or `null`) with string keys, nested to any depth without cycles.
 * @module
 */

const INT64_MIN = -(2n ** 63n)
const UINT64_MAX = 2n ** 64n - 1n

/**
 * Why `value` would not arrive unchanged on another node (`at`: its path, e.g. `args[0].fn`), or
 * undefined when it would.
 */
export function encodingProblem(value: unknown, at: string): string | undefined {
  const seen = new Set<object>()
  const walk = (v: unknown, path: string, depth: number): string | undefined => {
    switch (typeof v) {
      case 'undefined':
      case 'boolean':
      case 'number':
      case 'string':
        return undefined
      case 'bigint':
        return v < INT64_MIN || v > UINT64_MAX ? `${path} is a bigint beyond 64 bits` : undefined
      case 'function':
        return `${path} is a function`
      case 'symbol':
        return `${path} is a symbol`
    }
    if (v === null) return undefined
    const o = v as object
    if (o instanceof Uint8Array || o instanceof Date) return undefined
    if (depth > 256) return `${path} is nested more than 256 levels deep`
    if (seen.has(o)) return `${path} refers back to itself (a cycle)`
    if (Array.isArray(o)) {
      seen.add(o)
      for (let i = 0; i < o.length; i++) {
        const p = walk(o[i], `${path}[${i}]`, depth + 1)
        if (p) return p
      }
      seen.delete(o)
      return undefined
    }
    const proto = Object.getPrototypeOf(o) as unknown
    if (proto !== Object.prototype && proto !== null) {
      const name = (o as { constructor?: { name?: unknown } }).constructor?.name
      return `${path} is a ${typeof name === 'string' && name ? name : 'class instance'} (only plain objects and arrays keep their shape)`
    }
    if (Object.getOwnPropertySymbols(o).length > 0) return `${path} has symbol keys`
    seen.add(o)
    for (const [k, x] of Object.entries(o)) {
      const p = walk(x, /^[A-Za-z_$][\w$]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`, depth + 1)
      if (p) return p
    }
    seen.delete(o)
    return undefined
  }
  return walk(value, at, 0)
}
