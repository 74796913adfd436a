/**
 * The least CPU one more replica must spend on a registration: decoding the entry's bytes as a
 * follower receives them and applying the command to the registry (no disk, no network, no Raft
 * bookkeeping), measured in this process. Every replica, learners included, does at least this
 * for every entry, so N replicas sharing a machine's cores spend at least N times it.
 * @module
 */
import { decodeEntries, entryBytes } from '../src/raft/entry-codec.js'
import { RegistryState } from '../src/registry/state.js'

/** One pass: µs of CPU (this process, all threads) per entry over `n` registrations. */
function pass(n: number): number {
  const st = new RegistryState(() => {})
  const inc = 'a1b2c3d4e5f6'
  st.apply({ c: 'nodeUp', node: 'n1', inc, prev: '', ord: 1 }, 1)
  const bins: Uint8Array[] = []
  for (let i = 0; i < n; i++) {
    const data = { c: 'register', name: `bench:${i}`, ref: { sworm: 'bench', node: 'n1', inc, id: i + 1 }, s: { node: 'n1', inc, seq: i + 1, low: i + 1 } }
    bins.push(new Uint8Array(entryBytes({ index: 2 + i, term: 2, type: 'cmd', data })))
  }
  const t0 = process.cpuUsage()
  for (let i = 0; i < n; i += 64) {
    const ents = decodeEntries(bins.slice(i, i + 64))
    if (typeof ents === 'string') throw new Error(ents)
    for (const e of ents) st.apply(e.data as Parameters<RegistryState['apply']>[0], e.index)
  }
  const cpu = process.cpuUsage(t0)
  if (st.size !== n) throw new Error(`replica floor: ${st.size} names applied, not ${n}`)
  return (cpu.user + cpu.system) / n
}

/** The least of three passes over `n` registrations (after a warm-up), µs of CPU per entry. */
export function replicaFloorUs(n = 100_000): number {
  pass(10_000)
  return Math.min(pass(n), pass(n), pass(n))
}
