/**
 * The typed events of a sworm on a real 3-node cluster inside one process: registry events on
 * every node, worker events on the node concerned, node and lease events when a node is cut off,
 * leader changes, and that a throwing listener breaks nothing.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { Sworm, type SwormEvents } from '../src/index.js'
import { waitFor, startSworms } from './helpers.js'
import { internals } from '../src/internal.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))
const spec = (name: string) => ({ module: WORKERS, fn: 'counter', args: [name] })

const cluster = (n: number, name: string, opts: Record<string, unknown> = {}) => startSworms(n, name, opts)

type Ev = { [K in keyof SwormEvents]: { event: K; payload: SwormEvents[K][0] } }[keyof SwormEvents]
const ALL: Array<keyof SwormEvents> = [
  'nodeUp',
  'nodeDown',
  'leaderChanged',
  'registered',
  'unregistered',
  'joined',
  'left',
  'workerStarted',
  'workerStopped',
  'workerMoved',
  'leaseLost',
  'leaseRenewed',
]

/** Record every event of `s`. */
function record(s: Sworm): Ev[] {
  const log: Ev[] = []
  for (const e of ALL) s.on(e, (p: unknown) => void log.push({ event: e, payload: p } as Ev))
  return log
}
const of = <K extends keyof SwormEvents>(log: Ev[], e: K): Array<SwormEvents[K][0]> => log.filter((x) => x.event === e).map((x) => x.payload as SwormEvents[K][0])

t.test('registry events on every node; a throwing listener breaks nothing', async (t) => {
  const c = await cluster(3, 'ev1')
  t.teardown(() => c.stop())
  const [a, b] = c.nodes as [Sworm, Sworm, Sworm]
  const logs = c.nodes.map(record)
  // listeners that throw or reject, before the recording ones on b
  b.prependListener('registered', () => {
    throw new Error('listener bug')
  })
  b.prependListener('joined', async () => {
    throw new Error('async listener bug')
  })

  const ref = a.spawn({ handleCall: () => 'pong' })
  t.ok(await a.registerName('ev:1', ref))
  await a.join('g', ref)
  await a.leave('g', ref)
  t.ok(await a.unregisterName('ev:1'))
  for (const [i, log] of logs.entries()) {
    const n = c.nodes[i]!.nodeId
    await waitFor(() => of(log, 'unregistered').some((p) => p.name === 'ev:1'), 5000, `${n} applies everything`)
    t.same(of(log, 'registered').filter((p) => p.name === 'ev:1'), [{ name: 'ev:1', ref }], `${n}: registered {name, ref}`)
    t.same(of(log, 'joined'), [{ group: 'g', ref }], `${n}: joined {group, ref}`)
    t.same(of(log, 'left'), [{ group: 'g', ref }], `${n}: left {group, ref}`)
    t.same(of(log, 'unregistered'), [{ name: 'ev:1', ref }], `${n}: unregistered {name, ref}`)
  }
  // the node with the throwing listeners still works
  t.ok(await b.registerName('ev:2', b.spawn({ handleCall: () => 'b' })), 'b still registers')
  t.equal(await a.call('ev:2', 'x'), 'b', 'and serves calls')
  t.same(await c.nodes[2]!.whereisName('ev:2', { consistent: true }), b.whereisName('ev:2'), 'replicas agree')
  t.ok(of(logs[1]!, 'registered').some((p) => p.name === 'ev:2'), 'listeners after the throwing one still run')
})

t.test('worker events: started, moved with handoff (drain), stopped', async (t) => {
  const c = await cluster(3, 'ev2')
  t.teardown(() => c.stop())
  const logs = new Map(c.nodes.map((s) => [s.nodeId, record(s)]))
  const a = c.nodes[0]!
  const ref = await a.registerName('w:1', spec('ev2/w:1'))
  const host = c.nodes.find((s) => s.nodeId === ref.node)!
  await waitFor(() => of(logs.get(host.nodeId)!, 'workerStarted').length === 1, 5000, 'workerStarted')
  t.same(of(logs.get(host.nodeId)!, 'workerStarted'), [{ name: 'w:1', ref, node: host.nodeId }], 'workerStarted {name, ref, node} on the hosting node')
  for (const s of c.nodes) {
    if (s !== host) t.same(of(logs.get(s.nodeId)!, 'workerStarted'), [], `no workerStarted on ${s.nodeId}`)
    await waitFor(() => of(logs.get(s.nodeId)!, 'registered').some((p) => p.name === 'w:1'), 5000, `registered on ${s.nodeId}`)
  }
  await a.call('w:1', 'inc')

  await host.drain()
  const ref2 = (await a.whereisName('w:1', { consistent: true }))!
  t.not(ref2.node, host.nodeId, 'moved away')
  const target = c.nodes.find((s) => s.nodeId === ref2.node)!
  await waitFor(() => of(logs.get(target.nodeId)!, 'workerMoved').length === 1, 5000, 'workerMoved')
  t.same(of(logs.get(target.nodeId)!, 'workerMoved'), [{ name: 'w:1', from: host.nodeId, to: target.nodeId }], 'workerMoved {name, from, to} on the new node')
  t.same(of(logs.get(target.nodeId)!, 'workerStarted'), [{ name: 'w:1', ref: ref2, node: target.nodeId }])
  t.same(of(logs.get(host.nodeId)!, 'workerStopped'), [{ name: 'w:1', ref, reason: 'handoff' }], 'workerStopped {name, ref, reason} on the old node')
  t.equal(await a.call('w:1', 'get'), 1, 'state handed over')
  t.match(await host.metrics(), /sworm_worker_handoffs_total\{sworm="ev2",node="n\d"\} 1/, 'handoff counted')

  t.ok(await a.unregisterName('w:1'))
  await waitFor(() => of(logs.get(target.nodeId)!, 'workerStopped').length === 1, 5000, 'workerStopped after unregister')
  t.same(of(logs.get(target.nodeId)!, 'workerStopped'), [{ name: 'w:1', ref: ref2, reason: 'normal' }])

  // a crash and a restart
  const r3 = await a.registerName('w:2', spec('ev2/w:2'))
  await t.rejects(a.call('w:2', 'crash'))
  const h3 = c.nodes.find((s) => s.nodeId === r3.node)!
  await waitFor(() => of(logs.get(h3.nodeId)!, 'workerStarted').filter((p) => p.name === 'w:2').length === 2, 5000, 'restarted')
  t.same(of(logs.get(h3.nodeId)!, 'workerStopped').filter((p) => p.name === 'w:2'), [{ name: 'w:2', ref: r3, reason: 'crash' }], 'reason crash')
  t.match(await h3.metrics(), /sworm_worker_restarts_total\{sworm="ev2",node="n\d"\} 1/, 'restart counted')
})

t.test('leaderChanged on every node', async (t) => {
  const c = await cluster(3, 'ev3')
  t.teardown(() => c.stop())
  const logs = c.nodes.map(record)
  const leader = c.nodes.find((s) => s.status().role === 'leader')!
  const next = c.nodes.find((s) => s !== leader)!
  await internals(leader).raft.transferLeadership(next.nodeId)
  for (const [i, log] of logs.entries()) {
    await waitFor(() => of(log, 'leaderChanged').some((p) => p.leader === next.nodeId), 5000, `${c.nodes[i]!.nodeId} sees the new leader`)
    const ev = of(log, 'leaderChanged').at(-1)!
    t.same(ev, { leader: next.nodeId, term: next.status().term }, `${c.nodes[i]!.nodeId}: leaderChanged {leader, term}`)
    t.equal(of(log, 'leaderChanged').filter((p) => p.term === ev.term).length, 1, 'once per term')
  }
})

t.test('a node cut off: leaseLost and workerStopped(lease) there; nodeDown and workerMoved elsewhere; leaseRenewed and nodeUp after healing', async (t) => {
  const c = await cluster(3, 'ev4', { leaseTimeoutMs: 800, maxClockDriftMs: 200 })
  t.teardown(() => c.stop())
  const logs = new Map(c.nodes.map((s) => [s.nodeId, record(s)]))
  const leader = c.nodes.find((s) => s.status().role === 'leader')!
  for (let i = 0; i < 6; i++) await leader.registerName(`cut:${i}`, spec(`ev4/cut:${i}`))
  const victim = c.nodes.find((s) => s !== leader && s.status().supervised > 0)!
  t.ok(victim, 'a follower runs workers')
  const others = c.nodes.filter((s) => s !== victim)
  const mine = victim.status().supervised
  await waitFor(() => victim.leaseOk(), 2000, 'the victim holds its lease')
  for (const o of others) {
    internals(victim).faults!.block(o.nodeId, true)
    internals(o).faults!.block(victim.nodeId, true)
  }
  const vlog = logs.get(victim.nodeId)!
  await waitFor(() => of(vlog, 'leaseLost').length === 1, 5000, 'leaseLost')
  t.same(of(vlog, 'leaseLost'), [{ node: victim.nodeId, workers: mine }], 'leaseLost {node, workers}')
  await waitFor(() => of(vlog, 'workerStopped').length === mine, 5000, 'fenced workers stopped')
  t.ok(of(vlog, 'workerStopped').every((p) => p.reason === 'lease'), "workerStopped with reason 'lease'")
  for (const o of others) {
    const log = logs.get(o.nodeId)!
    await waitFor(() => of(log, 'nodeDown').some((p) => p.node === victim.nodeId), 10_000, `${o.nodeId} sees nodeDown`)
    t.pass(`${o.nodeId}: nodeDown {node: ${victim.nodeId}}`)
  }
  await waitFor(
    () => others.reduce((n, o) => n + of(logs.get(o.nodeId)!, 'workerMoved').filter((p) => p.from === victim.nodeId).length, 0) === mine,
    10_000,
    'every worker moved',
  )
  for (const o of others) for (const p of of(logs.get(o.nodeId)!, 'workerMoved')) t.same(p, { name: p.name, from: victim.nodeId, to: o.nodeId }, `workerMoved ${p.name}`)
  // one lapse per leaseLost event (a heartbeat answer acknowledged just before the cut may renew the
  // lease once more on a busy machine: two lapses are right then, and both are counted)
  const expiries = Number(/sworm_lease_expiries_total\{sworm="ev4",node="n\d"\} (\d+)/.exec(await victim.metrics())?.[1])
  t.equal(expiries, of(vlog, 'leaseLost').length, `lease expiries counted (${expiries})`)
  t.match(await victim.metrics(), new RegExp(`sworm_fenced_workers_total\\{sworm="ev4",node="n\\d"\\} ${mine}`), 'fenced workers counted')
  t.match(await others[0]!.metrics(), /sworm_node_events_total\{event="down",sworm="ev4",node="n\d"\} 1/, 'node down counted')

  const upsBefore = of(logs.get(others[0]!.nodeId)!, 'nodeUp').length
  for (const o of others) {
    internals(victim).faults!.block(o.nodeId, false)
    internals(o).faults!.block(victim.nodeId, false)
  }
  await waitFor(() => of(vlog, 'leaseRenewed').length === 1, 10_000, 'leaseRenewed')
  t.same(of(vlog, 'leaseRenewed'), [{ node: victim.nodeId }], 'leaseRenewed {node}')
  await waitFor(() => of(logs.get(others[0]!.nodeId)!, 'nodeUp').length > upsBefore, 10_000, 'the node comes back')
  t.same(of(logs.get(others[0]!.nodeId)!, 'nodeUp').at(-1), { node: victim.nodeId }, 'nodeUp {node}')
})
