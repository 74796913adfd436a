/**
 * Regression tests for the bugs a review of src/raft/{core,node}.ts found (each was failing
 * before its fix; names carry the finding number): appends of a non-durable term (F1), reads on
 * a leader outside the voter set (F2), a retried forward dropped as a duplicate (F3), stale
 * ReadIndex answers (F4).
 */
import t from 'tap'
import { RaftCore } from '../src/raft/core.js'
import type { ClusterConfig, Entry, HardState, NodeId, RaftMessage, Snapshot } from '../src/raft/types.js'
import { seededRandom } from '../src/testkit/sim.js'
import { settle, simCluster } from './sim/helpers.js'

// ------------------------------------------------------------------ a tiny synchronous harness

interface Disk {
  hs: HardState
  entries: Entry[]
  snapshot: Snapshot | undefined
}

class H {
  cores = new Map<NodeId, RaftCore>()
  disks = new Map<NodeId, Disk>()
  applied = new Map<NodeId, Entry[]>()
  reads = new Map<NodeId, Array<{ id: number; index: number }>>()
  queue: RaftMessage[] = []
  cut = new Set<string>()
  random = seededRandom(11)

  constructor(ids: NodeId[], cfg: ClusterConfig) {
    for (const id of ids) {
      const member = cfg.voters[id] !== undefined
      this.disks.set(id, {
        hs: { term: member ? 1 : 0, vote: undefined, commit: member ? 1 : 0 },
        entries: member ? [{ index: 1, term: 1, type: 'conf', data: cfg }] : [],
        snapshot: undefined,
      })
      this.boot(id)
    }
  }

  boot(id: NodeId): RaftCore {
    const d = this.disks.get(id)!
    const core = new RaftCore(
      { id, electionTicks: 10, random: this.random },
      { hardState: { ...d.hs }, entries: d.entries.map((e) => ({ ...e })), snapshot: d.snapshot },
    )
    this.cores.set(id, core)
    this.applied.set(id, [])
    this.reads.set(id, [])
    return core
  }

  c(id: NodeId): RaftCore {
    return this.cores.get(id)!
  }

  persist(id: NodeId, rd: ReturnType<RaftCore['ready']>): void {
    const d = this.disks.get(id)!
    if (rd.snapshot) {
      d.snapshot = rd.snapshot
      d.entries = d.entries.filter((e) => e.index > rd.snapshot!.meta.index)
    }
    if (rd.truncateFrom !== undefined) d.entries = d.entries.filter((e) => e.index < rd.truncateFrom!)
    d.entries.push(...rd.entries.map((e) => ({ ...e })))
    if (rd.hardState) d.hs = { ...rd.hardState }
  }

  settle(max = 10_000): void {
    for (let round = 0; round < max; round++) {
      let moved = false
      for (const [id, c] of this.cores) {
        while (c.hasReady()) {
          moved = true
          const rd = c.ready()
          this.queue.push(...rd.messagesNow)
          this.persist(id, rd)
          this.queue.push(...rd.messages)
          this.applied.get(id)!.push(...rd.committed)
          this.reads.get(id)!.push(...rd.reads)
          c.advance(rd)
        }
      }
      const q = this.queue
      this.queue = []
      for (const m of q) {
        if (this.cut.has(`${m.from}>${m.to}`)) continue
        const c = this.cores.get(m.to)
        if (c) {
          c.step(m)
          moved = true
        }
      }
      if (!moved) return
    }
    throw new Error('did not settle')
  }

  tickUntil(ids: NodeId[], cond: () => boolean, max = 200): void {
    for (let i = 0; i < max && !cond(); i++) {
      for (const id of ids) this.c(id).tick()
      this.settle()
    }
    if (!cond()) throw new Error('condition not reached')
  }
}

const cfgOf = (voters: string[], learners: string[] = []): ClusterConfig => ({
  voters: Object.fromEntries(voters.map((v) => [v, v])),
  learners: Object.fromEntries(learners.map((v) => [v, v])),
})

// ------------------------------------------------------------------ finding 1

t.test('[review F1] single-voter leader sends appends of a term that is not durable yet', async (t) => {
  // Voter A, learner B (the state of a cluster while addNode grows it from 1 to 2 nodes).
  const h = new H(['A', 'B'], cfgOf(['A'], ['B']))
  h.tickUntil(['A'], () => h.c('A').status().role === 'leader')
  h.c('A').propose('base')
  h.settle()
  t.equal(h.c('B').status().commit, h.c('A').status().commit, 'learner caught up')

  // A restarts (term 2 durable), times out and elects itself: term 3, in ONE step.
  h.boot('A')
  const A1 = h.c('A')
  for (let i = 0; i < 40 && A1.status().role !== 'leader'; i++) A1.tick()
  t.equal(A1.status().role, 'leader')
  A1.propose('X') // a client write in the first leadership of term 3
  const rd = A1.ready()
  const durableTerm = h.disks.get('A')!.hs.term
  const early = rd.messagesNow.filter((m) => m.term > durableTerm)
  t.equal(early.length, 0, `messagesNow must not carry term ${A1.status().term} before it is durable (durable: ${durableTerm}); got ${early.length}`)

  // Crash after the appends left and before the write: term 3 and X are lost on A...
  h.cores.delete('A') // A is down
  for (const m of rd.messagesNow) if (m.to === 'B') h.c('B').step(m)
  h.settle()
  h.queue = []
  // ...A restarts at term 2, elects itself for term 3 again and writes Y at the index X had.
  h.boot('A')
  h.tickUntil(['A'], () => h.c('A').status().role === 'leader')
  t.equal(h.c('A').status().term, 3, 'second leader of the same term 3')
  h.c('A').propose('Y')
  h.settle()
  const onA = h.applied.get('A')!.filter((e) => e.type === 'cmd').map((e) => `${e.index}:${String(e.data)}`)
  const onB = h.applied.get('B')!.filter((e) => e.type === 'cmd').map((e) => `${e.index}:${String(e.data)}`)
  t.same(onB.slice(-1), onA.slice(-1), 'state machine safety: learner applies what the leader committed')
})

// ------------------------------------------------------------------ finding 2

t.test('[review F2] a leader outside the voter set answers reads without any quorum check', async (t) => {
  const h = new H(['A', 'B'], cfgOf(['A', 'B']))
  h.tickUntil(['A'], () => h.c('A').status().role === 'leader')
  h.c('A').propose('w1')
  h.settle()
  // A removes itself (thesis §4.2.2: the leader manages the cluster until the change commits).
  h.cut.add('B>A') // B's acks are lost: the change stays uncommitted on A
  const r = h.c('A').proposeConfig(cfgOf(['B']))
  t.ok(r.ok)
  h.settle()
  t.same(Object.keys(h.c('B').status().config.voters), ['B'], 'B uses the new config {B}')
  h.cut.add('A>B') // full partition
  // B times out and, alone in its config, becomes leader and commits a write.
  h.tickUntil(['B'], () => h.c('B').status().role === 'leader')
  h.c('B').propose('w2')
  h.settle()
  const bCommit = h.c('B').status().commit
  t.equal(h.c('A').status().role, 'leader', 'A has not noticed yet (its check-quorum round has not fired)')
  h.c('A').readIndex(99)
  h.settle()
  const got = h.reads.get('A')!.find((x) => x.id === 99)
  t.ok(got === undefined || got.index === 0 || got.index >= bCommit, `A served read at index ${got?.index} while B already committed ${bCommit} (stale read)`)
})

// ------------------------------------------------------------------ node-level helpers

const cluster = simCluster

// ------------------------------------------------------------------ finding 3

t.test('[review F3] a forwarded proposal answered RETRY and resent to the same node is silently dropped', async (t) => {
  const c = await cluster(3, 2)
  const l = c.leader()!
  const f = c.alive().find((m) => m !== l)!
  // "px" plays a follower that forwards proposals (same message format as RaftNode.flushForwards).
  const px = c.net.endpoint('px')
  const got: unknown[] = []
  px.onMessage((_from, msg) => got.push(msg))
  const fwd = { t: 'fwd', from: 'px', to: f.id, boot: 'boot1', reqs: [[1, { op: 'put', key: 'fw', value: 'v' }]] }
  px.send(f.id, fwd)
  await c.sched.runUntil(c.sched.now + 50)
  const first = got.shift() as { res: Array<[number, number]> } | undefined
  t.equal(first?.res[0]?.[1], 2, 'f is not leader: RESULT_RETRY (safe to resend)')
  // f becomes leader; the proposer resends (onForwardResp requeues the same ref).
  await settle(c, l.node!.transferLeadership(f.id))
  await c.sched.runUntilTrue(() => f.node!.isLeader, 2000)
  t.ok(f.node!.isLeader, 'f leads now')
  px.send(f.id, fwd)
  await c.sched.runUntil(c.sched.now + 1000)
  t.equal(f.sm.data.get('fw'), 'v', 'the resent command was proposed and applied')
  t.ok(got.length > 0, 'the proposer got an answer')
})

// ------------------------------------------------------------------ finding 4

t.test('[review F4] readIndexResp is accepted from any sender/term: a stale one completes a new read', async (t) => {
  const c = await cluster(3, 3)
  const l = c.leader()!
  const f = c.alive().find((m) => m !== l)!
  await settle(c, l.node!.propose({ op: 'put', key: 'a', value: '1' }))
  await c.sched.runUntilTrue(() => f.sm.data.get('a') === '1', 1000)
  // f is cut off; the cluster writes a=2.
  c.net.partition([[f.id], c.alive().filter((m) => m !== f).map((m) => m.id)])
  await settle(c, l.node!.propose({ op: 'put', key: 'a', value: '2' }))
  // A read on f (request id 1 of this incarnation). A delayed readIndexResp for id 1 — e.g. one
  // answering the previous incarnation of f, whose ids also started at 1 — arrives.
  let done = false
  void f.node!.read().then(() => (done = true), () => {})
  const ev = c.net.endpoint('old-leader')
  ev.send(f.id, { t: 'readIndexResp', from: 'old-leader', to: f.id, term: 0, ids: [1], index: 1 })
  await c.sched.runUntil(c.sched.now + 100)
  t.notOk(done && f.sm.data.get('a') === '1', `read completed and would return a=${f.sm.data.get('a')} after a=2 was committed`)
})

