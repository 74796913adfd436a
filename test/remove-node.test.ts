/**
 * Sworm.removeNode on a real cluster inside one process (real ws, real LevelDB): a live member is
 * taken out of the Raft configuration through a follower, stops its supervised workers when its
 * lease runs out, is declared gone in the registry, and its workers run elsewhere without two
 * incarnations overlapping; the leader can remove itself; bad input and the last voter are refused.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ConfigChangeError, InvalidArgumentError, NotFoundError, type Sworm, type WorkerRef } from '../src/index.js'
import { life, overlaps } from '../tools/cluster/workers.js'
import { startSworms, waitFor } from './helpers.js'
import { internals } from '../src/internal.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))
const spec = (name: string) => ({ module: WORKERS, fn: 'counter', args: [name] })
// short leases keep the wait for the node-down declaration short
const opts = { leaseTimeoutMs: 1000, maxClockDriftMs: 200 }
const leaderOf = (nodes: Sworm[]): Sworm | undefined => nodes.find((s) => s.status().role === 'leader')

t.test('removeNode through a follower: the node leaves, its workers move, no overlap', async (t) => {
  const c = await startSworms(4, 'rm1', opts)
  t.teardown(() => c.stop())
  const leader = leaderOf(c.nodes)!
  const [victim, caller] = c.nodes.filter((s) => s !== leader) as [Sworm, Sworm]
  const refs = new Map<string, WorkerRef>()
  for (let i = 0; i < 12; i++) refs.set(`w${i}`, await caller.registerName(`w${i}`, spec(`rm1/w${i}`)))
  const onVictim = [...refs].filter(([, r]) => r.node === victim.nodeId).map(([n]) => n)
  t.ok(onVictim.length > 0, `${onVictim.length} supervised workers on ${victim.nodeId}`)
  t.ok(await victim.registerName('static-on-victim', victim.spawn({ handleCall: () => 'x' })))
  for (const [n] of refs) t.equal(await caller.call(n, 'inc'), 1)

  await caller.removeNode(victim.nodeId)
  const rest = c.nodes.filter((s) => s !== victim)
  for (const s of rest) {
    await waitFor(() => !(victim.nodeId in internals(s).raft.status().config.voters), 5000, `${s.nodeId} applied the removal`)
  }
  t.same(caller.statusReport().nodes.find((n) => n.node === victim.nodeId)?.up, false, 'declared gone in the registry when removeNode resolves')
  t.equal(caller.whereisName('static-on-victim'), undefined, 'its static names are dropped')
  await waitFor(() => victim.status().supervised === 0, 5000, 'the removed node stopped its supervised workers (lease)')
  for (const n of onVictim) {
    await waitFor(() => caller.whereisName(n) !== undefined, 10_000, `${n} runs again`)
    t.not(caller.whereisName(n)!.node, victim.nodeId, `${n} moved off ${victim.nodeId}`)
    t.equal(await caller.call(n, 'get'), 0, `${n} answers on its new node (moved without handoff)`)
  }
  t.same(overlaps(life.filter((e) => e.name.startsWith('rm1/'))), [], 'no two incarnations overlapped')
  t.ok(await caller.registerName('after', spec('rm1/after')), 'the smaller cluster takes new names')
  t.not(caller.whereisName('after')!.node, victim.nodeId)

  await caller.removeNode(victim.nodeId)
  t.pass('removing it again resolves (idempotent)')
  await t.rejects(caller.removeNode('no-such-node'), NotFoundError, 'unknown node: NotFoundError')
  await t.rejects(caller.removeNode(''), InvalidArgumentError)
  await t.rejects(caller.removeNode(42 as unknown as string), InvalidArgumentError)
})

t.test('the leader removes itself; a new leader declares it gone; the last voter cannot go', async (t) => {
  const c = await startSworms(3, 'rm2', opts)
  t.teardown(() => c.stop())
  const leader = leaderOf(c.nodes)!
  const ref = await leader.registerName('w', spec('rm2/w'))
  await leader.removeNode(leader.nodeId)
  const rest = c.nodes.filter((s) => s !== leader) as [Sworm, Sworm]
  await waitFor(() => rest.some((s) => s.status().role === 'leader'), 5000, 'a new leader among the others')
  await waitFor(() => rest[0].statusReport().nodes.find((n) => n.node === leader.nodeId)?.up === false, 10_000, 'the old leader is declared gone')
  if (ref.node === leader.nodeId) await waitFor(() => rest[0].whereisName('w')?.node !== undefined && rest[0].whereisName('w')!.node !== leader.nodeId, 10_000, 'w moved')
  t.equal(await rest[0].call('w', 'inc'), 1, 'w answers')
  t.same(overlaps(life.filter((e) => e.name.startsWith('rm2/'))), [], 'no two incarnations overlapped')

  const solo = await startSworms(1, 'rm3', opts)
  t.teardown(() => solo.stop())
  await t.rejects(solo.nodes[0]!.removeNode(solo.nodes[0]!.nodeId), ConfigChangeError, 'the last voter: ConfigChangeError')
})
