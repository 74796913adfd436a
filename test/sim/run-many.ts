/**
 * Run many seeded simulations: `npm run sim -- --runs 2000 [--seed S] [--duration 20000]`.
 * Prints one line per failure and a summary; exits 1 if any run broke an invariant.
 */
import { choiceOption, intOption, parseCli } from '../../tools/cli-args.js'
import { runScenario } from './scenario.js'

const { runs, seed0, duration, machine } = parseCli(
  'run-many.js [--runs N] [--seed S] [--duration MS] [--machine kv|registry]',
  { runs: { type: 'string' }, seed: { type: 'string' }, duration: { type: 'string' }, machine: { type: 'string' } },
  (v) => ({
    runs: intOption(v, 'runs', 1000, { min: 1 }),
    seed0: intOption(v, 'seed', Math.floor(Math.random() * 1e9), { min: 0 }),
    duration: intOption(v, 'duration', 10_000, { min: 1 }),
    machine: choiceOption(v, 'machine', ['kv', 'registry'], 'kv'),
  }),
)
console.log(`running ${runs} ${machine} simulations from seed ${seed0}, ${duration} ms of faults each`)
let failed = 0
const conv: number[] = []
const t0 = Date.now()
for (let i = 0; i < runs; i++) {
  const res = await runScenario({ seed: seed0 + i, durationMs: duration, machine })
  conv.push(res.convergedAfterMs)
  if (!res.ok) {
    failed++
    console.log(`FAIL seed ${res.seed}: ${res.problems.join('; ')}`)
  }
  if ((i + 1) % 100 === 0) console.log(`${i + 1} runs, ${failed} failed, ${((Date.now() - t0) / 1000).toFixed(0)} s`)
}
conv.sort((a, b) => a - b)
console.log(`${runs - failed} passed, ${failed} failed`)
console.log(`convergence after heal (simulated ms): median ${conv[Math.floor(conv.length / 2)]}, max ${conv[conv.length - 1]}`)
process.exit(failed ? 1 : 0)
