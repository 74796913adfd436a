/**
 * The supervisor's safety net at rest (reconcile() stops going through names and workers once it
 * went through them all with nothing new): each case rests on one of the things that make it look
 * again, and stays stuck without it. Written by the review of 65fbb9f, which removed each such
 * call in turn: without these, only two of them failed any test or simulation run.
 */
import t from 'tap'
import { systemClock, type Clock } from '../src/raft/types.js'
import { RegistryState } from '../src/registry/state.js'
import { NAME_CHANGES_PASS_MS } from '../src/supervisor/supervisor.js'
import type { Worker } from '../src/supervisor/local-workers.js'
import { waitFor } from './helpers.js'
import { supervisorHarness } from './supervisor-harness.js'

function harness() {
  const f = { runs: 0, stops: [] as Array<() => void>, terminated: 0 }
  // (the test moves the supervisor's clock forward by `skew.ms`)
  const skew = { ms: 0 }
  const clock: Clock = { ...systemClock, now: () => systemClock.now() + skew.ms }
  const h = supervisorHarness(() => ({
    slowStop: (): Worker => {
      f.runs++
      return { handleCall: () => 'ok', terminate: () => new Promise<void>((r) => f.stops.push(() => { f.terminated++; r() })) }
    },
    quick: (): Worker => {
      f.runs++
      return { handleCall: () => 'ok', beginHandoff: () => 1, terminate: () => void f.terminated++ }
    },
  }), undefined, clock)
  return { ...h, f, skew }
}

const ticks = async (h: ReturnType<typeof harness>, n: number): Promise<void> => {
  for (let i = 0; i < n; i++) {
    await h.sup.tick()
    await new Promise((r) => setImmediate(r))
  }
}

t.test("a start whose read barrier fails after reconcile() went to rest is tried again (a start that did not end running)", async (t) => {
  const h = harness()
  await ticks(h, 3)
  h.readGate.hold = true
  h.apply({ c: 'supervise', name: 'r', spec: { module: 'm', fn: 'quick', args: [] } })
  await waitFor(() => h.reads.length === 1, 5000, 'the start waits for its barrier')
  await ticks(h, 4) // the name is `starting`: the scans skip it and rest
  h.readGate.hold = false
  h.reads.shift()!.fail(new Error('no leader'))
  await ticks(h, 6)
  await waitFor(() => h.sup.size === 1, 2000, 'the name runs')
  t.equal(h.sup.size, 1)
})

t.test('a worker fenced with a slow terminate, the lease back before it ended: restarted once it ends (a worker that ended)', async (t) => {
  const h = harness()
  h.apply({ c: 'supervise', name: 'x', spec: { module: 'm', fn: 'slowStop', args: [] } })
  await waitFor(() => h.sup.size === 1 && h.proposed.some((c) => c.c === 'startedMany'), 5000, 'x runs')
  h.lease.ok = false
  void h.sup.tick() // fences: terminate under way (the tick waits for it)
  await new Promise((r) => setImmediate(r))
  h.lease.ok = true
  h.lease.lapses++
  await ticks(h, 6) // lease back: the scans find x still running here, and rest
  t.equal(h.f.stops.length, 1, 'its terminate is still under way')
  h.f.stops.shift()!()
  await ticks(h, 6)
  await waitFor(() => h.f.runs === 2 && h.sup.size === 1, 2000, 'x runs again')
  t.equal(h.f.runs, 2)
})

t.test("a fenced worker's move (no state) whose handedOff report failed is reported again (a report that failed)", async (t) => {
  const h = harness()
  h.apply({ c: 'supervise', name: 'm', spec: { module: 'm', fn: 'quick', args: [] } })
  await waitFor(() => h.sup.size === 1 && h.proposed.some((c) => c.c === 'startedMany'), 5000, 'm runs')
  h.apply({ c: 'nodeUp', node: 'n2', inc: 'j1' })
  h.lease.ok = false
  await h.sup.tick() // fenced
  await waitFor(() => h.sup.size === 0, 2000, 'fenced')
  h.apply({ c: 'drain', node: 'n1', on: true }) // its handoff: nothing runs to hand over
  let failures = 0
  h.refuse((cmd) => cmd.c === 'handedOff' && failures++ < 1)
  h.lease.ok = true
  h.lease.lapses++
  await ticks(h, 8)
  t.equal(h.state.peek('m')?.node, 'n2', 'moved to n2')
})

t.test('a caller waiting for a start the log has, when a snapshot brought it (no change said so): answered at the next tick', async (t) => {
  // Found in CI on b74532c (supervisor-process.test.ts, 200 names x 100 callers on 5 nodes): one
  // node's callers of 126 names waited 30 s for starts every other node had seen, and failed with
  // StartError. A waiter is answered by the registry's changes, and a snapshot installed makes none.
  const h = harness()
  const other = new RegistryState()
  let i = 0
  other.apply({ c: 'nodeUp', node: 'n1', inc: 'i1' }, ++i)
  other.apply({ c: 'nodeUp', node: 'n2', inc: 'j1' }, ++i)
  other.apply({ c: 'drain', node: 'n1', on: true }, ++i) // (so that x goes to n2)
  other.apply({ c: 'supervise', name: 'x', spec: { module: 'm', fn: 'quick', args: [] }, ue: 1 }, ++i)
  const x = other.peek('x')!
  t.equal(x.node, 'n2')
  const ref = { sworm: 's', node: 'n2', inc: 'j1', id: 7 }
  other.apply({ c: 'started', name: 'x', epoch: x.epoch!, ref }, ++i)
  const waitX = h.sup.waitForStart('x')
  const waitY = h.sup.waitForStart('y')
  h.state.restore(other.snapshot())
  await ticks(h, 2)
  const outcome = await Promise.race([waitX.outcome, new Promise((r) => setTimeout(() => r('still waiting'), 2000))])
  t.same(outcome, { ok: true, ref }, "the start the snapshot holds answers x's caller")
  t.equal(h.sup.waitingFor('y'), 1, 'a name the snapshot does not hold still waits (its supervise may come after)')
  waitY.cancel()
})

t.test('changes about names wake the scans at most once per NAME_CHANGES_PASS_MS, a node change at once', async (t) => {
  // Failed on cf693b7: every change woke them, so while supervised registrations poured in,
  // every node went through all its names at every tick (bench:supervisor: 35 µs of the
  // cluster's CPU per start). The names themselves start from their own changes, as before.
  const h = harness()
  let peeks = 0
  const peek = h.state.peek.bind(h.state)
  h.state.peek = (name: string) => {
    peeks++
    return peek(name)
  }
  const supervise = (from: number, n: number): void => {
    for (let i = from; i < from + n; i++) h.apply({ c: 'supervise', name: `n${i}`, spec: { module: 'm', fn: 'quick', args: [] } })
  }
  supervise(0, 10)
  await waitFor(() => h.sup.size === 10 && !h.sup.startsQueued(), 5000, 'ten workers run')
  await ticks(h, 4)
  let before = peeks
  await ticks(h, 4)
  t.equal(peeks, before, 'at rest')
  // the first changes after a quiet while: a pass at the next tick (each start looks at its own
  // name: count from when they run)
  h.skew.ms += NAME_CHANGES_PASS_MS
  supervise(10, 10)
  await waitFor(() => h.sup.size === 20 && !h.sup.startsQueued(), 5000, 'ten more run, started by their changes')
  before = peeks
  await ticks(h, 1)
  t.ok(peeks >= before + 20, 'one pass for the first changes')
  // more changes within NAME_CHANGES_PASS_MS: no pass
  await ticks(h, 3)
  supervise(20, 10)
  await waitFor(() => h.sup.size === 30 && !h.sup.startsQueued(), 5000, 'ten more run, started by their changes')
  before = peeks
  await ticks(h, 4)
  t.equal(peeks, before, 'no pass for changes within NAME_CHANGES_PASS_MS of the last one')
  h.skew.ms += NAME_CHANGES_PASS_MS
  await ticks(h, 1)
  t.ok(peeks >= before + 30, 'a pass once NAME_CHANGES_PASS_MS is over')
  // a node's change: at once
  await ticks(h, 4)
  before = peeks
  h.apply({ c: 'nodeUp', node: 'n2', inc: 'j1' })
  await ticks(h, 1)
  t.ok(peeks >= before + 30, "a node's change wakes the scans at the next tick")
})
