/**
 * Raft benchmark: a 3-node Sworm cluster (one OS process per node, LevelDB with fsync, loopback
 * WebSockets) against a 3-member etcd cluster on the same machine, when `etcd` is on PATH.
 *
 * Run: `npm run bench` (or `node dist/bench/raft-bench.js [--quick]`).
 *
 * Sworm is an embedded library, so its load runs inside the leader (or follower) process through
 * the `load` request of `tools/cluster/raft-kv-node.ts`: no client hop. etcd is driven from
 * this process with the `etcd3` gRPC client. "Leader CPU per commit" is the user+system CPU of
 * the leader's process divided by the operations; for Sworm it includes the load generator (it is
 * the same process), for etcd it does not include the client.
 *
 * Prints one markdown table, then the targets with met / not met.
 * @module
 */
import { benchLogger, percentile, runMain } from './common.js'
import { flagOption, parseCli } from '../tools/cli-args.js'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Etcd3 } from 'etcd3'
import { etcdClientFor, findEtcd, processCpuMs } from './etcd.js'
import type { LoadResult } from '../tools/cluster/raft-kv-protocol.js'
import { firstCommit, freePorts, pollUntil, startCluster, type Cluster } from '../tools/cluster/raft-cluster.js'
import { firstToSucceed } from '../tools/cluster/processes.js'

const QUICK = parseCli('raft-bench.js [--quick]', { quick: { type: 'boolean' } }, (v) => flagOption(v, 'quick'))
const COUNTS = QUICK
  ? { one: 300, many: 5_000, reads: 5_000, failovers: 3, phaseMaxMs: 10_000 }
  : { one: 3_000, many: 50_000, reads: 20_000, failovers: 3, phaseMaxMs: 25_000 }
const INFLIGHT = 64
const BUDGET_MS = 170_000
const benchStart = performance.now()

/** One measured workload. */
interface Measure {
  ops: number
  errors: number
  ms: number
  p50: number
  p99: number
  /** Leader process CPU µs per successful operation. */
  cpuPerOpUs: number | undefined
  /** CPU µs per operation of the client (the bench process), for etcd. */
  clientCpuPerOpUs?: number
}

interface Results {
  version: string
  one?: Measure
  many?: Measure
  follower?: Measure
  reads?: Measure
  failovers: number[]
  notes: string[]
}

const log = benchLogger('bench')


function median(xs: number[]): number | undefined {
  if (!xs.length) return undefined
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

function rate(m: Measure | undefined): number | undefined {
  return m && m.ms > 0 ? (m.ops / m.ms) * 1000 : undefined
}

function remainingMs(): number {
  return BUDGET_MS - (performance.now() - benchStart)
}

/** Time cap for one phase: the phase maximum, shrunk when the overall budget runs low. */
function phaseCap(): number {
  return Math.max(2_000, Math.min(COUNTS.phaseMaxMs, remainingMs() / 6))
}

// ------------------------------------------------------------------------------------ Sworm

async function swormLoad(c: Cluster, on: string, leader: string, req: { count: number; concurrency: number; kind?: 'read'; keyPrefix: string }): Promise<Measure> {
  const cap = phaseCap()
  const cpu0 = await c.request<{ userMs: number; systemMs: number }>(leader, { op: 'cpu' })
  const r = await c.request<LoadResult>(on, { op: 'load', maxMs: cap, ...req }, cap + 60_000)
  const cpu1 = await c.request<{ userMs: number; systemMs: number }>(leader, { op: 'cpu' })
  const cpuMs = cpu1.userMs - cpu0.userMs + (cpu1.systemMs - cpu0.systemMs)
  if (r.errors) log(`  ${r.errors} errors, e.g. ${r.errorSamples.join(' | ')}`)
  return { ops: r.ops, errors: r.errors, ms: r.ms, p50: r.p50, p99: r.p99, cpuPerOpUs: r.ops ? (cpuMs * 1000) / r.ops : undefined }
}

async function benchSworm(): Promise<Results> {
  const res: Results = { version: 'Sworm', failovers: [], notes: [] }
  log('starting 3 Sworm node processes')
  const c = await startCluster({ n: 3 })
  tempDirs.add(c.dir)
  try {
    let leader = await c.waitForLeader(15_000)
    const follower = () => c.ids.find((id) => id !== leader && c.isAlive(id))!
    await c.request(leader, { op: 'load', count: 500, concurrency: 16, keyPrefix: 'warm-' }, 60_000)

    log(`put-if-absent, 1 in flight, on leader ${leader}`)
    res.one = await swormLoad(c, leader, leader, { count: COUNTS.one, concurrency: 1, keyPrefix: 'one-' })
    log(`put-if-absent, ${INFLIGHT} in flight, on leader ${leader}`)
    res.many = await swormLoad(c, leader, leader, { count: COUNTS.many, concurrency: INFLIGHT, keyPrefix: 'many-' })
    const f = follower()
    log(`put-if-absent, ${INFLIGHT} in flight, on follower ${f}`)
    res.follower = await swormLoad(c, f, leader, { count: COUNTS.many, concurrency: INFLIGHT, keyPrefix: 'fol-' })
    log(`linearizable reads, ${INFLIGHT} in flight, on leader ${leader}`)
    res.reads = await swormLoad(c, leader, leader, { count: COUNTS.reads, concurrency: INFLIGHT, kind: 'read', keyPrefix: 'many-' })

    for (let i = 0; i < COUNTS.failovers && remainingMs() > 30_000; i++) {
      leader = await c.waitForLeader(15_000)
      const survivors = c.ids.filter((id) => id !== leader)
      const t0 = performance.now()
      await c.kill(leader)
      const at = await firstCommit(c, survivors, `fo${i}-`, 15_000)
      const ms = at - t0
      res.failovers.push(ms)
      log(`failover ${i + 1}: killed ${leader}, first commit through a survivor after ${ms.toFixed(0)} ms`)
      // bring the node back and let it catch up before the next round
      await c.restart(leader)
      const l2 = await c.waitForLeader(15_000)
      const target = (await c.status(l2)).commit
      await pollUntil(async () => ((await c.status(leader)).applied >= target ? true : undefined), 30_000, `${leader} to catch up`, 50)
    }
  } finally {
    await c.stopAll()
    tempDirs.delete(c.dir)
  }
  return res
}

// ------------------------------------------------------------------------------------ etcd

interface EtcdMember {
  name: string
  clientUrl: string
  peerUrl: string
  dataDir: string
  args: string[]
  proc: ChildProcess | undefined
  exited: Promise<void>
  client: Etcd3
  stderrTail: string[]
}

const liveEtcd = new Set<ChildProcess>()
/** Temporary directories to remove if the bench is interrupted. */
const tempDirs = new Set<string>()
process.on('exit', () => {
  for (const p of liveEtcd) p.kill('SIGKILL')
})
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    for (const p of liveEtcd) p.kill('SIGKILL')
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true })
    process.stderr.write(`bench interrupted (${sig}); cleaned up\n`)
    process.exit(130) // node processes of the Sworm cluster exit when their IPC channel closes
  })
}

function startEtcdProcess(bin: string, m: EtcdMember): void {
  const proc = spawn(bin, m.args, { stdio: ['ignore', 'ignore', 'pipe'] })
  m.proc = proc
  liveEtcd.add(proc)
  m.exited = new Promise<void>((resolve) =>
    proc.on('exit', () => {
      liveEtcd.delete(proc)
      resolve()
    }),
  )
  proc.on('error', (err) => m.stderrTail.push(String(err)))
  proc.stderr!.setEncoding('utf8')
  proc.stderr!.on('data', (chunk: string) => {
    m.stderrTail.push(...chunk.split('\n').filter(Boolean))
    if (m.stderrTail.length > 50) m.stderrTail.splice(0, m.stderrTail.length - 50)
  })
}

async function etcdLoad(
  client: Etcd3,
  pid: number,
  opts: { count: number; concurrency: number; keyPrefix: string; kind?: 'read' },
): Promise<Measure> {
  const cap = phaseCap()
  const lat: number[] = []
  let next = 0
  let ops = 0
  let errors = 0
  const samples: string[] = []
  const cpu0 = processCpuMs(pid)
  const self0 = process.cpuUsage()
  const t0 = performance.now()
  const stopAt = t0 + cap
  const worker = async (): Promise<void> => {
    while (next < opts.count && performance.now() < stopAt) {
      const i = next++
      const key = `${opts.keyPrefix}${i}`
      const s = performance.now()
      try {
        if (opts.kind === 'read') {
          await client.get(key).string()
        } else {
          const r = await client.if(key, 'Create', '==', 0).then(client.put(key).value(String(i))).commit()
          if (!r.succeeded) throw new Error(`put-if-absent ${key} did not succeed`)
        }
        lat.push(performance.now() - s)
        ops++
      } catch (err) {
        errors++
        if (samples.length < 3) samples.push(String(err))
      }
    }
  }
  await Promise.all(Array.from({ length: opts.concurrency }, worker))
  const ms = performance.now() - t0
  const cpu1 = processCpuMs(pid)
  const self = process.cpuUsage(self0)
  lat.sort((a, b) => a - b)
  if (errors) log(`  ${errors} errors, e.g. ${samples.join(' | ')}`)
  return {
    clientCpuPerOpUs: ops ? (self.user + self.system) / ops : undefined,
    ops,
    errors,
    ms,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    cpuPerOpUs: cpu0 !== undefined && cpu1 !== undefined && ops ? ((cpu1 - cpu0) * 1000) / ops : undefined,
  }
}

async function etcdLeader(members: EtcdMember[], alive: EtcdMember[], timeoutMs: number): Promise<EtcdMember> {
  return pollUntil(
    async () => {
      const sts = await Promise.all(
        alive.map((m) => m.client.maintenance.status().then((s) => ({ m, s }), () => undefined)),
      )
      const ok = sts.filter((x): x is NonNullable<typeof x> => x !== undefined)
      if (ok.length < alive.length) return undefined
      const leaderId = ok[0]!.s.leader
      if (!leaderId || leaderId === '0' || ok.some((x) => x.s.leader !== leaderId)) return undefined
      const lm = await Promise.all(members.map((m) => (alive.includes(m) ? m.client.maintenance.status().catch(() => undefined) : undefined)))
      const idx = lm.findIndex((s) => s?.header.member_id === leaderId)
      return idx >= 0 ? members[idx] : undefined
    },
    timeoutMs,
    'an etcd leader',
    50,
  )
}

async function benchEtcd(bin: string): Promise<Results> {
  const ver = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout?.match(/etcd Version:\s*(\S+)/)?.[1] ?? '?'
  const res: Results = { version: `etcd ${ver}`, failovers: [], notes: [] }
  const dir = await mkdtemp(join(tmpdir(), 'sworm-bench-etcd-'))
  tempDirs.add(dir)
  const ports = await freePorts(6)
  const names = ['e1', 'e2', 'e3']
  const token = `bench-${process.pid}-${Date.now()}`
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[3 + i]}`).join(',')
  const members: EtcdMember[] = names.map((name, i) => {
    const clientUrl = `http://127.0.0.1:${ports[i]}`
    const peerUrl = `http://127.0.0.1:${ports[3 + i]}`
    const dataDir = join(dir, name)
    return {
      name,
      clientUrl,
      peerUrl,
      dataDir,
      args: [
        '--name', name,
        '--data-dir', dataDir,
        '--listen-client-urls', clientUrl,
        '--advertise-client-urls', clientUrl,
        '--listen-peer-urls', peerUrl,
        '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', token,
        '--logger', 'zap',
        '--log-level', 'error',
      ],
      proc: undefined,
      exited: Promise.resolve(),
      client: etcdClientFor(clientUrl),
      stderrTail: [],
    }
  })
  const isAlive = (m: EtcdMember): boolean => m.proc !== undefined && m.proc.exitCode === null && m.proc.signalCode === null
  const kill = async (m: EtcdMember): Promise<void> => {
    if (!isAlive(m)) return
    m.proc!.kill('SIGKILL')
    await m.exited
  }
  try {
    log(`starting 3 etcd members (${ver})`)
    for (const m of members) startEtcdProcess(bin, m)
    let leader = await etcdLeader(members, members, 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${members.map((m) => `${m.name}: ${m.stderrTail.slice(-5).join('\n')}`).join('\n')}`)
    })
    const follower = () => members.find((m) => m !== leader && isAlive(m))!
    await etcdLoad(leader.client, leader.proc!.pid!, { count: 500, concurrency: 16, keyPrefix: 'warm-' })

    log(`put-if-absent, 1 in flight, on leader ${leader.name}`)
    res.one = await etcdLoad(leader.client, leader.proc!.pid!, { count: COUNTS.one, concurrency: 1, keyPrefix: 'one-' })
    log(`put-if-absent, ${INFLIGHT} in flight, on leader ${leader.name}`)
    res.many = await etcdLoad(leader.client, leader.proc!.pid!, { count: COUNTS.many, concurrency: INFLIGHT, keyPrefix: 'many-' })
    const f = follower()
    log(`put-if-absent, ${INFLIGHT} in flight, on follower ${f.name}`)
    res.follower = await etcdLoad(f.client, leader.proc!.pid!, { count: COUNTS.many, concurrency: INFLIGHT, keyPrefix: 'fol-' })
    log(`linearizable reads, ${INFLIGHT} in flight, on leader ${leader.name}`)
    res.reads = await etcdLoad(leader.client, leader.proc!.pid!, { count: COUNTS.reads, concurrency: INFLIGHT, keyPrefix: 'many-', kind: 'read' })

    for (let i = 0; i < COUNTS.failovers && remainingMs() > 15_000; i++) {
      leader = await etcdLeader(members, members.filter(isAlive), 15_000)
      const survivors = members.filter((m) => m !== leader)
      const t0 = performance.now()
      await kill(leader)
      const ms = await etcdFirstPut(survivors, `fo${i}-`, 15_000).then((at) => at - t0)
      res.failovers.push(ms)
      log(`failover ${i + 1}: killed ${leader.name}, first put through a survivor after ${ms.toFixed(0)} ms`)
      const dead = leader
      startEtcdProcess(bin, dead)
      await etcdLeader(members, members, 30_000)
      // wait until the restarted member has caught up
      await pollUntil(
        async () => {
          const [a, b] = await Promise.all([dead.client.maintenance.status(), survivors[0]!.client.maintenance.status()])
          return Number(a.raftIndex) >= Number(b.raftIndex) - 5 ? true : undefined
        },
        30_000,
        `${dead.name} to catch up`,
        50,
      )
    }
  } finally {
    for (const m of members) m.client.close()
    await Promise.all(members.map((m) => kill(m)))
    await rm(dir, { recursive: true, force: true })
    tempDirs.delete(dir)
  }
  return res
}

/** Fire a put every 5 ms at the survivors until one succeeds; resolves with its time. */
function etcdFirstPut(survivors: EtcdMember[], prefix: string, timeoutMs: number): Promise<number> {
  const clients = survivors.map((m) => etcdClientFor(m.clientUrl, 3_000))
  const closeClients = (): void => {
    // let calls still in flight settle against their own deadline before closing
    setTimeout(() => clients.forEach((cl) => cl.close()), 3_500).unref()
  }
  const first = firstToSucceed(
    async (n) => {
      await clients[n % clients.length]!.put(`${prefix}${n}`).value('x')
    },
    timeoutMs,
    5,
    (lastErr) => `no etcd put succeeded in ${timeoutMs} ms: ${lastErr}`,
  )
  void first.then(closeClients, closeClients)
  return first
}

// ------------------------------------------------------------------------------------ report

function fmtRate(m: Measure | undefined): string {
  const r = rate(m)
  if (r === undefined || !m) return 'n/a'
  const s = Math.round(r).toLocaleString('en-US')
  return m.errors ? `${s} (${m.errors} errors)` : s
}

function fmtLat(m: Measure | undefined): string {
  return m ? `${m.p50.toFixed(2)} / ${m.p99.toFixed(2)} ms` : 'n/a'
}

function fmtCpu(m: Measure | undefined): string {
  return m?.cpuPerOpUs !== undefined ? `${Math.round(m.cpuPerOpUs)} µs` : 'n/a'
}

function fmtFailovers(xs: number[]): string {
  return xs.length ? xs.map((x) => `${Math.round(x)} ms`).join(', ') : 'n/a'
}

function fmtMedian(xs: number[]): string {
  const m = median(xs)
  return m === undefined ? 'n/a' : `${Math.round(m)} ms`
}

function report(s: Results, e: Results | undefined, etcdMissing: string | undefined): string {
  const ecol = (f: (r: Results) => string): string => (e ? f(e) : 'skipped')
  const rows: Array<[string, string, string]> = [
    [`put-if-absent/s, 1 in flight (leader)`, fmtRate(s.one), ecol((r) => fmtRate(r.one))],
    [`p50 / p99 commit latency, 1 in flight`, fmtLat(s.one), ecol((r) => fmtLat(r.one))],
    [`leader CPU per commit, 1 in flight`, fmtCpu(s.one), ecol((r) => fmtCpu(r.one))],
    [`put-if-absent/s, ${INFLIGHT} in flight (leader)`, fmtRate(s.many), ecol((r) => fmtRate(r.many))],
    [`p50 / p99 commit latency, ${INFLIGHT} in flight`, fmtLat(s.many), ecol((r) => fmtLat(r.many))],
    [`leader CPU per commit, ${INFLIGHT} in flight`, fmtCpu(s.many), ecol((r) => fmtCpu(r.many))],
    [`put-if-absent/s, ${INFLIGHT} in flight via a follower`, fmtRate(s.follower), ecol((r) => fmtRate(r.follower))],
    [`p50 / p99 commit latency via a follower`, fmtLat(s.follower), ecol((r) => fmtLat(r.follower))],
    [`leader CPU per commit via a follower`, fmtCpu(s.follower), ecol((r) => fmtCpu(r.follower))],
    [`linearizable reads/s, ${INFLIGHT} in flight (leader)`, fmtRate(s.reads), ecol((r) => fmtRate(r.reads))],
    [`p50 / p99 read latency`, fmtLat(s.reads), ecol((r) => fmtLat(r.reads))],
    [`failover: SIGKILL leader → first commit via a survivor`, fmtFailovers(s.failovers), ecol((r) => fmtFailovers(r.failovers))],
    [`failover median`, fmtMedian(s.failovers), ecol((r) => fmtMedian(r.failovers))],
  ]
  const header = ['Metric', 'Sworm (3 processes, LevelDB fsync)', e ? `${e.version} (3 members)` : 'etcd']
  const lines = [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ]
  const out: string[] = [lines.join('\n'), '']
  const met = (b: boolean | undefined): string => (b === undefined ? 'n/a' : b ? 'met' : 'NOT met')
  const sMany = rate(s.many)
  const eMany = e ? rate(e.many) : undefined
  const sFo = median(s.failovers)
  out.push('Targets:')
  out.push(
    `- ${INFLIGHT} in flight ≥ etcd's rate: ${met(sMany !== undefined && eMany !== undefined ? sMany >= eMany : undefined)}` +
      (sMany !== undefined && eMany !== undefined ? ` (${Math.round(sMany)}/s vs ${Math.round(eMany)}/s)` : etcdMissing ? ' (etcd not run)' : ''),
  )
  out.push(
    `- failover < 1 s: ${met(s.failovers.length ? Math.max(...s.failovers) < 1000 : undefined)}` +
      (s.failovers.length ? ` (worst ${Math.round(Math.max(...s.failovers))} ms, median ${Math.round(sFo!)} ms)` : ''),
  )
  out.push(`- Sworm goal 20,000/s at ${INFLIGHT} in flight: ${met(sMany !== undefined ? sMany >= 20_000 : undefined)}` + (sMany !== undefined ? ` (${Math.round(sMany)}/s)` : ''))
  out.push('')
  out.push(
    `Counts: ${COUNTS.one} ops at 1 in flight, ${COUNTS.many} at ${INFLIGHT}, ${COUNTS.reads} reads${QUICK ? ' (--quick)' : ''}; ` +
      `each phase capped at ${Math.round(COUNTS.phaseMaxMs / 1000)} s. Sworm's load runs inside the node process (embedded, includes the load generator's CPU); ` +
      `etcd is driven by the etcd3 gRPC client from the bench process (client CPU not counted). ` +
      `Sworm timing: tick 50 ms, election 300–600 ms; etcd defaults: heartbeat 100 ms, election 1000 ms.`,
  )
  if (e?.many?.clientCpuPerOpUs !== undefined) {
    out.push(
      `etcd3 client CPU (bench process) per put-if-absent at ${INFLIGHT} in flight: ${Math.round(e.many.clientCpuPerOpUs)} µs ` +
        `(${Math.round((e.many.clientCpuPerOpUs * (rate(e.many) ?? 0)) / 10_000)}% of a core): on a small machine the Node gRPC client may limit etcd's numbers.`,
    )
  }
  out.push(`Machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Node ${process.version}.`)
  if (etcdMissing) out.push(etcdMissing)
  for (const n of [...s.notes, ...(e?.notes ?? [])]) out.push(n)
  return out.join('\n')
}

async function main(): Promise<void> {
  const sworm = await benchSworm()
  const bin = findEtcd()
  let etcd: Results | undefined
  let missing: string | undefined
  if (!bin) {
    missing = 'etcd column skipped: no `etcd` binary on PATH (Debian/Ubuntu: `apt-get install etcd-server`).'
    log(missing)
  } else {
    try {
      etcd = await benchEtcd(bin)
    } catch (err) {
      missing = `etcd column skipped: the etcd run failed: ${err instanceof Error ? err.message : String(err)}`
      log(missing)
    }
  }
  process.stdout.write(report(sworm, etcd, missing) + '\n')
  log('done')
}

runMain(main)
