/**
 * A Raft node's ticks never come early by its clock, though its timers may. Node's timers count
 * whole milliseconds of a cached loop time, so `setTimeout(f, 50)` can run after 49.2 ms of
 * `performance.now()`; a node that ticked at each timer counted `electionTicks` in less than
 * `electionTicks × tickMs`, and a voter's refusal of votes after it heard a leader (stickiness)
 * could end while that leader still held its lease, which assumes `(electionTicks - 1) × tickMs`
 * by the voter's clock (found by review, session 25, with a scratch test over RaftCore ticking
 * every 49 ms: a new leader elected while the old one held its lease). Here the node's clock fires
 * every timer early (1 ms, or half a shorter one). Fails on 002ec57 (ticks 49 ms apart).
 */
import t from 'tap'
import { RaftNode, leaseWindowMs } from '../src/raft/node.js'
import { MemoryStorage } from '../src/raft/storage/memory-storage.js'
import type { Clock } from '../src/raft/types.js'
import { KvStateMachine } from '../src/testkit/kv-state-machine.js'
import { SimNetwork, SimScheduler } from '../src/testkit/sim.js'
import { coreConfig } from './sim/core-harness.js'

t.test('ticks come tickMs apart at least by the clock, when every timer fires early', async (t) => {
  const sched = new SimScheduler(3)
  const net = new SimNetwork(sched)
  const early: Clock = {
    now: () => sched.now,
    // (up to 1 ms early, and never before half its time: time passes)
    setTimeout: (fn, ms) => sched.schedule(ms - Math.min(1, ms / 2), fn),
    clearTimeout: (h) => {
      if (h && typeof h === 'object' && 'cancelled' in h) (h as { cancelled: boolean }).cancelled = true
    },
  }
  const node = await RaftNode.start({ id: 'a', storage: new MemoryStorage(), transport: net.endpoint('a'), stateMachine: new KvStateMachine(), clock: early, random: sched.random, tickMs: 50, electionTicks: 6, bootstrap: coreConfig(['a']) })
  t.teardown(() => node.stop())
  const core = (node as unknown as { core: { tick(): void } }).core
  const at: number[] = []
  const tick = core.tick.bind(core)
  core.tick = () => {
    at.push(sched.now)
    tick()
  }
  await sched.runUntil(5000)
  const gaps = at.slice(1).map((x, i) => x - at[i]!)
  t.ok(at.length >= 90, `${at.length} ticks in 5 s`)
  t.equal(Math.min(...gaps), 50, 'no two ticks less than tickMs apart, by the clock')
  t.ok(at.length <= 5000 / 50, 'no more ticks than the clock allows')
})

t.test("the leader's lease window: electionTicks - 1 ticks over 1 + drift; a tick less with lease reads", async (t) => {
  t.equal(leaseWindowMs(6, 50, 0.25, false), 200)
  t.equal(leaseWindowMs(6, 50, 0.25, true), 160)
  t.ok(leaseWindowMs(2, 50, 0.1, true) <= 0, 'too few election ticks for lease reads: no window')
  const sched = new SimScheduler(4)
  const net = new SimNetwork(sched)
  await t.rejects(
    RaftNode.start({ id: 'a', storage: new MemoryStorage(), transport: net.endpoint('a'), stateMachine: new KvStateMachine(), clock: sched.clock(), tickMs: 50, electionTicks: 2, leaseRead: true, bootstrap: coreConfig(['a']) }),
    { name: 'RangeError', message: /electionTicks must be 3 or more with leaseRead/ },
    'a node that could never hold a lease for reads is refused, naming the option',
  )
})
