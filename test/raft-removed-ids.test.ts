/**
 * The configuration remembers the ids removed from it (`ClusterConfig.removed`, the last
 * `MAX_REMOVED_IDS`), so that a join under one is refused (see safety-sim.test.ts for that): the
 * list itself, on the Raft nodes of the simulation.
 */
import t from 'tap'
import { MAX_REMOVED_IDS } from '../src/raft/types.js'
import { validateRaftMessage } from '../src/raft/validate.js'
import { simCluster, settle } from './sim/helpers.js'

t.test('removing a member whose id is longer than 256 characters commits, and the log goes on', async (t) => {
  // Failed on 79833cc (found by review): the configuration that remembered it was refused by every
  // follower as a bad entry (a removed id of more than 256 characters), and nothing committed again.
  const c = await simCluster(3, 7)
  const long = 'x'.repeat(300)
  const L = c.leader()!
  await settle(c, L.node!.addNode(long, 'sim://long', { voter: false }), 20_000)
  await settle(c, L.node!.removeNode(long), 30_000)
  t.same(L.node!.status().appliedConfig.removed, [long], 'removed, and remembered')
  await settle(c, c.leader()!.node!.propose({ op: 'put', key: 'k', value: 'v' }), 30_000)
  t.ok(await c.sched.runUntilTrue(() => c.alive().every((m) => m.sm.data.get('k') === 'v'), 10_000), 'a later write reaches every replica')
  await c.stopAll()
})

t.test('the removed ids are kept in order, the latest last, at most MAX_REMOVED_IDS; an id added back leaves the list', async (t) => {
  const c = await simCluster(3, 8)
  const L = c.leader()!.node!
  const n = MAX_REMOVED_IDS + 3
  for (let i = 0; i < n; i++) {
    await settle(c, L.addNode(`l${i}`, `sim://l${i}`, { voter: false }), 20_000)
    await settle(c, L.removeNode(`l${i}`), 20_000)
  }
  const removed = L.status().appliedConfig.removed ?? []
  t.equal(removed.length, MAX_REMOVED_IDS, `${MAX_REMOVED_IDS} kept`)
  t.equal(removed[removed.length - 1], `l${n - 1}`, 'the latest last')
  t.equal(removed[0], `l${n - MAX_REMOVED_IDS}`, 'the oldest forgotten first')
  await settle(c, L.removeNode('n3'), 20_000)
  await settle(c, L.addNode('n3', 'sim://n3', { voter: false }), 20_000)
  t.notOk(L.status().appliedConfig.removed?.includes('n3'), 'n3, added back on purpose, is not a removed id any more')
  await c.stopAll()
})

t.test('a configuration with more removed ids than this build keeps, or long ones, is accepted on the wire', async (t) => {
  // (a later build may keep more: refusing its configuration would stop this node's log there)
  const removed = [...Array.from({ length: MAX_REMOVED_IDS * 2 }, (_, i) => `r${i}`), 'y'.repeat(1000)]
  const msg = {
    t: 'app',
    from: 'n1',
    to: 'n2',
    term: 2,
    prevIndex: 0,
    prevTerm: 0,
    commit: 0,
    entries: [{ index: 1, term: 2, type: 'conf', data: { voters: { n1: 'a', n2: 'b' }, learners: {}, removed } }],
  }
  t.equal(typeof validateRaftMessage(msg, 'n1', 'n2'), 'object', 'accepted')
  t.equal(validateRaftMessage({ ...msg, entries: [{ ...msg.entries[0], data: { voters: { n1: 'a' }, learners: {}, removed: [1] } }] }, 'n1', 'n2'), 'bad entry in app', 'a removed id that is not a string is not')
})
