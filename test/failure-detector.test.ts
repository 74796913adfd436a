/**
 * The failure detector says when to look again: a silent node is declared gone when its wait
 * ends, not at the next turn of a 100 ms check (issue #15: no polling step on the failover
 * path). Found by reading the failover path: the check ran every 100 ms, so a failover started
 * up to 100 ms after the node's wait was over (the test fails on fc3d2c1, where check() returned
 * nothing).
 */
import t from 'tap'
import { FailureDetector, type FailureDetectorHost } from '../src/cluster/failure-detector.js'
import type { RegistryCommand } from '../src/registry/types.js'
import { RegistryState } from '../src/registry/state.js'

function harness(nodeDownAfterMs = 2750) {
  let now = 1000
  const heard = new Map<string, number>()
  const proposed: RegistryCommand[] = []
  const state = new RegistryState()
  let index = 0
  for (const n of ['n1', 'n2', 'n3']) state.apply({ c: 'nodeUp', node: n, inc: `${n}-i`, prev: '' }, ++index)
  const raft = {
    isLeader: true,
    holdsLeaderLease: () => true,
    status: () => ({ term: 3, config: { voters: { n1: 'a', n2: 'b', n3: 'c' }, learners: {} } }),
    lastHeard: (peer: string) => heard.get(peer),
    propose: (cmd: RegistryCommand) => {
      proposed.push(cmd)
      return new Promise<never>(() => {})
    },
  }
  const host = {
    raft: raft as unknown as FailureDetectorHost['raft'],
    state,
    clock: { now: () => now, setTimeout: () => undefined, clearTimeout: () => {} },
    nodeId: 'n1',
    nodeDownAfterMs,
    stopped: () => false,
  }
  const d = new FailureDetector(host)
  return { d, heard, proposed, raft, advance: (ms: number) => (now += ms), now: () => now }
}

t.test('the detector returns how long until a silent node may be declared gone, and declares it then', async (t) => {
  const h = harness()
  h.d.onLeader()
  h.heard.set('n2', h.now())
  h.heard.set('n3', h.now())
  t.equal(h.d.check(), 2750, 'a new leader first gives every node a full wait')
  h.advance(2750)
  h.heard.set('n3', h.now()) // n3 keeps talking; n2 fell silent at 1000
  t.equal(h.d.check(), 2750, "n2's wait is over: declared gone now; n3's ends in 2750 ms")
  t.same(
    h.proposed.map((c) => c.c === 'nodeDown' && c.node),
    ['n2'],
    'n2 declared gone',
  )
  h.advance(1000)
  t.equal(h.d.check(), 1750, "the next decision at the earliest: n3's wait ends in 1750 ms")
  h.advance(1749)
  h.d.check()
  t.equal(h.proposed.length, 1, 'not a millisecond early')
  h.advance(1)
  t.equal(h.d.check(), Infinity, 'nothing left to wait for (n2 is being declared gone)')
  t.same(
    h.proposed.map((c) => c.c === 'nodeDown' && c.node),
    ['n2', 'n3'],
    'n3 declared gone when its wait ended',
  )
  h.raft.isLeader = false
  t.equal(h.d.check(), Infinity, 'a follower never decides')
})
