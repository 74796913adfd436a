/**
 * Scale benchmark (issue #12): one million names on 3 real node processes (LevelDB, loopback
 * WebSockets), as a user with one named worker per customer would have them.
 *
 * Run: `npm run bench:scale [-- --quick] [-- --max-log-entries N]` (`--quick`: 100,000 names, same
 * phases; CI runs it. `--max-log-entries`: the nodes' `raft.maxLogEntries`, to see what frequent
 * snapshots cost).
 *
 * 1. Register the names, static, 64 in flight on the leader: the first 10,000 alone (the
 *    baseline rate), then in steps of a tenth of the total, each step's rate reported.
 * 2. A fresh node joins (`join`): time until it holds every name locally.
 * 3. A follower is SIGKILLed and restarted from its data dir: time from the restart until it
 *    holds every name locally.
 * In every phase, the longest event-loop stall of each node (measured inside each process from
 * its start, `perf_hooks.monitorEventLoopDelay`), the stalls over 100 ms of every node (how many,
 * their total: the longest alone swings between runs of one version; and, from Linux's
 * per-thread scheduler counts, how long the main thread ran in them and how long it was ready but
 * waited for a core), and the machine's CPU
 * pressure (the share of the phase a ready task waited for a core: a node waiting for a core
 * stalls too). The heap per name is measured on a replica
 * that hosts none of the workers, after its log is compacted (a snapshot taken then) and a forced GC.
 *
 * Prints one markdown table, then each target with met or NOT met.
 * @module
 */
import { readFileSync, rmSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { benchLogger, installBenchGuards, runMain } from './common.js'
import { flagOption, intOption, parseCli } from '../tools/cli-args.js'
import type { LoopDelay, Stall } from '../tools/cluster/loop-delay.js'
import type { RegisterManyResult } from '../tools/cluster/sworm-protocol.js'
import { startSwormCluster, type SwormCluster } from '../tools/cluster/sworm-cluster.js'

const { QUICK, MAX_LOG } = parseCli('scale-bench.js [--quick] [--max-log-entries N]', { quick: { type: 'boolean' }, 'max-log-entries': { type: 'string' } }, (v) => ({
  QUICK: flagOption(v, 'quick'),
  /** `raft.maxLogEntries` of the nodes (default: the library's), to see what snapshots cost. */
  MAX_LOG: v['max-log-entries'] === undefined ? undefined : intOption(v, 'max-log-entries', 100_000, { min: 1 }),
}))
const TOTAL = QUICK ? 100_000 : 1_000_000
const BASE = 10_000
const STEP = TOTAL / 10
const INFLIGHT = 64
/** How long a join or a restart may take before the row says "not within". */
const CATCH_UP_MAX_MS = QUICK ? 60_000 : 300_000
const WATCHDOG_MS = QUICK ? 10 * 60_000 : 45 * 60_000

const dirs = new Set<string>()
installBenchGuards(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}, WATCHDOG_MS)
const log = benchLogger('scale')

type Mem = { heapUsed: number; external: number; gcExposed: boolean }

const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`
/**
 * What the main thread did in a stall over 100 ms, when known: ", ran X ms, waited Y ms" and the
 * collector's pauses within it (which may be time it neither ran nor waited for a core: a full
 * collection's pause waiting for the collector's concurrent markers).
 */
const didIn = (st: Stall | undefined): string =>
  (st?.runMs === undefined || st.waitMs === undefined ? '' : `, ran ${Math.round(st.runMs)} ms, waited ${Math.round(st.waitMs)} ms`) +
  (st?.gcMs ? `, collector ${Math.round(st.gcMs)} ms` : '')

/** The stalls of each node since the previous call of this (the first call starts it). */
async function stalls(c: SwormCluster): Promise<Record<string, LoopDelay>> {
  const out: Record<string, LoopDelay> = {}
  await Promise.all(
    c.alive().map(async (id) => {
      out[id] = await c.request<LoopDelay>(id, { op: 'loopDelay' }, 60_000)
    }),
  )
  return out
}

/**
 * The machine's CPU pressure so far (Linux PSI: µs during which a task ready to run waited for a
 * core), or undefined where the kernel does not tell. Over a phase, its share of the phase's time
 * says how oversubscribed the cores were: a process waiting for a core counts as stalled.
 */
function cpuWaitUs(): number | undefined {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

/** Poll until `id` holds `count` names; ms it took from `t0`, or undefined past the limit. */
async function holdsAll(c: SwormCluster, id: string, count: number, t0: number): Promise<number | undefined> {
  while (performance.now() - t0 < CATCH_UP_MAX_MS) {
    const st = await c.status(id, 60_000).catch(() => undefined)
    if (st && st.names >= count) return performance.now() - t0
    await new Promise((r) => setTimeout(r, 50))
  }
  return undefined
}

interface Results {
  baseRate: number
  steps: Array<{ upTo: number; rate: number; bad: number }>
  heapPerName: number | undefined
  /** The replica's memory outside the heap per name (its latest snapshot, kept to send; buffers). */
  externalPerName: number | undefined
  joinMs: number | undefined
  restartMs: number | undefined
  /**
   * Per phase: the longest stall on any node and on which; the stalls over 100 ms of every node
   * (how many, their total); the share of the phase a ready task waited for a core (if known).
   */
  stall: Record<string, { ms: number; node: string; longest: Stall | undefined; longCount: number; longMs: number; longRunMs: number; longWaitMs: number; longGcMs: number; cpuWait: number | undefined }>
  /**
   * Per phase, the CPU every node used (ms): all threads, the main threads' share (undefined
   * where unknown), the main threads' collection pauses. Steadier than rates on a shared machine.
   */
  cpu: Record<string, { all: number; main: number | undefined; gc: number }>
  notes: string[]
}

async function run(): Promise<Results> {
  const res: Results = { baseRate: 0, steps: [], heapPerName: undefined, externalPerName: undefined, joinMs: undefined, restartMs: undefined, stall: {}, cpu: {}, notes: [] }
  let phaseAt = performance.now()
  let waitAt = cpuWaitUs()
  const noteStalls = (phase: string, s: Record<string, LoopDelay>): void => {
    let worst: { ms: number; node: string; longest: Stall | undefined } = { ms: 0, node: '-', longest: undefined }
    let longCount = 0
    let longMs = 0
    let longRunMs = 0
    let longWaitMs = 0
    let longGcMs = 0
    for (const [node, d] of Object.entries(s)) {
      if (d.maxMs > worst.ms) worst = { ms: d.maxMs, node, longest: d.longest }
      longCount += d.longCount
      longMs += d.longMs
      longRunMs += d.longRunMs
      longWaitMs += d.longWaitMs
      longGcMs += d.longGcMs
    }
    const wait = cpuWaitUs()
    const cpuWait = wait !== undefined && waitAt !== undefined ? (wait - waitAt) / 1000 / (performance.now() - phaseAt) : undefined
    res.stall[phase] = { ...worst, longCount, longMs, longRunMs, longWaitMs, longGcMs, cpuWait }
    const ds = Object.values(s)
    res.cpu[phase] = {
      all: ds.reduce((a, d) => a + d.cpuMs, 0),
      main: ds.every((d) => d.mainCpuMs !== undefined) ? ds.reduce((a, d) => a + d.mainCpuMs!, 0) : undefined,
      gc: ds.reduce((a, d) => a + d.gcMs, 0),
    }
    log(
      `  ${phase}: longest stall ${worst.ms.toFixed(0)} ms (${worst.node}${didIn(worst.longest)}); ${JSON.stringify(Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Math.round(v.maxMs)])))}; ` +
        `${longCount} stalls over 100 ms (${secs(longMs)}${longCount ? `: ran ${secs(longRunMs)}, waited for a core ${secs(longWaitMs)}, collector ${secs(longGcMs)}` : ''})${cpuWait === undefined ? '' : `; CPU pressure ${(cpuWait * 100).toFixed(0)}%`}`,
    )
  }
  /** Start a phase's measures (stalls, CPU pressure) from now. */
  const phaseStart = async (c: SwormCluster): Promise<void> => {
    await stalls(c)
    phaseAt = performance.now()
    waitAt = cpuWaitUs()
  }
  log(`starting 3 sworm node processes; ${TOTAL.toLocaleString('en')} names`)
  const c = await startSwormCluster({ n: 3, name: 'scale', requestTimeoutMs: 30_000, ipcTimeoutMs: 120_000, startTimeoutMs: CATCH_UP_MAX_MS, ...(MAX_LOG ? { maxLogEntries: MAX_LOG } : {}) })
  dirs.add(c.dir)
  try {
    const leader = await c.waitForLeader(15_000)
    const [replica, victim] = c.ids.filter((id) => id !== leader) as [string, string]
    const mem0 = await c.request<Mem>(replica, { op: 'memory', compact: true }, 60_000)
    if (!mem0.gcExposed) res.notes.push('gc was not exposed to the nodes: the heap figure includes garbage.')
    await phaseStart(c) // start measuring from here

    // 1. registrations
    const load = async (prefix: string, count: number): Promise<RegisterManyResult> =>
      c.request<RegisterManyResult>(leader, { op: 'registerMany', prefix, count, concurrency: INFLIGHT, maxMs: 600_000 }, 700_000)
    log(`registering: 2,000 to warm up, then the first ${BASE.toLocaleString('en')} on ${leader}`)
    await load('warm-', 2_000)
    const base = await load('base-', BASE - 2_000)
    res.baseRate = base.ok / (base.ms / 1000)
    let done = BASE
    for (let k = 0; done < TOTAL; k++) {
      const count = Math.min(STEP - (k === 0 ? BASE : 0) || STEP, TOTAL - done)
      const r = await load(`s${k}-`, count)
      done += count
      res.steps.push({ upTo: done, rate: r.ok / (r.ms / 1000), bad: count - r.ok })
      log(`  ${done.toLocaleString('en')} names: ${Math.round(r.ok / (r.ms / 1000)).toLocaleString('en')}/s, p99 ${r.p99.toFixed(1)} ms${count - r.ok ? `, ${count - r.ok} not registered` : ''}`)
    }
    const t0 = performance.now()
    for (const id of c.ids) await holdsAll(c, id, TOTAL, t0)
    noteStalls('registration', await stalls(c))
    // (the issue's figure: heap after GC with the log compacted; the entries a log holds between
    // snapshots, up to `maxLogEntries`, come on top: bench:registry measures them)
    const mem1 = await c.request<Mem>(replica, { op: 'memory', compact: true }, 180_000)
    res.heapPerName = (mem1.heapUsed - mem0.heapUsed) / TOTAL
    res.externalPerName = (mem1.external - mem0.external) / TOTAL
    // (the heap measure's forced collections stall the replica: not the join's doing)
    await phaseStart(c)

    // 2. a fresh node joins
    log('a fresh node joins')
    const tj = performance.now()
    await c.startJoining('n4', c.urls[leader], { startTimeoutMs: CATCH_UP_MAX_MS })
    res.joinMs = await holdsAll(c, 'n4', TOTAL, tj)
    log(`  n4 holds every name after ${res.joinMs === undefined ? 'more than the limit' : `${(res.joinMs / 1000).toFixed(1)} s`}`)
    noteStalls('join', await stalls(c))

    // 3. a follower is killed and restarted
    log(`${victim} is SIGKILLed and restarted`)
    await c.kill(victim)
    await phaseStart(c)
    const tr = performance.now()
    await c.restart(victim)
    res.restartMs = await holdsAll(c, victim, TOTAL, tr)
    log(`  ${victim} holds every name after ${res.restartMs === undefined ? 'more than the limit' : `${(res.restartMs / 1000).toFixed(1)} s`}`)
    noteStalls('restart', await stalls(c))
  } finally {
    await c.stopAll()
    dirs.delete(c.dir)
  }
  return res
}

function report(r: Results): void {
  const s = (ms: number | undefined): string => (ms === undefined ? `> ${CATCH_UP_MAX_MS / 1000} s` : `${(ms / 1000).toFixed(1)} s`)
  const last = r.steps.at(-1)
  const ratio = last ? last.rate / r.baseRate : 0
  const worst = Object.entries(r.stall).reduce((a, [phase, x]) => (x.ms > a.ms ? { ms: x.ms, where: `${phase}, ${x.node}` } : a), { ms: 0, where: '-' })
  const rows: Array<[string, string, string, boolean]> = [
    [`registration rate at ${TOTAL.toLocaleString('en')} names, against the rate at ${BASE.toLocaleString('en')}`, `${Math.round(last?.rate ?? 0).toLocaleString('en')}/s vs ${Math.round(r.baseRate).toLocaleString('en')}/s = ${(ratio * 100).toFixed(0)}%`, '≥ 90%', ratio >= 0.9],
    ['a fresh node joins: every name held locally', s(r.joinMs), QUICK ? '(≤ 20 s at 1M)' : '≤ 20 s', r.joinMs !== undefined && r.joinMs <= 20_000],
    ['a SIGKILLed follower restarts: every name held locally', s(r.restartMs), QUICK ? '(≤ 10 s at 1M)' : '≤ 10 s', r.restartMs !== undefined && r.restartMs <= 10_000],
    ['longest event-loop stall on any node, in any phase', `${worst.ms.toFixed(0)} ms (${worst.where})`, '≤ 50 ms', worst.ms <= 50],
    [`replica heap per name at ${TOTAL.toLocaleString('en')}`, r.heapPerName === undefined ? '-' : `${Math.round(r.heapPerName)} B`, '≤ 300 B', r.heapPerName !== undefined && r.heapPerName <= 300],
  ]
  console.log(`\n## Sworm at ${TOTAL.toLocaleString('en')} names (3 node processes, LevelDB, ${INFLIGHT} in flight)\n`)
  console.log('| names | registrations/s | not registered |')
  console.log('|---|---|---|')
  console.log(`| ${BASE.toLocaleString('en')} | ${Math.round(r.baseRate).toLocaleString('en')} | 0 |`)
  for (const st of r.steps) console.log(`| ${st.upTo.toLocaleString('en')} | ${Math.round(st.rate).toLocaleString('en')} | ${st.bad} |`)
  console.log('\n| phase | longest stall (its node\'s main thread: ran, waited for a core; the collector\'s pauses in it) | node | stalls over 100 ms, every node: count, total (ran, waited for a core; collector) | CPU pressure (a ready task waited for a core) |')
  console.log('|---|---|---|---|---|')
  for (const [phase, x] of Object.entries(r.stall)) {
    const pressure = x.cpuWait === undefined ? 'n/a' : `${(x.cpuWait * 100).toFixed(0)}% of the phase`
    const parts = x.longCount ? ` (${secs(x.longRunMs)}, ${secs(x.longWaitMs)}; ${secs(x.longGcMs)})` : ''
    console.log(`| ${phase} | ${x.ms.toFixed(0)} ms${didIn(x.longest)} | ${x.node} | ${x.longCount}, ${secs(x.longMs)}${parts} | ${pressure} |`)
  }
  console.log('\n| phase | CPU of every node: all threads | main threads | other threads (collector, LevelDB, I/O) | collection pauses (main threads) |')
  console.log('|---|---|---|---|---|')
  for (const [phase, x] of Object.entries(r.cpu)) {
    const per = phase === 'registration' ? ` (${(x.all / (TOTAL / 1000)).toFixed(0)} ms per 1,000 names)` : ''
    console.log(`| ${phase} | ${secs(x.all)}${per} | ${x.main === undefined ? 'n/a' : secs(x.main)} | ${x.main === undefined ? 'n/a' : secs(x.all - x.main)} | ${secs(x.gc)} |`)
  }
  console.log('\n| figure | measured | target | |')
  console.log('|---|---|---|---|')
  for (const [f, m, t, ok] of rows) console.log(`| ${f} | ${m} | ${t} | ${ok ? 'met' : 'NOT met'} |`)
  if (r.externalPerName !== undefined) console.log(`\nBesides its heap, the replica holds ${Math.round(r.externalPerName)} B per name outside it (its latest snapshot, kept to send to nodes that are behind, and buffers).`)
  for (const n of r.notes) console.log(`\nNote: ${n}`)
}

runMain(async () => {
  report(await run())
})
