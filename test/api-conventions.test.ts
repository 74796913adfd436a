/**
 * What a Node developer expects of the API (issue #14): group messaging as in Swarm (`publish`,
 * `multiCall`), a fast `stop({ drain: false })`, and `await using` through `Symbol.asyncDispose`.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { Sworm, type WorkerRef } from '../src/index.js'
import { silentLogger } from '../src/raft/types.js'
import { freePorts, startSworms, tempDir, TEST_SECRET, waitFor } from './helpers.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))

t.test('publish casts to every member of a group; multiCall calls them all and says how each went', async (t) => {
  const c = await startSworms(3, 'grp')
  t.teardown(() => c.stop())
  const got: Array<[number, unknown]> = []
  const refs: WorkerRef[] = []
  for (const [i, s] of c.nodes.entries()) {
    const ref = s.spawn({
      handleCast: (m) => void got.push([i, m]),
      handleCall: (m) => {
        if (m === 'boom' && i === 1) throw new Error('member 1 fails')
        return { from: i, m }
      },
    })
    t.equal(await s.registerName(`member:${i}`, ref), true)
    await s.join('room', ref)
    refs.push(ref)
  }
  const a = c.nodes[0]!
  await waitFor(() => a.members('room').length === 3, 10_000, 'n1 sees the 3 members')
  t.equal(await a.publish('room', 'hello'), 3, 'sent to 3 members')
  await waitFor(() => got.length === 3, 10_000, 'every member got the cast')
  t.same(got.map(([i]) => i).sort(), [0, 1, 2])
  t.equal(await a.publish('empty-room', 'x'), 0, 'a group without members: sent to none')

  const replies = await a.multiCall<{ from: number }>('room', 'ping', { timeout: 5000 })
  t.same(
    replies.map((r) => (r.ok ? r.value.from : -1)).sort(),
    [0, 1, 2],
    'one reply per member',
  )
  const mixed = await a.multiCall('room', 'boom')
  const failed = mixed.filter((r) => !r.ok)
  t.equal(failed.length, 1, 'one member failed')
  t.equal(failed[0]!.ok ? undefined : failed[0]!.error.code, 'WORKER_CRASHED', 'with its error')
  t.same(failed[0]!.ref, refs[1], 'and its ref')
  t.equal(mixed.filter((r) => r.ok).length, 2, 'the others answered')
  await t.rejects(a.multiCall('room', () => 1), { code: 'INVALID_ARGUMENT' }, 'a message that cannot travel is refused')
})

t.test('stop({ drain: false }) stops at once; the others restart its supervised workers', async (t) => {
  const c = await startSworms(3, 'faststop')
  t.teardown(() => c.stop())
  const [a] = c.nodes as [Sworm]
  for (let i = 0; i < 9; i++) await a.registerName(`fs:${i}`, { module: WORKERS, fn: 'counter', args: [`faststop/fs:${i}`] })
  const victim = c.nodes.find((s) => s !== a && s.status().supervised > 0)
  if (!victim) throw new Error('no other node holds a worker')
  const held = a.registered().filter(([n, r]) => n.startsWith('fs:') && r.node === victim.nodeId).map(([n]) => n)
  for (const n of held) t.equal(await a.call(n, 'inc'), 1, `${n} counts 1`)
  await victim.stop({ drain: false })
  t.equal(victim.status().supervised, 0, 'its workers stopped')
  const movedAway = (n: string): boolean => {
    const r = a.whereisName(n)
    return r !== undefined && r.node !== victim.nodeId
  }
  await waitFor(() => held.every(movedAway), 30_000, 'its workers run on the other nodes')
  for (const n of held) t.equal(await a.call(n, 'get', { timeout: 10_000 }), 0, `${n} restarted (without handoff state: a stop without drain hands nothing over)`)
  await t.rejects(async () => a.stop({ drain: 'no' as unknown as boolean }), { code: 'INVALID_ARGUMENT' }, 'a bad option is refused')
})

t.test('await using stops the sworm when the scope ends', async (t) => {
  const { dir, cleanup } = tempDir()
  t.teardown(cleanup)
  const [port] = await freePorts(1)
  const listen = `ws://127.0.0.1:${port}`
  let outer: Sworm | undefined
  {
    await using s = await Sworm.start({ name: 'disposed', nodeId: 'n1', listen, peers: { n1: listen }, dataDir: dir, secret: TEST_SECRET, logger: silentLogger })
    outer = s
    await s.ready()
    t.equal(await s.registerName('x', s.spawn({})), true, 'it runs in the scope')
  }
  t.throws(() => outer!.registered(), { code: 'SHUTTING_DOWN' }, 'and is stopped after it')
})

t.test('stop() called twice waits for the one stop (found by review of 95ce90b: the second ran the teardown again, and resolved before the first had finished)', async (t) => {
  const c = await startSworms(1, 'twostops')
  t.teardown(() => c.stop())
  const s = c.nodes[0]!
  const first = s.stop()
  const second = s.stop({ drain: false })
  t.equal(second, first, 'the same stop')
  await first
  t.equal(await s.stop(), undefined, 'and once stopped, stop() resolves at once')
})

t.test('a graceful stop is logged on the others as such, not as a node declared gone', async (t) => {
  // Before: every graceful stop logged the warning "node declared gone" on the other nodes (#14).
  const lines: Array<[string, string, unknown]> = []
  const at = (level: string) => (msg: string, fields?: unknown) => void lines.push([level, msg, fields])
  const logger = { ...silentLogger, info: at('info'), warn: at('warn'), error: at('error') }
  const c = await startSworms(3, 'politestop', { logger })
  t.teardown(() => c.stop())
  const [a, , leaving] = c.nodes as [Sworm, Sworm, Sworm]
  await leaving.ready()
  await leaving.stop()
  await waitFor(() => a.statusReport().nodes.some((n) => n.node === leaving.nodeId && !n.up), 30_000, 'n3 declared gone')
  const about = lines.filter(([, msg, f]) => /gone/.test(msg) && (f as { peer?: string } | undefined)?.peer === leaving.nodeId)
  t.ok(about.length > 0, 'its going was logged')
  t.same(about.filter(([level]) => level !== 'info').map(([level, msg]) => `${level}: ${msg}`), [], `as info: ${about.map(([, msg]) => msg).join('; ')}`)
})

t.test('a worker gets its context: its name, a fencing token that only grows, and a signal aborted when it must stop', async (t) => {
  const g = globalThis as unknown as { __swormContexts?: Array<{ name: string | undefined; fencingToken: number | undefined; signal: AbortSignal }> }
  g.__swormContexts = []
  const seen = g.__swormContexts
  const c = await startSworms(3, 'ctx')
  t.teardown(() => c.stop())
  const [a, b] = c.nodes as [Sworm, Sworm]
  const spec = { module: WORKERS, fn: 'contextual', args: [], restart: 'permanent' as const }
  await a.registerName('job', spec)
  t.equal(seen.length, 1, 'init ran once')
  t.equal(seen[0]!.name, 'job', 'with the name')
  t.ok(typeof seen[0]!.fencingToken === 'number', `and a fencing token (${seen[0]!.fencingToken})`)
  await t.rejects(a.call('job', 'crash'), { code: 'WORKER_CRASHED' })
  t.equal(seen[0]!.signal.aborted, true, 'the crashed incarnation’s signal is aborted')
  t.equal(seen[0]!.signal.reason, 'crash', 'with the reason')
  await waitFor(() => seen.length === 2 && a.whereisName('job') !== undefined, 10_000, 'restarted')
  t.ok(seen[1]!.fencingToken! > seen[0]!.fencingToken!, `the restart has a higher token (${seen[1]!.fencingToken})`)
  // moved by a drain of its node: the old one's signal says why, the new one's token is higher
  const host = c.nodes.find((s) => s.nodeId === a.whereisName('job')!.node)!
  await host.drain()
  await waitFor(() => seen.length === 3 && a.whereisName('job') !== undefined, 10_000, 'moved')
  t.equal(seen[1]!.signal.reason, 'handoff', 'moved away: aborted with handoff')
  t.ok(seen[2]!.fencingToken! > seen[1]!.fencingToken!, `higher again after the move (${seen[2]!.fencingToken})`)
  await host.undrain()
  // unregistered, then registered again: a new registration, and still a higher token
  t.equal(await b.unregisterName('job'), true)
  await waitFor(() => seen[2]!.signal.aborted, 10_000, 'the unregistered worker is told')
  t.equal(seen[2]!.signal.reason, 'normal')
  await b.registerName('job', spec)
  await waitFor(() => seen.length === 4, 10_000, 'the new registration started')
  t.ok(seen[3]!.fencingToken! > seen[2]!.fencingToken!, `a new registration of the name has a higher token too (${seen[3]!.fencingToken})`)

  // a spawned worker: no name or token, a signal aborted when it exits
  let ctx: { name: string | undefined; fencingToken: number | undefined; signal: AbortSignal } | undefined
  const ref = a.spawn({
    init: async (x) => {
      await new Promise((r) => setTimeout(r, 20))
      ctx = x
    },
    handleCall: () => (ctx ? 'initialized' : 'too early'),
  })
  t.equal(await a.call(ref, 'x'), 'initialized', 'messages wait for an async init')
  t.same({ name: ctx!.name, token: ctx!.fencingToken }, { name: undefined, token: undefined })
  await a.registerName('spawned', ref)
  await a.exit(ref)
  t.equal(ctx!.signal.aborted, true, 'aborted when it exits')
})

t.test('every async method takes an AbortSignal: an aborted wait ends with AbortError, and a bad signal is refused', async (t) => {
  const c = await startSworms(3, 'abortable')
  t.teardown(() => c.stop())
  const [a] = c.nodes as [Sworm]
  const slow = a.spawn({ handleCall: () => new Promise((r) => setTimeout(() => r('late'), 5000)) })
  t.equal(await a.registerName('slow', slow), true)
  const ac = new AbortController()
  const pending = a.call('slow', 'x', { timeout: 30_000, signal: ac.signal })
  ac.abort(new Error('the user went away'))
  const err = (await pending.catch((e: unknown) => e)) as { name?: string; code?: string; cause?: unknown }
  t.equal(err.name, 'AbortError', 'a call ends when its signal aborts')
  t.equal(err.code, 'ABORT_ERR')
  t.match(String(err.cause), /the user went away/, 'with the reason as its cause')
  const done = AbortSignal.abort()
  const ops: Array<[string, () => Promise<unknown>]> = [
    ['registerName', () => a.registerName('x', slow, { signal: done })],
    ['registerName (spec)', () => a.registerName('y', { module: WORKERS, fn: 'counter', args: ['abortable/y'] }, { signal: done })],
    ['whereisOrRegisterName', () => a.whereisOrRegisterName('y', { module: WORKERS, fn: 'counter', args: ['abortable/y'] }, { signal: done })],
    ['unregisterName', () => a.unregisterName('slow', { signal: done })],
    ['whereisName consistent', () => a.whereisName('slow', { consistent: true, signal: done })],
    ['whereisNameConsistent', () => a.whereisNameConsistent('slow', { signal: done })],
    ['join', () => a.join('g', slow, { signal: done })],
    ['leave', () => a.leave('g', slow, { signal: done })],
    ['send', () => a.send('slow', 1, { signal: done })],
    ['call', () => a.call('slow', 1, { signal: done })],
    ['publish', () => a.publish('g', 1, { signal: done })],
    ['multiCall', () => a.multiCall('g', 1, { signal: done })],
    ['exit', () => a.exit(slow, { signal: done })],
    ['ready', () => a.ready({ signal: done })],
    ['drain', () => a.drain({ signal: done })],
    ['undrain', () => a.undrain({ signal: done })],
    ['rebalance', () => a.rebalance({ signal: done })],
    ['removeNode', () => a.removeNode('n9', { signal: done })],
  ]
  for (const [what, op] of ops) await t.rejects(op(), { name: 'AbortError' }, `${what}: an aborted signal rejects at once`)
  t.equal(a.whereisName('slow')?.id, slow.id, 'and nothing was done')
  await t.rejects(a.call('slow', 1, { signal: 'no' as unknown as AbortSignal }), { code: 'INVALID_ARGUMENT' }, 'a signal that is not an AbortSignal is refused')
  t.same(await a.whereisNameConsistent('slow'), slow, 'whereisNameConsistent: one shape, a Promise')
})

t.test('a move lets the message in progress finish before it aborts the signal; one signal serves many calls', async (t) => {
  // Found by review of 08369e8 (failed on cc4e7b9): the signal was aborted when the handoff began,
  // so a handler that honours it failed the call the move had let finish.
  const c = await startSworms(3, 'ctxmove')
  t.teardown(() => c.stop())
  const [a] = c.nodes as [Sworm]
  await a.registerName('mover', { module: WORKERS, fn: 'contextual', args: [] })
  const host = c.nodes.find((s) => s.nodeId === a.whereisName('mover')!.node)!
  const call = a.call('mover', 'slow', { timeout: 10_000 })
  await new Promise((r) => setTimeout(r, 50)) // the call is being handled
  const drained = host.drain()
  t.equal(await call, 'done', 'the call in progress finished')
  await drained
  await host.undrain()

  // many operations on one signal: one listener on it, not one each (Node warns past 10)
  const warnings: string[] = []
  const onWarning = (w: Error): void => void warnings.push(w.name)
  process.on('warning', onWarning)
  t.teardown(() => void process.off('warning', onWarning))
  const ac = new AbortController()
  await Promise.all(Array.from({ length: 30 }, (_, i) => a.call('mover', i, { signal: ac.signal })))
  await new Promise((r) => setImmediate(r))
  t.same(warnings.filter((w) => w === 'MaxListenersExceededWarning'), [], 'no MaxListenersExceededWarning')
})
