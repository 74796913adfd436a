/**
 * The nemesis in simulation mode: `npm run nemesis -- --runs N [--seed S] [--duration MS] [--large N] [--large-every K] [--many]`
 * (`--many`: 20 to 50 nodes, 5 voters and the rest learners, autopilot on: see `manyNodes`).
 * With `--real`, the real-process mode instead (`test/real/run-nemesis.ts`, same flags plus
 * `--steps K` and `--verbose`).
 * Each run: 5 Sworm nodes (registry, supervisor, leases, Raft) under a seeded mix of partitions,
 * one-way cuts, node and whole-cluster crashes, worker crashes, drains, rebalances, registrations
 * and unregisters from clients, a lossy network, clock rates that differ and change within the
 * drift bound, and membership changes (members removed, live or crashed; fresh nodes and removed
 * ones on wiped disks joining), and the faults issue #10 added: process stalls (a node's timers,
 * inbound messages and disk frozen for up to 3 s; half of them the leader right after a partition
 * cut it off with a minority), voters restarted on a wiped disk under their old id (they must refuse
 * to start; the nemesis then removes them, as an operator would), bursts of hostile messages (from
 * an outsider, and carrying another cluster's id), failing disks (every write of a node fails for up
 * to 2.5 s; it retries its disk and rejoins; or only its snapshot writes, for up to 7.5 s; or its
 * disk fails while it starts), a voter restarted while it bridges a cut-off leader to the rest
 * (a new leader then elected inside the old one's lease, unless restarted voters wait; session 24;
 * one run in four with 800 ms election timeouts, where that case reaches past the drift allowed),
 * and, one run in `--large-every` (100), 50,000
 * static names registered first (`--large`), so that snapshots carry real weight. Checked: the history of static registerName / unregisterName /
 * whereisName(consistent) is linearizable (so no acknowledged change is lost), no two
 * incarnations of a supervised name overlap (on the true simulated time), and after healing every
 * supervised name runs exactly once on a member, with the members as the voters, removed nodes
 * declared gone, and every member holding the same registry.
 * Prints one line per failure (with the seed to replay) and the figures; exits 1 on a failure.
 */
import { intOption, parseCli } from '../../tools/cli-args.js'
import { manyNodes, runSwormScenario } from './sworm-sim.js'

if (process.argv.includes('--real')) {
  await import('../real/run-nemesis.js') // runs the real-process mode and exits
}

const { runs, seed0, duration, large, largeEvery, many } = parseCli(
  'run-nemesis.js [--runs N] [--seed S] [--duration MS] [--large N] [--large-every K] [--many] [--real ...]',
  {
    runs: { type: 'string' },
    seed: { type: 'string' },
    duration: { type: 'string' },
    large: { type: 'string' },
    'large-every': { type: 'string' },
    many: { type: 'boolean' },
  },
  (v) => ({
    runs: intOption(v, 'runs', 500, { min: 1 }),
    seed0: intOption(v, 'seed', Math.floor(Math.random() * 1e9), { min: 0 }),
    duration: intOption(v, 'duration', 15_000, { min: 1 }),
    large: intOption(v, 'large', 50_000, { min: 0 }),
    largeEvery: intOption(v, 'large-every', 100, { min: 0 }),
    many: v.many === true,
  }),
)
console.log(
  `nemesis (simulation): ${runs} runs from seed ${seed0}, ${duration} ms of faults each; 1 run in ${largeEvery || '∞'} with ${large} static names registered first` +
    (many ? '; many nodes: 20-50 by the seed, 5 voters, 3 zones, autopilot, dead nodes removed after 5 s, two voters killed at once' : ''),
)
let failed = 0
let lateStops = 0
let largeRuns = 0
const settle: number[] = []
let slowest = { seed: seed0, ms: -1 }
const faults: Record<string, number> = {}
const t0 = Date.now()
for (let i = 0; i < runs; i++) {
  const seed = seed0 + i
  const big = largeEvery > 0 && large > 0 && seed % largeEvery === 0
  const res = await runSwormScenario(seed, { durationMs: duration, clients: 4, ...(big ? { largeState: large } : {}), ...(many ? manyNodes(seed) : {}) })
  lateStops += res.lateStops
  if (big) largeRuns++
  settle.push(res.settledAfterMs)
  if (res.settledAfterMs > slowest.ms) slowest = { seed: res.seed, ms: res.settledAfterMs }
  for (const [k, v] of Object.entries(res.faults)) faults[k] = (faults[k] ?? 0) + v
  if (!res.ok) {
    failed++
    console.log(`FAIL seed ${res.seed} (replay: SIM_SEED=${res.seed}${big ? ` SIM_LARGE=${large}` : ''} node dist/test/supervisor-sim.test.js): ${res.problems.join('; ').slice(0, 2000)}`)
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
console.log(
  `issue #10 faults: ${f('stall') + f('stall-leader')} process stalls (${f('stall-leader')} of the leader right after a partition), ${f('wipe')} voters restarted on a wiped disk under the same id, ` +
    `${f('hostile')} bursts of hostile messages, ${largeRuns} runs with ${large} names first; overlaps excused as a frozen process's late stop: ${lateStops}; ` +
    `failing disks: ${f('disk-fault') + f('disk-fault-leader')} (${f('disk-fault-leader')} of the leader), failing snapshot writes: ${f('snapshot-fault')} (${f('snapshot-write-failed')} snapshots failed), restarts on a failing disk: ${f('restart-failing-disk') + f('restart-failing-snapshots')} (${f('restart-failing-snapshots')} with only its snapshot writes failing)`,
)
console.log(
  `leaders elected inside an earlier leader's lease, tried: ${f('bridge-restart')} voters restarted while bridging a cut-off leader to the other side; ` +
    `${f('long-elections')} runs with 800 ms election timeouts; ${f('node-down-decided')} node-down decisions checked against the lease of the node declared gone; ${f('stop')} graceful stops`,
)
const slack = (p: string): string => `${f(`${p}decision-slack-under-25ms`)} under 25 ms, ${f(`${p}decision-slack-under-100ms`)} 25-100 ms, ${f(`${p}decision-slack-under-250ms`)} 100-250 ms, ${f(`${p}decision-slack-250ms-or-more`)} later`
console.log(
  `node-down decisions after the lease of the node declared gone ended (a live process's, by its clock): with 300 ms of drift allowed, ${slack('')}; ` +
    `with 20 ms (${f('tight-drift')} runs), ${slack('tight-')}; ${f('transfer-cut')} transfers away from a node only the old leader reached (${f('transfer-cut-missed')} more where another node led after)`,
)
if (many) console.log(`autopilot: ${f('autopilot-promote')} promotions, ${f('autopilot-demote')} demotions, ${f('autopilot-remove')} dead nodes removed; ${f('crash-voters')} times two voters killed at once`)
const pct = (p: number): number | undefined => settle[Math.min(settle.length - 1, Math.floor(settle.length * p))]
console.log(`settled after heal (simulated ms): median ${pct(0.5)}, p99 ${pct(0.99)}, max ${slowest.ms} (seed ${slowest.seed})`)
console.log(`${runs - failed} passed, ${failed} failed, seeds ${seed0}..${seed0 + runs - 1}, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
process.exit(failed ? 1 : 0)
