/**
 * The whole product in the deterministic simulation: Sworm nodes (registry, supervisor, leases,
 * Raft) over a simulated network, in-memory disks and simulated time, with a seeded nemesis.
 * Every worker start and stop goes to a life log with the true simulated time; the run fails if
 * two incarnations of a supervised name ever overlap, or if, after the faults stop, a name does not
 * run exactly once on the members of the cluster.
 *
 * Clocks. Each node process reads its own monotonic clock (a {@link SimClock}, as
 * `performance.now()` is in production): a random offset per process start, so clocks disagree
 * and jump only across restarts, and a rate the nemesis changes at times ("skew"), always within
 * [lo, hi] with hi / lo = 1 + maxClockDriftMs / leaseTimeoutMs. That is the assumption the
 * guarantee rests on: a node measures its lease on its own clock, the leader measures
 * `leaseTimeoutMs + maxClockDriftMs` of silence on its own, so whatever the offsets, the lease runs
 * out first as long as no clock runs faster than another by more than that ratio. A clock that
 * jumps within a process (a wall clock stepped by NTP) is outside the assumption and not modelled.
 * The life log and the overlap check use the simulated time, not any node's clock.
 *
 * Membership. The nemesis also removes members (`Sworm.removeNode`, through any member, the
 * removed one included, live or crashed: a live one goes on running, cut off from the log, until
 * a later step kills it) and adds nodes started with `join` (a fresh node, or the machine of a
 * removed one on a wiped disk under a new id: reusing the id would let a stale configuration
 * count a voter that forgot its votes, which Raft does not survive), one change at a time,
 * keeping 3 to 6 members. The checks at the end hold for the membership at that time: its
 * members are the Raft voters, up in the registry, and run every name; removed nodes are
 * declared gone.
 */
import { checkLinearizable, kvModel } from '../../src/testkit/linearizability.js'
import { checkOverlaps, settled, unsettled } from './sworm-sim/checks.js'
import { healFaults, injectFault, stallsEnd } from './sworm-sim/faults.js'
import { Callers, Clients, CostlyBursts, loadLargeState, registerSupervised } from './sworm-sim/workload.js'
import { SimWorld, type SwormScenarioOptions } from './sworm-sim/world.js'

export { judgeOverlaps } from './sworm-sim/checks.js'

/**
 * A run with many app instances (issue #13): 20 to 50 nodes by the seed, 5 voters and the rest
 * learners, in 3 zones, autopilot on (dead nodes removed after 5 s), membership changes keeping
 * the count within 3 of the start, and a fault that kills two voters at once.
 */
export function manyNodes(seed: number): SwormScenarioOptions {
  const nodes = 20 + (seed % 31)
  return { nodes, voters: 5, zones: 3, members: [nodes - 3, nodes + 3], deadNodeTimeoutMs: 5000, voterCrashes: true }
}
export type { SwormScenarioOptions } from './sworm-sim/world.js'

/** What one scenario run found. */
export interface SwormSimResult {
  seed: number
  ok: boolean
  problems: string[]
  names: number
  faults: Record<string, number>
  starts: number
  settledAfterMs: number
  /** Overlaps excused because the old incarnation's process was frozen until it stopped it (see {@link judgeOverlaps}). */
  lateStops: number
}

/**
 * One seeded run: start the cluster, load it (large state, supervised names, clients), inject
 * faults for `durationMs`, heal, and judge. Never throws for a broken invariant: see `problems`.
 *
 * Its steps run in this one function, so that what follows a fault runs right after it: the
 * faults, the heal and the first look at whether the cluster settled draw from the run's random
 * stream, or read state that promise chains change, in the order they always have (see
 * `sworm-sim/faults.ts`).
 */
export async function runSwormScenario(seed: number, opts: SwormScenarioOptions = {}): Promise<SwormSimResult> {
  const w = new SimWorld(seed, opts)
  const { sched } = w
  await w.startCluster()
  await sched.runUntilTrue(() => w.alive().some((m) => m.sworm!.status().role === 'leader'), 5000)
  if (opts.largeState) await loadLargeState(w, opts.largeState)
  for (let i = 0; i < (opts.names ?? 20); i++) registerSupervised(w)
  await sched.runUntil(sched.now + 2000)
  const clients = new Clients(w)
  clients.start(opts.clients ?? 0)
  const callers = new Callers(w)
  const callerCount = opts.callers ?? 2
  callers.start(callerCount)
  new CostlyBursts(w).start(opts.costly ?? 2, opts.durationMs ?? 15_000)

  const end = sched.now + (opts.durationMs ?? 15_000)
  while (sched.now < end) {
    await sched.runUntil(sched.now + 200 + w.r() * 800)
    const fault = injectFault(w)
    if (fault) {
      await fault.wait
      fault.after?.()
    }
  }

  // heal: every stalled process runs again, network back, every member up and undrained; a
  // membership change under way finishes
  const thaw = stallsEnd(w)
  if (thaw > sched.now) await sched.runUntil(thaw + 1)
  healFaults(w)
  for (const m of w.active()) if (!m.alive) await w.boot(m)
  for (const m of w.alive()) void m.sworm!.undrain().catch(() => {})
  clients.stop()
  callers.stop()
  const healedAt = sched.now
  // (the problems the faults, the decisions and the callers note: read at the end, with what
  // they note while the cluster settles)
  const problems: string[] = []
  const ok = await sched.runUntilTrue(() => settled(w), 30_000, 20)
  const settledAfterMs = sched.now - healedAt
  if (!ok) problems.push(unsettled(w))

  if (callerCount > 0) await callers.finished()
  if (opts.clients) {
    await clients.finished()
    const lin = checkLinearizable(kvModel, w.history, { timeoutMs: 30_000 })
    if (!lin.ok) problems.push(`registry history not linearizable${lin.timedOut ? ' (checker timed out)' : ''}: ${lin.explanation ?? ''}`)
  }
  problems.unshift(...w.faultProblems)
  const ov = checkOverlaps(w)
  if (ov.violations.length) problems.push(`overlapping incarnations: ${ov.violations.slice(0, 5).join('; ')}`)
  const names = w.active().find((m) => m.sworm)?.sworm?.registered().length ?? 0
  w.shutdown()
  const starts = w.lifeNow().filter((e) => e.event === 'start').length
  return { seed, ok: problems.length === 0, problems, names, faults: w.faults, starts, settledAfterMs, lateStops: ov.lateStops }
}
