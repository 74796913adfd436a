/**
 * The public registry API on a real 3-node cluster inside one process (real ws, real LevelDB):
 * every row of the API table, the guarantees, and bad input.
 */
import t from 'tap'
import { InvalidArgumentError, NoWorkerError, NotFoundError, ShuttingDownError, Sworm, TimeoutError, WorkerCrashedError, silentLogger } from '../src/index.js'
import type { WorkerRef } from '../src/index.js'
import { freePorts, tempDir, waitFor, startSworms, TEST_SECRET } from './helpers.js'
import { internals } from '../src/internal.js'
import { resolveOptions } from '../src/options.js'
import { isAbsolute, resolve as resolvePath } from 'node:path'

const SECRET = TEST_SECRET // the secret of startSworms' clusters

const startCluster = (n: number, name = 'procs', extra: Partial<Parameters<typeof Sworm.start>[0]> = {}) => startSworms(n, name, extra)

const echo = (tag: string) => ({
  handleCall: (msg: unknown) => ({ tag, msg }),
})

t.test('registry API on 3 nodes', async (t) => {
  const c = await startCluster(3)
  t.teardown(() => c.stop())
  const [a, b, cc] = c.nodes as [Sworm, Sworm, Sworm]

  const ref = a.spawn(echo('a1'))
  t.equal(await a.registerName('user:1', ref), true, 'registerName resolves true')
  t.same(a.whereisName('user:1'), ref, 'read your writes on the calling node')
  t.equal(await b.registerName('user:1', b.spawn(echo('b1'))), false, 'taken anywhere: false')
  t.same(await cc.whereisName('user:1', { consistent: true }), ref, 'consistent read on another node')
  await waitFor(() => b.whereisName('user:1') !== undefined, 2000, 'b sees the name')

  t.same(await b.call('user:1', 'hi'), { tag: 'a1', msg: 'hi' }, 'call routed to the node that runs the worker')
  t.same(await a.call('user:1', 'local'), { tag: 'a1', msg: 'local' }, 'local call')

  const got: unknown[] = []
  const r2 = b.spawn({ handleCast: (m: unknown) => void got.push(m) })
  t.equal(await b.registerName('sink', r2), true)
  await waitFor(() => a.whereisName('sink') !== undefined, 2000)
  await a.send('sink', 1)
  await a.send('sink', 2)
  await a.send('sink', 3)
  await waitFor(() => got.length === 3, 2000, 'casts delivered')
  t.same(got, [1, 2, 3], 'in order')

  await a.join('online', ref)
  await b.join('online', r2)
  t.same(new Set(b.members('online').map((r) => r.id + r.node)), new Set([ref.id + ref.node, r2.id + r2.node]), 'the joining node reads its writes')
  await waitFor(() => cc.members('online').length === 2, 2000, 'c sees the group')
  await b.leave('online', r2)
  t.equal(b.members('online').length, 1)
  const stranger = a.spawn(echo('x'))
  await t.rejects(a.join('online', stranger), NotFoundError, 'join of an unregistered ref')
  await t.rejects(a.leave('online', stranger), NotFoundError)

  t.equal(a.registered().length, 2)
  t.equal(await a.unregisterName('sink'), true)
  t.equal(await a.unregisterName('sink'), false, 'unknown name: false')
  t.equal(a.whereisName('sink'), undefined)
  await t.rejects(a.call('sink', 1), NoWorkerError)
  await t.rejects(a.call('nobody', 1), NoWorkerError)
})

t.test('20 concurrent registerName of one name from every node: exactly one wins', async (t) => {
  const c = await startCluster(3)
  t.teardown(() => c.stop())
  const attempts: Array<Promise<{ ok: boolean; ref: WorkerRef }>> = []
  for (const s of c.nodes) {
    for (let i = 0; i < 20; i++) {
      const ref = s.spawn(echo(`${s.nodeId}-${i}`))
      attempts.push(s.registerName('the-one', ref).then((ok) => ({ ok, ref })))
    }
  }
  const res = await Promise.all(attempts)
  const winners = res.filter((r) => r.ok)
  t.equal(winners.length, 1, 'one winner among 60')
  for (const s of c.nodes) t.same(await s.whereisName('the-one', { consistent: true }), winners[0]!.ref)
})

t.test("a static worker's name vanishes everywhere when it ends or crashes", async (t) => {
  const c = await startCluster(3)
  t.teardown(() => c.stop())
  const [a, b] = c.nodes as [Sworm, Sworm]
  let terminated = ''
  const ref = a.spawn({
    handleCall: (m: unknown) => {
      if (m === 'boom') throw new Error('boom')
      return 'ok'
    },
    terminate: (reason: string) => void (terminated = reason),
  })
  t.ok(await a.registerName('w', ref))
  t.ok(await a.registerName('w-alias', ref))
  await a.join('g', ref)
  await waitFor(() => b.whereisName('w') !== undefined, 2000)
  await t.rejects(b.call('w', 'boom'), WorkerCrashedError, 'the caller sees the crash')
  await waitFor(() => b.whereisName('w') === undefined && b.whereisName('w-alias') === undefined, 5000, 'names gone on b')
  t.equal(b.members('g').length, 0, 'group membership gone')
  t.equal(terminated, 'crash', 'terminate ran')

  const ref2 = a.spawn(echo('2'))
  t.ok(await a.registerName('w2', ref2))
  await a.exit(ref2)
  await waitFor(() => b.whereisName('w2') === undefined, 5000, 'exit removes the name')
  await t.rejects(a.registerName('w3', ref2), NoWorkerError, 'a dead ref cannot take a name')
})

t.test('names of a node that stops or dies vanish from the others', async (t) => {
  const c = await startCluster(3, 'procs', { leaseTimeoutMs: 800, maxClockDriftMs: 200 })
  t.teardown(() => c.stop())
  const [a, b, cc] = c.nodes as [Sworm, Sworm, Sworm]
  t.ok(await cc.registerName('on-c', cc.spawn(echo('c'))))
  await waitFor(() => a.whereisName('on-c') !== undefined, 2000)
  await cc.stop()
  await waitFor(() => a.whereisName('on-c') === undefined && b.whereisName('on-c') === undefined, 10_000, 'names of a stopped node gone')
  t.pass('graceful stop removed the names')
})

t.test("a graceful stop drops all its static names in one entry, before the others could declare it gone", async (t) => {
  // a lease of 30 s: the names can only vanish in the wait below through the stop itself
  const c = await startCluster(3, 'procs', { leaseTimeoutMs: 30_000 })
  t.teardown(() => c.stop())
  const [a, , cc] = c.nodes as [Sworm, Sworm, Sworm]
  const N = 3000
  for (let i = 0; i < N; i += 100) {
    const batch = await Promise.all(Array.from({ length: 100 }, (_, k) => cc.registerName(`many-${i + k}`, cc.spawn(echo('c')))))
    if (batch.some((ok) => !ok)) t.fail('a registration failed')
  }
  t.ok(await a.registerName('on-a', a.spawn(echo('a'))))
  await waitFor(() => a.registered().length === N + 1, 10_000, 'a sees every name')
  const before = internals(a).raft.status().commit
  await cc.stop()
  await waitFor(() => a.registered().length === 1, 10_000, "c's names gone from a")
  const entries = internals(a).raft.status().commit - before
  t.ok(entries < 50, `the stop took ${entries} entries for ${N} names (one per worker before)`)
  t.same(a.registered().map(([n]) => n), ['on-a'], "a's own name stays")
})

t.test('several sworms in one cluster share ports and see only their own names', async (t) => {
  const { dir, cleanup } = tempDir()
  const ports = await freePorts(3)
  const peers = Object.fromEntries(ports.map((p, i) => [`n${i + 1}`, `ws://127.0.0.1:${p}`]))
  const start = (name: string) =>
    Promise.all(Object.entries(peers).map(([nodeId, listen]) => Sworm.start({ name, nodeId, listen, peers, dataDir: `${dir}/${nodeId}`, secret: SECRET, logger: silentLogger })))
  const s1 = await start('alpha')
  const s2 = await start('beta')
  t.teardown(async () => {
    await Promise.all([...s1, ...s2].map((s) => s.stop()))
    cleanup()
  })
  t.ok(await s1[0]!.registerName('x', s1[0]!.spawn(echo('alpha'))))
  t.ok(await s2[1]!.registerName('x', s2[1]!.spawn(echo('beta'))), 'same name in another sworm')
  await waitFor(() => s1[2]!.whereisName('x') !== undefined && s2[0]!.whereisName('x') !== undefined, 5000, 'replicas see x')
  t.same(await s1[2]!.call('x', 1), { tag: 'alpha', msg: 1 })
  t.same(await s2[0]!.call('x', 1), { tag: 'beta', msg: 1 })
  await t.rejects(s1[0]!.registerName('y', s2[0]!.spawn(echo('b'))), InvalidArgumentError, 'a ref from another sworm')
})

t.test('bad input rejects with typed errors and changes nothing', async (t) => {
  const c = await startCluster(1, 'solo')
  t.teardown(() => c.stop())
  const [a] = c.nodes as [Sworm]
  const ref = a.spawn(echo('x'))
  const bad = [42, null, undefined, {}, 'x'.repeat(2000)]
  for (const name of bad) await t.rejects(a.registerName(name as string, ref), InvalidArgumentError, `registerName(${String(name).slice(0, 10)})`)
  await t.rejects(a.registerName('ok', { sworm: 'solo', node: 'n1' } as unknown as WorkerRef), InvalidArgumentError, 'not a ref')
  t.throws(() => a.whereisName(7 as unknown as string), InvalidArgumentError)
  await t.rejects(a.whereisName(7 as unknown as string, { consistent: true }), InvalidArgumentError)
  t.ok(await a.registerName('big', ref))
  await t.rejects(a.send('big', 'x'.repeat(2 * 1024 * 1024)), InvalidArgumentError, 'oversized message')
  const circular: Record<string, unknown> = {}
  circular.self = circular
  await t.rejects(a.call('big', circular), InvalidArgumentError, 'unencodable message')
  const slow = a.spawn({ handleCall: () => new Promise(() => {}) })
  t.ok(await a.registerName('slow', slow))
  await t.rejects(a.call('slow', 1, { timeout: 50 }), TimeoutError)
  t.equal(a.registered().length, 2, 'nothing else was registered')
  await a.stop()
  await t.rejects(a.registerName('late', ref), ShuttingDownError, 'after stop')
  await t.rejects(a.call('big', 1), ShuttingDownError)
})

t.test('Sworm.start validates options and names the bad one', async (t) => {
  const base = { name: 's', nodeId: 'n1', listen: 'ws://127.0.0.1:1', dataDir: '/tmp/x', secret: SECRET }
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ ...base, name: '' }, /"name"/],
    [{ ...base, nodeId: 3 }, /"nodeId"/],
    [{ ...base, listen: 'http://x:1' }, /"listen"/],
    [{ ...base, listen: 'ws://x' }, /"listen"/],
    [{ ...base, secret: 'short' }, /"secret"/],
    [{ ...base, secret: 'test-secret-123' }, /"secret" must have at least 32 characters, not 15/],
    [{ ...base, secret: 'ab'.repeat(20) }, /"secret" must have at least 8 distinct characters, not 2/],
    [{ ...base, secret: 42 }, /"secret" must be a string/],
    [{ ...base, peers: { n2: 'ws://127.0.0.1:2' } }, /"peers"/],
    [{ ...base, peers: 'x' }, /"peers"/],
    [{ ...base, callTimeoutMs: -1 }, /"callTimeoutMs"/],
    [{ ...base, raft: { tickMs: 0 } }, /"tickMs"/],
    [{ ...base, raft: { learnerPaceMs: -1 } }, /"learnerPaceMs"/],
    [{ ...base, raft: { learnerPaceMs: 5000 } }, /"learnerPaceMs" must be at most 1000/],
    [{ ...base, raft: { maxInflightEntries: 0 } }, /"maxInflightEntries"/],
    [{ ...base, raft: { maxInflightEntries: 1.5 } }, /"maxInflightEntries" must be an integer/],
    // (found by review, session 24: accepted before, and no node ever held a lease)
    [{ ...base, leaseTimeoutMs: 1000, maxClockDriftMs: 5000 }, /lease window of 41\.7 ms, less than two heartbeats \(100 ms\)/],
    [{ ...base, raft: { electionTicks: 2 } }, /"raft.electionTicks" \(2\) leave the leader a lease window/],
  ]
  for (const [opts, re] of cases) await t.rejects(Sworm.start(opts as unknown as Parameters<typeof Sworm.start>[0]), { name: 'TypeError', message: re })
})

t.test('a relative moduleBase is made absolute once, at start (a later chdir changes nothing)', async (t) => {
  const base = { name: 's', nodeId: 'n1', listen: 'ws://127.0.0.1:1', dataDir: '/tmp/x', secret: SECRET }
  const o = resolveOptions({ ...base, moduleBase: 'workers' })
  t.equal(o.moduleBase, resolvePath('workers'))
  t.ok(isAbsolute(o.moduleBase))
  t.equal(resolveOptions(base).moduleBase, process.cwd(), 'default: the current directory')
})

t.test('raft.maxInflightEntries reaches the Raft core (default 512)', async (t) => {
  const c = await startSworms(1, 'inflight', { raft: { maxInflightEntries: 4096 } })
  t.teardown(() => c.stop())
  const core = (c.nodes[0]!.raftNode as unknown as { core: { maxInflightEntries: number } }).core
  t.equal(core.maxInflightEntries, 4096)
  t.equal(resolveOptions({ name: 's', nodeId: 'n1', listen: 'ws://127.0.0.1:1', dataDir: '/tmp/x', secret: SECRET }).raft.maxInflightEntries, 512)
})

t.test('a node that joins later (join: url) sees every name and takes part', async (t) => {
  const c = await startCluster(3, 'late')
  const [a] = c.nodes as [Sworm]
  for (let i = 0; i < 50; i++) t.ok(await a.registerName(`early:${i}`, a.spawn(echo(`e${i}`))))
  const [port] = await freePorts(1)
  const d = await Sworm.start({
    name: 'late',
    nodeId: 'n4',
    listen: `ws://127.0.0.1:${port}`,
    join: c.peers.n2!,
    dataDir: `${c.dir}/n4`,
    secret: SECRET,
    logger: silentLogger,
  })
  t.teardown(async () => {
    await d.stop()
    await c.stop()
  })
  const cfg = internals(d).raft.status().config
  t.ok(cfg.learners.n4 ?? cfg.voters.n4, 'n4 is a member once start resolves (a learner at first)')
  // fewer nodes than the voters wanted (5): the leader's autopilot promotes it once it is stable
  await waitFor(() => internals(d).raft.status().config.voters.n4 !== undefined, 20_000, 'n4 becomes a voter')
  await waitFor(() => d.registered().length === 50, 5000, 'n4 sees every name')
  t.same(await d.call('early:7', 'x'), { tag: 'e7', msg: 'x' }, 'n4 reaches workers on other nodes')
  t.ok(await d.registerName('from-n4', d.spawn(echo('d'))))
  await waitFor(() => a.whereisName('from-n4') !== undefined, 5000, 'n1 sees the name')
  t.same(await a.call('from-n4', 'y'), { tag: 'd', msg: 'y' }, 'others reach workers on n4')
})

t.test('a normal start of 3 nodes logs no warning', async (t) => {
  // Failed on 31bf3a6: "message for unknown group dropped" on every start (a peer's message
  // reached a channel whose sworm was still starting).
  const warns: string[] = []
  let listening = true
  const note = (msg: string): void => void (listening && warns.push(msg))
  const logger = { ...silentLogger, warn: note, error: note }
  for (let round = 0; round < 3 && warns.length === 0; round++) {
    listening = true
    const c = await startSworms(3, `quiet${round}`, { logger })
    const ref = c.nodes[0]!.spawn({ handleCall: () => 1 })
    t.equal(await c.nodes[0]!.registerName(`q${round}`, ref), true)
    await waitFor(() => c.nodes.every((s) => s.whereisName(`q${round}`) !== undefined), 10_000, 'every node sees the name')
    // (stopping a whole cluster at once warns about the leadership transfer: issue #14, not this test)
    listening = false
    await c.stop()
  }
  t.same(warns, [], 'no warning or error line')
})
