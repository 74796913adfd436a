/**
 * `npm run demo`: Sworm doing the real thing.
 *
 * By default (see `dashboard-server.ts`): five node processes, 1,000 supervised workers, and a
 * live dashboard on localhost (port 8080, or a free one) to kill, restart, partition, heal and
 * drain nodes by hand and watch the workers move; runs until Ctrl-C. Flags: `--workers N`,
 * `--port P` (0: any free port). It prints `DASHBOARD http://127.0.0.1:PORT` once serving.
 *
 * With `--script`, the scripted story in the terminal, in about a minute:
 * Five node processes on 127.0.0.1 (real WebSockets, real LevelDB in temporary directories) form
 * a cluster; 1,000 supervised workers are registered and spread over them; then the leader is
 * killed with SIGKILL, a node is cut off from the others (it fences its workers, the majority
 * runs them, no name ever runs twice), the partition heals, and the killed node comes back from
 * its data directory.
 *
 * Usage: `node dist/demo/run.js --script [--quick]` (`--quick`: 100 workers, for CI smoke runs).
 * Exits 0 when every step checked out, 1 with a message otherwise; always kills its node
 * processes and removes its temporary directory; gives up after 150 s.
 * @module
 */
import { performance } from 'node:perf_hooks'
import type { WorkerRef } from '../src/index.js'
import { flagOption, intOption, parseCli } from '../tools/cli-args.js'
import { pollUntil, type SwormCluster } from '../tools/cluster/sworm-cluster.js'
import type { CallEachResult, RegisterSupervisedManyResult, SwormProcessFullStatus } from '../tools/cluster/sworm-protocol.js'
import { NODES, PREFIX, WORKERS_MODULE, nameOf, registerDemoWorkers, startDemoCluster } from './demo-cluster.js'
import { bar, bold, cyan, dim, formatMs, green, progress, red, say, sleep } from './terminal.js'

const { SCRIPT, QUICK, WORKERS_FLAG, PORT_FLAG } = parseCli(
  'run.js [--workers N] [--port P] | run.js --script [--quick] [--workers N]',
  { script: { type: 'boolean' }, quick: { type: 'boolean' }, workers: { type: 'string' }, port: { type: 'string' } },
  (v) => ({
    SCRIPT: flagOption(v, 'script'),
    QUICK: flagOption(v, 'quick'),
    WORKERS_FLAG: intOption(v, 'workers', undefined, { min: 1, max: 100_000 }),
    PORT_FLAG: intOption(v, 'port', undefined, { min: 0, max: 65535 }),
  }),
)
/** Supervised workers registered in step 2. */
const N = WORKERS_FLAG ?? (QUICK ? 100 : 1000)
/** Workers registered after the killed node is back (step 5). */
const EXTRA = QUICK ? 10 : 20
const HARD_TIMEOUT_MS = 150_000
const OK = green('✔')

/** A failed expectation: the demo stops with this message. */
class DemoFailure extends Error {}

const now = (): number => performance.now()
const fmt = (ms: number): string => formatMs(ms, 2)
const namesOf = (count: number, start = 0): string[] => Array.from({ length: count }, (_, i) => nameOf(start + i))

// ---------------------------------------------------------------------------- output

const summary: Array<{ step: string; result: string; ms: number }> = []
let stepNo = 0
function header(title: string): void {
  stepNo++
  say(`\n${bold(`${stepNo}. ${title}`)}`)
}

/** Check a condition of the demo; a false one fails the run with `message`. */
function expect(cond: boolean, message: string): asserts cond {
  if (!cond) throw new DemoFailure(message)
}

// ---------------------------------------------------------------------------- cluster helpers

let cluster: SwormCluster | undefined

function c(): SwormCluster {
  if (!cluster) throw new Error('no cluster')
  return cluster
}

async function fullStatus(id: string, timeoutMs = 2000): Promise<SwormProcessFullStatus | undefined> {
  return c()
    .request<SwormProcessFullStatus>(id, { op: 'fullStatus' }, timeoutMs)
    .catch(() => undefined)
}

async function statuses(ids: string[]): Promise<Map<string, SwormProcessFullStatus>> {
  const list = await Promise.all(ids.map((id) => fullStatus(id)))
  const m = new Map<string, SwormProcessFullStatus>()
  list.forEach((s, i) => s && m.set(ids[i]!, s))
  return m
}

/** Poll `fn` every `everyMs` until it returns a value; fail with `what` after `timeoutMs`. */
function until<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  return pollUntil(fn, timeoutMs, what, everyMs).catch((err: unknown) => {
    throw new DemoFailure(err instanceof Error ? err.message : String(err))
  })
}

/** Have each node watch its own lease (every 10 ms) from now on. */
async function watchLeases(ids: string[]): Promise<void> {
  await Promise.all(ids.map((id) => c().request(id, { op: 'watchLease', everyMs: 10 }, 5000)))
}

/** The nodes (of `ids`) that lost their lease at least once since {@link watchLeases}. */
async function leaseLosers(ids: string[]): Promise<string[]> {
  const res = await Promise.all(ids.map((id) => c().request<{ losses: number[] }>(id, { op: 'leaseLosses' }, 5000)))
  return ids.filter((_, i) => res[i]!.losses.length > 0)
}

function spread(counts: Map<string, number>, ids: string[]): string {
  return ids.map((id) => `${id} ${counts.get(id) ?? 0}`).join(' · ')
}

interface Check {
  /** Names bound in the registry (consistent read on the leader). */
  bound: number
  /** Names whose registry ref is a worker answering on the node it names. */
  answering: number
  /** Sum of the nodes' supervised counts. */
  supervised: number
  /** Counter workers alive over all processes. */
  alive: number
  problems: string[]
}

/**
 * The invariant: every name runs exactly once, where the registry says. Checked three ways on
 * the running nodes: a consistent read of every name on the leader, each named node confirming
 * it runs that very worker, and the per-process log of live counter instances (none twice).
 */
async function checkOnce(leader: string, total: number): Promise<Check> {
  const cl = c()
  const live = cl.alive()
  const names = namesOf(total)
  const refs = await cl.request<Array<WorkerRef | null>>(leader, { op: 'whereisAll', prefix: PREFIX, count: total, consistent: true }, 15_000)
  const problems: string[] = []
  const byNode = new Map<string, Array<[string, WorkerRef]>>()
  let bound = 0
  names.forEach((n, i) => {
    const r = refs[i]
    if (!r) return
    bound++
    let l = byNode.get(r.node)
    if (!l) byNode.set(r.node, (l = []))
    l.push([n, r])
  })
  if (bound < total) problems.push(`${total - bound} names not bound (e.g. ${names.find((_, i) => !refs[i])})`)
  let answering = 0
  for (const [node, pairs] of byNode) {
    if (!live.includes(node)) {
      problems.push(`${pairs.length} names point to ${node}, which is not running`)
      continue
    }
    const notRunning = await cl.request<string[]>(node, { op: 'runsRefs', refs: pairs }, 15_000)
    answering += pairs.length - notRunning.length
    if (notRunning.length) problems.push(`${notRunning.length} names point to ${node}, which does not run them (e.g. ${notRunning[0]})`)
  }
  const sts = await statuses(live)
  const supervised = [...sts.values()].reduce((a, s) => a + s.supervised, 0)
  if (supervised !== total) problems.push(`the nodes run ${supervised} supervised workers, not ${total}`)
  const where = new Map<string, string[]>()
  for (const node of live) {
    const alive = await cl.request<string[]>(node, { op: 'aliveCounters', prefix: PREFIX }, 15_000)
    for (const entry of alive) {
      const [n, times] = entry.split('*') as [string, string | undefined]
      if (times) problems.push(`${n} has ${times} live instances on ${node}`)
      let l = where.get(n)
      if (!l) where.set(n, (l = []))
      l.push(node)
    }
  }
  for (const [n, nodes] of where) if (nodes.length > 1) problems.push(`${n} runs on ${nodes.join(' and ')}`)
  return { bound, answering, supervised, alive: where.size, problems }
}

function reportCheck(chk: Check, total: number): void {
  if (chk.problems.length) throw new DemoFailure(`exactly-once check failed:\n  - ${chk.problems.slice(0, 8).join('\n  - ')}`)
  expect(chk.alive === total, `${chk.alive} counter instances alive, expected ${total}`)
  say(
    `   ${OK} no name runs twice: ${chk.bound}/${total} names bound, ${chk.answering} answer on the node the registry names, ` +
      `${chk.alive} instances alive in all processes, Σ supervised = ${chk.supervised}`,
  )
}

// ---------------------------------------------------------------------------- the demo

async function main(): Promise<void> {
  const tStart = now()
  say(bold(`Sworm demo${QUICK ? ' (--quick)' : ''}: ${NODES} node processes, ${N.toLocaleString('en-US')} supervised workers`))

  // 1 ------------------------------------------------------------------------ start
  header(`Start ${NODES} nodes`)
  let t0 = now()
  cluster = await startDemoCluster()
  const cl = cluster
  const ids = [...cl.ids]
  say(`   ${dim(`processes ${ids.map((id) => `${id}=pid ${cl.pid(id)}`).join(', ')}`)}`)
  say(`   ${dim(`WebSockets on ${ids.map((id) => cl.urls[id]!.replace('ws://127.0.0.1', '')).join(' ')}, LevelDB under ${cl.dir}`)}`)
  let leader = await cl.waitForLeader(20_000)
  let st = (await fullStatus(leader))!
  const startMs = now() - t0
  say(`   ${OK} cluster up in ${bold(fmt(startMs))}: leader ${cyan(leader)}, term ${st.term}`)
  summary.push({ step: 'start 5 nodes, elect a leader', result: `leader ${leader}, term ${st.term}`, ms: startMs })

  // 2 ------------------------------------------------------------------------ register
  header(`Register ${N.toLocaleString('en-US')} supervised workers (registerName(name, { module, fn: 'counter' }), from every node)`)
  t0 = now()
  const { results, ok } = await registerDemoWorkers(cl, ids, N, 90_000, (running) =>
    progress(`   ${bar(running, N)} ${running}/${N} running  ${dim(fmt(now() - t0))}`),
  )
  const regMs = now() - t0
  progress(`   ${bar(ok, N)} ${ok}/${N} running  ${dim(fmt(regMs))}`, true)
  const errs = results.flatMap((r) => r.errorSamples)
  expect(ok === N, `only ${ok} of ${N} registrations succeeded: ${errs.slice(0, 3).join('; ')}`)
  const placed = new Map<string, number>()
  for (const r of results) for (const [node, k] of Object.entries(r.perNode)) placed.set(node, (placed.get(node) ?? 0) + k)
  const p50 = Math.max(...results.map((r) => r.p50))
  const p99 = Math.max(...results.map((r) => r.p99))
  say(`   ${OK} ${N} workers started in ${bold(fmt(regMs))} (${Math.round(N / (regMs / 1000))}/s; per registration p50 ${fmt(p50)}, p99 ${fmt(p99)})`)
  say(`   ${OK} spread by load: ${spread(placed, ids)}`)
  let calls = await cl.request<CallEachResult>(ids[0]!, { op: 'callEach', names: namesOf(N), msg: 'inc', consistent: true }, 30_000)
  expect(calls.ok === N, `${N - calls.ok} workers did not answer: ${calls.errorSamples.join('; ')}`)
  say(`   ${OK} all ${N} answer call(name, 'inc') from ${ids[0]} (${fmt(calls.ms)} for all, in parallel)`)
  summary.push({ step: `register ${N} supervised workers`, result: `${Math.round(N / (regMs / 1000))}/s, ${spread(placed, ids)}`, ms: regMs })

  // 3 ------------------------------------------------------------------------ kill the leader
  header(`Kill the leader (${leader}) with SIGKILL`)
  const dead = leader
  const deadRefs = await cl.request<Array<WorkerRef | null>>(leader, { op: 'whereisAll', prefix: PREFIX, count: N, consistent: true })
  const victims = namesOf(N).filter((_, i) => deadRefs[i]?.node === dead)
  const others = namesOf(N).filter((_, i) => deadRefs[i]?.node !== dead)
  // The survivors must keep their leases through the leader change (a node without one fences,
  // i.e. stops, its workers): each node watches its own lease from now on.
  await watchLeases(ids.filter((id) => id !== dead))
  const tKill = now()
  await cl.kill(dead)
  leader = await cl.waitForLeader(20_000, { exclude: [dead] })
  const electMs = now() - tKill
  st = (await fullStatus(leader))!
  say(`   ${OK} new leader ${cyan(leader)} (term ${st.term}) after ${bold(fmt(electMs))}`)
  let back = 0
  calls = await until(`the ${victims.length} workers of ${dead} to answer from another node`, 30_000, async () => {
    const r = await cl.request<CallEachResult>(leader, { op: 'callEach', names: victims, msg: 'get', consistent: true, timeoutMs: 500 }, 10_000)
    back = r.ok
    progress(`   ${bar(back, victims.length)} ${back}/${victims.length} workers of ${dead} answer again  ${dim(fmt(now() - tKill))}`)
    return r.ok === victims.length ? r : undefined
  })
  const failoverMs = now() - tKill
  progress(`   ${bar(back, victims.length)} ${back}/${victims.length} workers of ${dead} answer again  ${dim(fmt(failoverMs))}`, true)
  say(`   ${OK} all ${victims.length} workers of ${dead} restarted on the survivors and answer, ${bold(fmt(failoverMs))} after the kill`)
  say(`     ${dim(`(lease 2 s + clock drift 0.5 s: the leader waits that long before it moves a silent node's workers)`)}`)
  const kept = await cl.request<CallEachResult>(leader, { op: 'callEach', names: others, msg: 'get', consistent: true }, 30_000)
  const lostLease = await leaseLosers(cl.alive())
  expect(
    lostLease.length === 0,
    `survivors ${lostLease.join(', ')} lost their lease after the leader change and fenced their workers ` +
      `(the ${victims.length} workers of ${dead} took ${fmt(failoverMs)} to come back; of the other ${others.length}, ` +
      `${others.length - kept.ok} do not answer and ${kept.values['0'] ?? 0} restarted from 0)`,
  )
  expect(kept.ok === others.length, `${others.length - kept.ok} workers of the survivors stopped answering: ${kept.errorSamples.join('; ')}`)
  expect(
    Object.keys(kept.values).join() === '1',
    `some workers of the survivors lost their state (counters read ${JSON.stringify(kept.values)}, expected all 1)`,
  )
  say(
    `   ${OK} the ${others.length} others never stopped: counters read ${Object.keys(kept.values).join('/')}` +
      `; the moved ones restarted fresh: ${Object.keys(calls.values).join('/')}`,
  )
  let sts = await statuses(cl.alive())
  say(`   ${OK} now: ${spread(new Map([...sts].map(([id, s]) => [id, s.supervised])), cl.alive())}`)
  summary.push({ step: `SIGKILL the leader ${dead}`, result: `new leader ${leader} in ${fmt(electMs)}; ${victims.length} workers back`, ms: failoverMs })

  // 4 ------------------------------------------------------------------------ partition
  const live = cl.alive()
  const isolated = [...live].reverse().find((id) => id !== leader)!
  const majority = live.filter((id) => id !== isolated)
  const onIsolated = (sts.get(isolated)?.supervised ?? 0)
  header(`Partition: cut ${isolated} (${onIsolated} workers) off from ${majority.join(', ')}`)
  const isoRefs = await cl.request<Array<WorkerRef | null>>(leader, { op: 'whereisAll', prefix: PREFIX, count: N, consistent: true })
  const isoNames = namesOf(N).filter((_, i) => isoRefs[i]?.node === isolated)
  expect(isoNames.length > 0, `no worker runs on ${isolated}; cannot show fencing`)
  await watchLeases(majority)
  const tCut = now()
  await cl.isolate(isolated)
  let fencedMs: number | undefined
  let movedMs: number | undefined
  await until('the minority to fence and the majority to run every worker', 40_000, async () => {
    const s = await statuses(live)
    const iso = s.get(isolated)
    const maj = majority.reduce((a, id) => a + (s.get(id)?.supervised ?? 0), 0)
    if (fencedMs === undefined && iso && iso.supervised === 0) fencedMs = now() - tCut
    if (movedMs === undefined && maj === N) movedMs = now() - tCut
    progress(
      `   ${isolated}: ${iso?.supervised ?? '?'} workers, lease ${iso?.lease ? 'ok' : red('lost')}  |  majority: ${bar(maj, N, 20)} ${maj}/${N}  ${dim(fmt(now() - tCut))}`,
    )
    return fencedMs !== undefined && movedMs !== undefined ? true : undefined
  })
  progress(`   ${isolated}: 0 workers, lease lost  |  majority: ${bar(N, N, 20)} ${N}/${N}  ${dim(fmt(now() - tCut))}`, true)
  say(`   ${OK} ${isolated} lost its lease and stopped its ${onIsolated} workers after ${bold(fmt(fencedMs!))} (fencing)`)
  const majLost = await leaseLosers(majority)
  expect(majLost.length === 0, `majority nodes ${majLost.join(', ')} lost their lease during the partition`)
  say(`   ${OK} the majority runs all ${N} workers after ${bold(fmt(movedMs!))}; none of ${majority.join(', ')} lost its lease`)
  const refused = await cl
    .request(isolated, { op: 'call', name: isoNames[0]!, msg: 'get' }, 10_000)
    .then(
      (v) => `answered ${JSON.stringify(v)}`,
      (err: unknown) => (err instanceof Error ? err.message.replace(/^[^:]*: [^:]*: /, '') : String(err)),
    )
  expect(!refused.startsWith('answered'), `${isolated} still answers for ${isoNames[0]} while cut off (${refused})`)
  say(`   ${OK} ${isolated} refuses calls to its old workers: ${dim(refused)}`)
  reportCheck(await checkOnce(leader, N), N)
  const partitionMs = Math.max(fencedMs!, movedMs!)
  summary.push({ step: `partition ${isolated} from the majority`, result: `fenced in ${fmt(fencedMs!)}, ${isoNames.length} moved, none twice`, ms: partitionMs })

  say(`\n   ${bold('Heal the partition')}`)
  const termBefore = (await fullStatus(leader))!.term
  const tHeal = now()
  await cl.heal(isolated)
  const caught = await until(`${isolated} to catch up`, 30_000, async () => {
    const s = await statuses(live)
    const iso = s.get(isolated)
    const lead = [...s.values()].find((x) => x.role === 'leader')
    if (!iso || !lead || !iso.lease || iso.leader !== lead.node || iso.applied < lead.commit) return undefined
    const mine = await cl.request<Array<WorkerRef | null>>(isolated, { op: 'whereisAll', prefix: PREFIX, count: N })
    const theirs = await cl.request<Array<WorkerRef | null>>(lead.node, { op: 'whereisAll', prefix: PREFIX, count: N, consistent: true })
    return JSON.stringify(mine) === JSON.stringify(theirs) ? { iso, lead } : undefined
  })
  const healMs = now() - tHeal
  leader = caught.lead.node
  say(
    `   ${OK} ${isolated} caught up in ${bold(fmt(healMs))}: applied ${caught.iso.applied}, its local whereis agrees with the leader on all ${N} names` +
      `${caught.lead.term !== termBefore ? ` (term ${termBefore} → ${caught.lead.term}, leader ${leader})` : `; leader ${leader} kept term ${termBefore}`}`,
  )
  reportCheck(await checkOnce(leader, N), N)
  summary.push({ step: `heal; ${isolated} catches up`, result: `applied ${caught.iso.applied}, registry identical`, ms: healMs })

  // 5 ------------------------------------------------------------------------ restart
  header(`Restart ${dead} from its data dir`)
  const tRestart = now()
  await cl.restart(dead)
  const procMs = now() - tRestart
  const rejoined = await until(`${dead} to rejoin`, 30_000, async () => {
    const s = await statuses(cl.alive())
    const me = s.get(dead)
    const lead = [...s.values()].find((x) => x.role === 'leader')
    if (!me || !lead || !me.lease || me.leader !== lead.node || me.applied < lead.commit || me.names < N) return undefined
    return { me, lead }
  })
  const rejoinMs = now() - tRestart
  leader = rejoined.lead.node
  say(
    `   ${OK} ${dead} is back (pid ${cl.pid(dead)}, new incarnation ${rejoined.me.incarnation}) in ${bold(fmt(rejoinMs))}` +
      ` ${dim(`(process ready in ${fmt(procMs)})`)}: follower of ${leader}, applied ${rejoined.me.applied}, sees all ${rejoined.me.names} names`,
  )
  const extra = await cl.request<RegisterSupervisedManyResult>(
    leader,
    { op: 'registerSupervisedMany', prefix: PREFIX, start: N, count: EXTRA, concurrency: 4, module: WORKERS_MODULE, fn: 'counter' },
    60_000,
  )
  expect(extra.ok === EXTRA, `only ${extra.ok} of ${EXTRA} new registrations succeeded: ${extra.errorSamples.join('; ')}`)
  const onDead = extra.perNode[dead] ?? 0
  say(
    `   ${OK} ${EXTRA} new workers go to the least loaded nodes: ${Object.entries(extra.perNode)
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(' · ')} (${onDead} on ${dead})`,
  )
  const total = N + EXTRA
  reportCheck(await checkOnce(leader, total), total)
  sts = await statuses(ids)
  say(`   ${OK} final spread: ${spread(new Map([...sts].map(([id, s]) => [id, s.supervised])), ids)}`)
  summary.push({ step: `restart ${dead} from LevelDB`, result: `rejoined; took ${onDead} of ${EXTRA} new workers`, ms: rejoinMs })

  // 6 ------------------------------------------------------------------------ summary
  header('Summary')
  const w1 = Math.max(4, ...summary.map((r) => r.step.length))
  const w2 = Math.max(6, ...summary.map((r) => r.result.length))
  const row = (a: string, b: string, d: string): string => `   ${a.padEnd(w1)}  ${b.padEnd(w2)}  ${d.padStart(8)}`
  say(bold(row('step', 'result', 'time')))
  say(dim(row('-'.repeat(w1), '-'.repeat(w2), '-'.repeat(8))))
  for (const r of summary) say(row(r.step, r.result, fmt(r.ms)))
  say(`\n${green(bold('✔ all checks passed'))} in ${fmt(now() - tStart)}`)
}

// ---------------------------------------------------------------------------- lifecycle

let cleaning: Promise<void> | undefined
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    const cl = cluster
    if (!cl) return
    await Promise.race([cl.stopAll().catch(() => {}), sleep(10_000)])
  })()
  return cleaning
}

async function fail(err: unknown): Promise<never> {
  const msg = err instanceof DemoFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)
  say(`\n${red(bold('✘ demo failed:'))} ${msg}`)
  const cl = cluster
  if (cl) {
    for (const id of cl.ids) {
      const tail = cl.logs(id).slice(-8)
      if (tail.length) process.stderr.write(`--- last log lines of ${id} ---\n${tail.join('\n')}\n`)
    }
  }
  await cleanup()
  process.exit(1)
}

if (SCRIPT) {
  const hard = setTimeout(() => void fail(new DemoFailure(`the demo did not finish within ${HARD_TIMEOUT_MS / 1000} s`)), HARD_TIMEOUT_MS)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      say(`\n${sig}: stopping the nodes`)
      void cleanup().then(() => process.exit(130))
    })
  }

  main().then(
    async () => {
      clearTimeout(hard)
      await cleanup()
      process.exit(0)
    },
    (err: unknown) => fail(err),
  )
} else {
  void import('./dashboard-server.js').then((m) => m.runDashboard({ workers: N, port: PORT_FLAG }))
}
