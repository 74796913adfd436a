/**
 * Messages held for a starting worker (src/rpc/starting-refs.ts) on a simulated clock: how long
 * each cast is held, whatever its batch and whatever the turn waits for. These were two tests of
 * placed-start.test.ts that let 3.3-5 s of wall time pass on a real cluster (and looked at the
 * metrics at a wall-time moment, which a busy machine could miss); here simulated time runs, so
 * each deadline is checked to the millisecond. Checked to fail with each fix reverted in this
 * module (the reviews' findings they were written for: ab257a2's, a cast joining a batch late
 * inheriting the batch's first deadline; 6963e08's, a batch waiting for a read barrier giving up at
 * the deadline it began with).
 */
import t from 'tap'
import { StartingRefs, type StartingRefsHost, type StartingRefsIo } from '../src/rpc/starting-refs.js'
import type { RegistryState } from '../src/registry/state.js'
import type { WorkerRef } from '../src/registry/types.js'
import type { LocalWorkers } from '../src/supervisor/local-workers.js'
import { SimScheduler } from '../src/testkit/sim.js'

const HOLD_MS = 3000

/** A StartingRefs on a simulated clock, with a registry that says what the test sets. */
function harness(opts: { applied?: number } = {}) {
  const sched = new SimScheduler(1)
  const clock = sched.clock()
  const registry = { starting: new Map<string, string>(), registered: new Set<string>() }
  const key = (r: WorkerRef): string => `${r.node}|${r.inc}|${r.id}`
  const state = {
    appliedIndex: opts.applied ?? 100,
    startingName: (r: WorkerRef) => registry.starting.get(key(r)),
    isRegistered: (r: WorkerRef) => registry.registered.has(key(r)),
  }
  const sent: unknown[] = []
  let dropped = 0
  /** Waiters for a change of a name (resolved by `changed()`, or at their deadline). */
  const waiters = new Set<() => void>()
  const host: StartingRefsHost = {
    state: state as unknown as RegistryState,
    workers: { has: () => false } as unknown as LocalWorkers,
    clock,
    isLocal: () => false,
    guard: () => {},
    castBufferSize: 100,
    castHoldMs: HOLD_MS,
    count: { castDropped: (n) => void (dropped += n) },
  }
  let reads = 0
  const io: StartingRefsIo = {
    castNow: (_ref, msg) => void sent.push(msg),
    // a read barrier that never completes: it gives up at its deadline
    readBefore: (deadline, late) => {
      reads++
      return new Promise<void>((_resolve, reject) => clock.setTimeout(() => reject(late()), Math.max(0, deadline - clock.now())))
    },
    change: (_name, deadline) =>
      new Promise<void>((resolve) => {
        const done = (): void => {
          waiters.delete(done)
          resolve()
        }
        waiters.add(done)
        clock.setTimeout(done, Math.max(0, deadline - clock.now()))
      }),
  }
  const refs = new StartingRefs(host, io)
  return {
    sched,
    refs,
    registry,
    key,
    sent,
    dropped: () => dropped,
    reads: () => reads,
    /** The registry changed: every waiter looks again. */
    changed: () => {
      for (const w of [...waiters]) w()
    },
  }
}

t.test('each cast held for a starting worker is held castHoldMs from when it was sent, whenever its batch began', async (t) => {
  const h = harness()
  const ref: WorkerRef = { sworm: 's', node: 'n2', inc: 'i2', id: -50 }
  h.registry.starting.set(h.key(ref), 'hold')
  h.refs.holdCast(ref, 'early') // at 0: held until 3000
  await h.sched.runUntil(2000)
  h.refs.holdCast(ref, 'late') // at 2000: held until 5000, in the same batch
  await h.sched.runUntil(3300)
  t.equal(h.dropped(), 0, "'early''s time is over, but it goes (or is dropped) at its batch's turn")
  t.same(h.sent, [], 'nothing sent while the worker starts')
  // the worker runs now (the log shows its start)
  h.registry.starting.delete(h.key(ref))
  h.registry.registered.add(h.key(ref))
  h.changed()
  await h.sched.runUntil(3301)
  t.same(h.sent, ['late'], "'late' held its own 3 s and went; 'early' did not")
  t.equal(h.dropped(), 1, "'early' dropped at its batch's turn, counted once")
  await h.sched.runUntil(10_000)
  t.equal(h.dropped(), 1, 'nothing counted twice')
})

t.test('a cast joining a batch that waits for a read barrier is held its own time too', async (t) => {
  // a ref of an entry far ahead of what this node applied: a read barrier first, which never ends
  const h = harness({ applied: 100 })
  const ref: WorkerRef = { sworm: 's', node: 'n2', inc: 'i2', id: -100_100 }
  h.refs.holdCast(ref, 'early') // at 0: held until 3000
  await h.sched.runUntil(2000)
  h.refs.holdCast(ref, 'late') // at 2000: held until 5000
  await h.sched.runUntil(4999)
  t.equal(h.dropped(), 0, "past 'early''s time, 'late' still held: nothing dropped yet")
  t.ok(h.reads() >= 2, `the barrier read again for the later deadline (${h.reads()} reads)`)
  await h.sched.runUntil(5000)
  t.equal(h.dropped(), 2, 'both dropped once the newest one expired, at 5000')
  t.same(h.sent, [], 'none sent')
})

t.test('a call in its turn waits for the casts before it and for the start, and gives up at its own deadline', async (t) => {
  const h = harness()
  const ref: WorkerRef = { sworm: 's', node: 'n2', inc: 'i2', id: -60 }
  h.registry.starting.set(h.key(ref), 'w')
  h.refs.holdCast(ref, 'c1')
  const late = (): Error => new Error('late')
  const quick = h.refs.inTurn(ref, 1000, late, () => 'quick went')
  const later = h.refs.inTurn(ref, 20_000, late, () => {
    h.sent.push('call')
    return 'call went'
  })
  let quickErr: unknown
  quick.catch((e: unknown) => (quickErr = e))
  await h.sched.runUntil(1000)
  t.match(quickErr, /late/, 'the call with a 1 s deadline gave up at it, never sent')
  await h.sched.runUntil(2500)
  h.registry.starting.delete(h.key(ref))
  h.registry.registered.add(h.key(ref))
  h.changed()
  await h.sched.runUntil(2501)
  t.equal(await later, 'call went')
  t.same(h.sent, ['c1', 'call'], 'in the order they were sent')
})
