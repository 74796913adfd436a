/**
 * The whole product in the deterministic simulation: Sworm nodes (registry, supervisor, leases,
 * Raft) over a simulated network, in-memory disks and simulated time, with a seeded nemesis.
 * Every worker start and stop goes to a life log with the simulated clock; the run fails if two
 * incarnations of a supervised name ever overlap, or if, after the faults stop, a name does not
 * run exactly once.
 */
import { MemoryStorage } from '../../src/raft/memory-storage.js'
import { silentLogger, type Logger } from '../../src/raft/types.js'
import { Sworm, type SwormOptions } from '../../src/sworm.js'
import { SimNetwork, SimScheduler } from '../../src/testkit/sim.js'
import { checkLinearizable, kvModel, type KvOperation } from '../../src/testkit/linearizability.js'
import * as workers from '../fixtures/workers.js'

interface Member {
  id: string
  storage: MemoryStorage
  fastDisk: boolean
  sworm: Sworm | undefined
  alive: boolean
  gen: number
  detach: Array<() => void>
}

export interface SwormSimResult {
  seed: number
  ok: boolean
  problems: string[]
  names: number
  faults: Record<string, number>
  starts: number
  settledAfterMs: number
}

const g = globalThis as unknown as { __swormNow?: () => number }

function traceLogger(node: string, now: () => number): Logger {
  const w = (level: string) => (msg: string, f?: Record<string, unknown>) => console.error(`${now().toFixed(1)} ${node} ${level} ${msg} ${f ? JSON.stringify(f) : ''}`)
  return { debug: w('debug'), info: w('info'), warn: w('warn'), error: w('error') }
}

export async function runSwormScenario(
  seed: number,
  opts: { durationMs?: number; nodes?: number; names?: number; clients?: number } = {},
): Promise<SwormSimResult> {
  const sched = new SimScheduler(seed)
  const net = new SimNetwork(sched)
  const r = sched.random
  g.__swormNow = () => sched.now
  const lifeStart = workers.life.length
  const prefix = `sim${seed}:`
  const n = opts.nodes ?? 5
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`)
  const peers = Object.fromEntries(ids.map((id) => [id, `ws://${id}.sim:1`]))
  const members = new Map<string, Member>()
  const faults: Record<string, number> = {}
  const count = (k: string): void => void (faults[k] = (faults[k] ?? 0) + 1)
  const lease = 1000
  const drift = 300

  const boot = async (m: Member): Promise<void> => {
    m.gen++
    const gen = m.gen
    m.alive = true
    const raftT = net.endpoint(m.id, 'raft')
    const msgT = net.endpoint(m.id, 'msg')
    m.detach = [() => raftT.detach(), () => msgT.detach()]
    const options: SwormOptions = {
      name: 'sim',
      nodeId: m.id,
      listen: peers[m.id]!,
      peers,
      dataDir: '/nonexistent',
      secret: 'simulation-secret',
      leaseTimeoutMs: lease,
      maxClockDriftMs: drift,
      requestTimeoutMs: 3000,
      startTimeoutMs: 5000,
      raft: { snapshotEvery: 300 },
    }
    m.fastDisk = true
    const sworm = await Sworm.assemble(options, {
      storage: m.storage,
      raftTransport: raftT,
      msgTransport: msgT,
      clock: sched.clock({ alive: () => m.alive && m.gen === gen }),
      logger: process.env.SIM_TRACE ? traceLogger(m.id, () => sched.now) : silentLogger,
      inc: `${m.id}.${gen}`,
      random: r,
      loadModule: async () => workers as unknown as Record<string, unknown>,
      release: async () => {},
    })
    m.fastDisk = false
    if (m.gen === gen) m.sworm = sworm
  }

  for (const id of ids) {
    const m: Member = { id, storage: undefined as unknown as MemoryStorage, fastDisk: false, sworm: undefined, alive: false, gen: 0, detach: [] }
    m.storage = new MemoryStorage({ delay: () => (m.fastDisk ? Promise.resolve() : sched.sleep(0.2 + r() * 1.5)) })
    members.set(id, m)
    await boot(m)
  }

  const alive = (): Member[] => [...members.values()].filter((m) => m.alive && m.sworm)

  // Clients of static registrations. Each node has its own key space ("s:<node>:<k>"), bound only
  // to workers of that node, so when a node is cut off or crashes, the system may drop exactly
  // those names (nodeDown, a new incarnation): modelled as deletes that may happen at any time
  // from then on (pending operations for the checker).
  const history: KvOperation[] = []
  let clientSeq = 0
  const staticKeys = 3
  const maybeDropped = (node: string): void => {
    for (let k = 0; k < staticKeys; k++) history.push({ client: `system-${clientSeq++}`, input: { op: 'delete', key: `s:${node}:${k}` }, call: sched.now, ret: Infinity, output: undefined })
  }
  const clientOp = async (): Promise<void> => {
    const nodes = alive()
    if (!nodes.length) return
    const via = pick(nodes)
    const owner = pick(ids)
    const key = `s:${owner}:${Math.floor(r() * staticKeys)}`
    const x = r()
    const op: KvOperation = { client: clientSeq++, input: { op: 'get', key }, call: sched.now, ret: Infinity, output: undefined }
    try {
      if (x < 0.45) {
        // register a fresh static worker of the owner node (only the owner can spawn it)
        const host = members.get(owner)
        if (!host?.alive || !host.sworm) return
        const ref = host.sworm.spawn({ handleCall: () => 'ok' })
        const value = `v${ref.inc}.${ref.id}`
        op.input = { op: 'putIfAbsent', key, value }
        history.push(op)
        const ok = await via.sworm!.registerName(key, ref)
        op.output = { ok }
      } else if (x < 0.7) {
        op.input = { op: 'delete', key }
        history.push(op)
        op.output = { ok: await via.sworm!.unregisterName(key) }
      } else {
        op.input = { op: 'get', key }
        history.push(op)
        const ref = await via.sworm!.whereisName(key, { consistent: true })
        op.output = { value: ref ? `v${ref.inc}.${ref.id}` : undefined }
      }
      op.ret = sched.now
    } catch (err) {
      const code = (err as { code?: string }).code
      // a read that failed, or a write that surely did not happen, leaves no trace
      if (op.input.op === 'get' || code === 'NOT_LEADER' || code === 'PROPOSAL_DROPPED' || code === 'INVALID_ARGUMENT' || code === 'NO_WORKER' || code === 'SHUTTING_DOWN') {
        const i = history.indexOf(op)
        if (i >= 0 && (code !== 'SHUTTING_DOWN' || op.input.op === 'get')) history.splice(i, 1)
      }
    }
  }
  let clientsOn = true
  const clientLoops: Array<Promise<void>> = []
  const crash = async (m: Member): Promise<void> => {
    if (!m.alive) return
    maybeDropped(m.id)
    m.alive = false
    for (const d of m.detach) d()
    const dead = m.sworm?.crashForTests() ?? []
    for (const w of dead) workers.died(w)
    m.sworm = undefined
    await m.storage.close()
  }
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!
  const spec = (name: string) => ({ module: 'sim-workers', fn: 'counter', args: [prefix + name] })
  let nextName = 0
  const register = (): void => {
    const m = alive()
    if (!m.length) return
    const name = `w${nextName < (opts.names ?? 20) ? nextName++ : Math.floor(r() * nextName)}`
    void pick(m).sworm!.whereisOrRegisterName(name, spec(name)).catch(() => {})
  }

  await sched.runUntilTrue(() => alive().some((m) => m.sworm!.status().role === 'leader'), 5000)
  for (let i = 0; i < (opts.names ?? 20); i++) register()
  await sched.runUntil(sched.now + 2000)
  for (let i = 0; i < (opts.clients ?? 0); i++) {
    clientLoops.push(
      (async () => {
        while (clientsOn) {
          let done = false
          void clientOp().finally(() => (done = true))
          // an operation on a node that crashes never settles: move on after a while
          for (let w = 0; w < 80 && !done; w++) await sched.sleep(50)
          await sched.sleep(r() * 50)
        }
      })(),
    )
  }

  const end = sched.now + (opts.durationMs ?? 15_000)
  while (sched.now < end) {
    await sched.runUntil(sched.now + 200 + r() * 800)
    const x = r()
    if (process.env.SIM_TRACE) console.error(`${sched.now.toFixed(1)} nemesis x=${x.toFixed(2)}`)
    const down = [...members.values()].filter((m) => !m.alive)
    if (x < 0.15) {
      const s = ids.slice().sort(() => r() - 0.5)
      const k = 1 + Math.floor(r() * 2)
      net.partition([s.slice(0, k), s.slice(k)])
      for (const id of ids) maybeDropped(id)
      count('partition')
    } else if (x < 0.2) {
      const a = pick(ids)
      const b = pick(ids)
      if (a !== b) {
        net.block(a, b)
        maybeDropped(a)
        maybeDropped(b)
      }
      count('one-way')
    } else if (x < 0.32) {
      net.heal()
      count('heal')
    } else if (x < 0.42 && down.length < 2) {
      await crash(pick(alive()))
      count('crash')
    } else if (x < 0.55 && down.length) {
      await boot(pick(down))
      count('restart')
    } else if (x < 0.68) {
      // a worker crashes
      const m = alive()
      if (m.length) {
        void pick(m).sworm!.call(`w${Math.floor(r() * Math.max(1, nextName))}`, 'crash', { timeout: 500 }).catch(() => {})
        count('worker-crash')
      }
    } else if (x < 0.75) {
      const m = alive()
      if (m.length) {
        const s = pick(m).sworm!
        void (r() < 0.6 ? s.drain({ timeoutMs: 2000 }) : s.undrain()).catch(() => {})
        count('drain')
      }
    } else if (x < 0.82) {
      net.faults = { drop: r() * 0.1, duplicate: r() * 0.05, minDelay: 1, maxDelay: 1 + r() * 20 }
      count('net-degrade')
    } else if (x < 0.86) {
      net.faults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
      count('net-restore')
    } else if (x < 0.9) {
      register()
      count('register')
    } else if (x < 0.92) {
      const m = alive()
      if (m.length) {
        void pick(m).sworm!.rebalance().catch(() => {})
        count('rebalance')
      }
    } else if (x < 0.93) {
      // the whole cluster dies and comes back from its disks
      for (const m of alive()) await crash(m)
      await sched.runUntil(sched.now + 100 + r() * 2000)
      for (const m of members.values()) await boot(m)
      count('crash-all')
    } else {
      const m = alive()
      if (m.length && nextName > 0) {
        void pick(m).sworm!.unregisterName(`w${Math.floor(r() * nextName)}`).catch(() => {})
        count('unregister')
      }
    }
  }

  // heal: network back, every node up and undrained
  net.heal()
  net.faults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
  for (const m of members.values()) if (!m.alive) await boot(m)
  for (const m of alive()) void m.sworm!.undrain().catch(() => {})
  clientsOn = false
  const healedAt = sched.now
  const problems: string[] = []

  // settled: every registered supervised name runs exactly once, on the node its ref names
  const lifeNow = (): workers.LifeEvent[] => workers.life.slice(lifeStart).filter((e) => e.name.startsWith(prefix))
  const settled = (): boolean => {
    const nodes = alive()
    if (nodes.length !== n) return false
    const leader = nodes.find((m) => m.sworm!.status().role === 'leader')
    if (!leader) return false
    const reg = leader.sworm!.registered().filter(([nm]) => !nm.startsWith('s:'))
    const aliveInc = new Map<string, number>()
    for (const e of lifeNow()) aliveInc.set(e.name, (aliveInc.get(e.name) ?? 0) + (e.event === 'start' ? 1 : -1))
    const names = new Set(reg.map(([nm]) => prefix + nm))
    for (const [nm, k] of aliveInc) if (k !== (names.has(nm) ? 1 : 0)) return false
    for (const nm of names) if ((aliveInc.get(nm) ?? 0) !== 1) return false
    // every node has applied the same registry
    const want = JSON.stringify(leader.sworm!.registered().map(([nm, ref]) => [nm, ref.node, ref.id]).sort())
    return nodes.every((m) => JSON.stringify(m.sworm!.registered().map(([nm, ref]) => [nm, ref.node, ref.id]).sort()) === want)
  }
  const ok = await sched.runUntilTrue(settled, 30_000, 20)
  const settledAfterMs = sched.now - healedAt
  if (!ok) {
    const leader = alive().find((m) => m.sworm!.status().role === 'leader')
    const aliveInc = new Map<string, number>()
    for (const e of lifeNow()) aliveInc.set(e.name, (aliveInc.get(e.name) ?? 0) + (e.event === 'start' ? 1 : -1))
    if (process.env.SIM_TRACE) {
      {
        const lead = alive().find((m) => m.sworm!.status().role === 'leader')
        const names = new Set(lead?.sworm!.registered().filter(([nm]) => !nm.startsWith('s:')).map(([nm]) => prefix + nm))
        const inc = new Map<string, number>()
        for (const e of lifeNow()) inc.set(e.name, (inc.get(e.name) ?? 0) + (e.event === 'start' ? 1 : -1))
        console.error('MISMATCH', JSON.stringify([...inc].filter(([nm, k]) => k !== (names.has(nm) ? 1 : 0))), JSON.stringify([...names].filter((nm) => (inc.get(nm) ?? 0) !== 1)))
      }
      for (const m of alive()) console.error('REG', m.id, JSON.stringify(m.sworm!.registered().map(([nm, ref]) => `${nm}@${ref.node}.${ref.id}`).sort()))
      for (const m of alive()) {
        const sw = m.sworm as unknown as { supervisor: { running: Map<string, unknown>; starting: Set<string> }; incarnation: string; state: { supervisedOn(n: string): unknown[]; nodeRecords(): unknown[] } }
        console.error(m.id, sw.incarnation, m.sworm!.status(), 'lease', m.sworm!.leaseOk(), 'running', [...sw.supervisor.running], 'starting', [...sw.supervisor.starting])
        console.error('  placed here', JSON.stringify(sw.state.supervisedOn(m.id).map((x) => x)))
      }
      console.error('nodes', JSON.stringify((leader?.sworm as unknown as { state: { nodeRecords(): unknown[] } }).state.nodeRecords()))
    }
    problems.push(
      `did not settle to one incarnation per name: registered=${JSON.stringify(leader?.sworm!.registered().map(([nm, ref]) => `${nm}@${ref.node}`) ?? 'no leader')} alive=${JSON.stringify([...aliveInc].filter(([, k]) => k !== 0))}`,
    )
  }
  if (opts.clients) {
    let clientsDone = false
    void Promise.all(clientLoops).finally(() => (clientsDone = true))
    await sched.runUntilTrue(() => clientsDone, 10_000)
    const lin = checkLinearizable(kvModel, history, { timeoutMs: 30_000 })
    if (!lin.ok) problems.push(`registry history not linearizable${lin.timedOut ? ' (checker timed out)' : ''}: ${lin.explanation ?? ''}`)
  }
  const ov = workers.overlaps(lifeNow())
  if (ov.length && process.env.SIM_TRACE) for (const e of lifeNow()) console.error('life', JSON.stringify(e))
  if (ov.length) problems.push(`overlapping incarnations: ${ov.slice(0, 5).join('; ')}`)
  const names = alive()[0]?.sworm?.registered().length ?? 0
  for (const m of members.values()) {
    m.alive = false
    for (const d of m.detach) d()
    m.sworm?.crashForTests()
  }
  return { seed, ok: problems.length === 0, problems, names, faults, starts: lifeNow().filter((e) => e.event === 'start').length, settledAfterMs }
}
