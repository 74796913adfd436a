/**
 * Many app instances (issue #13): 15 real node processes (LevelDB, loopback WebSockets), as an app
 * scaled out to 15 pods runs them, side by side with the same steps where every node votes (what
 * Sworm did before the `voters` option: every node that joined became a voter).
 *
 * Run: `npm run bench:nodes [-- --quick]` (`--quick`: 7 nodes, fewer registrations).
 *
 * For each setting (`voters: 5`, then every node a voter):
 * 1. 3 nodes start with `peers`; registrations at 64 in flight on the leader (static names):
 *    the 3-node rate and the leader's CPU per commit.
 * 2. The other 12 nodes join at once (`join`, all started together): time until every start
 *    resolved, and how many failed.
 * 3. Autopilot settles: time until the configuration has its voters (5, or all 15), and which.
 * 4. Registrations at 64 in flight on the leader again: the 15-node rate against the 3-node one,
 *    and the leader's CPU per commit against the 3-node one.
 * 5. Once every node has applied the registrations, two voters (not the leader) are SIGKILLed:
 *    time until a write succeeds again, and until the configuration has 5 voters again, none of
 *    them a killed one (autopilot promotes learners in their place).
 *
 * 6. In this process: the least CPU a replica spends per registration (decode and apply,
 *    `replica-floor.ts`), against what an added replica costs in the run; and the rate 15 nodes
 *    sharing this machine's cores could reach if each added replica spent only that least.
 *
 * Prints one markdown table, then each target with met or NOT met.
 * @module
 */
import { rmSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { availableParallelism } from 'node:os'
import { benchLogger, clusterCpuMs, installBenchGuards, runMain } from './common.js'
import { replicaFloorUs } from './replica-floor.js'
import { flagOption, parseCli } from '../tools/cli-args.js'
import type { DashStatus, RegisterManyResult } from '../tools/cluster/sworm-protocol.js'
import { startSwormCluster, type SwormCluster } from '../tools/cluster/sworm-cluster.js'

const { QUICK } = parseCli('nodes-bench.js [--quick]', { quick: { type: 'boolean' } }, (v) => ({ QUICK: flagOption(v, 'quick') }))
const TOTAL = QUICK ? 7 : 15
const SEEDS = 3
const NAMES = QUICK ? 10_000 : 30_000
const INFLIGHT = 64
const STABILIZATION_MS = 2000
const WATCHDOG_MS = QUICK ? 10 * 60_000 : 30 * 60_000

const dirs = new Set<string>()
installBenchGuards(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}, WATCHDOG_MS)
const log = benchLogger('nodes')

interface Figures {
  rate3: number
  cpu3: number
  cluster3: number
  joinMs: number
  joinFailed: number
  settleMs: number | undefined
  voters: number
  learners: number
  rateN: number
  cpuN: number
  clusterN: number
  writesBackMs: number | undefined
  votersBackMs: number | undefined
}

async function config(c: SwormCluster, leader: string): Promise<{ voters: string[]; learners: string[] }> {
  const st = await c.request<DashStatus>(leader, { op: 'dashStatus' }, 10_000)
  return { voters: Object.keys(st.peers.voters), learners: Object.keys(st.peers.learners) }
}

/** Poll `f` every 50 ms until it returns a value; undefined after `ms`. */
async function until<T>(ms: number, f: () => Promise<T | undefined>): Promise<T | undefined> {
  const end = performance.now() + ms
  while (performance.now() < end) {
    const v = await f().catch(() => undefined)
    if (v !== undefined) return v
    await new Promise((r) => setTimeout(r, 50))
  }
  return undefined
}

async function register(c: SwormCluster, leader: string, prefix: string): Promise<{ rate: number; cpuPerCommitUs: number; clusterCpuPerCommitUs: number }> {
  const cpu0 = await clusterCpuMs(c)
  const r = await c.request<RegisterManyResult>(leader, { op: 'registerMany', prefix, count: NAMES, concurrency: INFLIGHT, maxMs: 120_000 }, 180_000)
  const cpu1 = await clusterCpuMs(c)
  if (r.errors > 0) log(`${r.errors} registrations failed: ${r.errorSamples.slice(0, 2).join(' | ')}`)
  const per = (ms: number): number => (ms * 1000) / Math.max(1, r.ok)
  return { rate: r.ok / (r.ms / 1000), cpuPerCommitUs: per(r.cpuUserMs + r.cpuSystemMs), clusterCpuPerCommitUs: per(cpu1 - cpu0) }
}

async function run(voters: number): Promise<Figures> {
  const label = voters >= TOTAL ? 'every node votes' : `voters: ${voters}`
  log(`${label}: starting ${SEEDS} nodes`)
  const c = await startSwormCluster({ n: SEEDS, voters, stabilizationMs: STABILIZATION_MS, requestTimeoutMs: 10_000, ipcTimeoutMs: 60_000 })
  dirs.add(c.dir)
  try {
    let leader = await c.waitForLeader(20_000)
    const r3 = await register(c, leader, 'a')
    log(`${label}: 3 nodes, ${Math.round(r3.rate)}/s, ${r3.cpuPerCommitUs.toFixed(0)} µs CPU per commit on the leader`)

    // 12 nodes join at once
    const joiners = Array.from({ length: TOTAL - SEEDS }, (_, i) => `n${SEEDS + 1 + i}`)
    const t0 = performance.now()
    const joined = await Promise.allSettled(joiners.map((id, i) => c.startJoining(id, c.urls[`n${1 + (i % SEEDS)}`], { startTimeoutMs: 120_000 })))
    const joinMs = performance.now() - t0
    const joinFailed = joined.filter((x) => x.status === 'rejected').length
    for (const x of joined) if (x.status === 'rejected') log(`a join failed: ${String(x.reason).slice(0, 200)}`)
    log(`${label}: ${joiners.length} joins in ${(joinMs / 1000).toFixed(1)} s, ${joinFailed} failed`)

    // autopilot settles
    const want = Math.min(voters, TOTAL)
    const settled = await until(60_000, async () => {
      leader = await c.waitForLeader(5000)
      const cfg = await config(c, leader)
      return cfg.voters.length === want && cfg.voters.length + cfg.learners.length === TOTAL ? cfg : undefined
    })
    const settleMs = settled ? performance.now() - t0 : undefined
    const cfg = settled ?? (await config(c, leader))
    log(`${label}: configuration ${cfg.voters.length} voters (${cfg.voters.join(',')}), ${cfg.learners.length} learners`)

    leader = await c.waitForLeader(10_000)
    const rN = await register(c, leader, 'b')
    log(`${label}: ${TOTAL} nodes, ${Math.round(rN.rate)}/s, ${rN.cpuPerCommitUs.toFixed(0)} µs CPU per commit on the leader`)

    // steady state first: every node has applied the registrations (on 2 cores, 15 replicas
    // lag behind a burst; a lagging learner is not promoted)
    await Promise.all(c.alive().map((id) => c.request(id, { op: 'whenHasAll', prefix: 'b', count: NAMES, timeoutMs: 60_000 }, 70_000)))
    // two voters (not the leader) die
    const victims = cfg.voters.filter((v) => v !== leader).slice(0, 2)
    const k0 = performance.now()
    await Promise.all(victims.map((v) => c.kill(v)))
    let seq = 0
    const writesBack = await until(30_000, async () => {
      const ok = (await c.request<{ won: boolean }>(leader, { op: 'registerStatic', name: `after-kill-${seq++}` }, 2000)).won
      return ok === true ? performance.now() - k0 : undefined
    })
    let lastSeen = ''
    // (the leader was not killed: it makes the changes, and its configuration tells)
    const votersBack =
      want >= TOTAL
        ? undefined
        : await until(60_000, async () => {
            const now = await config(c, leader)
            const seen = now.voters.join(',')
            if (seen !== lastSeen) log(`${label}: +${(performance.now() - k0).toFixed(0)} ms voters ${(lastSeen = seen)}`)
            return now.voters.length === want && !now.voters.some((v) => victims.includes(v)) ? performance.now() - k0 : undefined
          })
    log(`${label}: 2 voters killed: writes again after ${writesBack?.toFixed(0) ?? '-'} ms, ${want} healthy voters again after ${votersBack?.toFixed(0) ?? '-'} ms`)
    return {
      rate3: r3.rate,
      cpu3: r3.cpuPerCommitUs,
      cluster3: r3.clusterCpuPerCommitUs,
      joinMs,
      joinFailed,
      settleMs,
      voters: cfg.voters.length,
      learners: cfg.learners.length,
      rateN: rN.rate,
      cpuN: rN.cpuPerCommitUs,
      clusterN: rN.clusterCpuPerCommitUs,
      writesBackMs: writesBack,
      votersBackMs: votersBack,
    }
  } finally {
    await c.stopAll()
    dirs.delete(c.dir)
  }
}

runMain(async () => {
  const now = await run(5)
  const before = await run(TOTAL)
  const floor = replicaFloorUs()
  const cores = availableParallelism()
  // On cores the node processes share, TOTAL nodes commit at most cores / (CPU per commit over all
  // of them) a second, and each of the TOTAL - 3 added replicas spends at least `floor` per entry:
  // what the replicas' least work allows, against what an added replica costs now
  const added = TOTAL - SEEDS
  const most = (cores * 1e6) / (now.cluster3 + added * floor)
  const perAdded = (now.clusterN - now.cluster3) / added
  const busy = (cpu: number, rate: number): string => `${((cpu * rate) / 1e6).toFixed(2)} of ${cores} cores busy`
  const s = (ms: number | undefined): string => (ms === undefined ? 'not within the wait' : `${(ms / 1000).toFixed(1)} s`)
  const x = (a: number, b: number): string => `${(a / b).toFixed(2)}×`
  const rows: Array<[string, string, string, string]> = [
    [`configuration with ${TOTAL} real nodes`, `${now.voters} voters, ${now.learners} learners`, `${before.voters} voters, ${before.learners} learners`, `5 voters, ${TOTAL - 5} learners`],
    [`${TOTAL - SEEDS} nodes joining at once: all started`, `${s(now.joinMs)}, ${now.joinFailed} failed`, `${s(before.joinMs)}, ${before.joinFailed} failed`, '≤ 10 s, 0 failed'],
    ['... until autopilot settled the voters', s(now.settleMs), s(before.settleMs), '—'],
    [`registrations/s at 64 in flight, ${TOTAL} nodes against 3`, `${Math.round(now.rateN)} / ${Math.round(now.rate3)} = ${x(now.rateN, now.rate3)}`, `${Math.round(before.rateN)} / ${Math.round(before.rate3)} = ${x(before.rateN, before.rate3)}`, '≥ 0.9×'],
    [`leader CPU per commit, ${TOTAL} nodes against 3`, `${now.cpuN.toFixed(0)} / ${now.cpu3.toFixed(0)} µs = ${x(now.cpuN, now.cpu3)}`, `${before.cpuN.toFixed(0)} / ${before.cpu3.toFixed(0)} µs = ${x(before.cpuN, before.cpu3)}`, '≤ 1.5×'],
    [`CPU per commit, all node processes together, ${TOTAL} nodes against 3 (what bounds the rate when they share this machine's cores)`, `${now.clusterN.toFixed(0)} / ${now.cluster3.toFixed(0)} µs = ${x(now.clusterN, now.cluster3)}`, `${before.clusterN.toFixed(0)} / ${before.cluster3.toFixed(0)} µs = ${x(before.clusterN, before.cluster3)}`, '—'],
    [
      `CPU per commit that each added node adds (all processes at ${TOTAL} minus at 3, over ${added}: the seeds' extra work included, learners' catching up after the measure not), against the least a replica must spend (decode and apply every entry, ${floor.toFixed(1)} µs, measured in this process)`,
      `(${now.clusterN.toFixed(0)} − ${now.cluster3.toFixed(0)}) / ${added} = ${perAdded.toFixed(0)} µs, against ${floor.toFixed(1)} µs`,
      '—',
      '—',
    ],
    [
      `the most registrations/s ${TOTAL} nodes could reach on these ${cores} cores, were they all theirs, if each added replica spent only that least (3 nodes: ${busy(now.cluster3, now.rate3)}; ${TOTAL}: ${busy(now.clusterN, now.rateN)})`,
      `${cores} s / (${now.cluster3.toFixed(0)} + ${added} × ${floor.toFixed(1)}) µs = ${Math.round(most)}/s = ${(most / now.rate3).toFixed(2)}× the 3-node rate`,
      '—',
      '—',
    ],
    ['2 voters SIGKILLed: writes succeed again', s(now.writesBackMs), s(before.writesBackMs), '≤ 1 s'],
    ['2 voters SIGKILLed: 5 healthy voters again', s(now.votersBackMs), '— (every node votes)', `≤ stabilization (${STABILIZATION_MS / 1000} s) + 5 s`],
  ]
  process.stdout.write(`\n| figure | voters: 5 | every node votes (voters: 15) | target |\n|---|---|---|---|\n`)
  for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`)
  const met = (ok: boolean, what: string): void => void process.stdout.write(`${ok ? 'met' : 'NOT met'}: ${what}\n`)
  process.stdout.write('\n')
  met(now.voters === 5 && now.learners === TOTAL - 5, `5 voters and ${TOTAL - 5} learners`)
  met(now.joinMs <= 10_000 && now.joinFailed === 0, `${TOTAL - SEEDS} joins at once within 10 s, none failed`)
  met(now.rateN >= 0.9 * now.rate3, `registrations with ${TOTAL} nodes ≥ 0.9× 3 nodes (an added replica costs ${perAdded.toFixed(0)} µs per commit, its least is ${floor.toFixed(1)} µs: see the rows above)`)
  met(now.cpuN <= 1.5 * now.cpu3, 'leader CPU per commit ≤ 1.5×')
  met(now.writesBackMs !== undefined && now.writesBackMs <= 1000, 'writes again within 1 s of losing 2 of 5 voters')
  met(now.votersBackMs !== undefined && now.votersBackMs <= STABILIZATION_MS + 5000, '5 voters again within stabilization + 5 s')
})
