/**
 * How a node takes a peer's word that it lost its data (Raft's `dataLost`: a message bound to
 * another data directory of this node id, see `forAnotherDisk`). A node restarted on a wiped
 * `dataDir` under its old id fails its start with DATA_LOST (session 27). But a node whose own
 * applied configuration lists it with its present data directory is a member as it is: a peer
 * still binding its id to an older directory is the stale one (one cut off while the id was
 * removed and added back on purpose, `raftNode.addNode` with the new directory's id), and must
 * not fail it. Session 27 left that rule untested: with it taken out of
 * `Membership.noteDataLost`, the first case below fails (the join is refused with DATA_LOST).
 * The word is judged once, when it comes, against the configuration applied then.
 */
import t from 'tap'
import { NodeDataLostError } from '../src/errors.js'
import { Membership, type MembershipHost } from '../src/cluster/membership.js'
import type { ClusterConfig } from '../src/raft/types.js'

/** A membership over a fake Raft node whose applied configuration is `applied`; `lose(from)` emits `dataLost`. */
function harness(applied: ClusterConfig, early?: string) {
  const handlers = new Map<string, (from: string) => void>()
  const raft = {
    on: (ev: string, fn: (from: string) => void) => void handlers.set(ev, fn),
    dataLostFrom: early,
    status: () => ({ config: applied, appliedConfig: applied, role: 'follower', leader: undefined, term: 1 }),
  }
  const quiet = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} }
  const host: MembershipHost = {
    raft: raft as never,
    state: {} as never,
    clock: { now: () => Date.now(), setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms), clearTimeout: (h: unknown) => clearTimeout(h as NodeJS.Timeout) },
    log: quiet,
    peerLog: quiet as never,
    router: { on: () => {}, send: () => {}, drop: () => {} } as never,
    requests: {} as never,
    nodeId: 'n4',
    incarnation: 'n4-i',
    disk: 'disk-new',
    zone: undefined,
    rejoinTargets: undefined,
    addPeers: () => {},
    listen: 'ws://127.0.0.1:1',
    requestTimeoutMs: 1000,
    nodeDownAfterMs: 5000,
    stopped: () => false,
    onUp: () => {},
  }
  const m = new Membership(host)
  return { m, lose: (from: string) => handlers.get('dataLost')!(from) }
}

const voters = { n1: 'ws://n1', n2: 'ws://n2', n3: 'ws://n3', n4: 'ws://n4' }

t.test('a member on the data directory its applied configuration binds it to ignores a stale peer that says it lost its data', async (t) => {
  const h = harness({ voters, learners: {}, disks: { n1: 'd1', n2: 'd2', n3: 'd3', n4: 'disk-new' } })
  h.lose('n3')
  await t.resolves(h.m.askToJoin('n1', 'ws://n1'), 'its join stands: the configuration lists it, on this directory')
})

t.test('a node its configuration binds to another data directory, or does not list, fails its start with DATA_LOST', async (t) => {
  const other = harness({ voters, learners: {}, disks: { n1: 'd1', n2: 'd2', n3: 'd3', n4: 'disk-old' } })
  other.lose('n3')
  await t.rejects(other.m.askToJoin('n1', 'ws://n1'), NodeDataLostError, 'bound to another directory: DATA_LOST')
  const { n4: _, ...without } = voters
  const absent = harness({ voters: without, learners: {}, disks: { n1: 'd1', n2: 'd2', n3: 'd3' } })
  absent.lose('n3')
  await t.rejects(absent.m.askToJoin('n1', 'ws://n1'), NodeDataLostError, 'not listed (a wiped node joining under its old id): DATA_LOST')
  // (the word may have come before membership listened: the Raft node keeps it)
  const early = harness({ voters: without, learners: {}, disks: { n1: 'd1', n2: 'd2', n3: 'd3' } }, 'n2')
  await t.rejects(early.m.askToJoin('n1', 'ws://n1'), NodeDataLostError, 'told before membership listened: DATA_LOST all the same')
  const earlyMember = harness({ voters, learners: {}, disks: { n1: 'd1', n2: 'd2', n3: 'd3', n4: 'disk-new' } }, 'n2')
  await t.resolves(earlyMember.m.askToJoin('n1', 'ws://n1'), 'and a member on its own directory ignores it then too')
})
