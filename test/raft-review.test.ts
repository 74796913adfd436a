/**
 * Regression tests for the bugs a review of src/raft/{core,node}.ts found (each was failing
 * before its fix; names carry the finding number): appends of a non-durable term (F1), reads on
 * a leader outside the voter set (F2), a retried forward dropped as a duplicate (F3), stale
 * ReadIndex answers (F4).
 */
import t from 'tap'
import type { ClusterConfig, NodeId } from '../src/raft/types.js'
import { encodeCommand } from '../src/raft/entry-codec.js'
import { coreConfig, CoreHarness } from './sim/core-harness.js'
import { settle, simCluster } from './sim/helpers.js'

/** A harness of `ids` on configuration `cfg` (seed 11). */
const harness = (ids: NodeId[], cfg: ClusterConfig): CoreHarness => new CoreHarness(ids, cfg, { seed: 11 })
const cfgOf = coreConfig

// ------------------------------------------------------------------ finding 1

t.test('[review F1] single-voter leader sends appends of a term that is not durable yet', async (t) => {
  // Voter A, learner B (the state of a cluster while addNode grows it from 1 to 2 nodes).
  const h = harness(['A', 'B'], cfgOf(['A'], ['B']))
  h.tickUntil(['A'], () => h.core('A').status().role === 'leader')
  h.core('A').propose('base')
  h.settle()
  t.equal(h.core('B').status().commit, h.core('A').status().commit, 'learner caught up')

  // A restarts (term 2 durable), times out and elects itself: term 3, in ONE step.
  h.boot('A')
  const A1 = h.core('A')
  for (let i = 0; i < 40 && A1.status().role !== 'leader'; i++) A1.tick()
  t.equal(A1.status().role, 'leader')
  A1.propose('X') // a client write in the first leadership of term 3
  const rd = A1.ready()
  const durableTerm = h.disks.get('A')!.hs.term
  const early = rd.messagesNow.filter((m) => m.term > durableTerm)
  t.equal(early.length, 0, `messagesNow must not carry term ${A1.status().term} before it is durable (durable: ${durableTerm}); got ${early.length}`)

  // Crash after the appends left and before the write: term 3 and X are lost on A...
  h.cores.delete('A') // A is down
  for (const m of rd.messagesNow) if (m.to === 'B') h.core('B').step(m)
  h.settle()
  h.queue = []
  // ...A restarts at term 2, elects itself for term 3 again and writes Y at the index X had.
  h.boot('A')
  h.tickUntil(['A'], () => h.core('A').status().role === 'leader')
  t.equal(h.core('A').status().term, 3, 'second leader of the same term 3')
  h.core('A').propose('Y')
  h.settle()
  const onA = h.applied.get('A')!.filter((e) => e.type === 'cmd').map((e) => `${e.index}:${String(e.data)}`)
  const onB = h.applied.get('B')!.filter((e) => e.type === 'cmd').map((e) => `${e.index}:${String(e.data)}`)
  t.same(onB.slice(-1), onA.slice(-1), 'state machine safety: learner applies what the leader committed')
})

// ------------------------------------------------------------------ finding 2

t.test('[review F2] a leader outside the voter set answers reads without any quorum check', async (t) => {
  const h = harness(['A', 'B'], cfgOf(['A', 'B']))
  h.tickUntil(['A'], () => h.core('A').status().role === 'leader')
  h.core('A').propose('w1')
  h.settle()
  // A removes itself (thesis §4.2.2: the leader manages the cluster until the change commits).
  h.cut.add('B>A') // B's acks are lost: the change stays uncommitted on A
  const r = h.core('A').proposeConfig(cfgOf(['B']))
  t.ok(r.ok)
  h.settle()
  t.same(Object.keys(h.core('B').status().config.voters), ['B'], 'B uses the new config {B}')
  h.cut.add('A>B') // full partition
  // B times out and, alone in its config, becomes leader and commits a write.
  h.tickUntil(['B'], () => h.core('B').status().role === 'leader')
  h.core('B').propose('w2')
  h.settle()
  const bCommit = h.core('B').status().commit
  t.equal(h.core('A').status().role, 'leader', 'A has not noticed yet (its check-quorum round has not fired)')
  h.core('A').readIndex(99)
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
  const fwd = { t: 'fwd', from: 'px', to: f.id, boot: 'boot1', reqs: [[1, encodeCommand({ op: 'put', key: 'fw', value: 'v' })]] }
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

