/**
 * The nemesis on real processes: `npm run nemesis -- --real --runs N [--seed S] [--steps K]`
 * (or `node dist/test/real/run-nemesis.js ...`). Each run starts 5 node processes, injects a seeded
 * schedule of SIGKILLs, graceful stops, SIGSTOPs, partitions, worker crashes and drains under
 * client load, heals, and checks linearizability, no overlapping incarnations, convergence to one
 * incarnation per name, and that no process crashed on its own (see `nemesis.ts`). Prints one line
 * per run, then the figures; exits 1 on a failure. `--verbose` prints each fault.
 */
import { runRealNemesis } from './nemesis.js'

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : def
}
const runs = arg('runs', 10)
const seed0 = arg('seed', Math.floor(Math.random() * 1e9))
const steps = arg('steps', 6)
const verbose = process.argv.includes('--verbose')
console.log(`nemesis (real processes): ${runs} runs from seed ${seed0}, ${steps} fault steps each`)
let failed = 0
const settle: number[] = []
const faults: Record<string, number> = {}
let ops = 0
let starts = 0
let downs = 0
const lateStops: number[] = []
let unexplainedDowns = 0
const t0 = Date.now()
for (let i = 0; i < runs; i++) {
  const res = await runRealNemesis({ seed: seed0 + i, steps, ...(verbose ? { log: (l: string) => console.log(`  ${l}`) } : {}) })
  settle.push(res.settledAfterMs)
  ops += res.ops
  starts += res.starts
  downs += res.nodeDowns?.total ?? 0
  lateStops.push(...(res.lateStops ?? []))
  unexplainedDowns += res.nodeDowns?.unexplained ?? 0
  for (const [k, v] of Object.entries(res.faults)) faults[k] = (faults[k] ?? 0) + v
  const line = `run ${i + 1}/${runs} seed ${res.seed}: ${res.ok ? 'ok' : 'FAIL'}, ${res.ops} ops, ${res.starts} worker starts, settled ${res.settledAfterMs.toFixed(0)} ms after heal, ${(res.wallMs / 1000).toFixed(1)} s`
  console.log(line)
  if (!res.ok) {
    failed++
    console.log(`  FAIL seed ${res.seed} (rerun: node dist/test/real/run-nemesis.js --runs 1 --seed ${res.seed} --verbose): ${res.problems.join('; ').slice(0, 3000)}`)
    if (res.dump) console.log(`  details (faults, events, history of the keys concerned): ${res.dump}`)
  }
}
settle.sort((a, b) => a - b)
console.log(`faults injected: ${JSON.stringify(faults)}`)
console.log(`client operations checked: ${ops}; worker starts: ${starts}; nodes declared gone: ${downs} (${unexplainedDowns} with no fault of ours in the 30 s before)`)
lateStops.sort((a, b) => a - b)
console.log(
  `late stops (two incarnations live at once, neither handling a message): ${lateStops.length}${lateStops.length ? `, median ${lateStops[Math.floor(lateStops.length / 2)]!.toFixed(0)} ms, max ${lateStops[lateStops.length - 1]!.toFixed(0)} ms` : ''}`,
)
console.log(`settled after heal (ms): median ${settle[Math.floor(settle.length / 2)]?.toFixed(0)}, max ${settle[settle.length - 1]?.toFixed(0)}`)
console.log(`${runs - failed} passed, ${failed} failed, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
process.exit(failed ? 1 : 0)
