/**
 * Observability on a real 3-node cluster inside one process: Prometheus metrics (per-sworm
 * registries, one HTTP server per sworm), `/status`, and the `sworm status` CLI.
 */
import { spawn } from 'node:child_process'
import { get } from 'node:http'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { Sworm } from '../src/index.js'
import { freePorts, waitFor, startSworms, TEST_SECRET } from './helpers.js'
import { internals } from '../src/internal.js'
import { silentLogger } from '../src/raft/types.js'

const SECRET = TEST_SECRET // the secret of startSworms' clusters
const CLI = fileURLToPath(new URL('../../bin/sworm.js', import.meta.url))

const startCluster = (n: number, name = 'procs', extra: Partial<Parameters<typeof Sworm.start>[0]> = {}) => startSworms(n, name, extra)

function httpGet(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }))
    }).on('error', reject)
  })
}

/** The value of the series `name` with labels containing every `labels` pair (first match). */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue
    const m = /^([^{ ]+)(?:\{([^}]*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const ls = Object.fromEntries((m[2] ?? '').split(',').filter(Boolean).map((kv) => {
      const i = kv.indexOf('=')
      return [kv.slice(0, i), JSON.parse(kv.slice(i + 1)) as string]
    }))
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) return Number(m[3])
  }
  return undefined
}

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    p.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

const NAMES = [
  'sworm_raft_term',
  'sworm_raft_role',
  'sworm_raft_elections_started_total',
  'sworm_raft_leader_changes_total',
  'sworm_raft_commit_latency_seconds',
  'sworm_raft_commit_index',
  'sworm_raft_applied_index',
  'sworm_raft_last_index',
  'sworm_raft_log_entries',
  'sworm_raft_snapshot_index',
  'sworm_raft_snapshot_age_entries',
  'sworm_raft_snapshot_age_seconds',
  'sworm_raft_voters',
  'sworm_raft_learners',
  'sworm_registry_names',
  'sworm_supervised_workers',
  'sworm_local_workers',
  'sworm_worker_restarts_total',
  'sworm_worker_handoffs_total',
  'sworm_lease_ok',
  'sworm_lease_expiries_total',
  'sworm_fenced_workers_total',
  'sworm_node_events_total',
  'sworm_nodes_up',
  'sworm_raft_snapshot_bytes',
  'sworm_raft_snapshot_duration_seconds',
  'sworm_raft_snapshot_received_bytes',
  'sworm_raft_snapshot_receiving_bytes',
  'sworm_raft_snapshot_sending_bytes',
  'sworm_event_loop_delay_max_seconds',
  'sworm_event_loop_delay_p99_seconds',
]

t.test('/metrics, /status and the CLI on a 3-node cluster', async (t) => {
  const c = await startCluster(3, 'obs', { metricsPort: 0 })
  t.teardown(() => c.stop())
  const addrs = c.nodes.map((s) => s.metricsAddress)
  for (const a of addrs) t.match(a, /^http:\/\/127\.0\.0\.1:\d+$/, 'each sworm tells where it listens')
  t.equal(new Set(addrs).size, 3, 'one port per sworm')

  const leader = c.nodes.find((s) => s.status().role === 'leader')!
  const follower = c.nodes.find((s) => s !== leader)!
  for (let i = 0; i < 20; i++) t.ok(await leader.registerName(`l:${i}`, leader.spawn({})))
  for (let i = 0; i < 10; i++) t.ok(await follower.registerName(`f:${i}`, follower.spawn({})))
  await waitFor(() => c.nodes.every((s) => s.status().names === 30), 5000, 'every node has the names')

  // a leader change
  await internals(leader).raft.transferLeadership(follower.nodeId)
  await waitFor(() => follower.status().role === 'leader' && c.nodes.every((s) => s.status().leader === follower.nodeId), 5000, 'the new leader everywhere')

  const res = await httpGet(`${follower.metricsAddress}/metrics`)
  t.equal(res.status, 200)
  t.match(res.type, /text\/plain/)
  const text = res.body
  for (const n of NAMES) t.match(text, new RegExp(`^# TYPE ${n} `, 'm'), `${n} is exposed`)
  const lbl = { sworm: 'obs', node: follower.nodeId }
  t.equal(value(text, 'sworm_registry_names', lbl), 30, 'registered names')
  t.equal(value(text, 'sworm_local_workers', lbl), 10, 'local workers')
  t.equal(value(text, 'sworm_supervised_workers', lbl), 0)
  t.equal(value(text, 'sworm_raft_role', { ...lbl, role: 'leader' }), 1, 'role leader = 1')
  t.equal(value(text, 'sworm_raft_role', { ...lbl, role: 'follower' }), 0)
  t.ok(value(text, 'sworm_raft_term', lbl)! >= 2, 'term moved on')
  t.ok(value(text, 'sworm_raft_leader_changes_total', lbl)! >= 2, 'leader changes counted')
  t.ok(value(text, 'sworm_raft_elections_started_total', lbl)! >= 1, 'the new leader started an election')
  const count = value(text, 'sworm_raft_commit_latency_seconds_count', lbl)!
  t.ok(count >= 10, `commit latency observed for this node's proposals (${count})`)
  t.equal(value(text, 'sworm_raft_commit_latency_seconds_bucket', { ...lbl, le: '+Inf' }), count, '+Inf bucket = count')
  t.ok(value(text, 'sworm_raft_commit_latency_seconds_bucket', { ...lbl, le: '5' })! <= count, 'buckets are cumulative')
  t.match(text, /sworm_raft_commit_latency_seconds_bucket\{le="0.00025",sworm="obs",node="n\d"\}/, 'the smallest bucket is 0.25 ms')
  const sum = value(text, 'sworm_raft_commit_latency_seconds_sum', lbl)!
  t.ok(sum > 0 && sum / count < 1, `mean commit latency is sensible (${((sum / count) * 1000).toFixed(2)} ms)`)
  const commit = value(text, 'sworm_raft_commit_index', lbl)!
  t.ok(commit >= 30 && value(text, 'sworm_raft_applied_index', lbl)! <= commit, 'indexes')
  t.ok(value(text, 'sworm_raft_log_entries', lbl)! >= 30, 'log size')
  t.ok(value(text, 'sworm_raft_snapshot_age_entries', lbl)! >= 30, 'snapshot age in entries')
  t.ok(value(text, 'sworm_raft_snapshot_age_seconds', lbl)! >= 0, 'snapshot age in seconds')
  t.equal(value(text, 'sworm_raft_voters', lbl), 3)
  t.equal(value(text, 'sworm_nodes_up', lbl), 3)
  t.equal(value(text, 'sworm_node_events_total', { ...lbl, event: 'up' }), 3, 'three nodes came up')
  t.equal(value(text, 'sworm_node_events_total', { ...lbl, event: 'down' }), 0)
  t.equal(value(text, 'sworm_lease_ok', lbl), 1)

  // the API gives the same metrics; each sworm's registry holds only its own series
  const api = await leader.metrics()
  t.match(api, new RegExp(`sworm_registry_names\\{sworm="obs",node="${leader.nodeId}"\\} 30`))
  t.notMatch(api, new RegExp(`node="${follower.nodeId}"`), 'no series of another sworm')

  // /status
  await waitFor(async () => Object.keys(JSON.parse((await httpGet(`${follower.metricsAddress}/status`)).body).metricsPeers).length === 3, 5000, 'metrics addresses of every member')
  const st = JSON.parse((await httpGet(`${follower.metricsAddress}/status`)).body)
  t.match(st, {
    sworm: 'obs',
    node: follower.nodeId,
    role: 'leader',
    leader: follower.nodeId,
    names: 30,
    workers: 10,
    supervised: 0,
    lease: true,
    metricsAddress: follower.metricsAddress,
  })
  t.ok(st.term >= 2 && st.commit >= 30 && st.applied >= 30 && st.uptime >= 0, 'term, indexes, uptime')
  t.same(Object.keys(st.peers.voters).sort(), ['n1', 'n2', 'n3'], 'configuration')
  t.same(st.metricsPeers, Object.fromEntries(c.nodes.map((s) => [s.nodeId, s.metricsAddress])), 'where every member serves its metrics')
  t.equal((await httpGet(`${follower.metricsAddress}/nope`)).status, 404)

  // the CLI
  const out = await run(['status', follower.metricsAddress!])
  t.equal(out.code, 0, `CLI exit code 0 ${out.stderr}`)
  t.match(out.stdout, /NODE\s+ROLE\s+TERM\s+LEADER/, 'a table header')
  for (const s of c.nodes) t.match(out.stdout, new RegExp(`^${s.nodeId}\\s+(leader|follower)\\s+\\d+\\s+${follower.nodeId}\\s`, 'm'), `a row for ${s.nodeId}`)
  t.comment(out.stdout)

  const dead = await run(['status', 'http://127.0.0.1:9'])
  t.equal(dead.code, 1, 'exit code 1 for an unreachable node')
  t.match(dead.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/)
  t.equal((await run([])).code, 2, 'usage error')

  // stop() closes the server
  const addr = leader.metricsAddress!
  await leader.stop()
  await t.rejects(httpGet(`${addr}/status`), 'the server is closed after stop()')
})

t.test('metricsPort validation and a fixed port', async (t) => {
  await t.rejects(
    Sworm.start({ name: 's', nodeId: 'n1', listen: 'ws://127.0.0.1:1', dataDir: '/tmp/x', secret: SECRET, metricsPort: -1 }),
    { name: 'TypeError', message: /"metricsPort"/ },
  )
  const [port] = await freePorts(1)
  const c = await startCluster(1, 'fixed', { metricsPort: port! })
  t.teardown(() => c.stop())
  t.equal(c.nodes[0]!.metricsAddress, `http://127.0.0.1:${port}`)
  const st = JSON.parse((await httpGet(`http://127.0.0.1:${port}/status`)).body)
  t.equal(st.role, 'leader')
  const without = await startCluster(1, 'nometrics')
  t.teardown(() => without.stop())
  t.equal(without.nodes[0]!.metricsAddress, undefined, 'no server without metricsPort')
  t.match(await without.nodes[0]!.metrics(), /sworm_raft_term\{sworm="nometrics",node="n1"\} \d+/, 'metrics() still works')
})

t.test('snapshot and event-loop gauges', async (t) => {
  const c = await startCluster(1, 'snapm', { metricsPort: 0, raft: { snapshotEvery: 10 } })
  t.teardown(() => c.stop())
  const s = c.nodes[0]!
  for (let i = 0; i < 30; i++) t.ok(await s.registerName(`n:${i}`, s.spawn({})))
  await waitFor(() => internals(s).raft.status().snapshotIndex >= 10, 5000, 'a snapshot was taken')
  const lbl = { sworm: 'snapm', node: s.nodeId }
  await httpGet(`${s.metricsAddress}/metrics`) // the first scrape starts the event-loop monitor
  let text = ''
  await waitFor(async () => {
    text = (await httpGet(`${s.metricsAddress}/metrics`)).body
    return value(text, 'sworm_event_loop_delay_max_seconds', lbl)! > 0
  }, 5000, 'the event-loop delay is measured')
  t.ok(value(text, 'sworm_raft_snapshot_bytes', lbl)! > 0, 'the snapshot size')
  t.ok(value(text, 'sworm_raft_snapshot_duration_seconds', lbl)! >= 0, 'how long it took')
  t.equal(value(text, 'sworm_raft_snapshot_receiving_bytes', lbl), 0, 'nothing being received')
  t.equal(value(text, 'sworm_raft_snapshot_sending_bytes', lbl), 0, 'nothing being sent')
  const max = value(text, 'sworm_event_loop_delay_max_seconds', lbl)!
  t.ok(max < 10 && value(text, 'sworm_event_loop_delay_p99_seconds', lbl)! <= max, `event-loop delay: max ${max} s`)
})

t.test('readiness: GET /ready answers 503 until a restarted node is up in the sworm, while it is cut off from a quorum and once it stops; 200 while it drains', async (t) => {
  const c = await startCluster(3, 'rdy', { metricsPort: 0, requestTimeoutMs: 2000 })
  t.teardown(() => c.stop())
  const [n1, n2, n3] = c.nodes as [Sworm, Sworm, Sworm]
  for (const s of c.nodes) {
    await s.ready()
    const r = await httpGet(`${s.metricsAddress}/ready`)
    t.equal(r.status, 200, `${s.nodeId}: 200 once up`)
    t.match(r.type, /application\/json/)
    t.same(JSON.parse(r.body), { ready: true, reason: 'up' })
    t.same(s.readiness(), { ready: true, reason: 'up' })
  }

  // draining: it serves calls, it only takes no supervised workers
  await n1.drain()
  t.match(n1.readiness(), { ready: true, reason: /draining/ })
  t.equal((await httpGet(`${n1.metricsAddress}/ready`)).status, 200, '200 while draining')
  await n1.undrain()
  await waitFor(() => n1.readiness().reason === 'up', 5000, 'plain up again after undrain')

  // cut off from the others: its record stays up (it cannot apply its own removal), its lease runs out
  const cut = (on: boolean): void => {
    for (const o of [n2, n3]) {
      internals(n1).faults!.block(o.nodeId, on)
      internals(o).faults!.block(n1.nodeId, on)
    }
  }
  cut(true)
  await waitFor(async () => (await httpGet(`${n1.metricsAddress}/ready`)).status === 503, 15_000, '503 once cut off')
  t.match(n1.readiness(), { ready: false, reason: /lease ran out/ })
  cut(false)
  await waitFor(() => n1.readiness().ready, 30_000, 'ready again once healed (up again, lease back)')

  // stopping: not ready from the call on, before the stop completes
  const stopping = n3.stop()
  t.match(n3.readiness(), { ready: false, reason: /stopping/ })
  await stopping
  t.match(n3.readiness(), { ready: false, reason: /stopping/ }, 'still not ready once stopped')
  await n2.stop({ drain: false })
  await n1.stop({ drain: false })

  // a node restarted from its data while no quorum is up serves /ready, with 503, until it is up
  const restart = (nodeId: string) =>
    Sworm.start({ name: 'rdy', nodeId, listen: c.peers[nodeId]!, peers: c.peers, dataDir: `${c.dir}/${nodeId}`, secret: SECRET, metricsPort: 0, requestTimeoutMs: 2000, logger: silentLogger })
  const r1 = await restart('n1')
  t.teardown(() => r1.stop({ drain: false }))
  const before = await httpGet(`${r1.metricsAddress}/ready`)
  t.equal(before.status, 503, '503 before the restarted node is up')
  t.match(JSON.parse(before.body), { ready: false, reason: /not up in the sworm yet/ })
  const r2 = await restart('n2')
  t.teardown(() => r2.stop({ drain: false }))
  await waitFor(async () => (await httpGet(`${r1.metricsAddress}/ready`)).status === 200, 15_000, 'the restarted n1 ready once a quorum is back')
  await r1.ready() // what ready() waits for, readiness reports
  t.ok(r1.statusReport().nodes.find((r) => r.node === 'n1')?.up, 'up in its own registry')
})
