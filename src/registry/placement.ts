/**
 * Placement strategies for supervised workers. A strategy runs inside the registry state
 * machine, so it must be a pure, deterministic function, identical on every node.
 * @module
 */

/** A node that can take a worker, with how many supervised workers it already has. */
export interface PlacementCandidate {
  node: string
  load: number
}

/**
 * Picks the node for a supervised name among `candidates` (never empty, sorted by node id).
 * Must be pure and deterministic: same inputs, same answer, on every node and every version
 * deployed together. Returning a node that is not a candidate falls back to the first one.
 */
export type PlacementStrategy = (name: string, candidates: readonly PlacementCandidate[]) => string

const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193

/**
 * 32-bit FNV-1a continued from `h` over the UTF-16 code units of `s`: a fold, so
 * `fnv1a(a + b) === fnvFrom(fnvFrom(FNV_OFFSET, a), b)`.
 */
function fnvFrom(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME) >>> 0
  return h
}

/** 32-bit FNV-1a hash of a string. */
export function fnv1a(s: string): number {
  return fnvFrom(FNV_OFFSET, s)
}

/**
 * Rendezvous hashing over the candidates whose load is `load` (all of them when undefined): the
 * node with the highest `fnv1a(name + "\u0000" + node)`, the first such in candidate order on a
 * tie. The name's part of the hash is computed once, and no string or array is built (session
 * 23: a failover's moves spent half their placement time building them, and sorting).
 */
function rendezvous(name: string, candidates: readonly PlacementCandidate[], load?: number): string {
  const seed = Math.imul(fnvFrom(FNV_OFFSET, name), FNV_PRIME) >>> 0 // (the name, then U+0000)
  let best = candidates[0]!.node
  let bestH = -1
  for (const c of candidates) {
    if (load !== undefined && c.load !== load) continue
    const h = fnvFrom(seed, c.node)
    if (h > bestH) {
      bestH = h
      best = c.node
    }
  }
  return best
}

/** Consistent (rendezvous) hashing: each name goes to the node with the highest hash(name, node). */
export const hashPlacement: PlacementStrategy = (name, candidates) => rendezvous(name, candidates)

/** Spread by load (the default): the least loaded node; ties broken by rendezvous hashing. */
export const defaultPlacement: PlacementStrategy = (name, candidates) => {
  let min = Infinity
  for (const c of candidates) if (c.load < min) min = c.load
  return rendezvous(name, candidates, min)
}
