/**
 * The nemesis in simulation mode: `npm run nemesis -- --runs N [--seed S] [--duration MS]`.
 * With `--real`, the real-process mode instead (`test/real/run-nemesis.ts`, same flags plus
 * `--steps K` and `--verbose`).
 * Each run: 5 Sworm nodes (registry, supervisor, leases, Raft) under a seeded mix of partitions,
 * one-way cuts, node and whole-cluster crashes, worker crashes, drains, rebalances, registrations
 * and unregisters from clients, a lossy network, clock rates that differ and change within the
 * drift bound, and membership changes (members removed, live or crashed; fresh nodes and removed
 * ones on wiped disks joining). Checked: the history of static registerName / unregisterName /
 * whereisName(consistent) is linearizable (so no acknowledged change is lost), no two
 * incarnations of a supervised name overlap (on the true simulated time), and after healing every
 * supervised name runs exactly once on a member, with the members as the voters, removed nodes
 * declared gone, and every member holding the same registry.
 * Prints one line per failure (with the seed to replay) and the figures; exits 1 on a failure.
 */
import { runSwormScenario } from './sworm-sim.js'

if (process.argv.includes('--real')) {
  await import('../real/run-nemesis.js') // runs the real-process mode and exits
}

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : def
}
const runs = arg('runs', 500)
const seed0 = arg('seed', Math.floor(Math.random() * 1e9))
const duration = arg('duration', 15_000)
console.log(`nemesis (simulation): ${runs} runs from seed ${seed0}, ${duration} ms of faults each`)
let failed = 0
const settle: number[] = []
let slowest = { seed: seed0, ms: -1 }
const faults: Record<string, number> = {}
const t0 = Date.now()
for (let i = 0; i < runs; i++) {
  const res = await runSwormScenario(seed0 + i, { durationMs: duration, clients: 4 })
  settle.push(res.settledAfterMs)
  if (res.settledAfterMs > slowest.ms) slowest = { seed: res.seed, ms: res.settledAfterMs }
  for (const [k, v] of Object.entries(res.faults)) faults[k] = (faults[k] ?? 0) + v
  if (!res.ok) {
    failed++
    console.log(`FAIL seed ${res.seed} (replay: SIM_SEED=${res.seed} node dist/test/supervisor-sim.test.js): ${res.problems.join('; ').slice(0, 2000)}`)
  }
  if ((i + 1) % 100 === 0) console.log(`${i + 1} runs, ${failed} failed, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
}
settle.sort((a, b) => a - b)
const f = (k: string): number => faults[k] ?? 0
console.log(`faults injected: ${JSON.stringify(Object.fromEntries(Object.entries(faults).sort(([a], [b]) => (a < b ? -1 : 1))))}`)
console.log(
  `membership changes: ${f('member-remove') + f('member-remove-down')} removals (${f('member-remove-down')} of a crashed node), ` +
    `${f('member-join') + f('member-rejoin')} joins (${f('member-rejoin')} by a removed node's machine under a new id, wiped disk); clock rate changes: ${f('skew')}`,
)
const pct = (p: number): number | undefined => settle[Math.min(settle.length - 1, Math.floor(settle.length * p))]
console.log(`settled after heal (simulated ms): median ${pct(0.5)}, p99 ${pct(0.99)}, max ${slowest.ms} (seed ${slowest.seed})`)
console.log(`${runs - failed} passed, ${failed} failed, seeds ${seed0}..${seed0 + runs - 1}, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
process.exit(failed ? 1 : 0)
