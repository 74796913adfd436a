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

/** 32-bit FNV-1a hash of a string. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

/** Consistent (rendezvous) hashing: each name goes to the node with the highest hash(name, node). */
export const hashPlacement: PlacementStrategy = (name, candidates) => {
  let best = candidates[0]!.node
  let bestH = -1
  for (const c of candidates) {
    const h = fnv1a(`${name}\u0000${c.node}`)
    if (h > bestH) {
      bestH = h
      best = c.node
    }
  }
  return best
}

/** Spread by load (the default): the least loaded node; ties broken by rendezvous hashing. */
export const defaultPlacement: PlacementStrategy = (name, candidates) => {
  let min = Infinity
  for (const c of candidates) if (c.load < min) min = c.load
  return hashPlacement(
    name,
    candidates.filter((c) => c.load === min),
  )
}
