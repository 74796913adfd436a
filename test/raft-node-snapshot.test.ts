/**
 * A RaftNode's background snapshot against what can happen while it is taken: a snapshot from
 * the leader installed meanwhile, a disk that fails meanwhile. One follower, driven by hand-made
 * messages from its leader; a state machine whose snapshots and restores take many steps.
 */
import t from 'tap'
import { RaftNode, type StateMachine, type StepTask } from '../src/raft/node.js'
import { MemoryStorage } from '../src/raft/storage/memory-storage.js'
import type { ClusterConfig, Entry, NodeId, Transport } from '../src/raft/types.js'
import { crc32c } from '../src/util/crc32c.js'
import { waitFor } from './helpers.js'

/** Counts applied commands; a snapshot takes `snapSteps` steps and a restore `restoreSteps`. */
class SlowMachine implements StateMachine<unknown, unknown> {
  n = 0
  snapshotsBegun = 0
  snapshotsDone = 0
  snapshotsAbandoned = 0
  constructor(
    private readonly snapSteps = 1,
    private readonly restoreStepCount = 1,
  ) {}
  apply(): unknown {
    return ++this.n
  }
  snapshot(): Uint8Array {
    return Uint8Array.of(this.n)
  }
  restore(d: Uint8Array): void {
    this.n = d[0]!
  }
  snapshotSteps(): StepTask<Uint8Array> {
    const v = this.n
    let i = 0
    this.snapshotsBegun++
    return {
      step: () => {
        if (++i < this.snapSteps) return undefined
        this.snapshotsDone++
        return Uint8Array.of(v)
      },
      abandon: () => {
        this.snapshotsAbandoned++
      },
    }
  }
  restoreSteps(d: Uint8Array): StepTask<true> {
    let i = 0
    return {
      step: () => {
        if (++i < this.restoreStepCount) return undefined
        this.n = d[0]!
        return true
      },
    }
  }
}

const config: ClusterConfig = { voters: { a: 'x', b: 'y', c: 'z' }, learners: {} }

/** Follower `c` of leader `a`: a transport that delivers what the test injects. */
function follower(): { transport: Transport; fromLeader: (m: Record<string, unknown>) => void } {
  let handler: (from: NodeId, m: unknown) => void = () => {}
  return {
    transport: { self: 'c', send: () => {}, onMessage: (h) => (handler = h), setPeers: () => {}, close: async () => {} },
    fromLeader: (m) => handler('a', { from: 'a', to: 'c', term: 1, ...m }),
  }
}

function entries(from: number, n: number): Entry[] {
  return Array.from({ length: n }, (_, i): Entry => (from + i === 1 ? { index: 1, term: 1, type: 'conf', data: config } : { index: from + i, term: 1, type: 'cmd', data: i }))
}

// Failed on e936db1 (the code of 1bfd36c): the follower's own snapshot (at 11) finished while the leader's (at 100)
// was being restored; the disk refused the older one and the node failed its storage.
t.test('an install from the leader overtaking the node’s own snapshot: no storage failure', async (t) => {
  const sm = new SlowMachine(60, 200)
  const { transport, fromLeader } = follower()
  const node = await RaftNode.start({ id: 'c', storage: new MemoryStorage(), transport, stateMachine: sm, snapshotEvery: 5, tickMs: 1000, electionTicks: 6 })
  t.teardown(() => node.stop({ transfer: false }))
  const failures: Error[] = []
  node.on('failed', (e) => failures.push(e))
  fromLeader({ t: 'app', prevIndex: 0, prevTerm: 0, entries: entries(1, 11), commit: 11 })
  await waitFor(() => node.status().applied === 11 && sm.snapshotsBegun === 1, 5000, 'entries applied, a snapshot begun')
  const data = Uint8Array.of(42)
  fromLeader({ t: 'snap', meta: { index: 100, term: 1, config }, total: 1, offset: 0, data, crc: crc32c(data) })
  await waitFor(() => node.status().applied === 100, 10_000, 'the leader’s snapshot installed')
  await waitFor(() => sm.snapshotsDone + sm.snapshotsAbandoned === 1, 5000, 'the node’s own snapshot ended or was given up')
  t.same(failures, [], 'no storage failure')
  t.equal(node.status().snapshotIndex, 100)
  t.equal(sm.n, 42, 'the state is the leader’s')
})

// Failed on e936db1 (the code of 1bfd36c): a disk fault failed the background snapshot's write, which failed the node,
// then the Ready loop's write queued behind it failed it a second time: two 'failed' events.
t.test('a disk failing under the background snapshot and a write fails the node once', async (t) => {
  let fault = false
  let holdSnapshot = true
  let faulted = 0
  const held: Array<() => void> = []
  const storage = new MemoryStorage({
    delay: async (op) => {
      if (op === 'snapshot' && holdSnapshot) await new Promise<void>((r) => held.push(r))
      if (fault) {
        faulted++
        throw new Error('ENOSPC')
      }
    },
  })
  const { transport, fromLeader } = follower()
  const sm = new SlowMachine(3, 1)
  const node = await RaftNode.start({ id: 'c', storage, transport, stateMachine: sm, snapshotEvery: 5, tickMs: 1000, electionTicks: 6, storageRetryMs: 50 })
  t.teardown(() => node.stop({ transfer: false }))
  const events: string[] = []
  node.on('failed', (e) => events.push(`failed: ${e.message}`))
  node.on('recovered', () => events.push('recovered'))
  fromLeader({ t: 'app', prevIndex: 0, prevTerm: 0, entries: entries(1, 11), commit: 11 })
  await waitFor(() => node.status().applied === 11 && held.length === 1, 5000, 'entries applied, the snapshot’s write held')
  fromLeader({ t: 'app', prevIndex: 11, prevTerm: 1, entries: entries(12, 1), commit: 11 }) // its write queues behind
  fault = true
  holdSnapshot = false
  for (const r of held.splice(0)) r()
  await waitFor(() => faulted >= 2, 5000, 'both writes failed')
  fault = false
  await waitFor(() => events.includes('recovered'), 10_000, 'recovered')
  t.equal(events.filter((e) => e.startsWith('failed')).length, 1, `one failure (${JSON.stringify(events)})`)
  t.equal(events.filter((e) => e === 'recovered').length, 1, 'one recovery')
})

// Found by review (session 15): a Ready waiting on its write went on once the write completed,
// though the node had failed meanwhile (its background snapshot failed): it sent its messages,
// renewed its lease, and could report itself leader while failed. Failed on deb649e: an append's
// answer sent after the failure.
t.test('a Ready whose write completes after the node failed sends nothing', async (t) => {
  let holdWrites = false
  const held: Array<() => void> = []
  const storage = new MemoryStorage({
    delay: async (op) => {
      if (op === 'write' && holdWrites) await new Promise<void>((r) => held.push(r))
    },
  })
  let failed = false
  const sentAfterFailure: string[] = []
  let handler: (from: NodeId, m: unknown) => void = () => {}
  const transport: Transport = {
    self: 'c',
    send: (to, m) => {
      if (failed) sentAfterFailure.push(`${(m as { t: string }).t} to ${to}`)
    },
    onMessage: (h) => (handler = h),
    setPeers: () => {},
    close: async () => {},
  }
  const fromLeader = (m: Record<string, unknown>): void => handler('a', { from: 'a', to: 'c', term: 1, ...m })
  // a snapshot of many steps, which fails when told to
  let failSnapshot = false
  class FailingMachine extends SlowMachine {
    override snapshotSteps(): StepTask<Uint8Array> {
      const inner = super.snapshotSteps()
      return {
        step: () => {
          if (failSnapshot) throw new Error('snapshot encoding failed')
          return inner.step()
        },
        abandon: () => inner.abandon?.(),
      }
    }
  }
  const sm = new FailingMachine(1_000_000, 1)
  const node = await RaftNode.start({ id: 'c', storage, transport, stateMachine: sm, snapshotEvery: 5, tickMs: 1000, electionTicks: 6, storageRetryMs: 0 })
  t.teardown(() => node.stop({ transfer: false }))
  node.on('failed', () => (failed = true))
  fromLeader({ t: 'app', prevIndex: 0, prevTerm: 0, entries: entries(1, 11), commit: 11 })
  await waitFor(() => node.status().applied === 11 && sm.snapshotsBegun === 1, 5000, 'entries applied, a snapshot under way')
  holdWrites = true
  fromLeader({ t: 'app', prevIndex: 11, prevTerm: 1, entries: entries(12, 1), commit: 11 })
  await waitFor(() => held.length === 1, 5000, 'the next write is on its way to the disk')
  failSnapshot = true
  await waitFor(() => failed, 5000, 'the snapshot failed the node')
  const before = storage.appliedWrites
  holdWrites = false
  for (const r of held.splice(0)) r()
  // (what the Ready does after its write runs in microtasks right after it: over by the next look)
  await waitFor(() => storage.appliedWrites > before, 5000, 'the held write reached the disk')
  t.same(sentAfterFailure, [], 'nothing sent once failed')
  t.equal(node.isLeader, false)
})

t.test('compactNow: a snapshot of what is applied, the log compacted up to it, whatever the period', async (t) => {
  // (what bench:scale calls before it measures a replica's heap: the figure is "with the log compacted")
  const sm = new SlowMachine(20)
  const { transport, fromLeader } = follower()
  const node = await RaftNode.start({ id: 'c', storage: new MemoryStorage(), transport, stateMachine: sm, snapshotEvery: 1_000, tickMs: 1000, electionTicks: 6 })
  t.teardown(() => node.stop({ transfer: false }))
  fromLeader({ t: 'app', prevIndex: 0, prevTerm: 0, entries: entries(1, 40), commit: 40 })
  await waitFor(() => node.status().applied === 40, 5000, 'entries applied')
  t.equal(node.status().snapshotIndex, 0, 'no snapshot due yet (one every 1,000 entries)')
  const alive = setInterval(() => {}, 1000) // (the node's timers do not keep a process alive)
  t.teardown(() => clearInterval(alive))
  await node.compactNow()
  t.equal(node.status().snapshotIndex, 40, 'the log is compacted up to what was applied')
  t.equal(sm.snapshotsDone, 1)
  await node.compactNow()
  t.equal(sm.snapshotsBegun, 1, 'nothing new applied: no second snapshot')
})
