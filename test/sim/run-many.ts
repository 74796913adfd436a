/**
 * Run many seeded simulations: `npm run sim -- --runs 2000 [--seed S] [--duration 20000]`.
 * Prints one line per failure and a summary; exits 1 if any run broke an invariant.
 */
import { runScenario } from './scenario.js'

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : def
}
const runs = arg('runs', 1000)
const seed0 = arg('seed', Math.floor(Math.random() * 1e9))
const duration = arg('duration', 10_000)
const mi = process.argv.indexOf('--machine')
const machine = mi >= 0 && process.argv[mi + 1] === 'registry' ? 'registry' : 'kv'
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
