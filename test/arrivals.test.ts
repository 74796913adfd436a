/**
 * A gone node's moves fix the refs of the workers they place (`nodeDown` and `moveOff` with `fm`,
 * protocol 11), and calls and casts by name go to the new host at once, which holds them until
 * the worker runs (rpc/arrivals.ts). Before (d397998 and earlier), a call by name waited on the
 * caller's node for the start's report to be applied there: a round of the log on every moved
 * name's path (150-370 ms of a 10k failover on this machine, issue #15). Messaging on a real
 * registry and real mailboxes, with a fake clock and network; the node under test is n1.
 */
import t from 'tap'
import { NoWorkerError } from '../src/errors.js'
import { RegistryState } from '../src/registry/state.js'
import type { RegistryChange } from '../src/registry/state.js'
import { movedWorkerId, type RegistryCommand, type WorkerRef } from '../src/registry/types.js'
import { MAX_ARRIVALS_HELD } from '../src/rpc/arrivals.js'
import { Messaging, type MessagingHost } from '../src/rpc/messaging.js'
import { LocalWorkers, type Worker } from '../src/supervisor/local-workers.js'

type Sent = { node: string; msg: Record<string, unknown> & { t: string } }

function harness() {
  let now = 0
  const timers = new Map<number, { at: number; fn: () => void }>()
  let nextTimer = 1
  const clock = {
    now: () => now,
    setTimeout: (fn: () => void, ms: number) => {
      const h = nextTimer++
      timers.set(h, { at: now + ms, fn })
      return h
    },
    clearTimeout: (h: unknown) => void timers.delete(h as number),
  }
  const advance = async (ms: number): Promise<void> => {
    const end = now + ms
    for (;;) {
      await new Promise((r) => setImmediate(r))
      const due = [...timers].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0]
      if (!due) break
      timers.delete(due[0])
      now = Math.max(now, due[1].at)
      due[1].fn()
    }
    now = end
    await new Promise((r) => setImmediate(r))
  }
  const late: { m?: Messaging } = {}
  const state = new RegistryState((ch: RegistryChange) => late.m?.onChange(ch))
  let index = 0
  const apply = (cmd: RegistryCommand): unknown => state.apply(cmd, ++index, 1)
  for (const n of ['n1', 'n2', 'n3']) apply({ c: 'nodeUp', node: n, inc: `${n}-i`, prev: '' })
  const sent: Sent[] = []
  const handlers = new Map<string, (from: string, m: Record<string, unknown>) => void>()
  const workers = new LocalWorkers(() => {})
  let dropped = 0
  const host: MessagingHost = {
    raft: { read: () => Promise.resolve(), status: () => ({ config: { voters: { n1: '', n2: '', n3: '' }, learners: {} } }) } as never,
    state,
    whereis: (name) => state.whereis(name),
    workers,
    router: {
      on: (type: string, fn: (from: string, m: Record<string, unknown>) => void) => void handlers.set(type, fn),
      send: (node: string, msg: Sent['msg']) => void sent.push({ node, msg }),
      drop: () => {},
    } as never,
    clock,
    isLocal: (ref) => ref.sworm === 's' && ref.node === 'n1' && ref.inc === 'n1-i',
    gate: () => true,
    guard: () => {},
    maxMessageBytes: 1 << 20,
    castBufferSize: 3,
    castHoldMs: 60_000,
    count: { castDropped: (n) => void (dropped += n), callRedirected: () => {}, callOutcomeUnknown: () => {} },
  }
  const m = new Messaging(host)
  late.m = m
  /** A message from node `from`, as the router hands it over. */
  const receive = (from: string, msg: Record<string, unknown> & { t: string }): void => handlers.get(msg.t)!(from, msg)
  /** A worker that logs what it handles (and answers a call with what it logged so far). */
  const recorder = (): { w: Worker; seen: unknown[] } => {
    const seen: unknown[] = []
    return {
      seen,
      w: {
        handleCall: (msg: unknown) => {
          seen.push(msg)
          return [...seen]
        },
        handleCast: (msg: unknown) => void seen.push(msg),
      },
    }
  }
  /** Supervise `count` names, each started on the node it was placed on (ids from 100). */
  const superviseStarted = (count: number): string[] => {
    const names: string[] = []
    for (let k = 0; k < count; k++) {
      const name = `w${k}`
      const res = apply({ c: 'supervise', name, spec: { module: 'm', fn: 'f', args: [] }, ue: 1 }) as { node: string; epoch: number }
      apply({ c: 'startedMany', sworm: 's', node: res.node, inc: `${res.node}-i`, starts: [[name, res.epoch, 100 + k]] })
      names.push(name)
    }
    return names
  }
  const replies = (): Array<Record<string, unknown>> => sent.filter((s) => s.msg.t === 'reply').map((s) => s.msg)
  return { m, state, apply, advance, sent, receive, workers, recorder, superviseStarted, replies, dropped: () => dropped, index: () => index }
}

t.test("a gone node's moves fix the refs of the workers they place, each unique on its node, counted in the node's record", async (t) => {
  const h = harness()
  const names = h.superviseStarted(40)
  const onN2 = names.filter((n) => h.state.whereis(n)?.node === 'n2')
  t.ok(onN2.length > 4, `${onN2.length} names on n2`)
  // without `fm` (an entry of protocol 10, replayed): no ref until a start is reported, as before
  const old = new RegistryState(() => {})
  let i = 0
  for (const n of ['n1', 'n2', 'n3']) old.apply({ c: 'nodeUp', node: n, inc: `${n}-i`, prev: '' }, ++i, 1)
  for (const name of names) {
    const res = old.apply({ c: 'supervise', name, spec: { module: 'm', fn: 'f', args: [] }, ue: 1 }, ++i, 1) as { node: string; epoch: number }
    old.apply({ c: 'startedMany', sworm: 's', node: res.node, inc: `${res.node}-i`, starts: [[name, res.epoch, 1]] }, ++i, 1)
  }
  old.apply({ c: 'nodeDown', node: 'n2', inc: 'n2-i', ord: 1, max: 3 }, ++i, 1)
  old.apply({ c: 'moveOff', node: 'n2', inc: 'n2-i', term: 1, max: 100 }, ++i, 1)
  t.ok(onN2.every((n) => old.whereis(n) === undefined && old.peek(n)?.fx === undefined), 'without fm: no ref until the start is reported')

  h.apply({ c: 'nodeDown', node: 'n2', inc: 'n2-i', ord: 1, max: 3, fm: 's' })
  h.apply({ c: 'moveOff', node: 'n2', inc: 'n2-i', term: 1, max: 100, fm: 's' })
  const refs = onN2.map((n) => h.state.whereis(n))
  t.ok(
    refs.every((r) => r !== undefined && r.sworm === 's' && r.node !== 'n2' && r.inc === `${r.node}-i`),
    'with fm: every moved name has its next worker ref at once, on a node that is up',
  )
  t.ok(onN2.every((n) => h.state.peek(n)?.fx === 1 && h.state.startingName(h.state.whereis(n)!) === n), 'each is a fixed ref whose worker is starting')
  for (const node of ['n1', 'n3']) {
    const ids = refs.filter((r) => r!.node === node).map((r) => r!.id)
    t.same(
      ids.sort((a, b) => b - a),
      ids.map((_, k) => movedWorkerId(k)),
      `${node}'s moved workers take the ids its record counts out, from -(2^48): ${ids.length}`,
    )
    t.equal(h.state.nodeRecord(node)!.fxn, ids.length, `${node}'s record counts them`)
  }
  // the count survives a snapshot, and the same incarnation coming back (declared gone, then up again)
  const copy = new RegistryState(() => {})
  copy.restore(h.state.snapshot())
  t.equal(copy.nodeRecord('n3')!.fxn, h.state.nodeRecord('n3')!.fxn, 'a restored snapshot keeps the count')
  const before = h.state.nodeRecord('n3')!.fxn
  h.apply({ c: 'nodeDown', node: 'n3', inc: 'n3-i', ord: 1, max: 1000, fm: 's' })
  h.apply({ c: 'nodeUp', node: 'n3', inc: 'n3-i' })
  t.equal(h.state.nodeRecord('n3')!.fxn, before, 'the same incarnation back: the count goes on')
  h.apply({ c: 'nodeUp', node: 'n3', inc: 'n3-j', prev: 'n3-i' })
  t.equal(h.state.nodeRecord('n3')!.fxn, undefined, 'a new incarnation counts from the start')
})

t.test('calls and casts by name go to the new host at once at a move, and the host holds them, in order, until the worker runs', async (t) => {
  const h = harness()
  const names = h.superviseStarted(60)
  const onN2 = names.filter((n) => h.state.whereis(n)?.node === 'n2')
  h.m.onConnection('n2', false) // n2 is lost: what is sent to its workers by name waits
  const calls = new Map<string, Promise<unknown>>()
  for (const n of onN2) {
    void h.m.send(n, `cast to ${n}`)
    calls.set(n, h.m.call(n, `call to ${n}`, 60_000))
  }
  await h.advance(0)
  t.same(h.sent, [], 'nothing sent while n2 cannot be reached')
  h.apply({ c: 'nodeDown', node: 'n2', inc: 'n2-i', ord: 1, max: 1000, fm: 's' })
  const sentBefore = h.sent.filter((s) => s.node === 'n2').length
  await h.advance(0)
  const toN3 = onN2.filter((n) => h.state.whereis(n)!.node === 'n3')
  const toN1 = onN2.filter((n) => h.state.whereis(n)!.node === 'n1')
  t.ok(toN3.length > 0 && toN1.length > 0, `moved to n3: ${toN3.length}, to n1 (this node): ${toN1.length}`)
  const toN3Msgs = h.sent.filter((s) => s.node === 'n3')
  t.same(
    toN3.map((n) => toN3Msgs.filter((s) => (s.msg.to as WorkerRef).id === h.state.whereis(n)!.id).map((s) => s.msg.t)),
    toN3.map(() => ['cast', 'call']),
    'no start reported yet: the cast and the call to each name moved to n3 went there at once, to its fixed ref, in the order sent (on d397998 they waited for the report)',
  )
  t.equal(toN3Msgs.length, 2 * toN3.length, 'and nothing else')
  t.ok(
    toN3Msgs.every((s) => s.msg.ai === h.index() && (s.msg.t === 'cast' || (typeof s.msg.ms === 'number' && s.msg.ms > 0))),
    'each says how far this node applied the log (and a call its time left)',
  )
  t.equal(h.sent.filter((s) => s.node === 'n2').length, sentBefore, 'nothing to the gone node')
  // those moved here (n1) wait here, in this node's arrivals, until their worker runs
  const n1Name = toN1[0]!
  const ref = h.state.whereis(n1Name)!
  const { w, seen } = h.recorder()
  t.same(seen, [], 'not started: nothing handled yet')
  h.workers.add(w, undefined, undefined, ref.id)
  t.same(await calls.get(n1Name), [`cast to ${n1Name}`, `call to ${n1Name}`], 'the worker started here: the held cast, then the call, in the order sent')
})

t.test('a node holds what arrives for a worker about to start here until it runs: before it applied the move, in arrival order', async (t) => {
  const h = harness()
  const names = h.superviseStarted(60)
  // what n3 sees: the move applied there (a replica ahead of n1), so the ref n1's move will fix
  const ahead = new RegistryState(() => {})
  ahead.restore(h.state.snapshot())
  ahead.apply({ c: 'nodeDown', node: 'n2', inc: 'n2-i', ord: 1, max: 1000, fm: 's' }, h.index() + 1, 1)
  const name = names.find((n) => h.state.whereis(n)?.node === 'n2' && ahead.whereis(n)?.node === 'n1')!
  t.ok(name, 'a name n2 held moves to n1')
  const ref = ahead.whereis(name)!
  // n3 sends before n1 applied the move: a cast, a call, a cast
  h.receive('n3', { t: 'cast', to: ref, msg: 'c1', ai: h.index() + 1 })
  h.receive('n3', { t: 'call', id: 7, to: ref, msg: 'k2', ai: h.index() + 1, ms: 30_000 })
  h.receive('n3', { t: 'cast', to: ref, msg: 'c3', ai: h.index() + 1 })
  await h.advance(100)
  t.same(h.replies(), [], 'held: this node has not applied what the sender had (on d397998: NO_WORKER at once)')
  h.apply({ c: 'nodeDown', node: 'n2', inc: 'n2-i', ord: 1, max: 1000, fm: 's' })
  t.same(h.state.whereis(name), ref, 'the move applied here fixes the same ref')
  await h.advance(100)
  t.same(h.replies(), [], 'still held: the worker does not run yet')
  const { w, seen } = h.recorder()
  h.workers.add(w, undefined, undefined, ref.id)
  await h.advance(0)
  t.same(seen, ['c1', 'k2', 'c3'], 'handed to the worker in arrival order once it runs')
  t.same(h.replies(), [{ t: 'reply', id: 7, ok: true, value: ['c1', 'k2'] }], 'and the call answered')
  // a message for a negative id this node knows nothing of, from a sender no further along: no such worker
  h.receive('n3', { t: 'call', id: 8, to: { ...ref, id: ref.id - 1000 }, msg: 'x', ai: h.index() })
  t.same(h.replies()[1], { t: 'reply', id: 8, ok: false, code: 'NO_WORKER', message: 'no such worker on that node' }, 'an unknown fixed ref: NO_WORKER at once')
})

t.test('what a node holds for a starting worker is given up when the name moves on, at its deadline, and past its bounds', async (t) => {
  const h = harness()
  const names = h.superviseStarted(60)
  h.apply({ c: 'nodeDown', node: 'n2', inc: 'n2-i', ord: 1, max: 1000, fm: 's' })
  const here = names.filter((n) => h.state.whereis(n)?.node === 'n1' && h.state.peek(n)?.fx === 1)
  t.ok(here.length >= 3, `${here.length} moved here`)
  const [a, b, c] = here.map((n) => h.state.whereis(n)!)
  // a: the name moves on (its start failed) before the worker ran: calls answered NO_WORKER, casts dropped
  h.receive('n3', { t: 'cast', to: a!, msg: 'x', ai: 0 })
  h.receive('n3', { t: 'call', id: 1, to: a!, msg: 'y', ai: 0, ms: 30_000 })
  const epochA = h.state.peek(here[0]!)!.epoch!
  h.apply({ c: 'startFailed', name: here[0]!, epoch: epochA, error: 'boom' })
  t.same(h.replies(), [{ t: 'reply', id: 1, ok: false, code: 'NO_WORKER', message: 'no such worker on that node' }], 'its start failed: the held call is answered NO_WORKER')
  t.equal(h.dropped(), 1, 'the held cast dropped, counted')
  // b: a call held past its caller's time left
  h.receive('n3', { t: 'call', id: 2, to: b!, msg: 'y', ai: 0, ms: 500 })
  await h.advance(400)
  h.m.recheck()
  t.equal(h.replies().length, 1, 'within its time: held')
  await h.advance(200)
  h.m.recheck()
  t.same(h.replies()[1], { t: 'reply', id: 2, ok: false, code: 'NO_WORKER', message: 'no such worker on that node' }, 'past it: answered NO_WORKER')
  // c: casts past the buffer (castBufferSize 3): the oldest go first
  for (const x of ['c1', 'c2', 'c3', 'c4', 'c5']) h.receive('n3', { t: 'cast', to: c!, msg: x, ai: 0 })
  t.equal(h.dropped(), 3, 'two more dropped: the buffer holds three casts a ref')
  const { w, seen } = h.recorder()
  h.workers.add(w, undefined, undefined, c!.id)
  await h.advance(0)
  t.same(seen, ['c3', 'c4', 'c5'], 'the newest three reach the worker')
  // a hostile sender: held messages are bounded over the node, and a far-off `ai` is given up at the deadline
  t.ok(MAX_ARRIVALS_HELD >= 1024, `at most ${MAX_ARRIVALS_HELD} held`)
  const fake = { sworm: 's', node: 'n1', inc: 'n1-i', id: -5 }
  for (let k = 0; k < MAX_ARRIVALS_HELD + 10; k++) h.receive('n9', { t: 'call', id: 1000 + k, to: fake, msg: k, ai: 1e15, ms: 1e9 })
  const refused = h.replies().filter((r) => typeof r.id === 'number' && r.id >= 1000)
  t.equal(refused.length, 10, 'past the bound: answered NO_WORKER at once')
  await h.advance(60_000)
  h.m.recheck()
  t.equal(h.replies().filter((r) => typeof r.id === 'number' && r.id >= 1000).length, MAX_ARRIVALS_HELD + 10, 'the rest answered at castHoldMs')
})

t.test('a local call by name to a worker moving here waits for it here, and fails over to what the name does next', async (t) => {
  const h = harness()
  const names = h.superviseStarted(60)
  const onN2 = names.filter((n) => h.state.whereis(n)?.node === 'n2')
  h.m.onConnection('n2', false)
  const calls = onN2.map((n) => ({ n, p: h.m.call(n, 'hi', 60_000) }))
  h.apply({ c: 'nodeDown', node: 'n2', inc: 'n2-i', ord: 1, max: 1000, fm: 's' })
  await h.advance(0)
  const here = calls.filter((c) => h.state.whereis(c.n)!.node === 'n1')
  t.ok(here.length >= 2, `${here.length} moved here`)
  // the first one's worker never runs here: its name is unregistered; its call learns there is no worker
  const gone = here[0]!
  h.apply({ c: 'unregister', name: gone.n })
  await t.rejects(gone.p, NoWorkerError, 'the name went: its call fails with NoWorkerError')
  const next = here[1]!
  const { w } = h.recorder()
  h.workers.add(w, undefined, undefined, h.state.whereis(next.n)!.id)
  t.same(await next.p, ['hi'], 'the next one answered by its worker once it runs here')
})
