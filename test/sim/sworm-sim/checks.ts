/**
 * The judges of a scenario run: whether the cluster settled after the heal, what it looked like
 * when it did not, and whether two incarnations of a name ever overlapped.
 * @module
 */
import { internals } from '../../../src/internal.js'
import type { Sworm } from '../../../src/sworm.js'
import { runningRef } from '../../../src/registry/types.js'
import type * as workers from '../../../tools/cluster/workers.js'
import { simGlobals, zoneOf, type SimWorld, type Stall } from './world.js'

/** Names of static workers: the clients' keys and the bulk of a large-state run. */
const isStaticName = (nm: string): boolean => nm.startsWith('s:') || nm.startsWith('bulk:')

/** A registry as a string to compare: names with their nodes and worker ids, sorted. */
const registryOf = (registered: ReturnType<Sworm['registered']>): string =>
  JSON.stringify(registered.map(([nm, ref]) => [nm, ref.node, ref.id]).sort())

/**
 * Settled: no membership change under way, every member serving (no storage failure), the members
 * are the configuration (as many voters as wanted, over the zones) and up in the registry,
 * removed nodes are declared gone, every registered supervised name runs exactly once (on a
 * member), and every member holds the same registry.
 */
export function settled(w: SimWorld): boolean {
  if (w.membership) return false
  const nodes = w.active()
  if (nodes.some((m) => !m.alive || !m.ready || !m.sworm)) return false
  // (a node whose disk failed serves again once it reloaded it)
  if (nodes.some((m) => internals(m.sworm!).raft.storageFailure() !== undefined)) return false
  const leader = nodes.find((m) => m.sworm!.status().role === 'leader')
  if (!leader) return false
  const cfg = internals(leader.sworm!).raft.status().config
  noteAutopilotRemovals(w, leader.sworm!)
  if (nodes.some((m) => m.role !== 'active')) return false
  // the members are the configuration; as many voters as wanted (every member when fewer), over
  // as many zones as there are
  const members = [...Object.keys(cfg.voters), ...Object.keys(cfg.learners)].sort()
  if (JSON.stringify(members) !== JSON.stringify(nodes.map((m) => m.id).sort())) return false
  const target = w.opts.voters ?? 5
  const voters = Object.keys(cfg.voters)
  if (voters.length !== Math.min(target, nodes.length)) return false
  if (w.opts.zones) {
    const zones = new Set(nodes.map((m) => zoneOf(m.id, w.opts.zones!)))
    if (new Set(voters.map((n) => zoneOf(n, w.opts.zones!))).size !== Math.min(zones.size, voters.length)) return false
  }
  const up = new Map(leader.sworm!.statusReport().nodes.map((x) => [x.node, x.up]))
  for (const m of w.all()) if ((up.get(m.id) ?? false) !== (m.role === 'active')) return false
  const reg = leader.sworm!.registered().filter(([nm]) => !isStaticName(nm))
  if (reg.some(([, ref]) => w.members.get(ref.node)?.role !== 'active')) return false
  const aliveInc = w.aliveIncarnations()
  const names = new Set(reg.map(([nm]) => w.prefix + nm))
  for (const [nm, k] of aliveInc) if (k !== (names.has(nm) ? 1 : 0)) return false
  for (const nm of names) if ((aliveInc.get(nm) ?? 0) !== 1) return false
  // ... under the ref the registry holds (a worker whose ref was fixed at its placement runs
  // under that one)
  for (const [, ref] of reg) {
    const host = w.members.get(ref.node)
    if (!host?.alive || host.sworm?.incarnation !== ref.inc || !internals(host.sworm).hasWorker(ref.id)) return false
  }
  // ... and every supervised name the registry holds runs: none placed without a worker (that
  // `registered()` leaves out), being unregistered, or moving (found by review: a supervisor that
  // never started some names passed)
  if (stuckNames(w, leader.sworm!).length > 0) return false
  // every member has applied the same registry
  const want = registryOf(leader.sworm!.registered())
  return nodes.every((m) => registryOf(m.sworm!.registered()) === want)
}

/**
 * Members autopilot removed (gone for `deadNodeTimeoutMs`) whose `autopilot` event was lost (its
 * leader lost office between appending the change and its commit; the next leader committed it):
 * an active member the applied configuration lacks and that the registry holds as declared gone
 * is retired. A member dropped while up in the registry is not excused.
 */
function noteAutopilotRemovals(w: SimWorld, leader: Sworm): void {
  if (w.opts.deadNodeTimeoutMs === undefined) return
  const applied = internals(leader).raft.status().appliedConfig
  const records = new Map(leader.statusReport().nodes.map((x) => [x.node, x.up]))
  for (const m of w.active()) {
    if (applied.voters[m.id] !== undefined || applied.learners[m.id] !== undefined || records.get(m.id) !== false) continue
    m.role = 'retired'
    w.maybeDropped(m.id)
    w.count('autopilot-remove-unseen')
  }
}

/** The workload's supervised names that `sworm`'s registry holds but that do not run: placed without a worker, being unregistered, or moving. */
function stuckNames(w: SimWorld, sworm: Sworm): string[] {
  const { state } = internals(sworm)
  const out: string[] = []
  for (let i = 0; i < (w.opts.names ?? 20); i++) {
    const r = state.peek(`w${i}`)
    if (r?.kind !== 'supervised' || (runningRef(r) !== undefined && !r.retiring && r.handoffTo === undefined)) continue
    out.push(`w${i}@${r.node ?? '-'}/e${r.epoch ?? '-'}${r.retiring ? ' retiring' : ''}${r.handoffTo !== undefined ? ` to ${r.handoffTo}` : ''}`)
  }
  return out
}

/** Why the cluster did not settle: its members, voters, node records, registry and running incarnations (and with `SIM_TRACE`, the nodes' state on stderr). */
export function unsettled(w: SimWorld): string {
  const leader = w.active().find((m) => m.alive && m.sworm?.status().role === 'leader')
  const aliveInc = w.aliveIncarnations()
  if (process.env.SIM_TRACE) traceUnsettled(w, leader?.sworm)
  const cfg = (leader ? internals(leader.sworm!).raft : undefined)?.status().config
  const membersNow = w.all().map((m) => `${m.id}:${m.role}${m.alive ? (m.ready ? '' : ' starting') : ' down'}`)
  const stuck = leader ? stuckNames(w, leader.sworm!) : []
  return `did not settle (supervised names not running: ${JSON.stringify(stuck)}; members ${JSON.stringify(membersNow)}, voters ${JSON.stringify(Object.keys(cfg?.voters ?? {}))}, learners ${JSON.stringify(Object.keys(cfg?.learners ?? {}))}, membership change ${w.membership ? 'under way' : 'done'}, nodes ${JSON.stringify(leader?.sworm!.statusReport().nodes)}) to one incarnation per name: registered=${JSON.stringify(leader?.sworm!.registered().map(([nm, ref]) => `${nm}@${ref.node}`) ?? 'no leader')} alive=${JSON.stringify([...aliveInc].filter(([, k]) => k !== 0))}`
}

/** The state of every running node, on stderr: where the registry and the running workers differ, and each node's supervisor. */
function traceUnsettled(w: SimWorld, leader: Sworm | undefined): void {
  const lead = w.alive().find((m) => m.sworm!.status().role === 'leader')
  const names = new Set(
    lead?.sworm!.registered()
      .filter(([nm]) => !isStaticName(nm))
      .map(([nm]) => w.prefix + nm),
  )
  const inc = w.aliveIncarnations()
  console.error('MISMATCH', JSON.stringify([...inc].filter(([nm, k]) => k !== (names.has(nm) ? 1 : 0))), JSON.stringify([...names].filter((nm) => (inc.get(nm) ?? 0) !== 1)))
  for (const m of w.alive()) console.error('REG', m.id, JSON.stringify(m.sworm!.registered().map(([nm, ref]) => `${nm}@${ref.node}.${ref.id}`).sort()))
  for (const m of w.alive()) {
    const sw = m.sworm as unknown as { supervisor: { running: Map<string, unknown>; starting: Set<string> }; incarnation: string; state: { supervisedOn(n: string): unknown[] } }
    console.error(m.id, sw.incarnation, m.sworm!.status(), 'lease', m.sworm!.leaseOk(), 'running', [...sw.supervisor.running], 'starting', [...sw.supervisor.starting])
    console.error('  placed here', JSON.stringify(sw.state.supervisedOn(m.id)))
  }
  // (with no leader this throws, as it always has: SIM_TRACE output only)
  console.error('nodes', JSON.stringify((leader as unknown as { state: { nodeRecords(): unknown[] } }).state.nodeRecords()))
}

/** The overlap check of the run: its life log against the workers' activity and the stalls. */
export function checkOverlaps(w: SimWorld): { violations: string[]; lateStops: number } {
  const acts = (simGlobals.__swormActs ?? []).filter((e) => e.name.startsWith(w.prefix))
  simGlobals.__swormActs = undefined
  const ov = judgeOverlaps(w.lifeNow(), acts, (inc) => w.incNode.get(inc), w.stalls)
  if (ov.violations.length && process.env.SIM_TRACE) for (const e of w.lifeNow()) console.error('life', JSON.stringify(e))
  return ov
}

interface Span {
  name: string
  inc: number
  start: number
  stop: number
}

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
  stalls: Stall[],
): { violations: string[]; lateStops: number } {
  const spans = new Map<number, Span>()
  for (const e of log) {
    if (e.event === 'start') spans.set(e.incarnation, { name: e.name, inc: e.incarnation, start: e.at, stop: Infinity })
    else if (e.event === 'stop') {
      const s = spans.get(e.incarnation)
      if (s) s.stop = e.at
    }
  }
  const byName = new Map<string, Span[]>()
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
