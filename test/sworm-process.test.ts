/**
 * The sworm as real OS processes (one `Sworm.start` per process), real sockets and real LevelDB:
 * one winner among concurrent registrations, calls and groups across nodes, names of ended or
 * killed workers vanishing, a node joining later, and a leader SIGKILLed during registrations.
 */
import t from 'tap'
import { performance } from 'node:perf_hooks'
import type { WorkerRef } from '../src/index.js'
import { pollUntil, startSwormCluster, type SwormCluster } from '../tools/cluster/sworm-cluster.js'

type Ref = WorkerRef | null

const consistentWhereis = (c: SwormCluster, node: string, name: string): Promise<Ref> =>
  c.request<Ref>(node, { op: 'whereis', name, consistent: true })

const localWhereis = (c: SwormCluster, node: string, name: string): Promise<Ref> => c.request<Ref>(node, { op: 'whereis', name })

/** Poll until `name` is (`present`) or is not registered in `node`'s local copy. */
function waitLocal(c: SwormCluster, node: string, name: string, present: boolean, timeoutMs: number): Promise<true> {
  return pollUntil(
    async () => ((await localWhereis(c, node, name)) !== null) === present || undefined,
    timeoutMs,
    `${node} to ${present ? 'see' : 'drop'} ${name}`,
    25,
  )
}

t.test('3 processes: 20 concurrent registrations of one name from each node, exactly one wins', { timeout: 60_000 }, async (t) => {
  const c = await startSwormCluster({ n: 3 })
  t.teardown(() => c.stopAll())
  await c.waitForLeader(15_000)
  const attempts: Array<Promise<{ node: string; tag: string; won: boolean }>> = []
  for (const node of c.ids) {
    for (let i = 0; i < 20; i++) {
      const tag = `${node}-${i}`
      attempts.push(c.request<boolean>(node, { op: 'spawnRegister', name: 'the-one', tag }, 20_000).then((won) => ({ node, tag, won })))
    }
  }
  const res = await Promise.all(attempts)
  const winners = res.filter((r) => r.won)
  t.equal(res.length, 60, '60 attempts answered')
  t.equal(winners.length, 1, 'exactly one of 60 attempts resolved true')
  const w = winners[0]!
  const refs = await Promise.all(c.ids.map((id) => consistentWhereis(c, id, 'the-one')))
  for (const [i, r] of refs.entries()) {
    t.ok(r, `${c.ids[i]} has a ref`)
    t.same(r, refs[0], `${c.ids[i]} agrees on the winner's ref`)
  }
  t.equal(refs[0]?.node, w.node, 'the ref lives on the winning node')
  const reply = await c.request<{ tag: string; node: string }>(c.ids[0]!, { op: 'call', name: 'the-one', msg: 'who' })
  t.equal(reply.tag, w.tag, 'the worker behind the name is the winning attempt')
  for (const id of c.ids) t.equal(await c.request<number>(id, { op: 'registeredCount' }), 1, `${id} holds one name`)
})

t.test('3 processes: a name registered on n1 is callable from n2 and n3; groups across nodes', { timeout: 60_000 }, async (t) => {
  const c = await startSwormCluster({ n: 3 })
  t.teardown(() => c.stopAll())
  await c.waitForLeader(15_000)
  t.equal(await c.request(c.ids[0]!, { op: 'spawnRegister', name: 'svc', tag: 'svc-tag' }), true, 'registered on n1')
  for (const id of ['n2', 'n3']) {
    await waitLocal(c, id, 'svc', true, 10_000)
    const r = await c.request<{ tag: string; m: unknown; node: string }>(id, { op: 'call', name: 'svc', msg: { from: id } })
    t.same(r, { tag: 'svc-tag', m: { from: id }, node: 'n1' }, `call from ${id} ran on n1`)
  }

  t.equal(await c.request('n2', { op: 'spawnRegister', name: 'w2', tag: 'b' }), true)
  t.equal(await c.request('n3', { op: 'spawnRegister', name: 'w3', tag: 'c' }), true)
  await c.request('n1', { op: 'join', group: 'g', name: 'svc' })
  await c.request('n2', { op: 'join', group: 'g', name: 'w2' })
  await c.request('n3', { op: 'join', group: 'g', name: 'w3' })
  const ownerNodes = async (id: string): Promise<string[]> =>
    (await c.request<WorkerRef[]>(id, { op: 'members', group: 'g' })).map((r) => r.node).sort()
  for (const id of c.ids) {
    await pollUntil(async () => ((await ownerNodes(id)).length === 3 ? true : undefined), 10_000, `${id} to see 3 members`)
    t.same(await ownerNodes(id), ['n1', 'n2', 'n3'], `${id} sees the group with one member per node`)
  }
  await c.request('n2', { op: 'leave', group: 'g', name: 'w2' })
  for (const id of c.ids) {
    await pollUntil(async () => ((await ownerNodes(id)).length === 2 ? true : undefined), 10_000, `${id} to see 2 members`)
    t.same(await ownerNodes(id), ['n1', 'n3'], `${id} sees the leave`)
  }
  t.equal(await c.request('n3', { op: 'unregister', name: 'svc' }), true, 'unregister from another node')
  for (const id of c.ids) await waitLocal(c, id, 'svc', false, 10_000)
  t.pass('the name is gone everywhere')
  const err = await c.request('n2', { op: 'call', name: 'svc', msg: 1 }).then(
    () => undefined,
    (e: unknown) => e as { code?: string },
  )
  t.equal(err?.code, 'NO_WORKER', 'calling a removed name fails with NO_WORKER (the process lives on)')
  t.ok((await c.status('n2')).pid, 'n2 still answers')
})

t.test("3 processes: a static worker's name vanishes everywhere when it exits and when its node is SIGKILLed", { timeout: 60_000 }, async (t) => {
  const c = await startSwormCluster({ n: 3, nodeDownAfterMs: 1500 })
  t.teardown(() => c.stopAll())
  const leader = await c.waitForLeader(15_000)
  const host = c.ids.find((id) => id !== leader)!
  const others = c.ids.filter((id) => id !== host)

  t.equal(await c.request(host, { op: 'spawnRegister', name: 'short', tag: 's' }), true)
  for (const id of c.ids) await waitLocal(c, id, 'short', true, 10_000)
  await c.request(host, { op: 'exitWorker', name: 'short' })
  for (const id of c.ids) await waitLocal(c, id, 'short', false, 10_000)
  t.pass('exit: the name is gone on every node')

  t.equal(await c.request(host, { op: 'spawnRegister', name: 'doomed', tag: 'd' }), true)
  t.equal(await c.request(host, { op: 'spawnRegister', name: 'doomed-2', tag: 'd2' }), true)
  await c.request(host, { op: 'join', group: 'dg', name: 'doomed' })
  for (const id of others) await waitLocal(c, id, 'doomed-2', true, 10_000)
  const tk = performance.now()
  await c.kill(host)
  for (const id of others) {
    await pollUntil(
      async () => ((await consistentWhereis(c, id, 'doomed')) === null && (await consistentWhereis(c, id, 'doomed-2')) === null ? true : undefined),
      20_000,
      `${id} to drop the killed node's names`,
      50,
    )
    t.same(await c.request(id, { op: 'members', group: 'dg' }), [], `${id}: group membership gone too`)
  }
  t.comment(`SIGKILLed ${host} (leader ${leader}): names gone on the survivors after ${Math.round(performance.now() - tk)} ms (nodeDownAfterMs 1500)`)
  t.pass('SIGKILL: the names are gone on every survivor')
  t.equal(await c.request(others[0]!, { op: 'spawnRegister', name: 'doomed', tag: 'again' }), true, 'the name can be taken again')
})

t.test('3 processes + a node that joins later: it sees every name, and its names are seen', { timeout: 60_000 }, async (t) => {
  const c = await startSwormCluster({ n: 3 })
  t.teardown(() => c.stopAll())
  await c.waitForLeader(15_000)
  const r = await c.request<{ ok: number; errors: number }>('n1', { op: 'registerMany', prefix: 'pre-', count: 500, concurrency: 16 }, 30_000)
  t.equal(r.ok, 500, '500 names registered before the join')
  const tj = performance.now()
  await c.startJoining('n4')
  t.comment(`n4 joined in ${Math.round(performance.now() - tj)} ms`)
  await c.request('n4', { op: 'whenHasAll', prefix: 'pre-', count: 500, timeoutMs: 20_000 }, 25_000)
  t.equal(await c.request('n4', { op: 'hasAll', prefix: 'pre-', count: 500 }), true, 'n4 sees all 500 names locally')
  t.equal(await c.request('n4', { op: 'registeredCount' }), 500)

  t.equal(await c.request('n4', { op: 'spawnRegister', name: 'from-n4', tag: 'x4' }), true, 'n4 registers a name')
  for (const id of ['n1', 'n2', 'n3']) {
    t.equal((await consistentWhereis(c, id, 'from-n4'))?.node, 'n4', `${id} sees n4's name (consistent read)`)
  }
  await waitLocal(c, 'n2', 'from-n4', true, 10_000)
  t.same(await c.request('n2', { op: 'call', name: 'from-n4', msg: 'hi' }), { tag: 'x4', m: 'hi', node: 'n4' }, 'n2 calls the worker on n4')
  t.same(await c.request('n4', { op: 'call', name: 'pre-7', msg: 'yo' }), { tag: 'pre-7', m: 'yo', node: 'n1' }, 'n4 calls a worker on n1')
  const more = await c.request<{ ok: number }>('n4', { op: 'registerMany', prefix: 'n4-', count: 200, concurrency: 16 }, 30_000)
  t.equal(more.ok, 200, 'n4 registers 200 more')
  for (const id of ['n1', 'n2', 'n3']) await c.request(id, { op: 'whenHasAll', prefix: 'n4-', count: 200, timeoutMs: 10_000 }, 15_000)
  t.pass("every original node sees n4's 200 names locally")
})

t.test('3 processes: SIGKILL the leader during registrations, no acknowledged name is lost', { timeout: 90_000 }, async (t) => {
  const c = await startSwormCluster({ n: 3 })
  t.teardown(() => c.stopAll())
  const leader = await c.waitForLeader(15_000)
  const followers = c.ids.filter((id) => id !== leader)
  /** Names acknowledged (true) through a follower: their workers live on a survivor. */
  const acked: string[] = []
  /** Names acknowledged through the leader: their workers die with it. */
  const ackedOnLeader: string[] = []
  let stop = false
  let failed = 0
  let seq = 0
  // eslint-disable-next-line prefer-const -- assigned later, read by the writers before that
  let killedAt: number | undefined
  let firstAckAfterKill: number | undefined
  const writer = async (node: string): Promise<void> => {
    while (!stop) {
      const name = `k-${node}-${seq++}`
      try {
        const won = await c.request<boolean>(node, { op: 'spawnRegister', name, tag: name }, 20_000)
        if (won) {
          ;(node === leader ? ackedOnLeader : acked).push(name)
          if (killedAt !== undefined && firstAckAfterKill === undefined) firstAckAfterKill = performance.now() - killedAt
        } else failed++
      } catch {
        failed++
        if (node === leader) return // it is dead
        await new Promise((r) => setTimeout(r, 5))
      }
    }
  }
  const writers = [...followers.flatMap((f) => Array.from({ length: 8 }, () => writer(f))), ...Array.from({ length: 4 }, () => writer(leader))]
  await pollUntil(() => (acked.length >= 200 ? true : undefined), 20_000, '200 acknowledged registrations')
  const atKill = acked.length
  const tk = performance.now()
  await c.kill(leader)
  killedAt = performance.now()
  await pollUntil(() => (acked.length >= atKill + 200 ? true : undefined), 30_000, '200 more acknowledged registrations after the kill')
  const recovered = performance.now() - tk
  stop = true
  await Promise.all(writers)
  t.comment(
    `killed leader ${leader} after ${atKill} acks; 200 more acks within ${Math.round(recovered)} ms; ` +
      `first ack received after the kill came ${Math.round(firstAckAfterKill ?? -1)} ms after it; ` +
      `${acked.length} acked via followers, ${ackedOnLeader.length} via the leader, ${failed} failed or unknown`,
  )

  for (const id of followers) {
    const refs = await c.request<Ref[]>(id, { op: 'whereisMany', names: acked, consistent: true }, 30_000)
    const missing = acked.filter((_, i) => refs[i] === null)
    t.same(missing, [], `${id}: every acknowledged name is present (consistent reads)`)
    const wrongOwner = acked.filter((n, i) => refs[i] !== null && !n.startsWith(`k-${refs[i]!.node}-`))
    t.same(wrongOwner, [], `${id}: every name is bound to a worker of the node that registered it`)
  }

  const tr = performance.now()
  await c.restart(leader)
  await pollUntil(
    async () => ((await c.request<string[]>(leader, { op: 'missing', names: acked }, 10_000)).length === 0 ? true : undefined),
    30_000,
    `restarted ${leader} to hold every acknowledged name`,
    100,
  )
  t.comment(`restarted ${leader}: all ${acked.length} acknowledged names visible locally after ${Math.round(performance.now() - tr)} ms`)
  t.pass(`restarted ${leader} sees every acknowledged name (local reads)`)
  if (ackedOnLeader.length) {
    await pollUntil(
      async () =>
        (await c.request<string[]>(leader, { op: 'missing', names: ackedOnLeader }, 10_000)).length === ackedOnLeader.length ? true : undefined,
      30_000,
      `names of the killed incarnation to be dropped`,
      100,
    )
    t.pass(`the ${ackedOnLeader.length} names held by workers of the killed incarnation are gone`)
  }
  const name = acked[0]!
  const reply = await c.request<{ node: string }>(leader, { op: 'call', name, msg: 'after' })
  t.equal(reply.node, name.split('-')[1], 'the restarted node calls a worker registered during the failover')
})
