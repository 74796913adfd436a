/**
 * The registry state machine replicated by the simulated Raft cluster under partitions, crashes,
 * membership changes and a faulty network: the history of registerName / unregisterName /
 * whereisName (consistent) must be linearizable, and every replica must converge.
 *
 * Replay one run: SIM_SEED=<seed> node dist/test/registry-sim.test.js
 * More runs: npm run sim -- --machine registry --runs 2000
 */
import t from 'tap'
import { runScenario } from './sim/scenario.js'

const runs = Number(process.env.SIM_RUNS ?? (process.env.CI ? 100 : 40))
const base = process.env.SIM_SEED ? Number(process.env.SIM_SEED) : Math.floor(Math.random() * 1e9)
const seeds = process.env.SIM_SEED ? [base] : Array.from({ length: runs }, (_, i) => base + i)

t.test(`registry simulation: ${seeds.length} seeded runs from seed ${base}`, async (t) => {
  for (const seed of seeds) {
    const res = await runScenario({ seed, durationMs: 8_000, machine: 'registry', keys: 4 })
    if (!res.ok) t.fail(`seed ${seed} broke an invariant (replay: SIM_SEED=${seed})`, { problems: res.problems, faults: res.faults })
    else t.pass(`seed ${seed}: ${res.completed}/${res.ops} ops, commit ${res.commit}`)
  }
})
