/**
 * The whole product in the deterministic simulation: Sworm nodes (registry, supervisor, leases,
 * Raft) over a simulated network, in-memory disks and simulated time, with a seeded nemesis.
 * Every worker start and stop goes to a life log with the true simulated time; the run fails if
 * two incarnations of a supervised name ever overlap, or if, after the faults stop, a name does not
 * run exactly once on the members of the cluster.
 *
 * Clocks. Each node process reads its own monotonic clock (a {@link SimClock}, as
 * `performance.now()` is in production): a random offset per process start, so clocks disagree
 * and jump only across restarts, and a rate the nemesis changes at times ("skew"), always within
 * [lo, hi] with hi / lo = 1 + maxClockDriftMs / leaseTimeoutMs. That is the assumption the
 * guarantee rests on: a node measures its lease on its own clock, the leader measures
 * `leaseTimeoutMs + maxClockDriftMs` of silence on its own, so whatever the offsets, the lease runs
 * out first as long as no clock runs faster than another by more than that ratio. A clock that
 * jumps within a process (a wall clock stepped by NTP) is outside the assumption and not modelled.
 * The life log and the overlap check use the simulated time, not any node's clock.
 *
 * Membership. The nemesis also removes members (`Sworm.removeNode`, through any member, the
 * removed one included, live or crashed: a live one goes on running, cut off from the log, until
 * a later step kills it) and adds nodes started with `join` (a fresh node, or the machine of a
 * removed one on a wiped disk under a new id: reusing the id would let a stale configuration
 * count a voter that forgot its votes, which Raft does not survive), one change at a time,
 * keeping 3 to 6 members. The checks at the end hold for the membership at that time: its
 * members are the Raft voters, up in the registry, and run every name; removed nodes are
 * declared gone.
 */
import { MemoryStorage } from '../../src/raft/storage/memory-storage.js'
import { silentLogger, type Logger } from '../../src/raft/types.js'
import { Sworm, type SwormOptions } from '../../src/sworm.js'
import { SimNetwork, SimScheduler, type SimClock } from '../../src/testkit/sim.js'
import { checkLinearizable, kvModel, type KvOperation } from '../../src/testkit/linearizability.js'
import * as workers from '../../tools/cluster/workers.js'
import { assemble, internals } from '../../src/internal.js'

interface Member {
  id: string
  storage: MemoryStorage
  fastDisk: boolean
  /** The running process's sworm (from its creation on: a joining node can crash before it is ready). */
  sworm: Sworm | undefined
  /** Its start resolved (for a joining node: it is a voter); clients and faults use only ready nodes. */
  ready: boolean
  alive: boolean
  gen: number
  detach: Array<() => void>
  clock: SimClock | undefined
  /** `active`: a member (or joining); `leaving`: being removed; `retired`: out of the cluster. */
  role: 'active' | 'leaving' | 'retired'
  /** Starts with `join` (it was added after the cluster started) instead of `peers`. */
  joins: boolean
}

export interface SwormSimResult {
  seed: number
  ok: boolean
  problems: string[]
  names: number
  faults: Record<string, number>
  starts: number
  settledAfterMs: number
  /** Overlaps excused because the old incarnation's process was frozen until it stopped it (see {@link judgeOverlaps}). */
  lateStops: number
}

/** Names of static workers: the clients' keys and the bulk of a large-state run. */
const isStaticName = (nm: string): boolean => nm.startsWith('s:') || nm.startsWith('bulk:')

const g = globalThis as unknown as { __swormNow?: () => number; __swormActs?: workers.LifeEvent[] }

/**
 * Overlaps of two incarnations of a name (on the true simulated time). One is no violation, only
 * a late stop, when the old incarnation's process was stalled from before the new one started
 * until it stopped it, at the latest the moment it woke (before anything else: an event loop runs
 * expired timers first, and the lease-end fence is one), without acting meanwhile: a frozen
 * process runs nothing; and only when the new one started after the old one's lease had ended
 * (true time), or the move itself came too early. Every other overlap is a violation.
 */
export function judgeOverlaps(
  log: workers.LifeEvent[],
  acts: workers.LifeEvent[],
  nodeOf: (incarnation: number) => string | undefined,
  stalls: Array<{ node: string; from: number; to: number; leaseEnd: number }>,
): { violations: string[]; lateStops: number } {
  const spans = new Map<number, { name: string; inc: number; start: number; stop: number }>()
  for (const e of log) {
    if (e.event === 'start') spans.set(e.incarnation, { name: e.name, inc: e.incarnation, start: e.at, stop: Infinity })
    else if (e.event === 'stop') {
      const s = spans.get(e.incarnation)
      if (s) s.stop = e.at
    }
  }
  const byName = new Map<string, Array<{ name: string; inc: number; start: number; stop: number }>>()
  for (const s of spans.values()) {
    let l = byName.get(s.name)
    if (!l) byName.set(s.name, (l = []))
    l.push(s)
  }
  const violations: string[] = []
  let lateStops = 0
  for (const list of byName.values()) {
    list.sort((a, b) => a.start - b.start)
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i]!
        const b = list[j]!
        if (b.start >= a.stop) continue
        const node = nodeOf(a.inc)
        const frozen = stalls.some((st) => st.node === node && st.from <= b.start && b.start >= st.leaseEnd && a.stop <= st.to + 0.01)
        const acted = acts.some((x) => x.incarnation === a.inc && x.at >= b.start && x.at <= a.stop)
        if (frozen && !acted) lateStops++
        else violations.push(`${a.name}: incarnation ${b.inc} started while ${a.inc} alive${node ? ` (on ${node})` : ''}`)
      }
    }
  }
  return { violations, lateStops }
}

function traceLogger(node: string, now: () => number): Logger {
  const w = (level: string) => (msg: string, f?: Record<string, unknown>) => console.error(`${now().toFixed(1)} ${node} ${level} ${msg} ${f ? JSON.stringify(f) : ''}`)
  return { debug: w('debug'), info: w('info'), warn: w('warn'), error: w('error') }
}

export async function runSwormScenario(
  seed: number,
  opts: {
    durationMs?: number
    nodes?: number
    names?: number
    clients?: number
    /** Static names registered in bulk before the faults (snapshots then carry real weight). */
    largeState?: number
    /** Inject the fault classes added by issue #10 (stalls, wiped disks, hostile messages). Default true. */
    newFaults?: boolean
  } = {},
): Promise<SwormSimResult> {
  const sched = new SimScheduler(seed)
  const net = new SimNetwork(sched)
  const r = sched.random
  g.__swormNow = () => sched.now
  g.__swormActs = []
  const incNode = new Map<number, string>()
  const lifeStart = workers.life.length
  const prefix = `sim${seed}:`
  const n = opts.nodes ?? 5
  const initial = Array.from({ length: n }, (_, i) => `n${i + 1}`)
  let nextId = n + 1
  const url = (id: string): string => `ws://${id}.sim:1`
  const peers = Object.fromEntries(initial.map((id) => [id, url(id)]))
  const members = new Map<string, Member>()
  const faults: Record<string, number> = {}
  const count = (k: string): void => void (faults[k] = (faults[k] ?? 0) + 1)
  const lease = 1000
  const drift = 300
  // clock rates: any two differ by at most the ratio the lease and the node-down wait allow
  const maxRatio = 1 + drift / lease
  const rateLo = 1 / Math.sqrt(maxRatio)
  const rateHi = Math.sqrt(maxRatio)
  const randomRate = (): number => {
    const y = r()
    return y < 0.3 ? rateLo : y < 0.6 ? rateHi : rateLo + r() * (rateHi - rateLo)
  }
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!
  const all = (): Member[] => [...members.values()]
  const active = (): Member[] => all().filter((m) => m.role === 'active')
  /**
   * Running node processes whose start resolved (members, and removed nodes still running), and
   * that are not stalled: a frozen process makes no API calls.
   */
  const alive = (): Member[] => all().filter((m) => m.alive && m.ready && m.sworm && !m.clock?.stalled)

  /** An empty disk for `m`: writes take a random time, except while the node process is being created. */
  // a write completes after a random time, and never while its process is stalled
  const afterStall = (m: Member): Promise<void> | undefined => (m.clock?.stalled ? sched.sleep(m.clock.stallLeft()) : undefined)
  const wipedStorage = (m: Member): MemoryStorage =>
    new MemoryStorage({ delay: () => (m.fastDisk ? Promise.resolve() : sched.sleep(0.2 + r() * 1.5).then(() => afterStall(m))) })
  const newMember = (id: string, joins: boolean): Member => {
    const m: Member = { id, storage: undefined as unknown as MemoryStorage, fastDisk: false, sworm: undefined, ready: false, alive: false, gen: 0, detach: [], clock: undefined, role: 'active', joins }
    m.storage = wipedStorage(m)
    return m
  }

  /**
   * Start a node process. Resolves once it runs; a node that joins becomes ready later (once it
   * is a voter), and a start that fails ends the process (as `Sworm.start` throwing would).
   */
  const boot = async (m: Member, wait = true): Promise<() => boolean> => {
    m.gen++
    const gen = m.gen
    m.alive = true
    m.ready = false
    m.sworm = undefined
    const raftT = net.endpoint(m.id, 'raft')
    const msgT = net.endpoint(m.id, 'msg')
    m.detach = [() => raftT.detach(), () => msgT.detach()]
    m.clock = sched.driftingClock({ offset: Math.floor(r() * 1e7), rate: randomRate(), alive: () => m.alive && m.gen === gen })
    let via: string | undefined
    if (m.joins) {
      const known = active().filter((x) => x !== m && !x.joins)
      via = pick(known.length ? known : active().filter((x) => x !== m)).id
    }
    const options: SwormOptions = {
      name: 'sim',
      nodeId: m.id,
      listen: url(m.id),
      ...(via !== undefined ? { join: url(via) } : { peers }),
      dataDir: '/nonexistent',
      secret: 'a61f3e9c0d7b2845f3c8e1a6d9b0247e',
      leaseTimeoutMs: lease,
      maxClockDriftMs: drift,
      requestTimeoutMs: 3000,
      startTimeoutMs: 5000,
      raft: { snapshotEvery: opts.largeState ? 1000 : 300 },
    }
    m.fastDisk = true
    let made = false
    const created = (): void => void (made = true)
    void assemble(options, {
      storage: m.storage,
      raftTransport: raftT,
      msgTransport: msgT,
      clock: m.clock,
      logger: process.env.SIM_TRACE ? traceLogger(m.id, () => sched.now) : silentLogger,
      inc: `${m.id}.${gen}`,
      random: r,
      // the workers module, with the node of each incarnation noted (for the overlap check)
      loadModule: async () => ({
        ...(workers as unknown as Record<string, unknown>),
        counter: (name: string, start?: number) => {
          const w = workers.counter(name, start)
          const inc = workers.incarnationOf(w)
          if (inc !== undefined) incNode.set(inc, m.id)
          return w
        },
      }),
      discover: async (u) => new URL(u).hostname.split('.')[0]!,
      release: async () => {},
      created: (sworm) => {
        if (m.gen === gen) m.sworm = sworm
        m.fastDisk = false
        created()
      },
    }).then(
      () => {
        if (m.gen === gen && m.alive) m.ready = true
      },
      async () => {
        created()
        if (m.gen === gen && m.alive) await crash(m)
      },
    )
    // a node on an empty disk probes its peers before it starts: let simulated time run meanwhile
    if (wait) await sched.runUntilTrue(() => made, 10_000)
    return () => made
  }

  // every node of a new cluster starts at once: on empty disks each one waits for all its peers
  // before the cluster starts (cluster/identity.ts)
  const booting = await Promise.all(
    initial.map((id) => {
      const m = newMember(id, false)
      members.set(id, m)
      return boot(m, false)
    }),
  )
  await sched.runUntilTrue(() => booting.every((made) => made()), 10_000)

  // Clients of static registrations. Each node has its own key space ("s:<node>:<k>"), bound only
  // to workers of that node, so when a node is cut off, crashes or is removed, the system may drop
  // exactly those names (nodeDown, a new incarnation): modelled as deletes that may happen at any
  // time from then on (pending operations for the checker).
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
    const owner = pick([...members.keys()])
    const key = `s:${owner}:${Math.floor(r() * staticKeys)}`
    const x = r()
    const op: KvOperation = { client: clientSeq++, input: { op: 'get', key }, call: sched.now, ret: Infinity, output: undefined }
    try {
      if (x < 0.45) {
        // register a fresh static worker of the owner node (only the owner can spawn it)
        const host = members.get(owner)
        if (!host?.alive || !host.ready || !host.sworm) return
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
  async function crash(m: Member): Promise<void> {
    if (!m.alive) return
    maybeDropped(m.id)
    m.alive = false
    m.ready = false
    for (const d of m.detach) d()
    const dead = (m.sworm ? internals(m.sworm).crash() : [])
    for (const w of dead) workers.died(w)
    m.sworm = undefined
    await m.storage.close()
  }
  const spec = (name: string) => ({ module: 'sim-workers', fn: 'counter', args: [prefix + name] })
  let nextName = 0
  const register = (): void => {
    const m = alive()
    if (!m.length) return
    const name = `w${nextName < (opts.names ?? 20) ? nextName++ : Math.floor(r() * nextName)}`
    void pick(m).sworm!.whereisOrRegisterName(name, spec(name)).catch(() => {})
  }
  /**
   * Wait for `p` while simulated time runs, at most `ms`, and only while `up()` holds (a call
   * through a node that crashes never settles).
   */
  const within = async <T>(p: Promise<T>, ms: number, up: () => boolean = () => true): Promise<{ ok: true; value: T } | { ok: false; err?: unknown }> => {
    let out: { ok: true; value: T } | { ok: false; err?: unknown } | undefined
    p.then(
      (value) => (out = { ok: true, value }),
      (err: unknown) => (out = { ok: false, err }),
    )
    for (let w = 0; w < ms / 50 && !out && up(); w++) await sched.sleep(50)
    return out ?? { ok: false }
  }

  // One membership change at a time, run in the background until it is done (also after heal).
  let membership: Promise<void> | undefined
  const removeMember = (x: Member): void => {
    x.role = 'leaving'
    maybeDropped(x.id) // its static names go when it is declared gone
    membership = (async () => {
      for (let tries = 0; ; tries++) {
        // through a running member; at the first try, at times the leaving node itself (once out
        // of the configuration it hears of no leader: later tries through it would time out)
        const nodes = alive().filter((m) => m.role === 'active')
        const self = alive().includes(x) && ((tries === 0 && r() < 0.3) || !nodes.length)
        if (self || nodes.length) {
          const via = self ? x : pick(nodes)
          const gen = via.gen
          const res = await within(via.sworm!.removeNode(x.id), 10_000, () => via.alive && via.gen === gen)
          // NOT_FOUND: out of the configuration, and never came up in the registry (an earlier try
          // removed it and timed out, say)
          if (res.ok || (res.err as { code?: string } | undefined)?.code === 'NOT_FOUND') break
        }
        await sched.sleep(100 + r() * 400)
      }
      x.role = 'retired'
      membership = undefined
    })()
  }
  const addMember = async (): Promise<void> => {
    const retired = all().filter((m) => m.role === 'retired' && !members.has(`${m.id}r`))
    let m: Member
    if (retired.length && r() < 0.5) {
      // the machine of a removed node comes back on a wiped disk, under a new id (Raft is safe
      // only if no voter forgets its state, and an old configuration somewhere may count the old id)
      const old = pick(retired)
      await crash(old) // its old process ends first
      m = newMember(`${old.id}r`, true)
      members.set(m.id, m)
      count('member-rejoin')
    } else {
      m = newMember(`n${nextId++}`, true)
      members.set(m.id, m)
      count('member-join')
    }
    await boot(m)
    membership = (async () => {
      while (!(m.ready && m.alive)) await sched.sleep(100)
      membership = undefined
    })()
  }

  await sched.runUntilTrue(() => alive().some((m) => m.sworm!.status().role === 'leader'), 5000)
  if (opts.largeState) {
    // many static names (of one long-lived worker per node), 64 in flight, before the faults
    const hosts = alive()
    const refs = hosts.map((m) => m.sworm!.spawn({ handleCall: () => 'ok' }))
    let next = 0
    let done = 0
    const loop = async (): Promise<void> => {
      while (next < opts.largeState!) {
        const i = next++
        const k = i % hosts.length
        const res = await within(hosts[k]!.sworm!.registerName(`bulk:${i}`, refs[k]!), 20_000)
        if (res.ok) done++
      }
    }
    const loops = Array.from({ length: 64 }, loop)
    let finished = false
    void Promise.all(loops).finally(() => (finished = true))
    await sched.runUntilTrue(() => finished, 600_000, 50)
    count(`large-state:${done}`)
  }
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

  const newFaults = opts.newFaults ?? true
  const stalls: Array<{ node: string; from: number; to: number; leaseEnd: number }> = []
  const faultProblems: string[] = []
  const stall = (m: Member, ms: number): void => {
    // one stall interval per freeze: a stall of a node already stalled extends it
    const cur = stalls.find((st) => st.node === m.id && st.from <= sched.now && st.to > sched.now)
    if (cur) cur.to = Math.max(cur.to, sched.now + ms)
    else {
      // when its lease ends, on the true time (its clock runs at its rate; a frozen node renews nothing)
      const renewed = (m.sworm ? internals(m.sworm).raft.leaseRenewedAt() : undefined)
      const leaseEnd = renewed === undefined ? -Infinity : sched.now + (renewed + lease - m.clock!.now()) / m.clock!.rate
      stalls.push({ node: m.id, from: sched.now, to: sched.now + ms, leaseEnd })
    }
    if (process.env.SIM_TRACE) console.error(`${sched.now.toFixed(1)} nemesis stall ${m.id} ${ms.toFixed(0)} ms (${m.sworm?.status().role})`)
    m.clock!.stall(ms)
    net.stall(m.id, ms)
    maybeDropped(m.id) // it may be declared gone meanwhile
    count(`stall${m.sworm?.status().role === 'leader' ? '-leader' : ''}`)
  }
  const end = sched.now + (opts.durationMs ?? 15_000)
  while (sched.now < end) {
    await sched.runUntil(sched.now + 200 + r() * 800)
    const y = newFaults ? r() : 1
    if (y < 0.06) {
      // a process stall (GC pause, SIGSTOP, a long synchronous task): half the time the leader,
      // right after a partition cuts it off with a minority
      const ids = [...members.keys()]
      const leader = alive().find((m) => m.sworm!.status().role === 'leader')
      if (leader && r() < 0.5) {
        const others = ids.filter((id) => id !== leader.id).sort(() => r() - 0.5)
        const k = Math.floor(r() * 2)
        net.partition([[leader.id, ...others.slice(0, k)], others.slice(k)])
        if (process.env.SIM_TRACE) console.error(`${sched.now.toFixed(1)} nemesis partition ${JSON.stringify([[leader.id, ...others.slice(0, k)], others.slice(k)])}`)
        for (const id of ids) maybeDropped(id)
        count('partition')
        stall(leader, r() * 3000)
      } else {
        const m = alive()
        if (m.length) stall(pick(m), r() * 3000)
      }
      continue
    }
    if (y < 0.08) {
      // a voter loses its disk and is restarted under the same id: it must refuse to start; the
      // operator then removes it (and its machine may come back later under a new id)
      const act = active()
      const victims = act.filter((m) => m.alive && m.ready && !m.joins)
      if (!membership && act.length > 3 && act.every((m) => m.alive) && victims.length) {
        const m = pick(victims)
        await crash(m)
        m.storage = wipedStorage(m)
        await boot(m)
        await sched.runUntilTrue(() => !m.alive || m.ready, 5000)
        if (m.ready && m.alive) faultProblems.push(`${m.id} restarted on a wiped disk under its old id and was let in`)
        count('wipe')
        removeMember(m)
      }
      continue
    }
    if (y < 0.1) {
      // hostile messages: malformed or impossible Raft and wire messages, from an outsider and
      // from a member's id with another cluster's id
      const targets = alive()
      if (targets.length) {
        const to = pick(targets).id
        const from = r() < 0.5 ? 'intruder' : pick([...members.keys()])
        for (let k = 0; k < 20; k++) {
          const junk = pick<unknown>([
            null,
            42,
            'x'.repeat(1 + Math.floor(r() * 100)),
            { t: 'app', from, to, term: 1e9, prevIndex: -1, prevTerm: 0, entries: [{}], commit: 1e9 },
            { t: 'vote', from, to, term: 1e6, pre: false, lastIndex: 1e9, lastTerm: 1e6, transfer: true, cid: 'another-cluster' },
            { t: 'hb', from, to, term: 1e6, commit: 1e9, seq: 1, lease: true, ack: 1e9, cid: 'another-cluster' },
            { t: 'fwd', from, to, boot: 'x', reqs: [[1, { c: 'unregister', name: 'w1' }]], cid: 'another-cluster' },
            { t: 'snap', from, to, term: 1e6, snapshot: { meta: { index: 1e9, term: 1, config: { voters: {}, learners: {} } }, data: new Uint8Array(3) } },
            { t: 'call', id: 1, to: { sworm: 'sim', node: to, inc: 'x', id: 1 }, msg: 'crash' },
            { t: 'joinReq', node: 'n1', url: 'ws://n1.sim:1', disk: 'forged' },
            { t: 'probeResp', member: true, config: { voters: { [to]: 'x' }, learners: {} } },
          ])
          net.inject(from, to, junk, r() < 0.5 ? 'raft' : 'msg')
        }
        count('hostile')
      }
      continue
    }
    const x = r()
    if (process.env.SIM_TRACE) console.error(`${sched.now.toFixed(1)} nemesis x=${x.toFixed(2)}`)
    const ids = [...members.keys()]
    const down = active().filter((m) => !m.alive)
    if (x < 0.1) {
      // membership: one change at a time, 3 to 6 members
      const act = active()
      if (!membership && act.length > 3 && (act.length >= 6 || r() < 0.5)) {
        const victim = pick(act)
        count(victim.alive ? 'member-remove' : 'member-remove-down')
        removeMember(victim)
      } else if (!membership && act.length < 6 && act.some((m) => m.alive && !m.joins)) {
        await addMember()
      }
    } else if (x < 0.18) {
      // a node's clock runs at another rate (within the bound)
      const m = all().filter((m) => m.alive && m.clock)
      if (m.length) {
        pick(m).clock!.setRate(randomRate())
        count('skew')
      }
    } else if (x < 0.3) {
      const s = ids.slice().sort(() => r() - 0.5)
      const k = 1 + Math.floor(r() * 2)
      net.partition([s.slice(0, k), s.slice(k)])
      for (const id of ids) maybeDropped(id)
      count('partition')
    } else if (x < 0.34) {
      const a = pick(ids)
      const b = pick(ids)
      if (a !== b) {
        net.block(a, b)
        maybeDropped(a)
        maybeDropped(b)
      }
      count('one-way')
    } else if (x < 0.44) {
      net.heal()
      count('heal')
    } else if (x < 0.52 && down.length < 2) {
      const m = all().filter((m) => m.alive)
      if (m.length) {
        await crash(pick(m))
        count('crash')
      }
    } else if (x < 0.62 && down.length) {
      await boot(pick(down))
      count('restart')
    } else if (x < 0.72) {
      // a worker crashes
      const m = alive()
      if (m.length) {
        void pick(m).sworm!.call(`w${Math.floor(r() * Math.max(1, nextName))}`, 'crash', { timeout: 500 }).catch(() => {})
        count('worker-crash')
      }
    } else if (x < 0.78) {
      const m = alive()
      if (m.length) {
        const s = pick(m).sworm!
        void (r() < 0.6 ? s.drain({ timeoutMs: 2000 }) : s.undrain()).catch(() => {})
        count('drain')
      }
    } else if (x < 0.84) {
      net.faults = { drop: r() * 0.1, duplicate: r() * 0.05, minDelay: 1, maxDelay: 1 + r() * 20 }
      count('net-degrade')
    } else if (x < 0.87) {
      net.faults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
      count('net-restore')
    } else if (x < 0.91) {
      register()
      count('register')
    } else if (x < 0.93) {
      const m = alive()
      if (m.length) {
        void pick(m).sworm!.rebalance().catch(() => {})
        count('rebalance')
      }
    } else if (x < 0.94) {
      // the whole cluster dies and comes back from its disks
      for (const m of all()) await crash(m)
      await sched.runUntil(sched.now + 100 + r() * 2000)
      for (const m of active()) await boot(m)
      count('crash-all')
    } else {
      const m = alive()
      if (m.length && nextName > 0) {
        void pick(m).sworm!.unregisterName(`w${Math.floor(r() * nextName)}`).catch(() => {})
        count('unregister')
      }
    }
  }

  // heal: every stalled process runs again, network back, every member up and undrained; a
  // membership change under way finishes
  const thaw = Math.max(sched.now, ...stalls.map((st) => st.to))
  if (thaw > sched.now) await sched.runUntil(thaw + 1)
  net.heal()
  net.faults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
  for (const m of active()) if (!m.alive) await boot(m)
  for (const m of alive()) void m.sworm!.undrain().catch(() => {})
  clientsOn = false
  const healedAt = sched.now
  const problems: string[] = [...faultProblems]

  // settled: the members are the voters and up in the registry, removed nodes are declared gone,
  // every registered supervised name runs exactly once, and every member holds the same registry
  const lifeNow = (): workers.LifeEvent[] => workers.life.slice(lifeStart).filter((e) => e.name.startsWith(prefix))
  const settled = (): boolean => {
    if (membership) return false
    const nodes = active()
    if (nodes.some((m) => !m.alive || !m.ready || !m.sworm)) return false
    const leader = nodes.find((m) => m.sworm!.status().role === 'leader')
    if (!leader) return false
    const cfg = internals(leader.sworm!).raft.status().config
    if (Object.keys(cfg.learners).length || JSON.stringify(Object.keys(cfg.voters).sort()) !== JSON.stringify(nodes.map((m) => m.id).sort())) return false
    const up = new Map(leader.sworm!.statusReport().nodes.map((x) => [x.node, x.up]))
    for (const m of all()) if ((up.get(m.id) ?? false) !== (m.role === 'active')) return false
    const reg = leader.sworm!.registered().filter(([nm]) => !isStaticName(nm))
    if (reg.some(([, ref]) => members.get(ref.node)?.role !== 'active')) return false
    const aliveInc = new Map<string, number>()
    for (const e of lifeNow()) aliveInc.set(e.name, (aliveInc.get(e.name) ?? 0) + (e.event === 'start' ? 1 : -1))
    const names = new Set(reg.map(([nm]) => prefix + nm))
    for (const [nm, k] of aliveInc) if (k !== (names.has(nm) ? 1 : 0)) return false
    for (const nm of names) if ((aliveInc.get(nm) ?? 0) !== 1) return false
    // every member has applied the same registry
    const want = JSON.stringify(leader.sworm!.registered().map(([nm, ref]) => [nm, ref.node, ref.id]).sort())
    return nodes.every((m) => JSON.stringify(m.sworm!.registered().map(([nm, ref]) => [nm, ref.node, ref.id]).sort()) === want)
  }
  const ok = await sched.runUntilTrue(settled, 30_000, 20)
  const settledAfterMs = sched.now - healedAt
  if (!ok) {
    const leader = active().find((m) => m.alive && m.sworm?.status().role === 'leader')
    const aliveInc = new Map<string, number>()
    for (const e of lifeNow()) aliveInc.set(e.name, (aliveInc.get(e.name) ?? 0) + (e.event === 'start' ? 1 : -1))
    if (process.env.SIM_TRACE) {
      {
        const lead = alive().find((m) => m.sworm!.status().role === 'leader')
        const names = new Set(lead?.sworm!.registered().filter(([nm]) => !isStaticName(nm)).map(([nm]) => prefix + nm))
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
    const cfg = (leader ? internals(leader.sworm!).raft : undefined)?.status().config
    const membersNow = all().map((m) => `${m.id}:${m.role}${m.alive ? (m.ready ? '' : ' starting') : ' down'}`)
    problems.push(
      `did not settle (members ${JSON.stringify(membersNow)}, voters ${JSON.stringify(Object.keys(cfg?.voters ?? {}))}, learners ${JSON.stringify(Object.keys(cfg?.learners ?? {}))}, membership change ${membership ? 'under way' : 'done'}, nodes ${JSON.stringify(leader?.sworm!.statusReport().nodes)}) to one incarnation per name: registered=${JSON.stringify(leader?.sworm!.registered().map(([nm, ref]) => `${nm}@${ref.node}`) ?? 'no leader')} alive=${JSON.stringify([...aliveInc].filter(([, k]) => k !== 0))}`,
    )
  }
  if (opts.clients) {
    let clientsDone = false
    void Promise.all(clientLoops).finally(() => (clientsDone = true))
    await sched.runUntilTrue(() => clientsDone, 10_000)
    const lin = checkLinearizable(kvModel, history, { timeoutMs: 30_000 })
    if (!lin.ok) problems.push(`registry history not linearizable${lin.timedOut ? ' (checker timed out)' : ''}: ${lin.explanation ?? ''}`)
  }
  const acts = (g.__swormActs ?? []).filter((e) => e.name.startsWith(prefix))
  g.__swormActs = undefined
  const ov = judgeOverlaps(lifeNow(), acts, (inc) => incNode.get(inc), stalls)
  if (ov.violations.length && process.env.SIM_TRACE) for (const e of lifeNow()) console.error('life', JSON.stringify(e))
  if (ov.violations.length) problems.push(`overlapping incarnations: ${ov.violations.slice(0, 5).join('; ')}`)
  const names = active().find((m) => m.sworm)?.sworm?.registered().length ?? 0
  for (const m of members.values()) {
    m.alive = false
    for (const d of m.detach) d()
    if (m.sworm) internals(m.sworm).crash()
  }
  return { seed, ok: problems.length === 0, problems, names, faults, starts: lifeNow().filter((e) => e.event === 'start').length, settledAfterMs, lateStops: ov.lateStops }
}
