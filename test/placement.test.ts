/**
 * The placement strategies run inside the replicated state machine: every node must pick the same
 * node for the same name and candidates, whatever version of this code it runs (a cluster is
 * upgraded one node at a time within a wire protocol). Session 23 rewrote them without building
 * strings or arrays; this checks, on random names (any UTF-16, `\0`, lone surrogates) and random
 * candidates (ties in load and in hash included), that they pick exactly what the code before did
 * (kept here as the reference). Seeded: `PLACE_SEED=<n>` replays one run.
 */
import t from 'tap'
import { defaultPlacement, fnv1a, hashPlacement, type PlacementCandidate } from '../src/registry/placement.js'
import { seededRandom } from '../src/testkit/sim.js'

/** The code before session 23 (placement.ts as 74721f6 left it, unchanged up to eda2a1c), the reference. */
function refFnv(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}
function refHash(name: string, candidates: readonly PlacementCandidate[]): string {
  let best = candidates[0]!.node
  let bestH = -1
  for (const c of candidates) {
    const h = refFnv(`${name}\u0000${c.node}`)
    if (h > bestH) {
      bestH = h
      best = c.node
    }
  }
  return best
}
function refDefault(name: string, candidates: readonly PlacementCandidate[]): string {
  let min = Infinity
  for (const c of candidates) if (c.load < min) min = c.load
  return refHash(
    name,
    candidates.filter((c) => c.load === min),
  )
}

const fromEnv = process.env.PLACE_SEED ? Number(process.env.PLACE_SEED) : undefined
const seed = fromEnv ?? Math.floor(Math.random() * 1e9)

t.test(`the placement strategies pick what the code before them did (seed ${seed}; replay: PLACE_SEED=${seed})`, async (t) => {
  const r = seededRandom(seed)
  const str = (max: number): string => {
    const n = Math.floor(r() * max)
    let s = ''
    for (let i = 0; i < n; i++) {
      const k = r()
      s += String.fromCharCode(k < 0.6 ? 97 + Math.floor(r() * 26) : k < 0.7 ? 0 : k < 0.8 ? 0xd800 + Math.floor(r() * 0x800) : Math.floor(r() * 0x10000))
    }
    return s
  }
  let differ = 0
  const cases = 20_000
  for (let i = 0; i < cases; i++) {
    const name = str(40)
    const ids = new Set<string>()
    const want = 1 + Math.floor(r() * 7)
    while (ids.size < want) ids.add(r() < 0.5 ? `n${Math.floor(r() * 20)}` : str(12) || 'x')
    const candidates = [...ids].sort().map((node) => ({ node, load: Math.floor(r() * 3) }))
    if (defaultPlacement(name, candidates) !== refDefault(name, candidates) || hashPlacement(name, candidates) !== refHash(name, candidates) || fnv1a(name) !== refFnv(name)) {
      if (differ++ < 5) t.fail(`differs: ${JSON.stringify({ name, candidates })}`)
    }
  }
  t.equal(differ, 0, `${cases} random cases, none differs (seed ${seed})`)
  // the same node for two names whose hashes tie cannot be forced; one candidate always wins
  t.equal(defaultPlacement('w', [{ node: 'a', load: 1 }]), 'a')
})
