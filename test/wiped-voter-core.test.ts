/**
 * A voter restarted on a wiped data directory (a new data directory id, `voteUnlisted: false`, as
 * a sworm started with `join` builds its core) must not answer a stale leader's heartbeats and
 * appends as the voter it was, in the time before the cluster refuses it: the leader's messages
 * carry the data directory its configuration binds the receiver to (`dk`), and a node on another
 * one drops them (`forAnotherDisk` in src/raft/core.ts). The pure core, driven message by message.
 *
 * Failed on 8a08775 (found by a review helper, session 27): the stale leader a and the new leader
 * b held their leases at once, a served a read index that missed b's committed X, and a committed
 * its own entry at the index where b had committed another (asserts 6, 7 and 8).
 */
import t from 'tap'
import { RaftCore } from '../src/raft/core.js'
import type { ClusterConfig, Entry, NodeId, PersistedState, RaftMessage } from '../src/raft/types.js'
import { seededRandom } from '../src/testkit/sim.js'

const TICK = 50
const ET = 6
const LEASE = ((ET - 1) * TICK) / 1.1 // leaseWindowMs(6, 50, 0.1, false), as in a sworm

let now = 0
const rnd = seededRandom(9)
const cfg: ClusterConfig = { voters: { a: 'a', b: 'b', c: 'c' }, learners: {}, disks: { a: 'da', b: 'db', c: 'dc' } }
const cores = new Map<NodeId, RaftCore>()
const applied = new Map<NodeId, Entry[]>()
const reads = new Map<NodeId, Array<{ id: number; index: number }>>()
const cut = new Set<string>()
let queue: RaftMessage[] = []

function boot(id: NodeId, disk: string, persisted: PersistedState, voteUnlisted = true): RaftCore {
  const c = new RaftCore({ id, electionTicks: ET, random: rnd, leaderLease: true, now: () => now, leaseMs: LEASE, disk, voteUnlisted, answerTag: 1000 + id.charCodeAt(0) }, persisted)
  cores.set(id, c)
  applied.set(id, [])
  reads.set(id, [])
  return c
}
const fresh = (): PersistedState => ({ hardState: { term: 1, vote: undefined, commit: 1 }, entries: [{ index: 1, term: 1, type: 'conf', data: cfg }], snapshot: undefined })
for (const id of ['a', 'b', 'c']) boot(id, `d${id}`, fresh())

const stalled = new Set<NodeId>()
function settle(): void {
  for (let round = 0; round < 1000; round++) {
    let moved = false
    for (const [id, c] of cores) {
      if (stalled.has(id)) continue
      while (c.hasReady()) {
        moved = true
        const rd = c.ready()
        queue.push(...rd.messagesNow, ...rd.messages)
        applied.get(id)!.push(...rd.committed)
        reads.get(id)!.push(...rd.reads)
        c.advance(rd)
      }
    }
    const q = queue
    queue = []
    for (const m of q) {
      if (cut.has(`${m.from}>${m.to}`) || stalled.has(m.to)) continue
      cores.get(m.to)?.step(m)
      moved = true
    }
    if (!moved) return
  }
  throw new Error('did not settle')
}
function tick(ids: NodeId[], n = 1): void {
  for (let i = 0; i < n; i++) {
    now += TICK
    for (const id of ids) if (!stalled.has(id)) cores.get(id)!.tick()
    settle()
  }
}
const link = (x: NodeId, y: NodeId, up: boolean): void => {
  for (const k of [`${x}>${y}`, `${y}>${x}`]) {
    if (up) cut.delete(k)
    else cut.add(k)
  }
}
const core = (id: NodeId): RaftCore => cores.get(id)!
const cmdAt = (id: NodeId, index: number): unknown => applied.get(id)!.find((e) => e.index === index)

t.test('a wiped voter answers no stale leader: never two leases at once, no stale read, one committed entry per index', async (t) => {
  // 1. a leads term 2 with b's vote; c never hears a (a<->c cut), so a's progress for c stays at 0
  link('a', 'c', false)
  link('b', 'c', false)
  for (let i = 0; i < 60 && core('a').status().role !== 'leader'; i++) tick(['a', 'b', 'c'])
  t.comment(JSON.stringify(['a','b','c'].map((x) => [x, core(x).status().role, core(x).status().term])))
  link('b', 'c', true)
  tick(['a', 'b', 'c'], 2)
  t.equal(core('a').status().role, 'leader', 'a leads')
  core('a').propose('A1')
  tick(['a', 'b', 'c'], 2)
  const aTerm = core('a').status().term
  t.ok(core('a').leaseHeld(), `a holds its lease in term ${aTerm}`)

  // 2. a is stopped (SIGSTOP) and cut off; b is elected with c's vote and commits X with c
  stalled.add('a')
  link('a', 'b', false)
  for (let i = 0; i < 100 && core('b').status().role !== 'leader'; i++) tick(['b', 'c'])
  t.equal(core('b').status().role, 'leader', `b leads term ${core('b').status().term} (c voted for it)`)
  core('b').propose('X')
  tick(['b', 'c'], 2)
  const xIndex = applied.get('b')!.find((e) => e.data === 'X')!.index
  t.ok(core('b').leaseHeld(), `b committed X at ${xIndex} with c and holds its lease`)
  t.notOk(core('a').leaseHeld(), 'a (stopped) has no lease any more by the clock')

  // 3. c loses its disk and restarts at once with join (empty state, new disk id, voteUnlisted
  //    false); the network now joins c to a, not to b; a wakes up (SIGCONT)
  boot('c', 'dc-new', { hardState: { term: 0, vote: undefined, commit: 0 }, entries: [], snapshot: undefined }, false)
  link('b', 'c', false)
  link('a', 'c', true)
  stalled.delete('a')
  tick(['a'])
  const bothAt = now
  const aHolds = core('a').leaseHeld()
  const bHolds = core('b').leaseHeld()
  t.comment(`at ${bothAt} ms: a (term ${core('a').status().term}) leaseHeld=${aHolds}, b (term ${core('b').status().term}) leaseHeld=${bHolds}; c' term ${core('c').status().term}`)
  t.notOk(aHolds && bHolds, 'never two leaders holding their lease at once (the wiped c acknowledges no round of the stale a)')

  // 4. a ReadIndex on a: confirmed by c's answers, at an index that misses X (committed before the read)
  core('a').readIndex(7)
  tick(['a'], 2)
  const r = reads.get('a')!.find((x) => x.id === 7)
  t.comment(`a's read: ${JSON.stringify(r)}; a's applied: ${JSON.stringify(applied.get('a')!.map((e) => [e.index, e.type, e.data]))}`)
  t.notOk(r && r.index > 0 && r.index < xIndex, 'no linearizable read served that misses the committed X')

  // 5. a commits Y with the wiped c (its progress for c started at 0: it sends c its whole log)
  core('a').propose('Y')
  tick(['a'], 4)
  const ya = applied.get('a')!.find((e) => e.data === 'Y')
  t.comment(`a applied Y at ${ya?.index} (term ${ya?.term}); b applied at ${xIndex}: ${JSON.stringify(cmdAt('b', xIndex))}; at that index a applied ${JSON.stringify(cmdAt('a', xIndex))}`)
  const conflicts: string[] = []
  for (const ea of applied.get('a')!) {
    const eb = cmdAt('b', ea.index) as Entry | undefined
    if (eb && (eb.term !== ea.term || eb.type !== ea.type || JSON.stringify(eb.data) !== JSON.stringify(ea.data))) conflicts.push(`index ${ea.index}: a applied ${ea.type} ${JSON.stringify(ea.data)}@t${ea.term}, b applied ${eb.type} ${JSON.stringify(eb.data)}@t${eb.term}`)
  }
  t.same(conflicts, [], 'one committed entry per index (State Machine Safety)')
  t.comment(`c' status: ${JSON.stringify({ ...core('c').status(), config: undefined })}, config disks ${JSON.stringify(core('c').status().config.disks)}`)
})
