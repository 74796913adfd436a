/**
 * The whole product (registry, supervisor, leases, Raft) in the deterministic simulation, under
 * partitions (halves, one-way cuts), crashes and restarts from disk, worker crashes, drains,
 * unregisters and a lossy network, with clients registering, unregistering and reading static
 * names meanwhile. Checked on every run: the clients' history is linearizable (nothing
 * acknowledged is lost), no two incarnations of a supervised name ever overlap (start/stop log on
 * the simulated clock), and after the faults stop every registered name runs exactly once, with
 * every node holding the same registry. `npm run nemesis -- --runs N` runs more.
 *
 * Replay one run: SIM_SEED=<seed> node dist/test/supervisor-sim.test.js (SIM_TRACE=1 for a log)
 */
import t from 'tap'
import { runSwormScenario } from './sim/sworm-sim.js'

const runs = Number(process.env.SIM_RUNS ?? (process.env.CI ? 150 : 50))
const base = process.env.SIM_SEED ? Number(process.env.SIM_SEED) : Math.floor(Math.random() * 1e9)
const seeds = process.env.SIM_SEED ? [base] : Array.from({ length: runs }, (_, i) => base + i)

t.test(`supervisor simulation: ${seeds.length} seeded runs from seed ${base}`, async (t) => {
  for (const seed of seeds) {
    const res = await runSwormScenario(seed, { clients: 4 })
    if (!res.ok) t.fail(`seed ${seed} broke an invariant (replay: SIM_SEED=${seed})`, { problems: res.problems, faults: res.faults })
    else t.pass(`seed ${seed}: ${res.names} names, ${res.starts} starts, settled ${res.settledAfterMs} ms after heal`)
  }
})
