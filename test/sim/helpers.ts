/** Helpers for tests that drive a SimCluster: build one with a leader, await in simulated time. */
import type { ClusterConfig } from '../../src/raft/types.js'
import { SimCluster, type SimClusterOptions } from './raft-cluster.js'

/** A configuration with `ids` as voters. */
export const votersConfig = (ids: string[]): ClusterConfig => ({ voters: Object.fromEntries(ids.map((i) => [i, `sim://${i}`])), learners: {} })

/** A simulated cluster of `n` voters (n1..nN) that has elected a leader. */
export async function simCluster(n: number, seed = 1, opts: Omit<SimClusterOptions, 'seed'> = {}): Promise<SimCluster> {
  const c = new SimCluster({ seed, ...opts })
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`)
  await c.start(ids, votersConfig(ids))
  if (!(await c.sched.runUntilTrue(() => c.leader() !== undefined, 5000))) throw new Error('no leader')
  return c
}

/** Drive simulated time until the promise settles; return its value or throw its error. */
export async function settle<T>(c: SimCluster, p: Promise<T>, maxMs = 10_000): Promise<T> {
  let done = false
  let value: T | undefined
  let error: unknown
  let failed = false
  p.then(
    (v) => ((done = true), (value = v)),
    (e) => ((done = true), (failed = true), (error = e)),
  )
  if (!(await c.sched.runUntilTrue(() => done, maxMs))) throw new Error('promise did not settle in simulated time')
  if (failed) throw error
  return value as T
}
