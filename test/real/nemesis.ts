/**
 * The nemesis on real processes: 5 sworm node processes (`tools/cluster/sworm-node.ts`) over
 * real WebSockets and LevelDB, driven by a seed. Clients register, unregister and read static
 * names from several nodes while supervised counter workers run; the nemesis SIGKILLs and restarts
 * nodes, stops them gracefully, freezes them (SIGSTOP), partitions the cluster (isolated node,
 * majority/minority, bridge; messages dropped at the transport by `PeerFaults`), crashes workers,
 * drains nodes, and skews clocks (every process runs its own clock at a rate within the bound);
 * and these (counted in `faults` by kind):
 * - Stalls at the worst moment (`stall:leader`, `stall:follower`): in the step that applies a
 *   partition, right after the cuts, the leader of that moment (or a follower) is SIGSTOPped for
 *   0.5-3 s, then SIGCONTed. (The `freeze` step SIGSTOPs any node, leader or follower, until a
 *   later `revive` or the heal.) Stalls are pauses like freezes for the overlap check.
 * - A wiped disk (`wipe`): a voter is SIGKILLed, its dataDir deleted, and it is started again under
 *   the same id, with the same `peers` or (half the time) with `join` through a live member
 *   (`wipe:with-join`). `Sworm.start` must refuse (`DATA_LOST`: `wipe:refused`) or
 *   keep waiting (`wipe:waited`, ended after 10 s); if it resolves (`wipe:resolved`) that is a
 *   violation. Then, as the README tells an operator, the old id is removed (`removeNode` through
 *   a live member, retried) and the machine joins under a new id on a fresh dataDir (`join`
 *   through a live member; on the old address or a new one): `wipe:rejoined`. One at a time, only
 *   while at most one other node is unavailable, so a majority of voters always keeps its disk;
 *   the membership stays at 5.
 * - Hostile connections from outside the cluster (`hostile:<kind>`, see `hostile-peers.ts`):
 *   oversized frames before the handshake, an array of many empty maps, truncated handshakes,
 *   wrong-secret handshakes, many idle connections, to random nodes, one at a time, bounded.
 * - Large state (`largeState`, option `largeState`; by default 50,000 in 1 run of 10, by the
 *   seed): that many static names (echo workers: cheap, and a node's names go with it when it is
 *   declared gone, a large delete) registered in bulk before the faults, 64 in flight through 3
 *   nodes. `snapshotEvery` is 300, but the library also waits for size/32 entries between
 *   snapshots, so with 50,000 names (~4 MiB) they are taken during the load, not during the
 *   faults; so a 4th node sits the load out (SIGKILLed before it, started again as the faults
 *   begin) and installs the leader's snapshot during the faults, as does a wiped node's
 *   successor (`snapshots` in the result). The checks compare registries by digest, and only the
 *   client operations go to the linearizability checker.
 *
 * Then it heals everything and checks:
 * 1. the clients' history is linearizable (acknowledged writes are never lost);
 * 2. two incarnations of a supervised name never overlap in time (every process appends starts and
 *    stops to a file with the wall clock; a killed process's workers end when it does);
 * 3. after healing, every supervised name runs exactly once, where the registry says, and every
 *    node holds the same registry, within a bounded time;
 * 4. no node process exited unless the nemesis killed or stopped it (a start refused as
 *    `DATA_LOST` on a wiped disk is expected);
 * 5. a node on a wiped disk never started under its old id.
 *
 * The seed picks the faults and the clients' operations; the processes' timing is real, so a rerun
 * with the same seed replays the same schedule of faults, not the same interleaving. (The
 * simulation mode, `sim/sworm-sim.ts`, replays exactly; it also covers message loss, duplication
 * and reordering, which this mode does not inject.)
 * @module
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { seededRandom } from '../../src/testkit/sim.js'
import { startSwormCluster, type SwormCluster } from '../../tools/cluster/sworm-cluster.js'
import { Clients } from './nemesis/clients.js'
import { checkHistoryAndNodes, nodeDowns, overlapsOf, readLives, waitSettled, writeDump } from './nemesis/checks.js'
import { healEverything, runFaults } from './nemesis/faults.js'
import { loadLargeState, registerOversized, registerSupervised, startHostile } from './nemesis/load.js'
import { DRIFT_MS, Findings, LEASE_MS, MAX_RATE_SKEW, N, NemesisRun } from './nemesis/state.js'

export { overlapsOf } from './nemesis/checks.js'
export type { Incarnation, Overlaps } from './nemesis/checks.js'

/** Options of {@link runRealNemesis}. */
export interface RealNemesisOptions {
  seed: number
  /** Fault steps (default 6). */
  steps?: number
  /** Supervised names (default 20). */
  names?: number
  /** Concurrent clients (default 4). */
  clients?: number
  /** Progress lines (default: none). */
  log?: (line: string) => void
  /**
   * Static names registered in bulk before the faults (default: 50,000 in 1 run of 10, chosen by
   * the seed; 0: none).
   */
  largeState?: number
}

/** What one run found. */
export interface RealNemesisResult {
  seed: number
  ok: boolean
  problems: string[]
  /** Faults injected, by kind. */
  faults: Record<string, number>
  /** Client operations in the checked history. */
  ops: number
  /** Worker starts seen in the life files. */
  starts: number
  /** Static names registered in bulk before the faults. */
  largeState?: number
  /** Raft snapshots taken and installed (from a leader) by the node processes, as they reported them. */
  snapshots?: { taken: number; installed: number; maxBytes: number }
  /** Overlaps in which neither incarnation handled a message (the old one's stop ran late), ms. */
  lateStops?: number[]
  /** Nodes declared gone (nodeDown), and how many of those had no fault of ours in the 30 s before. */
  nodeDowns?: { total: number; unexplained: number }
  /** From the end of the faults until every check of "settled" held (ms). */
  settledAfterMs: number
  wallMs: number
  /** On a failure: a JSON file with the fault log, the nodes' events and the history of the keys concerned. */
  dump?: string
}

/** The default of {@link RealNemesisOptions.largeState} for a seed: 50,000 in 1 run of 10. */
export function defaultLargeState(seed: number): number {
  return seededRandom(seed * 31 + 7)() < 0.1 ? 50_000 : 0
}

/** Run one seeded real-process nemesis run. Never throws for a broken invariant: see `problems`. */
export async function runRealNemesis(opts: RealNemesisOptions): Promise<RealNemesisResult> {
  const t0 = performance.now()
  const r = seededRandom(opts.seed)
  const lifeDir = await mkdtemp(join(tmpdir(), 'sworm-nemesis-life-'))
  const found = new Findings(opts.log ?? (() => {}))
  const { faults, problems } = found
  let c: SwormCluster | undefined
  try {
    const skew = (): { rate: number; offsetMs: number } => ({ rate: 1 + (r() * 2 - 1) * MAX_RATE_SKEW, offsetMs: (r() * 2 - 1) * 5000 })
    c = await startSwormCluster({ n: N, lifeDir, leaseTimeoutMs: LEASE_MS, maxClockDriftMs: DRIFT_MS, requestTimeoutMs: 3000, snapshotEvery: 300, ipcTimeoutMs: 8000, clockOf: skew })
    const run = new NemesisRun(c, r, found)
    await Promise.all(run.ids.map((id) => run.subscribe(id)))
    await c.waitForLeader(15_000)

    const names = opts.names ?? 20
    const clients = new Clients(run, names, opts.clients ?? 4)
    await registerSupervised(run, names)
    await registerOversized(run)
    const large = Math.max(0, Math.floor(opts.largeState ?? defaultLargeState(opts.seed)))
    const sitOut = large > 0 ? await loadLargeState(run, large) : undefined
    const stopHostile = startHostile(run, opts.seed)
    if (sitOut !== undefined) {
      found.note(`large state: ${sitOut} starts again (it catches up by snapshot)`)
      await run.restart(sitOut)
    }
    await runFaults(run, opts.steps ?? 6, names)
    const healedAt = await healEverything(run, stopHostile)
    await clients.stop()

    await waitSettled(run, lifeDir)
    const settledAfterMs = performance.now() - healedAt
    const { incs } = await readLives(run, lifeDir)
    const ov = overlapsOf(incs, run.pauses)
    if (ov.violations.length) problems.push(`overlapping incarnations: ${ov.violations.slice(0, 5).join('; ')}`)
    const downs = nodeDowns(run)
    const explanation = checkHistoryAndNodes(run)
    const dump = problems.length ? await writeDump(opts.seed, found, run.history, explanation) : undefined
    const events = found.events
    return {
      seed: opts.seed,
      ok: problems.length === 0,
      problems,
      faults,
      ...(dump ? { dump } : {}),
      nodeDowns: downs,
      lateStops: ov.lateStops,
      ops: run.history.filter((o) => typeof o.client === 'number').length,
      starts: incs.length,
      largeState: large,
      snapshots: {
        taken: events.filter((e) => e.event === 'snapshotTaken').length,
        installed: events.filter((e) => e.event === 'snapshotInstalled').length,
        maxBytes: Math.max(0, ...events.filter((e) => e.event === 'snapshotTaken').map((e) => Number(e.data.bytes) || 0)),
      },
      settledAfterMs,
      wallMs: performance.now() - t0,
    }
  } catch (err) {
    problems.push(`run failed: ${(err as Error).stack ?? String(err)}`)
    return { seed: opts.seed, ok: false, problems, faults, ops: 0, starts: 0, settledAfterMs: NaN, wallMs: performance.now() - t0 }
  } finally {
    await c?.stopAll().catch(() => {})
    await rm(lifeDir, { recursive: true, force: true })
  }
}
