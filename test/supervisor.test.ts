/**
 * Supervised workers on a real 3-node cluster inside one process (real ws, real LevelDB):
 * placement, exactly-once starts, restarts per policy, bad specs, unregister, drain with handoff,
 * and fencing of a cut-off node with no overlapping incarnations.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { AlreadyRegisteredError, InvalidArgumentError, StartError, Sworm, silentLogger, type WorkerRef } from '../src/index.js'
import { factoryRuns, life, overlaps } from '../tools/cluster/workers.js'
import { freePorts, tempDir, waitFor, startSworms, TEST_SECRET } from './helpers.js'
import { internals } from '../src/internal.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))
const SECRET = TEST_SECRET // the secret of startSworms' clusters
const spec = (name: string, extra: Record<string, unknown> = {}) => ({ module: WORKERS, fn: 'counter', args: [name], ...extra })

const cluster = (n: number, name: string, opts: Record<string, unknown> = {}) => startSworms(n, name, opts)

t.test('registerName(name, spec) starts the worker once, on a node chosen by the registry', async (t) => {
  const c = await cluster(3, 'sup1')
  t.teardown(() => c.stop())
  const [a, b, cc] = c.nodes as [Sworm, Sworm, Sworm]
  const ref = await b.registerName('counter:1', spec('sup1/counter:1'))
  t.ok(ref.node, `placed on ${ref.node}`)
  t.same(b.whereisName('counter:1'), ref, 'read your writes')
  t.equal(await a.call('counter:1', 'inc'), 1)
  t.equal(await cc.call('counter:1', 'inc'), 2)
  const err = await b.registerName('counter:1', spec('sup1/counter:1')).catch((e: unknown) => e)
  t.ok(err instanceof AlreadyRegisteredError, 'AlreadyRegisteredError')
  t.same((err as AlreadyRegisteredError).ref, ref, 'carrying the existing ref')
  // spread by load: 9 more names land on every node
  const refs: WorkerRef[] = []
  for (let i = 0; i < 9; i++) refs.push(await a.registerName(`spread:${i}`, spec(`sup1/spread:${i}`)))
  const perNode = new Map<string, number>()
  for (const r of [ref, ...refs]) perNode.set(r.node, (perNode.get(r.node) ?? 0) + 1)
  t.equal(perNode.size, 3, `every node got workers: ${JSON.stringify([...perNode])}`)
})

t.test('whereisOrRegisterName from every node at once: one factory run per name, one ref', async (t) => {
  const c = await cluster(3, 'sup2')
  t.teardown(() => c.stop())
  const names = Array.from({ length: 20 }, (_, i) => `once:${i}`)
  const calls: Array<Promise<[string, WorkerRef]>> = []
  for (const name of names) {
    for (let k = 0; k < 10; k++) {
      const s = c.nodes[k % 3]!
      calls.push(s.whereisOrRegisterName(name, spec(`sup2/${name}`)).then((r) => [name, r]))
    }
  }
  const res = await Promise.all(calls)
  for (const name of names) {
    const refs = new Set(res.filter(([n]) => n === name).map(([, r]) => JSON.stringify(r)))
    t.equal(refs.size, 1, `${name}: all 10 callers got the same ref`)
    t.equal(factoryRuns.get(`sup2/${name}`), 1, `${name}: the factory ran once`)
  }
})

t.test('restarts follow the policy; give up after too many; unregister stops the worker', async (t) => {
  const c = await cluster(3, 'sup3')
  t.teardown(() => c.stop())
  const [a] = c.nodes as [Sworm]
  const ref = await a.registerName('r:transient', spec('sup3/t'))
  await a.call('r:transient', 'inc')
  await t.rejects(a.call('r:transient', 'crash'))
  await waitFor(async () => {
    const r = await a.whereisName('r:transient', { consistent: true })
    return r !== undefined && r.id !== ref.id
  }, 5000, 'a new incarnation')
  const ref2 = (await a.whereisName('r:transient', { consistent: true }))!
  t.equal(ref2.node, ref.node, 'restarted on the same node')
  t.equal(await a.call('r:transient', 'get'), 0, 'fresh state')

  await a.registerName('r:temporary', spec('sup3/tmp', { restart: 'temporary' }))
  await t.rejects(a.call('r:temporary', 'reject'))
  await waitFor(async () => (await a.whereisName('r:temporary', { consistent: true })) === undefined, 5000, 'temporary not restarted')
  t.pass('a temporary worker that crashed is removed')

  const p = await a.registerName('r:permanent', spec('sup3/perm', { restart: 'permanent', maxRestarts: 2, maxSeconds: 60 }))
  void p
  for (let i = 0; i < 2; i++) {
    const before = (await a.whereisName('r:permanent', { consistent: true }))!
    await t.rejects(a.call('r:permanent', 'crash'))
    await waitFor(async () => {
      const r = await a.whereisName('r:permanent', { consistent: true })
      return r !== undefined && r.id !== before.id
    }, 5000, `restart ${i + 1}`)
  }
  await t.rejects(a.call('r:permanent', 'crash'))
  await waitFor(async () => (await a.whereisName('r:permanent', { consistent: true })) === undefined, 5000, 'given up')
  t.pass('gave up after maxRestarts in maxSeconds; the name is removed')

  const before = life.filter((e) => e.name === 'sup3/t' && e.event === 'stop').length
  t.equal(await a.unregisterName('r:transient'), true)
  await waitFor(() => life.filter((e) => e.name === 'sup3/t' && e.event === 'stop').length === before + 1, 5000, 'terminate ran')
  t.equal(a.whereisName('r:transient'), undefined)
})

t.test('bad specs: typed rejections, nothing left in the registry', async (t) => {
  const c = await cluster(3, 'sup4')
  t.teardown(() => c.stop())
  const [a, b] = c.nodes as [Sworm, Sworm]
  const bad: Array<[string, Record<string, unknown>]> = [
    ['missing-module', { module: './no/such/module.js', fn: 'x', args: [] }],
    ['missing-export', { module: WORKERS, fn: 'nope', args: [] }],
    ['throws', { module: WORKERS, fn: 'failing', args: [] }],
    ['rejects', { module: WORKERS, fn: 'rejecting', args: [] }],
    ['not-a-worker', { module: WORKERS, fn: 'notAWorker', args: [] }],
  ]
  for (const [name, s] of bad) {
    const err = await a.registerName(name, s as never).catch((e: unknown) => e)
    t.ok(err instanceof StartError, `${name}: StartError (${String(err)})`)
    t.equal(await b.whereisName(name, { consistent: true }), undefined, `${name}: not registered`)
  }
  const circular: Record<string, unknown> = {}
  circular.self = circular
  await t.rejects(a.registerName('bad-args', { module: WORKERS, fn: 'counter', args: [circular] }), InvalidArgumentError)
  await t.rejects(a.registerName('bad-spec', { module: '', fn: 'x', args: [] }), InvalidArgumentError)
  await t.rejects(a.registerName('bad-restart', { module: WORKERS, fn: 'counter', args: [], restart: 'sometimes' } as never), InvalidArgumentError)
  t.equal(a.registered().length, 0, 'nothing left behind')
})

t.test('drain moves workers with their state, exactly once; groups and aliases follow', async (t) => {
  const c = await cluster(3, 'sup5')
  t.teardown(() => c.stop())
  const [a, b] = c.nodes as [Sworm, Sworm]
  const refs: WorkerRef[] = []
  for (let i = 0; i < 12; i++) refs.push(await a.registerName(`d:${i}`, spec(`sup5/d:${i}`)))
  const onB = refs.map((r, i) => [r, i] as const).filter(([r]) => r.node === 'n2')
  t.ok(onB.length > 0, `${onB.length} workers on n2`)
  for (const [, i] of onB) for (let k = 0; k <= i; k++) await a.call(`d:${i}`, 'inc')
  const [first] = onB[0]!
  const firstName = `d:${onB[0]![1]}`
  await a.join('team', first)
  t.ok(await a.registerName(`alias:${firstName}`, first), 'an alias of a supervised worker')
  await b.drain()
  for (const [, i] of onB) {
    const r = (await a.whereisName(`d:${i}`, { consistent: true }))!
    t.not(r.node, 'n2', `d:${i} moved off n2`)
    t.equal(await a.call(`d:${i}`, 'get'), i + 1, `d:${i} kept its count`)
    t.same(await a.call(`d:${i}`, 'handedIn'), { n: i + 1 }, `d:${i}: endHandoff got the state`)
  }
  const moved = (await a.whereisName(firstName, { consistent: true }))!
  t.same(a.whereisName(`alias:${firstName}`), moved, 'the alias follows the worker')
  t.same(a.members('team'), [moved], 'the group follows the worker')
  t.same(overlaps(life.filter((e) => e.name.startsWith('sup5/'))), [], 'no two incarnations overlapped')
  const n = await a.registerName('after-drain', spec('sup5/after'))
  t.not(n.node, 'n2', 'a draining node takes no new workers')
  await b.undrain()
})

t.test('a node cut off from the cluster fences its workers; they run again on the majority, never twice', async (t) => {
  const opts = { leaseTimeoutMs: 800, maxClockDriftMs: 200 }
  const c = await cluster(3, 'sup6', opts)
  t.teardown(() => c.stop())
  const [a] = c.nodes as [Sworm]
  const refs: WorkerRef[] = []
  for (let i = 0; i < 15; i++) refs.push(await a.registerName(`f:${i}`, spec(`sup6/f:${i}`)))
  const victim = c.nodes.find((s) => s.status().role !== 'leader')!
  const others = c.nodes.filter((s) => s !== victim)
  const mine = refs.filter((r) => r.node === victim.nodeId)
  t.ok(mine.length > 0, `${mine.length} workers on ${victim.nodeId}`)
  // cut the victim off in both directions
  for (const o of others) {
    internals(victim).faults!.block(o.nodeId, true)
    internals(o).faults!.block(victim.nodeId, true)
  }
  const t0 = performance.now()
  await waitFor(() => victim.status().workers === 0, 5000, 'the cut-off node fences its workers')
  t.comment(`fenced after ${(performance.now() - t0).toFixed(0)} ms`)
  for (let i = 0; i < 15; i++) {
    await waitFor(async () => {
      const r = await others[0]!.whereisName(`f:${i}`, { consistent: true }).catch(() => undefined)
      return r !== undefined && r.node !== victim.nodeId
    }, 10_000, `f:${i} runs on the majority`)
  }
  t.comment(`all workers back after ${(performance.now() - t0).toFixed(0)} ms`)
  for (let i = 0; i < 15; i++) t.ok(await others[0]!.call(`f:${i}`, 'get').then(() => true), `f:${i} answers`)
  for (const o of others) {
    internals(victim).faults!.block(o.nodeId, false)
    internals(o).faults!.block(victim.nodeId, false)
  }
  await waitFor(() => victim.registered().length >= 15, 10_000, 'the healed node catches up')
  t.same(overlaps(life.filter((e) => e.name.startsWith('sup6/'))), [], 'no two incarnations ever overlapped')
})

t.test('a node joining with rebalance: true takes its share of existing workers, with their state', async (t) => {
  const c = await cluster(2, 'sup7')
  const [a] = c.nodes as [Sworm]
  for (let i = 0; i < 12; i++) {
    await a.registerName(`rb:${i}`, spec(`sup7/rb:${i}`))
    await a.call(`rb:${i}`, 'inc')
  }
  const [port] = await freePorts(1)
  const { dir, cleanup } = tempDir()
  const late = await Sworm.start({
    name: 'sup7',
    nodeId: 'n9',
    listen: `ws://127.0.0.1:${port}`,
    join: internals(a).raft.status().config.voters.n1!,
    dataDir: `${dir}/n9`,
    secret: SECRET,
    logger: silentLogger,
    rebalance: true,
  })
  t.teardown(async () => {
    await late.stop()
    await c.stop()
    cleanup()
  })
  await waitFor(() => late.status().supervised === 4, 15_000, 'n9 runs a third of the workers')
  for (let i = 0; i < 12; i++) t.equal(await a.call(`rb:${i}`, 'get'), 1, `rb:${i} kept its state`)
  t.same(overlaps(life.filter((e) => e.name.startsWith('sup7/'))), [], 'no overlap while moving')
})

t.test('followers keep their lease (and their workers) across a leader change', async (t) => {
  // The lease must outlast an election: up to two election timeouts (300-600 ms each with the
  // default ticks) and the new leader's first quorum round. Workers now stop right at the lease's
  // end (a timer), so 800 ms, which the later supervisor tick used to stretch, is too short, and
  // 1,600 ms was too, once in CI (both followers fenced for about 400 ms at the leader change, on
  // b82e6d6): the library's defaults, 2,000 ms and a drift of 500 ms.
  const opts = { leaseTimeoutMs: 2000, maxClockDriftMs: 500 }
  const c = await cluster(3, 'sup8', opts)
  t.teardown(() => c.stop())
  const [a] = c.nodes as [Sworm]
  for (let i = 0; i < 9; i++) await a.registerName(`k:${i}`, spec(`sup8/k:${i}`))
  const leader = c.nodes.find((s) => s.status().role === 'leader')!
  const others = c.nodes.filter((s) => s !== leader)
  const before = new Map<string, unknown>()
  // (the followers that host some: a follower may host none of the 9. CI saw n3 run none through
  // the whole check on d5f7b00, with its lease held and every worker kept: the check was wrong)
  const hosts = new Set<string>()
  for (let i = 0; i < 9; i++) {
    const ref = (await others[0]!.whereisName(`k:${i}`, { consistent: true }))!
    if (ref.node === leader.nodeId) continue
    before.set(`k:${i}`, await others[0]!.call(`k:${i}`, 'incarnation'))
    hosts.add(ref.node)
  }
  // many heartbeat rounds under the old leader, then cut it off
  await new Promise((r) => setTimeout(r, 1500))
  for (const o of others) {
    internals(leader).faults!.block(o.nodeId, true)
    internals(o).faults!.block(leader.nodeId, true)
  }
  await waitFor(() => others.some((o) => o.status().role === 'leader'), 5000, 'a new leader')
  const deadline = performance.now() + 3 * opts.leaseTimeoutMs
  while (performance.now() < deadline) {
    for (const o of others) if (hosts.has(o.nodeId)) t.equal(o.status().supervised > 0, true, `${o.nodeId} still runs its workers`)
    await new Promise((r) => setTimeout(r, 100))
  }
  for (const o of others) t.ok(o.leaseOk(), `${o.nodeId} holds its lease under the new leader`)
  for (const [name, inc] of before) t.equal(await others[0]!.call(name, 'incarnation'), inc, `${name} was never restarted`)
  for (const o of others) {
    internals(leader).faults!.block(o.nodeId, false)
    internals(o).faults!.block(leader.nodeId, false)
  }
})
