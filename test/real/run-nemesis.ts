/**
 * The nemesis on real processes: `npm run nemesis -- --real --runs N [--seed S] [--steps K]
 * [--large N] [--verbose]` (or `node dist/test/real/run-nemesis.js ...`). Each run starts 5 node
 * processes, injects a seeded schedule of SIGKILLs, graceful stops, SIGSTOPs (the leader right
 * after a partition among them), partitions, wiped disks, hostile connections, worker crashes and
 * drains under client load, heals, and checks linearizability, no overlapping incarnations,
 * convergence to one incarnation per name, and that no process crashed on its own (see
 * `nemesis.ts`). `--large N` registers N static names before the faults in every run (0: none;
 * default: 50,000 in 1 run of 10, by the seed). Prints one line per run, then the figures; exits 1
 * on a failure, 2 on bad arguments. `--verbose` prints each fault.
 */
import { flagOption, intOption, parseCli } from '../../tools/cli-args.js'
import { defaultLargeState, runRealNemesis } from './nemesis.js'

const { runs, seed0, steps, large, verbose } = parseCli(
  'run-nemesis.js [--runs N] [--seed S] [--steps K] [--large N] [--verbose]',
  {
    runs: { type: 'string' },
    seed: { type: 'string' },
    steps: { type: 'string' },
    large: { type: 'string' },
    verbose: { type: 'boolean' },
    real: { type: 'boolean' }, // `npm run nemesis -- --real` passes it on
  },
  (v) => ({
    runs: intOption(v, 'runs', 10, { min: 1 }),
    seed0: intOption(v, 'seed', Math.floor(Math.random() * 1e9), { min: 0 }),
    steps: intOption(v, 'steps', 6, { min: 0 }),
    large: intOption(v, 'large', undefined, { min: 0 }),
    verbose: flagOption(v, 'verbose'),
  }),
)
console.log(
  `nemesis (real processes): ${runs} runs from seed ${seed0}, ${steps} fault steps each, large state ${large !== undefined ? `of ${large} names in every run` : '(50,000 names) in the runs the seed picks'}`,
)
let failed = 0
const settle: number[] = []
const faults: Record<string, number> = {}
let ops = 0
let starts = 0
let downs = 0
const lateStops: number[] = []
let unexplainedDowns = 0
const snapshots = { taken: 0, installed: 0, maxBytes: 0 }
const t0 = Date.now()
for (let i = 0; i < runs; i++) {
  const seed = seed0 + i
  const res = await runRealNemesis({ seed, steps, largeState: large ?? defaultLargeState(seed), ...(verbose ? { log: (l: string) => console.log(`  ${l}`) } : {}) })
  snapshots.taken += res.snapshots?.taken ?? 0
  snapshots.installed += res.snapshots?.installed ?? 0
  snapshots.maxBytes = Math.max(snapshots.maxBytes, res.snapshots?.maxBytes ?? 0)
  settle.push(res.settledAfterMs)
  ops += res.ops
  starts += res.starts
  downs += res.nodeDowns?.total ?? 0
  lateStops.push(...(res.lateStops ?? []))
  unexplainedDowns += res.nodeDowns?.unexplained ?? 0
  for (const [k, v] of Object.entries(res.faults)) faults[k] = (faults[k] ?? 0) + v
  const line = `run ${i + 1}/${runs} seed ${res.seed}: ${res.ok ? 'ok' : 'FAIL'}, ${res.ops} ops, ${res.starts} worker starts${res.largeState ? `, ${res.largeState} names of large state` : ''}, settled ${res.settledAfterMs.toFixed(0)} ms after heal, ${(res.wallMs / 1000).toFixed(1)} s`
  console.log(line)
  if (!res.ok) {
    failed++
    console.log(`  FAIL seed ${res.seed} (rerun: node dist/test/real/run-nemesis.js --runs 1 --seed ${res.seed}${large !== undefined ? ` --large ${large}` : ''} --verbose): ${res.problems.join('; ').slice(0, 3000)}`)
    if (res.dump) console.log(`  details (faults, events, history of the keys concerned): ${res.dump}`)
  }
}
settle.sort((a, b) => a - b)
console.log(`faults injected: ${JSON.stringify(Object.fromEntries(Object.entries(faults).sort(([a], [b]) => (a < b ? -1 : 1))))}`)
console.log(`raft snapshots: ${snapshots.taken} taken (largest ${(snapshots.maxBytes / 1024).toFixed(0)} KiB), ${snapshots.installed} installed from a leader`)
console.log(`client operations checked: ${ops}; worker starts: ${starts}; nodes declared gone: ${downs} (${unexplainedDowns} with no fault of ours in the 30 s before)`)
lateStops.sort((a, b) => a - b)
console.log(
  `late stops (two incarnations live at once, neither handling a message): ${lateStops.length}${lateStops.length ? `, median ${lateStops[Math.floor(lateStops.length / 2)]!.toFixed(0)} ms, max ${lateStops[lateStops.length - 1]!.toFixed(0)} ms` : ''}`,
)
console.log(`settled after heal (ms): median ${settle[Math.floor(settle.length / 2)]?.toFixed(0)}, max ${settle[settle.length - 1]?.toFixed(0)}`)
console.log(`${runs - failed} passed, ${failed} failed, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
process.exit(failed ? 1 : 0)
