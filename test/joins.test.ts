/**
 * Joins as learners (issue #13), in one process over real sockets and LevelDB: several nodes
 * joining at once all become members (configuration changes made at the same time must not undo
 * one another: found by review, they did), and a node that joined restarts even when the node its
 * `join` option names is down (found by review: its restart waited for that node).
 */
import t from 'tap'
import { Sworm, silentLogger } from '../src/index.js'
import { internals } from '../src/internal.js'
import { freePorts, startSworms, TEST_SECRET, waitFor } from './helpers.js'

const members = (s: Sworm): string[] => {
  const cfg = internals(s).raft.status().config
  return [...Object.keys(cfg.voters), ...Object.keys(cfg.learners)].sort()
}

t.test('four nodes joining at once all become members, and autopilot makes two of them voters', { timeout: 120_000 }, async (t) => {
  const c = await startSworms(3, 'joins', { stopOnSignals: false })
  const ports = await freePorts(4)
  const started = await Promise.allSettled(
    ports.map((port, i) =>
      Sworm.start({ name: 'joins', nodeId: `j${i}`, listen: `ws://127.0.0.1:${port}`, join: c.peers[`n${1 + (i % 3)}`]!, dataDir: `${c.dir}/j${i}`, secret: TEST_SECRET, logger: silentLogger, stopOnSignals: false, autopilot: { stabilizationMs: 500 } }),
    ),
  )
  const joined = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))
  t.teardown(async () => {
    await Promise.all(joined.map((j) => j.stop().catch(() => {})))
    await c.stop()
  })
  t.same(started.map((s) => (s.status === 'rejected' ? String(s.reason) : 'ok')), ['ok', 'ok', 'ok', 'ok'], 'every start resolved')
  const all = [...c.nodes, ...joined]
  const want = ['j0', 'j1', 'j2', 'j3', 'n1', 'n2', 'n3']
  await waitFor(() => all.every((s) => JSON.stringify(members(s)) === JSON.stringify(want)), 20_000, 'every node holds all 7 as members')
  const leader = all.find((s) => s.status().role === 'leader')!
  await waitFor(() => Object.keys(internals(leader).raft.status().config.voters).length === 5, 20_000, '5 voters (the default), 2 learners')
  t.equal(Object.keys(internals(leader).raft.status().config.learners).length, 2)
})

t.test('a node that joined restarts while the node named by its join option is down', { timeout: 120_000 }, async (t) => {
  const c = await startSworms(3, 'rejoin', { stopOnSignals: false })
  const leader = c.nodes.find((s) => s.status().role === 'leader') ?? c.nodes[0]!
  const otherId = Object.keys(c.peers).find((id) => id !== leader.nodeId)!
  const other = c.nodes.find((s) => s.nodeId === otherId)!
  const [port] = await freePorts(1)
  const opts = { name: 'rejoin', nodeId: 'j0', listen: `ws://127.0.0.1:${port}`, join: c.peers[otherId]!, dataDir: `${c.dir}/j0`, secret: TEST_SECRET, logger: silentLogger, stopOnSignals: false as const }
  let j = await Sworm.start(opts)
  t.teardown(async () => {
    await j.stop().catch(() => {})
    await c.stop()
  })
  await waitFor(() => internals(j).raft.status().appliedConfig.learners.j0 !== undefined || internals(j).raft.status().appliedConfig.voters.j0 !== undefined, 10_000, 'j0 a member')
  await j.stop()
  await other.stop() // the node j0 joined through (not the leader: no election, no new commit index on disk)
  j = await Sworm.start(opts)
  t.ok(members(j).includes('j0'), 'j0 started from its data directory without its join target')
  await waitFor(() => j.status().leader !== undefined, 10_000, 'j0 follows the leader')
})
