/**
 * Safety scenarios outside the nemesis's old envelope, replayed exactly in the simulation (Sworm
 * nodes, simulated network, in-memory disks, simulated time). Each one broke a guarantee before
 * its fix (issue #10): the commit it failed on is named in its test.
 */
import t from 'tap'
import { MemoryStorage } from '../src/raft/memory-storage.js'
import { silentLogger } from '../src/raft/types.js'
import { Sworm, type SwormOptions } from '../src/sworm.js'
import { SimNetwork, SimScheduler, type SimClock } from '../src/testkit/sim.js'
import * as workers from './fixtures/workers.js'

const g = globalThis as unknown as { __swormNow?: () => number }

interface SimNode {
  id: string
  sworm: Sworm
  clock: SimClock
  storage: MemoryStorage
}

/** A cluster of `n` sworm nodes with exact clocks (rate 1), started with `peers`. */
async function simSworms(n: number, seed: number, opts: Partial<SwormOptions> = {}): Promise<{ sched: SimScheduler; net: SimNetwork; nodes: SimNode[] }> {
  const sched = new SimScheduler(seed)
  const net = new SimNetwork(sched)
  g.__swormNow = () => sched.now
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`)
  const url = (id: string): string => `ws://${id}.sim:1`
  const peers = Object.fromEntries(ids.map((id) => [id, url(id)]))
  const nodes: SimNode[] = []
  await Promise.all(
    ids.map(async (id) => {
      const clock = sched.driftingClock({ offset: 1e6, rate: 1 })
      const storage = new MemoryStorage()
      const sworm = await Sworm.assemble(
        {
          name: 'safety',
          nodeId: id,
          listen: url(id),
          peers,
          dataDir: '/nonexistent',
          secret: 'simulation-secret-0123456789abcdef',
          ...opts,
        },
        {
          storage,
          raftTransport: net.endpoint(id, 'raft'),
          msgTransport: net.endpoint(id, 'msg'),
          clock,
          logger: silentLogger,
          inc: `${id}.1`,
          random: sched.random,
          loadModule: async () => workers as unknown as Record<string, unknown>,
          release: async () => {},
        },
      )
      nodes.push({ id, sworm, clock, storage })
    }),
  )
  nodes.sort((a, b) => (a.id < b.id ? -1 : 1))
  return { sched, net, nodes }
}

async function settle<T>(sched: SimScheduler, p: Promise<T>, maxMs = 20_000): Promise<T> {
  let out: { ok: true; v: T } | { ok: false; e: unknown } | undefined
  p.then(
    (v) => (out = { ok: true, v }),
    (e: unknown) => (out = { ok: false, e }),
  )
  if (!(await sched.runUntilTrue(() => out !== undefined, maxMs))) throw new Error('did not settle in simulated time')
  if (!out!.ok) throw out!.e
  return out!.v
}

t.test('a leader stalled right after a partition cannot renew a follower\'s lease once a new leader exists (#10.1)', async (t) => {
  // Failed on 9d5755f: the old leader's `lease` flag on heartbeats came from Raft ticks, which do
  // not advance while the process is stalled; after a 1 s stall it went on renewing X's lease
  // for ~800 ms of a new leader's term, and X's names ran twice.
  for (const [stallMs, leaseTimeoutMs, maxClockDriftMs] of [
    [1000, 2000, 500],
    [1900, 2000, 500],
    [700, 1000, 300],
  ] as const) {
    const lifeStart = workers.life.length
    const { sched, net, nodes } = await simSworms(5, 4242 + stallMs, { leaseTimeoutMs, maxClockDriftMs })
    const leaderOf = (): SimNode | undefined => nodes.find((x) => x.sworm.status().role === 'leader')
    t.ok(await sched.runUntilTrue(() => leaderOf() !== undefined && nodes.every((x) => x.sworm.leaseOk()), 10_000), 'a leader, every lease held')
    const L = leaderOf()!
    const prefix = `stall${stallMs}/`
    for (let i = 0; i < 20; i++) await settle(sched, L.sworm.registerName(`w${i}`, { module: 'w', fn: 'counter', args: [`${prefix}w${i}`] }))
    await sched.runUntil(sched.now + 1000)
    // X: the follower holding the most names
    const followers = nodes.filter((x) => x !== L)
    const placed = (x: SimNode): number => L.sworm.registered().filter(([, ref]) => ref.node === x.id).length
    followers.sort((a, b) => placed(b) - placed(a))
    const X = followers[0]!
    const rest = followers.slice(1).map((x) => x.id)
    t.ok(placed(X) > 0, `${X.id} holds ${placed(X)} names`)
    net.partition([[L.id, X.id], rest])
    L.clock.stall(stallMs)
    net.stall(L.id, stallMs)
    // a new leader on the majority side moves X's names; wait until every name runs again there
    const majority = nodes.filter((x) => rest.includes(x.id))
    await sched.runUntilTrue(() => {
      const lead = majority.find((x) => x.sworm.status().role === 'leader')
      return lead !== undefined && lead.sworm.registered().every(([, ref]) => rest.includes(ref.node))
    }, 20_000)
    await sched.runUntil(sched.now + 3000)
    const life = workers.life.slice(lifeStart).filter((e) => e.name.startsWith(prefix))
    t.same(workers.overlaps(life), [], `stall ${stallMs} ms: no two incarnations of a name overlapped`)
    t.ok(life.some((e) => e.event === 'stop'), 'X fenced its workers')
    for (const x of nodes) x.sworm.crashForTests()
  }
})

t.test('a node behind a one-way cut (the leader cannot reach it) is declared gone and its names move (#10.4)', async (t) => {
  // Failed on fdfa2c3: the cut-off node's pre-votes reached the leader and kept its "last heard"
  // fresh, so it was never declared gone, while its lease (never renewed) kept its names stopped
  // for the whole cut.
  const { sched, net, nodes } = await simSworms(3, 77, { leaseTimeoutMs: 1000, maxClockDriftMs: 300 })
  const leaderOf = (): SimNode | undefined => nodes.find((x) => x.sworm.status().role === 'leader')
  t.ok(await sched.runUntilTrue(() => leaderOf() !== undefined && nodes.every((x) => x.sworm.leaseOk()), 10_000), 'a leader, every lease held')
  const L = leaderOf()!
  for (let i = 0; i < 12; i++) await settle(sched, L.sworm.registerName(`c${i}`, { module: 'w', fn: 'counter', args: [`oneway/c${i}`] }))
  await sched.runUntil(sched.now + 500)
  const X = nodes.find((x) => x !== L && L.sworm.registered().some(([, ref]) => ref.node === x.id))!
  t.ok(X, `${X.id} holds names`)
  net.block(L.id, X.id) // the leader's messages never reach X; X still reaches everyone
  const moved = await sched.runUntilTrue(() => {
    const lead = leaderOf()
    return lead !== undefined && lead !== X && lead.sworm.registered().every(([, ref]) => ref.node !== X.id)
  }, 10_000)
  t.ok(moved, `${X.id}'s names moved to nodes the leader reaches, within the cut`)
  for (let i = 0; i < 12; i++) t.equal(await settle(sched, L.sworm.call(`c${i}`, 'get', { timeout: 3000 })), 0, `c${i} answers`)
  for (const x of nodes) x.sworm.crashForTests()
})
