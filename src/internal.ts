/**
 * The internal entry point, for this repository's tests, benches, demo and simulation: not part of
 * the package's public API (the package exports only `src/index.ts`).
 * @module
 * @internal
 */
import type { SwormDeps } from './bootstrap.js'
import { getInternals, type SwormInternals } from './internal-hooks.js'
import type { SwormOptions } from './options.js'
import { Sworm } from './sworm.js'

export type { SwormDeps, SwormInternals }

/**
 * Build a sworm from given parts (in-memory storage, a simulated network and time). `created` sees
 * the sworm as soon as it exists, before it joins or announces itself.
 */
export function assemble(options: SwormOptions, deps: SwormDeps & { created?: (sworm: Sworm) => void }): Promise<Sworm> {
  return Sworm.assembleFrom(options, deps, deps.created)
}

/** The internals of `sworm`: its Raft node, its hub, and a crash. */
export function internals(sworm: Sworm): SwormInternals {
  return getInternals(sworm)
}
