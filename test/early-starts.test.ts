/**
 * Early word of supervised starts (src/supervisor/early-starts.ts): the caller of a supervised
 * registration resolves as soon as the node hosting the worker says it runs, without waiting for
 * the `startedMany` report to be committed and applied. Here every `startedMany` is held back
 * until the registrations resolved: without the early word (before this test's commit) each of
 * them waits for the report and fails with "the worker did not start within 5000 ms".
 */
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { RaftNode } from '../src/raft/node.js'
import { EarlyStarts } from '../src/supervisor/early-starts.js'
import type { WorkerRef } from '../src/index.js'
import { startSworms, waitFor } from './helpers.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))

/**
 * Hold every `startedMany` proposal (the hosts' start reports) from `hold()` until `release()`;
 * the count says how many were held. Undone when the test ends.
 */
function holdStartReports(t: Test, holding = true) {
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  const h = { held: 0, holding, release: () => release(), hold: () => void (h.holding = true) }
  const original = RaftNode.prototype.propose
  RaftNode.prototype.propose = function (this: RaftNode, cmd: unknown, opts?: { idempotent?: boolean }) {
    if (h.holding && (cmd as { c?: unknown } | null)?.c === 'startedMany') {
      h.held++
      return released.then(() => original.call(this, cmd, opts)) as never
    }
    return original.call(this, cmd, opts) as never
  } as typeof original
  t.teardown(() => {
    RaftNode.prototype.propose = original
    release()
  })
  return h
}

t.test('a supervised registration resolves once its host says the worker runs, before the log has the start', async (t) => {
  const reports = holdStartReports(t)
  const c = await startSworms(3, 'early', { startTimeoutMs: 5000 })
  t.teardown(() => c.stop())
  const [a, b, d] = c.nodes as [(typeof c.nodes)[0], (typeof c.nodes)[0], (typeof c.nodes)[0]]
  await Promise.all(c.nodes.map((s) => s.ready()))
  // every node up in the caller's registry, so that placement spreads the names
  const nodesUp = (): number => (a as unknown as { state: { nodeRecords(): Array<{ up: boolean }> } }).state.nodeRecords().filter((n) => n.up).length
  await waitFor(() => nodesUp() === 3, 10_000, 'the caller to see every node up')
  // enough names that some land on the caller's node and some on the others
  const names = Array.from({ length: 12 }, (_, i) => `early-${i}`)
  const refs = await Promise.all(names.map((n) => a.registerName(n, { module: WORKERS, fn: 'counter', args: [`early/${n}`] })))
  t.ok(reports.held > 0, `the starts' reports were held back (${reports.held})`)
  t.ok(new Set(refs.map((r) => r.node)).size >= 2, `the workers run on several nodes: ${refs.map((r) => r.node).join(',')}`)
  for (const [i, n] of names.entries()) {
    const ref = refs[i]!
    t.same(a.whereisName(n), ref, `${n}: the caller sees its worker at once`)
    t.equal(await a.call(n, 'inc'), 1, `${n}: a call by name from the caller reaches it`)
    t.equal(await a.call(ref, 'inc'), 2, `${n}: and a call by ref`)
  }
  // the other nodes (hosts included) learn a ref from the log only
  for (const n of names) {
    t.equal(b.whereisName(n), undefined, `${n}: ${b.nodeId} does not see it before the log has its start`)
    t.equal(d.whereisName(n), undefined, `${n}: nor does ${d.nodeId}`)
  }
  // what needs the registry to know the worker as the name's waits for the log: a group join, an
  // alias, and the caller's linearizable read (on e041155: NotFoundError, a static name)
  const joined = a.join('g', refs[0]!)
  const alias = a.registerName('early-alias', refs[1]!)
  const consistent = a.whereisName(names[2]!, { consistent: true })
  const sup = (a as unknown as { supervisor: { waitingFor(name: string): number } }).supervisor
  await waitFor(() => [0, 1, 2].every((i) => sup.waitingFor(names[i]!) > 0), 10_000, 'the join, the alias and the read to wait for the log')
  reports.release()
  await joined
  t.ok(a.members('g').some((m) => sameRef(m, refs[0]!)), 'the join waited for the log and took')
  t.equal(await alias, true, 'the alias registration waited for the log')
  t.equal((a as unknown as { state: { peek(n: string): { kind: string } | undefined } }).state.peek('early-alias')?.kind, 'alias', 'it is an alias, which follows the worker')
  t.same(await consistent, refs[2], "the caller's linearizable read waited for the log")
  await waitFor(() => c.nodes.every((s) => names.every((n, i) => sameRef(s.whereisName(n), refs[i]!))), 10_000, 'every node to see every start')
  t.pass('every node sees every worker once the reports go through')
})

t.test('a caller that hears nothing from the host learns the start from the log', async (t) => {
  const c = await startSworms(2, 'early-fallback', { startTimeoutMs: 10_000 })
  t.teardown(() => c.stop())
  const [a] = c.nodes
  await Promise.all(c.nodes.map((s) => s.ready()))
  await waitFor(() => (a as unknown as { state: { nodeRecords(): Array<{ up: boolean }> } }).state.nodeRecords().filter((n) => n.up).length === 2, 10_000, 'both nodes up')
  // no host says anything: every start reaches its caller through the log only
  for (const s of c.nodes) (s as unknown as { early: { running: () => void } }).early.running = () => {}
  const refs: WorkerRef[] = []
  for (let i = 0; i < 6; i++) refs.push(await a!.registerName(`fb-${i}`, { module: WORKERS, fn: 'counter', args: [`fb/${i}`] }))
  t.ok(new Set(refs.map((r) => r.node)).size === 2, 'on both nodes')
  for (const [i, ref] of refs.entries()) {
    t.same(a!.whereisName(`fb-${i}`), ref, `fb-${i}: the registry has it`)
    t.equal(await a!.call(ref, 'get'), 0, `fb-${i} runs on ${ref.node}`)
  }
})

t.test('a join or an alias with an early ref fails with a TimeoutError when the log does not have the start in time', async (t) => {
  const reports = holdStartReports(t)
  const c = await startSworms(2, 'early-timeout', { startTimeoutMs: 10_000, requestTimeoutMs: 3000 })
  t.teardown(() => c.stop())
  const [a] = c.nodes
  await Promise.all(c.nodes.map((s) => s.ready()))
  const ref = await a!.registerName('et', { module: WORKERS, fn: 'counter', args: ['early/et'] })
  await t.rejects(a!.join('g', ref), { name: 'TimeoutError' }, 'join: a TimeoutError, nothing proposed')
  await t.rejects(a!.registerName('et-alias', ref), { name: 'TimeoutError' }, 'alias: a TimeoutError, no static name')
  t.equal(a!.whereisName('et-alias'), undefined, 'no name was registered')
  reports.release()
  await waitFor(() => c.nodes.every((s) => sameRef(s.whereisName('et'), ref)), 10_000, 'the start in every registry')
  await a!.join('g', ref)
  t.equal(await a!.registerName('et-alias', ref), true, 'once the log has the start, both go through')
})

t.test('a name another node gave the early ref (a static name, as the log knew no worker) goes when the worker ends', async (t) => {
  const reports = holdStartReports(t, true)
  const c = await startSworms(3, 'early-static', { startTimeoutMs: 10_000 })
  t.teardown(() => c.stop())
  const [a] = c.nodes as [(typeof c.nodes)[0]]
  await Promise.all(c.nodes.map((s) => s.ready()))
  await waitFor(() => (a as unknown as { state: { nodeRecords(): Array<{ up: boolean }> } }).state.nodeRecords().filter((n) => n.up).length === 3, 10_000, 'every node up')
  const ref = await a.registerName('xs', { module: WORKERS, fn: 'counter', args: ['early/xs'], restart: 'permanent' })
  // a node that neither registered the name nor runs its worker: it has no word of the start
  const b = c.nodes.find((s) => s.nodeId !== a.nodeId && s.nodeId !== ref.node)!
  t.equal(await b.registerName('xs-other', ref), true, 'the other node registers a name for the ref before the log has the start')
  await b.join('xs-group', ref)
  t.equal(b.members('xs-group').length, 1, 'and joins a group with it (by ref: the log knows no supervised worker of that ref yet)')
  reports.release()
  await waitFor(() => c.nodes.every((s) => sameRef(s.whereisName('xs'), ref)), 10_000, 'the start in every registry')
  await t.rejects(a.call('xs', 'crash'), 'the worker crashes (and restarts)')
  await waitFor(() => c.nodes.every((s) => s.whereisName('xs-other') === undefined), 10_000, 'the name bound to the ended worker to go')
  await waitFor(() => c.nodes.every((s) => !s.members('xs-group').some((m) => sameRef(m, ref))), 10_000, 'its group membership to go')
  t.pass('no name or membership stays bound to a worker that ended')
})

function sameRef(x: WorkerRef | undefined, y: WorkerRef): boolean {
  return x !== undefined && x.node === y.node && x.inc === y.inc && x.id === y.id && x.sworm === y.sworm
}

/** An EarlyStarts on a stub node: `a` registers names placed on `b` (epoch 1); `notice` plays a `startedAt` from `b`. */
function stubEarly() {
  let handler: ((from: string, m: Record<string, unknown>) => void) | undefined
  const dropped: string[] = []
  const router = {
    on: (_t: string, fn: (from: string, m: Record<string, unknown>) => void) => void (handler = fn),
    send: () => {},
    drop: (from: string, reason: string) => void dropped.push(`${from}: ${reason}`),
  }
  const state = {
    peek: (name: string) => (name.startsWith('n') ? { kind: 'supervised', epoch: 1, node: 'b' } : undefined),
    nodeRecord: (node: string) => (node === 'b' ? { node: 'b', up: true, inc: 'ib' } : undefined),
    isUp: (node: string, inc: string) => node === 'b' && inc === 'ib',
  }
  const early = new EarlyStarts({ sworm: 's', nodeId: 'a', inc: 'ia', state: state as never, router: router as never, maxNameBytes: 1024, woken: () => {} })
  return { early, dropped, notice: (m: Record<string, unknown>) => handler!('b', m) }
}

t.test('a notice about an epoch the name never reaches does not keep the early word away (EarlyStarts on a stub node)', async (t) => {
  const { early, dropped, notice } = stubEarly()
  // junk from a peer: bad fields, too many starts, another incarnation, epochs no placement has
  notice({ inc: 'ib', starts: {} })
  notice({ inc: 'ib', starts: new Array(5000).fill(['n1', 1, 1]) })
  t.equal(dropped.length, 2, 'bad fields and oversized notices are dropped with a warning')
  let caller = early.expect('n1')
  notice({ inc: 'other', starts: [['n1', 1, 3]] })
  t.equal(early.whereis('n1'), undefined, 'a notice from another incarnation is not taken')
  notice({ inc: 'ib', starts: [['n1', 1e9, 5], [42], 'x', null, ['n1', 1.5, 1]] })
  t.equal(early.whereis('n1'), undefined, 'an epoch the placement does not have gives no hint')
  caller.done()
  // the next registration of the name hears of its start (on 4ec7773 the 1e9 hint stayed, and
  // every later notice about the name was taken for an older epoch and ignored)
  caller = early.expect('n1')
  const w = early.wait('n1', 1)
  let got: WorkerRef | undefined
  void w.ref.then((r) => (got = r))
  notice({ inc: 'ib', starts: [['n1', 1, 9]] })
  await new Promise((r) => setImmediate(r))
  t.same(got, { sworm: 's', node: 'b', inc: 'ib', id: 9 }, 'the real notice resolves the caller')
  t.same(early.whereis('n1'), got, 'and gives the hint')
  w.cancel()
  caller.done()
  notice({ inc: 'ib', starts: [['n2', 1, 4]] })
  t.equal(early.whereis('n2'), undefined, 'a notice about a name this node is not registering is not taken')
})
