/**
 * Raft nodes as real OS processes with LevelDB storage on loopback WebSockets: leader crash
 * (SIGKILL), failover, restart from the data dir, catch-up, and a crash of the whole cluster.
 */
import t from 'tap'
import { performance } from 'node:perf_hooks'
import { firstCommit, pollUntil, startCluster, type Cluster } from '../tools/cluster/raft-cluster.js'
import type { KvOutput } from '../src/testkit/linearizability.js'

type Acked = Map<string, string>

/** putIfAbsent through `node`; returns the state machine's answer. */
function put(c: Cluster, node: string, key: string, value: string): Promise<KvOutput> {
  return c.request<KvOutput>(node, { op: 'propose', input: { op: 'putIfAbsent', key, value } }, 20_000)
}

/** Write `count` keys `${prefix}${i}` round-robin through `nodes`, `conc` in flight; every answer must be ok. */
async function writeKeys(c: Cluster, nodes: string[], prefix: string, count: number, acked: Acked, conc = 16): Promise<number> {
  let next = 0
  let bad = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      const key = `${prefix}${i}`
      const value = `v${i}`
      const node = nodes[i % nodes.length]!
      const r = await put(c, node, key, value)
      if ('ok' in r && r.ok === true) acked.set(key, value)
      else bad++
    }
  }
  await Promise.all(Array.from({ length: conc }, worker))
  return bad
}

/** Poll until `node`'s state machine holds every acked key with its value. */
async function waitForKeys(c: Cluster, node: string, acked: Acked, timeoutMs: number): Promise<void> {
  const keys = [...acked.keys()]
  await pollUntil(
    async () => {
      const vals = await c.request<Array<string | null>>(node, { op: 'localGetMany', keys }, 5000)
      const missing = keys.filter((k, i) => vals[i] !== acked.get(k))
      return missing.length === 0 ? true : undefined
    },
    timeoutMs,
    `${node} to hold all ${keys.length} acknowledged keys`,
    50,
  )
}

for (const n of [3, 5]) {
  t.test(`${n} processes: SIGKILL the leader, fail over, restart it, nothing lost`, { timeout: 90_000 }, async (t) => {
    const c = await startCluster({ n })
    t.teardown(() => c.stopAll())
    const acked: Acked = new Map()
    const t0 = performance.now()
    const leader = await c.waitForLeader(15_000)
    t.comment(`first leader ${leader} after ${Math.round(performance.now() - t0)} ms`)

    t.equal(await writeKeys(c, c.ids, 'a', 200, acked), 0, '200 putIfAbsent through every node returned ok')

    const tk = performance.now()
    await c.kill(leader)
    const survivors = c.alive()
    const [newLeader, commitAt] = await Promise.all([
      c.waitForLeader(15_000).then((l) => [l, performance.now()] as const),
      firstCommit(c, survivors, 'probe', 15_000),
    ])
    t.not(newLeader[0], leader, 'a new leader was elected')
    t.pass('a proposal committed through a survivor')
    t.comment(
      `killed leader ${leader}; new leader ${newLeader[0]} seen after ${Math.round(newLeader[1] - tk)} ms; ` +
        `first proposal through a survivor committed after ${Math.round(commitAt - tk)} ms`,
    )

    t.equal(await writeKeys(c, survivors, 'b', 200, acked), 0, '200 more putIfAbsent through the survivors returned ok')

    const tr = performance.now()
    await c.restart(leader)
    await waitForKeys(c, leader, acked, 30_000)
    t.comment(`restarted ${leader}: caught up on ${acked.size} keys in ${Math.round(performance.now() - tr)} ms`)
    t.pass(`restarted ${leader} holds every acknowledged key`)

    // a write through another node, then a linearizable read from the restarted one must see it
    const other = c.ids.find((id) => id !== leader)!
    const w = await put(c, other, 'after-restart', 'fresh')
    t.same(w, { ok: true }, 'write after restart committed')
    const r = await c.request<KvOutput>(leader, { op: 'read', key: 'after-restart' })
    t.same(r, { value: 'fresh' }, 'linearizable read from the restarted node sees the latest write')
    const r2 = await c.request<KvOutput>(leader, { op: 'read', key: 'a0' })
    t.same(r2, { value: 'v0' }, 'linearizable read from the restarted node sees an early write')

    // every node ends up with the same data
    for (const id of c.ids) await waitForKeys(c, id, acked, 15_000)
    t.pass('every node holds every acknowledged key')
  })
}

t.test('3 processes: SIGKILL all nodes mid-write, restart all, every acknowledged key survives', { timeout: 90_000 }, async (t) => {
  const c = await startCluster({ n: 3 })
  t.teardown(() => c.stopAll())
  const acked: Acked = new Map()
  const leader = await c.waitForLeader(15_000)
  t.equal(await writeKeys(c, c.ids, 'pre', 200, acked), 0, '200 putIfAbsent returned ok')

  // keep writing while the whole cluster is killed
  let stop = false
  let next = 0
  let failed = 0
  const writer = async (): Promise<void> => {
    while (!stop) {
      const i = next++
      const key = `mid${i}`
      try {
        const r = await put(c, c.ids[i % c.ids.length]!, key, `v${i}`)
        if ('ok' in r && r.ok) acked.set(key, `v${i}`)
      } catch {
        failed++
        await new Promise((r) => setTimeout(r, 5)) // a dead node answers at once: do not spin
      }
    }
  }
  const writers = Array.from({ length: 8 }, writer)
  const before = acked.size
  await pollUntil(() => (acked.size >= before + 100 ? true : undefined), 20_000, '100 writes during the load')
  await Promise.all(c.ids.map((id) => c.kill(id)))
  stop = true
  await Promise.all(writers)
  t.comment(`killed all 3 (leader was ${leader}) with writes in flight: ${acked.size} acknowledged, ${failed} failed/unknown`)

  const tr = performance.now()
  await Promise.all(c.ids.map((id) => c.restart(id)))
  const l2 = await c.waitForLeader(15_000)
  t.comment(`after restarting all, leader ${l2} in ${Math.round(performance.now() - tr)} ms`)
  for (const id of c.ids) await waitForKeys(c, id, acked, 30_000)
  t.pass(`all ${acked.size} acknowledged keys are on every node after the restart`)

  const r = await c.request<KvOutput>(l2, { op: 'read', key: 'pre0' })
  t.same(r, { value: 'v0' }, 'linearizable read after the restart')
  const w = await put(c, c.ids[0]!, 'post', 'x')
  t.same(w, { ok: true }, 'the restarted cluster accepts writes')
})
