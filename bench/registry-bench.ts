/**
 * Registry benchmark: a 3-node sworm (one OS process per node, LevelDB, loopback WebSockets),
 * and, when `etcd` is on PATH, a put-if-absent transaction per name against a 3-member etcd; when
 * `redis-server` is, `SET name value NX` against one Redis without persistence (issue #15's two
 * anchors: what users would use instead, measured in the same run).
 *
 * Run: `node dist/bench/registry-bench.js [--quick]` (after `npm run build`).
 *
 * Sworm is embedded, so the registrations run inside the node processes (`registerMany` of
 * `tools/cluster/sworm-node.ts`: spawn a worker + registerName, N in flight); there is no
 * client hop. etcd is driven from this process with the `etcd3` gRPC client, talking to the
 * leader. "CPU per registration" is user+system CPU: of the registering node(s) / of all three
 * node processes (Sworm), or of the three etcd members (etcd; the client's CPU is noted apart).
 *
 * Prints one markdown table, then the targets with met / not met.
 * @module
 */
import { benchLogger, clusterCpuMs, installBenchGuards, percentile, runMain } from './common.js'
import { flagOption, parseCli } from '../tools/cli-args.js'
import { rmSync } from 'node:fs'
import { cpus } from 'node:os'
import { performance } from 'node:perf_hooks'
import type { Etcd3 } from 'etcd3'
import type { CallLatency, RegisterManyResult, WhereisLatency } from '../tools/cluster/sworm-protocol.js'
import { startSwormCluster, type SwormCluster } from '../tools/cluster/sworm-cluster.js'
import { findEtcd, killAllEtcdSync, startEtcdCluster } from './etcd.js'
import { findRedis, killAllRedisSync, startRedis } from './redis.js'

const QUICK = parseCli('registry-bench.js [--quick]', { quick: { type: 'boolean' } }, (v) => flagOption(v, 'quick'))
const N = QUICK
  ? { one: 300, small: 2_000, big: 20_000, whereisCalls: 500_000, callIters: 500 }
  : { one: 3_000, small: 10_000, big: 100_000, whereisCalls: 2_000_000, callIters: 2_000 }
const INFLIGHT = 64
/** Give up on any one load after this long (the row then reports what ran). */
const PHASE_MAX_MS = QUICK ? 20_000 : 40_000
/** Hard limit for the whole run. */
const WATCHDOG_MS = 270_000

// ---------------------------------------------------------------------------------- cleanup

const swormDirs = new Set<string>()
function cleanupSync(): void {
  killAllEtcdSync()
  killAllRedisSync()
  for (const d of swormDirs) rmSync(d, { recursive: true, force: true }) // node processes exit with their IPC channel
}
installBenchGuards(cleanupSync, WATCHDOG_MS)

const log = benchLogger('bench')


// ---------------------------------------------------------------------------------- measures

/** One registration workload. */
interface Load {
  ok: number
  /** Registrations that did not resolve true (taken or failed). */
  bad: number
  ms: number
  p50: number
  p99: number
  /** CPU µs per registration of the registering process(es). */
  cpuNodeUs: number | undefined
  /** CPU µs per registration of every server process (3 sworm nodes, or 3 etcd members). */
  cpuClusterUs: number | undefined
  /** etcd: CPU µs per registration of the client (this process). */
  cpuClientUs?: number
}

interface SwormResults {
  one?: Load
  small64?: Load
  smallAll?: Load
  big64?: Load
  bigAll?: Load
  /** ms from the last acknowledgement until every node saw every name (one node, all nodes). */
  convergeOne?: number
  convergeAll?: number
  whereis?: WhereisLatency & { names: number }
  call?: CallLatency
  /** Heap bytes per name: on a node that only replicates, and on the node hosting the workers. */
  heapReplica?: number
  heapHost?: number
  notes: string[]
}

/** An anchor's figures (etcd or Redis): 1 in flight, and INFLIGHT in flight. */
interface AnchorResults {
  version: string
  one?: Load
  many?: Load
}

const rate = (l: Load | undefined): number | undefined => (l && l.ms > 0 ? (l.ok / l.ms) * 1000 : undefined)

/**
 * Register `count` names from `nodes` at once (split evenly, `concurrency` in flight on each).
 * With `converge`, every node also waits (locally, polling every ms) for every name; the result
 * then says how long after the last acknowledgement the slowest node saw the last name.
 */
async function swormLoad(
  c: SwormCluster,
  nodes: string[],
  prefix: string,
  count: number,
  concurrency: number,
  converge = false,
): Promise<{ load: Load; convergeMs?: number }> {
  const per = Math.ceil(count / nodes.length)
  const parts = nodes.map((node, i) => ({ node, prefix: `${prefix}${i}-`, count: Math.min(per, count - per * i) }))
  const waiters = converge
    ? parts.flatMap((p) =>
        c.ids.map((id) =>
          c.request<{ at: number }>(id, { op: 'whenHasAll', prefix: p.prefix, count: p.count, timeoutMs: PHASE_MAX_MS + 30_000 }, PHASE_MAX_MS + 40_000),
        ),
      )
    : []
  waiters.forEach((w) => w.catch(() => {}))
  const cpu0 = await clusterCpuMs(c)
  const t0 = performance.now()
  const rs = await Promise.all(
    parts.map((p) =>
      c.request<RegisterManyResult>(p.node, { op: 'registerMany', prefix: p.prefix, count: p.count, concurrency, maxMs: PHASE_MAX_MS }, PHASE_MAX_MS + 60_000),
    ),
  )
  const ms = performance.now() - t0
  const cpu1 = await clusterCpuMs(c)
  const ok = rs.reduce((a, r) => a + r.ok, 0)
  const bad = rs.reduce((a, r) => a + r.taken + r.errors, 0)
  for (const r of rs) if (r.errors) log(`  ${r.errors} errors, e.g. ${r.errorSamples.join(' | ')}`)
  const nodeCpu = rs.reduce((a, r) => a + r.cpuUserMs + r.cpuSystemMs, 0)
  // with several nodes the percentiles are the worst node's
  const load: Load = {
    ok,
    bad,
    ms: nodes.length === 1 ? rs[0]!.ms : ms,
    p50: Math.max(...rs.map((r) => r.p50)),
    p99: Math.max(...rs.map((r) => r.p99)),
    cpuNodeUs: ok ? (nodeCpu * 1000) / ok : undefined,
    cpuClusterUs: ok ? ((cpu1 - cpu0) * 1000) / ok : undefined,
  }
  if (!converge) return { load }
  if (ok + bad < count) {
    log('  load capped before the end: no convergence measure')
    return { load }
  }
  const seen = await Promise.all(waiters)
  const lastAck = Math.max(...rs.map((r) => r.lastAckAt))
  return { load, convergeMs: Math.max(0, Math.max(...seen.map((s) => s.at)) - lastAck) }
}

type Mem = { heapUsed: number; gcExposed: boolean }

async function benchSworm(): Promise<SwormResults> {
  const res: SwormResults = { notes: [] }
  log('starting 3 sworm node processes')
  const c = await startSwormCluster({ n: 3, name: 'bench', requestTimeoutMs: 20_000, ipcTimeoutMs: 30_000 })
  swormDirs.add(c.dir)
  try {
    const leader = await c.waitForLeader(15_000)
    const follower = c.ids.find((id) => id !== leader)!
    log(`leader ${leader}; warming up`)
    await swormLoad(c, [leader], 'warm', 2_000, 16)

    log(`1 in flight, ${N.one} names, on ${leader}`)
    res.one = (await swormLoad(c, [leader], 'one', N.one, 1)).load
    log(`${INFLIGHT} in flight, ${N.small} names, on ${leader}`)
    res.small64 = (await swormLoad(c, [leader], 's64', N.small, INFLIGHT)).load
    log(`${INFLIGHT} in flight on each of 3 nodes, ${N.small} names`)
    res.smallAll = (await swormLoad(c, c.ids, 'sall', N.small, INFLIGHT)).load

    const mem0 = await Promise.all(c.ids.map((id) => c.request<Mem>(id, { op: 'memory' })))
    log(`${INFLIGHT} in flight, ${N.big} names, on ${leader} (+ every node waits for every name)`)
    const big = await swormLoad(c, [leader], 'b64', N.big, INFLIGHT, true)
    res.big64 = big.load
    res.convergeOne = big.convergeMs
    const mem1 = await Promise.all(c.ids.map((id) => c.request<Mem>(id, { op: 'memory' })))
    if (!mem0[0]!.gcExposed) res.notes.push('gc was not exposed to the nodes: heap figures include garbage.')
    const added = big.load.ok + big.load.bad
    if (added > 0) {
      const deltas = c.ids.map((_, i) => (mem1[i]!.heapUsed - mem0[i]!.heapUsed) / added)
      res.heapHost = deltas[c.ids.indexOf(leader)]
      const rep = deltas.filter((_, i) => c.ids[i] !== leader)
      res.heapReplica = rep.reduce((a, b) => a + b, 0) / rep.length
    }

    log(`${INFLIGHT} in flight on each of 3 nodes, ${N.big} names (+ every node waits for every name)`)
    const bigAll = await swormLoad(c, c.ids, 'ball', N.big, INFLIGHT, true)
    res.bigAll = bigAll.load
    res.convergeAll = bigAll.convergeMs

    const total = (await c.status(follower)).names
    log(`local whereisName on ${follower} (${total} names in the registry)`)
    const w = await c.request<WhereisLatency>(follower, { op: 'whereisLatency', prefix: 'b640-', count: big.load.ok, iterations: N.whereisCalls }, 60_000)
    res.whereis = { ...w, names: total }
    log(`call from ${follower} to a worker on ${leader}`)
    res.call = await c.request<CallLatency>(follower, { op: 'callLatency', name: 'b640-0', iterations: N.callIters }, 60_000)
  } finally {
    await c.stopAll()
    swormDirs.delete(c.dir)
  }
  return res
}

// ---------------------------------------------------------------------------------- etcd

async function etcdLoad(client: Etcd3, cpuMs: () => number | undefined, prefix: string, count: number, concurrency: number): Promise<Load> {
  const lat: number[] = []
  let next = 0
  let ok = 0
  let bad = 0
  const samples: string[] = []
  const c0 = cpuMs()
  const self0 = process.cpuUsage()
  const t0 = performance.now()
  const stopAt = t0 + PHASE_MAX_MS
  const worker = async (): Promise<void> => {
    while (next < count && performance.now() < stopAt) {
      const i = next++
      const key = `${prefix}${i}`
      const s = performance.now()
      try {
        const r = await client.if(key, 'Create', '==', 0).then(client.put(key).value(`worker-${i}`)).commit()
        lat.push(performance.now() - s)
        if (r.succeeded) ok++
        else bad++
      } catch (err) {
        bad++
        if (samples.length < 3) samples.push(String(err))
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const ms = performance.now() - t0
  const c1 = cpuMs()
  const self = process.cpuUsage(self0)
  if (samples.length) log(`  etcd errors, e.g. ${samples.join(' | ')}`)
  lat.sort((a, b) => a - b)
  return {
    ok,
    bad,
    ms,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    cpuNodeUs: undefined,
    cpuClusterUs: c0 !== undefined && c1 !== undefined && ok ? ((c1 - c0) * 1000) / ok : undefined,
    cpuClientUs: ok ? (self.user + self.system) / ok : undefined,
  }
}

async function benchEtcd(bin: string): Promise<AnchorResults> {
  log('starting 3 etcd members')
  const e = await startEtcdCluster(bin, 3)
  const res: AnchorResults = { version: e.version }
  try {
    const leader = await e.leader()
    log(`etcd ${e.version}, leader ${leader.name}; warming up`)
    await etcdLoad(leader.client, e.cpuMs, 'warm-', 1_000, 16)
    log(`etcd put-if-absent, 1 in flight, ${N.one} names`)
    res.one = await etcdLoad(leader.client, e.cpuMs, 'one-', N.one, 1)
    log(`etcd put-if-absent, ${INFLIGHT} in flight, ${N.small} names`)
    res.many = await etcdLoad(leader.client, e.cpuMs, 'many-', N.small, INFLIGHT)
  } finally {
    await e.stop()
  }
  return res
}

// ---------------------------------------------------------------------------------- Redis

async function benchRedis(bin: string): Promise<AnchorResults> {
  log('starting redis-server (no persistence)')
  const r = await startRedis(bin)
  const res: AnchorResults = { version: r.version }
  const load = async (prefix: string, count: number, concurrency: number): Promise<Load> => {
    const c0 = r.cpuMs()
    const self0 = process.cpuUsage()
    const x = await r.setNx(prefix, count, concurrency, PHASE_MAX_MS)
    const c1 = r.cpuMs()
    const self = process.cpuUsage(self0)
    x.lat.sort((a, b) => a - b)
    return {
      ok: x.ok,
      bad: x.bad,
      ms: x.ms,
      p50: percentile(x.lat, 50),
      p99: percentile(x.lat, 99),
      cpuNodeUs: undefined,
      cpuClusterUs: c0 !== undefined && c1 !== undefined && x.ok ? ((c1 - c0) * 1000) / x.ok : undefined,
      cpuClientUs: x.ok ? (self.user + self.system) / x.ok : undefined,
    }
  }
  try {
    log(`redis ${r.version}; warming up`)
    await load('warm-', 1_000, 16)
    log(`redis SET NX, 1 in flight, ${N.one} names`)
    res.one = await load('one-', N.one, 1)
    log(`redis SET NX, ${INFLIGHT} in flight, ${N.small} names`)
    res.many = await load('many-', N.small, INFLIGHT)
  } finally {
    await r.stop()
  }
  return res
}

// ---------------------------------------------------------------------------------- report

const int = (x: number): string => Math.round(x).toLocaleString('en-US')

function fmtRate(l: Load | undefined): string {
  const r = rate(l)
  if (r === undefined || !l) return 'n/a'
  return `${int(r)}/s` + (l.bad ? ` (${l.bad} not ok)` : '')
}
const fmtLat = (l: Load | undefined): string => (l ? `${l.p50.toFixed(2)} / ${l.p99.toFixed(2)} ms` : 'n/a')
const fmtUs = (x: number | undefined): string => (x === undefined ? '?' : `${int(x)} µs`)
function fmtCpu(l: Load | undefined, server?: string): string {
  if (!l) return 'n/a'
  if (server) return `${fmtUs(l.cpuClusterUs)} (${server})` + (l.cpuClientUs !== undefined ? ` + ${fmtUs(l.cpuClientUs)} (client)` : '')
  return `${fmtUs(l.cpuNodeUs)} / ${fmtUs(l.cpuClusterUs)}`
}
const fmtMs = (x: number | undefined): string => (x === undefined ? 'n/a' : `${x.toFixed(1)} ms`)

function report(s: SwormResults, e: AnchorResults | undefined, rd: AnchorResults | undefined, notes: string[]): string {
  const ec = (f: (r: AnchorResults) => string): string => (e ? f(e) : 'skipped')
  const rc = (f: (r: AnchorResults) => string): string => (rd ? f(rd) : 'skipped')
  const no = `${e ? '—' : 'skipped'} | ${rd ? '—' : 'skipped'}`
  const k = (n: number): string => (n >= 1000 ? `${n / 1000}k` : String(n))
  const both = (f: (r: AnchorResults) => string): string => `${ec(f)} | ${rc(f)}`
  const rows: Array<[string, string, string]> = [
    [`registrations/s, 1 in flight, one node (${k(N.one)} names)`, fmtRate(s.one), both((r) => fmtRate(r.one))],
    [`  p50 / p99 latency`, fmtLat(s.one), both((r) => fmtLat(r.one))],
    [`  CPU per registration`, fmtCpu(s.one), `${ec((r) => fmtCpu(r.one, 'members'))} | ${rc((r) => fmtCpu(r.one, 'server'))}`],
    [`registrations/s, ${INFLIGHT} in flight, one node (${k(N.small)} names)`, fmtRate(s.small64), both((r) => fmtRate(r.many))],
    [`  p50 / p99 latency`, fmtLat(s.small64), both((r) => fmtLat(r.many))],
    [`  CPU per registration`, fmtCpu(s.small64), `${ec((r) => fmtCpu(r.many, 'members'))} | ${rc((r) => fmtCpu(r.many, 'server'))}`],
    [`registrations/s, ${INFLIGHT} in flight on each of 3 nodes (${k(N.small)} names)`, fmtRate(s.smallAll), no],
    [`  p50 / p99 latency (worst node)`, fmtLat(s.smallAll), no],
    [`  CPU per registration`, fmtCpu(s.smallAll), no],
    [`registrations/s, ${INFLIGHT} in flight, one node (${k(N.big)} names)`, fmtRate(s.big64), no],
    [`  p50 / p99 latency`, fmtLat(s.big64), no],
    [`  CPU per registration`, fmtCpu(s.big64), no],
    [`registrations/s, ${INFLIGHT} in flight on each of 3 nodes (${k(N.big)} names)`, fmtRate(s.bigAll), no],
    [`  p50 / p99 latency (worst node)`, fmtLat(s.bigAll), no],
    [`  CPU per registration`, fmtCpu(s.bigAll), no],
    [`every node's local whereisName sees every name, after the last ack (${k(N.big)}, one node)`, fmtMs(s.convergeOne), no],
    [`  same, ${k(N.big)} names from 3 nodes`, fmtMs(s.convergeAll), no],
    [
      `local whereisName p50 / p99 (mean)${s.whereis ? `, ${int(s.whereis.names)} names` : ''}`,
      s.whereis ? `${int(s.whereis.p50Ns)} / ${int(s.whereis.p99Ns)} ns (${int(s.whereis.meanNs)} ns)` : 'n/a',
      no,
    ],
    [`call round trip to a worker on another node, p50 / p99`, s.call ? `${s.call.p50.toFixed(3)} / ${s.call.p99.toFixed(3)} ms` : 'n/a', no],
    [
      `heap per name: replica / node hosting the workers`,
      s.heapReplica !== undefined ? `${int(s.heapReplica)} B / ${int(s.heapHost ?? NaN)} B` : 'n/a',
      no,
    ],
  ]
  const header = [
    'Measurement',
    'Sworm (3 processes, LevelDB)',
    e ? `etcd ${e.version} (3 members, put-if-absent txn)` : 'etcd',
    rd ? `Redis ${rd.version} (SET NX, no persistence)` : 'Redis',
  ]
  const out: string[] = [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
  ]
  const met = (b: boolean | undefined): string => (b === undefined ? 'n/a' : b ? 'met' : 'NOT met')
  const s64 = rate(s.small64)
  const e64 = e ? rate(e.many) : undefined
  const r64 = rd ? rate(rd.many) : undefined
  out.push('Targets:')
  out.push(
    `- ${INFLIGHT} in flight ≥ 10× etcd: ${met(s64 !== undefined && e64 !== undefined ? s64 >= 10 * e64 : undefined)}` +
      (s64 !== undefined && e64 !== undefined ? ` (${int(s64)}/s vs ${int(e64)}/s = ${(s64 / e64).toFixed(2)}×)` : ' (etcd not run)'),
  )
  out.push(
    `- ${INFLIGHT} in flight ≥ 0.5× Redis SET NX: ${met(s64 !== undefined && r64 !== undefined ? s64 >= 0.5 * r64 : undefined)}` +
      (s64 !== undefined && r64 !== undefined ? ` (${int(s64)}/s vs ${int(r64)}/s = ${(s64 / r64).toFixed(2)}×)` : ' (Redis not run)'),
  )
  const r10 = [rate(s.small64), rate(s.smallAll)]
  const r100 = [rate(s.big64), rate(s.bigAll)]
  const ratios = r10.map((a, i) => (a !== undefined && r100[i] !== undefined ? r100[i]! / a : undefined))
  out.push(
    `- ${k(N.big)} names at ≥ 80% of the ${k(N.small)} rate: ${met(ratios.every((x) => x !== undefined) ? ratios.every((x) => x! >= 0.8) : undefined)}` +
      ` (one node ${ratios[0] !== undefined ? `${Math.round(ratios[0] * 100)}%` : 'n/a'}, 3 nodes ${ratios[1] !== undefined ? `${Math.round(ratios[1] * 100)}%` : 'n/a'})`,
  )
  out.push(
    `- local whereisName < 1 µs: ${met(s.whereis ? s.whereis.p99Ns < 1000 : undefined)}` +
      (s.whereis ? ` (p99 ${int(s.whereis.p99Ns)} ns, p50 ${int(s.whereis.p50Ns)} ns)` : ''),
  )
  const conv = [s.convergeOne, s.convergeAll].filter((x): x is number => x !== undefined)
  out.push(
    `- every node sees every name within 50 ms of the last ack: ${met(conv.length === 2 ? Math.max(...conv) <= 50 : undefined)}` +
      (conv.length ? ` (worst ${Math.max(...conv).toFixed(1)} ms)` : ''),
  )
  out.push('')
  out.push(
    `Notes: the sworm's registrations (spawn + registerName) run inside the node processes (embedded; "CPU per registration" is ` +
      `registering node(s) / all 3 nodes, load generator included), ${INFLIGHT} in flight from one node means from the leader. ` +
      `etcd is driven from the bench process over gRPC (etcd3 client) against its leader; its CPU is the 3 members' plus, apart, the client's. ` +
      `Redis (one process, \`--save '' --appendonly no\`: nothing is durable) is driven from the bench process, every command pipelined on one connection. ` +
      `Convergence: every node polls its local copy every 1 ms from the start of the run; the figure is the time from the last ` +
      `acknowledgement to the moment the slowest node held every name. Heap per name: heapUsed delta after gc over the ${k(N.big)} one-node run ` +
      `(includes the Raft log entries still in memory; the hosting node also holds the workers). ` +
      `Each load stops after ${PHASE_MAX_MS / 1000} s.${QUICK ? ' --quick counts.' : ''}`,
  )
  out.push(`Machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Node ${process.version}; all processes share it.`)
  for (const n of notes) out.push(n)
  for (const n of s.notes) out.push(n)
  return out.join('\n')
}

async function main(): Promise<void> {
  const sworm = await benchSworm()
  const bin = findEtcd()
  let etcd: AnchorResults | undefined
  let note: string | undefined
  if (!bin) note = 'etcd column skipped: no `etcd` on PATH (Debian/Ubuntu: `apt-get install etcd-server`).'
  else {
    try {
      etcd = await benchEtcd(bin)
    } catch (err) {
      note = `etcd column skipped: the etcd run failed: ${err instanceof Error ? err.message : String(err)}`
    }
  }
  const notes = note ? [note] : []
  const redisBin = findRedis()
  let redis: AnchorResults | undefined
  if (!redisBin) notes.push('Redis column skipped: no `redis-server` on PATH (Debian/Ubuntu: `apt-get install redis-server`).')
  else {
    try {
      redis = await benchRedis(redisBin)
    } catch (err) {
      notes.push(`Redis column skipped: the Redis run failed: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
  for (const n of notes) log(n)
  process.stdout.write(report(sworm, etcd, redis, notes) + '\n')
  log('done')
}

runMain(main)
