/**
 * Seeded simulation runs of the Raft engine (partitions, crashes with restart from storage,
 * membership changes, lossy/duplicating/reordering network). Each run checks election safety,
 * state machine safety, convergence after healing, and linearizability of the client history.
 *
 * Replay one run: SIM_SEED=<seed> npm test -- dist/test/raft-sim.test.js
 * More runs: npm run sim -- --runs 2000
 */
import t from 'tap'
import { runScenario } from './sim/scenario.js'

const runs = Number(process.env.SIM_RUNS ?? (process.env.CI ? 200 : 60))
const base = process.env.SIM_SEED ? Number(process.env.SIM_SEED) : Math.floor(Math.random() * 1e9)
const seeds = process.env.SIM_SEED ? [base] : Array.from({ length: runs }, (_, i) => base + i)

t.test(`raft simulation: ${seeds.length} seeded runs from seed ${base}`, async (t) => {
  for (const seed of seeds) {
    const res = await runScenario({ seed, durationMs: 8_000 })
    if (!res.ok) {
      t.fail(`seed ${seed} broke an invariant (replay: SIM_SEED=${seed})`, { problems: res.problems, faults: res.faults })
    } else {
      t.pass(`seed ${seed}: ${res.completed}/${res.ops} ops, commit ${res.commit}, converged ${res.convergedAfterMs} ms after heal`)
    }
  }
})
