/**
 * A rolling restart (issue #13), with real OS processes, sockets and LevelDB, the way a
 * Kubernetes rollout does it: every node of a running 3-node cluster, the leader included, gets
 * SIGTERM, which stops it gracefully (its supervised workers handed over first), and starts again
 * from its data directory, one after the other, while a client on another node calls 60 workers
 * by name and registers new supervised names.
 *
 * Checked: each node exits by SIGTERM itself (the library raised it again after its stop); every
 * acknowledged name runs at the end and answers; the counters add up to the calls answered (no
 * call handled twice or lost with its worker's state); the workers' life files show no two
 * incarnations of a name alive at once; and the number of failed calls is reported (none is
 * expected: a call waits for the next incarnation within its timeout).
 */
import t from 'tap'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { WorkerRef } from '../src/index.js'
import type { CallLoopResult, DashStatus, RegisterSupervisedManyResult } from '../tools/cluster/sworm-protocol.js'
import { pollUntil, startSwormCluster, WORKERS_MODULE, type SwormCluster } from '../tools/cluster/sworm-cluster.js'

const FIRST = 60

/** Every name of `names` with a running worker, by node. */
async function placement(c: SwormCluster, via: string, names: string[]): Promise<{ per: Record<string, number>; missing: number }> {
  const refs = await c.request<Array<WorkerRef | null>>(via, { op: 'whereisMany', names, consistent: true }, 15_000)
  const per: Record<string, number> = {}
  for (const r of refs) if (r) per[r.node] = (per[r.node] ?? 0) + 1
  return { per, missing: refs.filter((r) => !r).length }
}

/** Incarnations of a name alive at once in the life files: [name, a, b] for each pair. */
async function overlaps(lifeDir: string): Promise<string[]> {
  const byName = new Map<string, Array<{ inc: string; start: number; stop: number }>>()
  for (const f of await readdir(lifeDir)) {
    const open = new Map<string, { name: string; start: number; stop: number }>()
    for (const line of (await readFile(join(lifeDir, f), 'utf8')).split('\n')) {
      if (!line.trim()) continue
      const e = JSON.parse(line) as { event: string; name: string; incarnation: string; at: number }
      if (e.event === 'start') open.set(e.incarnation, { name: e.name, start: e.at, stop: Infinity })
      else if (e.event === 'stop' && open.has(e.incarnation)) open.get(e.incarnation)!.stop = e.at
    }
    for (const [inc, x] of open) byName.set(x.name, [...(byName.get(x.name) ?? []), { inc, start: x.start, stop: x.stop }])
  }
  const out: string[] = []
  for (const [name, list] of byName) {
    list.sort((a, b) => a.start - b.start)
    for (let i = 1; i < list.length; i++) if (list[i]!.start < list[i - 1]!.stop) out.push(`${name}: ${list[i - 1]!.inc} and ${list[i]!.inc}`)
  }
  return out
}

t.test('a rolling restart by SIGTERM of every node, leader included, under calls and registrations', { timeout: 240_000 }, async (t) => {
  const lifeDir = await mkdtemp(join(tmpdir(), 'sworm-rolling-life-'))
  const c = await startSwormCluster({ n: 3, requestTimeoutMs: 10_000, workerStartTimeoutMs: 20_000, lifeDir, logLevel: 'info' })
  /** What each stopped process logged last (a restart starts a new log). */
  const lastWords: string[] = []
  t.teardown(async () => {
    await c.stopAll()
    await rm(lifeDir, { recursive: true, force: true })
  })
  const leader = await c.waitForLeader(15_000)
  const names = Array.from({ length: FIRST }, (_, i) => `rr:${i}`)
  const reg = await c.request<RegisterSupervisedManyResult>(leader, { op: 'registerSupervisedMany', prefix: 'rr:', count: FIRST, concurrency: 8, module: WORKERS_MODULE, fn: 'counter' }, 60_000)
  t.equal(reg.ok, FIRST, `${FIRST} supervised workers registered`)

  let answered = 0
  const failed: Record<string, number> = {}
  // the leader last-but-one: the order n1, n2, n3 restarts it wherever it is
  for (const [k, id] of c.ids.entries()) {
    const client = c.ids[(k + 1) % c.ids.length]!
    const wasLeader = (await c.status(id)).role === 'leader'
    await c.request(client, { op: 'callLoopStart', names: [...names], msg: 'inc', timeoutMs: 15_000, concurrency: 4 })
    // new names registered through the client while the node goes
    const batch = `rr${k}:`
    const registering = c.request<RegisterSupervisedManyResult>(client, { op: 'registerSupervisedMany', prefix: batch, count: 20, concurrency: 4, module: WORKERS_MODULE, fn: 'counter' }, 60_000)
    const exit = await c.terminate(id)
    for (const line of c.logs(id).slice(-30)) lastWords.push(`${id} (stopped): ${line}`)
    t.same(exit, { code: null, signal: 'SIGTERM' }, `${id}${wasLeader ? ' (the leader)' : ''} stopped on SIGTERM and ended by it`)
    const more = await registering
    t.equal(more.ok, 20, `20 names registered through ${client} while ${id} stopped`)
    names.push(...Array.from({ length: 20 }, (_, i) => `${batch}${i}`))
    await c.restart(id)
    await c.waitForLeader(20_000)
    // as a rollout waits for the pod's readiness: the node is back up in every node's registry
    // before the next one stops (a node that stops while no other is up in the sworm has nowhere
    // to hand its workers: they restart on it, without their state, when it comes back; CI
    // stopped n3 before the restarted n1 and n2 were up, twice on 2026-12-06)
    await pollUntil(async () => {
      const sts = await Promise.all(c.ids.map((n) => c.request<DashStatus>(n, { op: 'dashStatus' }, 15_000)))
      return sts.every((st) => c.ids.every((n) => st.nodes.some((x) => x.node === n && x.up && !x.draining))) ? true : undefined
    }, 30_000, `${id} up again in every node's registry`)
    const res = await c.request<CallLoopResult>(client, { op: 'callLoopStop' }, 30_000)
    answered += res.ok
    for (const [code, n] of Object.entries(res.failed)) failed[code] = (failed[code] ?? 0) + n
    t.comment(`restart of ${id}${wasLeader ? ' (leader)' : ''}: ${res.ok} calls answered, failed ${JSON.stringify(res.failed)}, slowest ${Math.round(res.slowestMs)} ms`)
  }
  t.comment(`calls failed during the rolling restart: ${JSON.stringify(failed)} of ${answered + Object.values(failed).reduce((a, b) => a + b, 0)}`)
  t.same(failed, {}, 'no call failed: each waited for the next incarnation of its worker')

  const via = c.ids[0]!
  const placed = await pollUntil(async () => {
    const p = await placement(c, via, names)
    return p.missing === 0 ? p : undefined
  }, 30_000, 'every acknowledged name running')
  t.equal(Object.values(placed.per).reduce((a, b) => a + b, 0), names.length, `all ${names.length} names run: ${JSON.stringify(placed.per)}`)
  // (every name: the names registered during a phase are called in the next ones)
  const counts = await c.request<{ ok: number; values: Record<string, number> }>(via, { op: 'callEach', names, msg: 'get', consistent: true }, 20_000)
  t.equal(counts.ok, names.length, 'every worker answers')
  const sum = Object.entries(counts.values).reduce((a, [v, k]) => a + Number(v) * k, 0)
  t.equal(sum, answered, `the counters add up to the ${answered} calls answered (they add up to ${sum}): none handled twice, none lost`)
  if (sum !== answered) {
    // (once in CI, 05:07 on 2026-12-06: the leader's drain before its stop moved nothing, and its
    // 100 workers came back on it without their state; what the nodes logged says why next time)
    for (const line of lastWords) t.comment(line)
    for (const id of c.ids) for (const line of c.logs(id).slice(-30)) t.comment(`${id}: ${line}`)
  }
  t.same(await overlaps(lifeDir), [], 'no two incarnations of a name were alive at once')
  t.same(c.unexpectedExits(), [], 'no process crashed')
})
