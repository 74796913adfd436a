/**
 * Autopilot, on the leader: keeps a small, healthy, zone-spread set of Raft voters among many
 * nodes (the others are learners: full replicas that host workers and forward proposals but do
 * not count for quorum), and removes nodes that have been gone for long.
 *
 * One change at a time, each a single-server configuration change: promote a learner that is up,
 * caught up and has stayed so for the stabilization time; demote a voter the ideal set leaves out
 * (one declared gone first); remove a node declared gone for `deadNodeTimeoutMs`. A change that
 * could leave the new configuration without a quorum of healthy voters is not made.
 *
 * The decision ({@link planVoters}) is a pure function of what the leader sees, tested on its
 * own; {@link Autopilot} gathers that view and carries out the step.
 * @module
 */
import type { RaftNode } from '../raft/node.js'
import type { Clock, Logger } from '../raft/types.js'
import type { RegistryState } from '../registry/state.js'
import type { RegistryCommand, RegistryResult } from '../registry/types.js'
import { hasOwn } from './config.js'

/**
 * What the leader knows of one member:
 * - `healthy`: up in the registry, answering this leader, caught up with the log;
 * - `up`: up in the registry, but silent or behind right now;
 * - `down`: declared gone in the registry;
 * - `unknown`: never announced itself in the registry (starting, or joining).
 */
export type MemberHealth = 'healthy' | 'up' | 'down' | 'unknown'

/** The leader's view, input of {@link planVoters}. */
export interface AutopilotView {
  /** The leader itself: always healthy, always a voter. */
  readonly self: string
  readonly voters: readonly string[]
  readonly learners: readonly string[]
  readonly health: ReadonlyMap<string, MemberHealth>
  /** Learners healthy for at least the stabilization time. */
  readonly stable: ReadonlySet<string>
  /** Members declared gone for at least `deadNodeTimeoutMs` (empty when cleanup is off). */
  readonly dead: ReadonlySet<string>
  /** Zone of each member that has one. */
  readonly zones: ReadonlyMap<string, string>
  /** The number of voters wanted (odd). */
  readonly target: number
}

/** One configuration change autopilot makes. */
export interface AutopilotStep {
  readonly action: 'promote' | 'demote' | 'remove'
  readonly node: string
  /** Why, for the log and the event. */
  readonly reason: string
}

/** Votes needed in a configuration of `n` voters. */
export const quorumOf = (n: number): number => Math.floor(n / 2) + 1

/**
 * The voters autopilot aims for: the leader, every voter whose state it cannot judge yet
 * (`unknown`), then, up to `target`, the candidates (voters not declared gone, and stable
 * learners) taken one at a time from the zone that has fewest so far, current voters first (no
 * churn without a reason), healthy ones first, then by id.
 */
export function idealVoters(v: AutopilotView): string[] {
  const isVoter = new Set(v.voters)
  const picked = [v.self, ...v.voters.filter((n) => n !== v.self && v.health.get(n) === 'unknown')]
  const inPicked = new Set(picked)
  const pool = [
    ...v.voters.filter((n) => !inPicked.has(n) && v.health.get(n) !== 'down' && !v.dead.has(n)),
    ...v.learners.filter((n) => v.health.get(n) === 'healthy' && v.stable.has(n) && !v.dead.has(n)),
  ]
  const zoneOf = (n: string): string => v.zones.get(n) ?? ''
  const perZone = new Map<string, number>()
  for (const n of picked) perZone.set(zoneOf(n), (perZone.get(zoneOf(n)) ?? 0) + 1)
  const rank = (n: string): [number, number, number, string] => [perZone.get(zoneOf(n)) ?? 0, isVoter.has(n) ? 0 : 1, v.health.get(n) === 'healthy' ? 0 : 1, n]
  const before = (a: string, b: string): boolean => {
    const ra = rank(a)
    const rb = rank(b)
    for (let i = 0; i < 3; i++) if (ra[i] !== rb[i]) return ra[i]! < rb[i]!
    return ra[3] < rb[3]
  }
  while (picked.length < v.target && pool.length > 0) {
    let best = 0
    for (let i = 1; i < pool.length; i++) if (before(pool[i]!, pool[best]!)) best = i
    const n = pool.splice(best, 1)[0]!
    picked.push(n)
    perZone.set(zoneOf(n), (perZone.get(zoneOf(n)) ?? 0) + 1)
  }
  return picked
}

/**
 * The next change, or undefined when the configuration is where it should be (or no safe step
 * exists). In this order: promote a learner the ideal set wants; remove a node gone for long;
 * demote a voter the ideal set leaves out, those declared gone first, once there are more voters
 * than wanted (or to make an even number of voters odd by dropping one declared gone). A step never leaves the new
 * configuration with fewer healthy voters than its quorum, and never touches the leader.
 */
export function planVoters(v: AutopilotView): AutopilotStep | undefined {
  const ideal = new Set(idealVoters(v))
  const voters = new Set(v.voters)
  const healthyVoters = v.voters.filter((n) => n === v.self || v.health.get(n) === 'healthy').length
  for (const n of ideal) {
    if (voters.has(n)) continue
    // the learner is healthy: one more healthy voter in a configuration one larger
    if (healthyVoters + 1 >= quorumOf(voters.size + 1)) {
      const reason = voters.size < v.target ? `fewer voters (${voters.size}) than wanted (${v.target})` : 'replaces a voter that is gone, or spreads the voters over more zones'
      return { action: 'promote', node: n, reason }
    }
  }
  for (const n of [...v.learners, ...v.voters]) {
    if (n === v.self || !v.dead.has(n)) continue
    const voter = voters.has(n)
    // a dead voter was not healthy: its removal keeps every healthy voter in a smaller configuration
    if (!voter || healthyVoters >= quorumOf(voters.size - 1)) return { action: 'remove', node: n, reason: 'declared gone for longer than deadNodeTimeoutMs' }
  }
  const out = v.voters.filter((n) => !ideal.has(n) && n !== v.self)
  out.sort((a, b) => Number(v.health.get(b) === 'down') - Number(v.health.get(a) === 'down'))
  for (const n of out) {
    // Only beyond the target (a replacement came in), or a voter declared gone from an even
    // number of voters (one fewer needs a smaller quorum). Demoting one of 3 voters, say, makes
    // the 2 left no stronger, and if one of them fails too the cluster is stuck: the demoted node,
    // back, could have voted, but only a leader could promote it again.
    if (voters.size <= v.target && !(v.health.get(n) === 'down' && voters.size % 2 === 0)) continue
    const healthyAfter = healthyVoters - (v.health.get(n) === 'healthy' ? 1 : 0)
    if (healthyAfter >= quorumOf(voters.size - 1)) {
      const reason = v.health.get(n) === 'down' ? 'declared gone' : voters.size > v.target ? `more voters (${voters.size}) than wanted (${v.target})` : 'spreads the voters over more zones'
      return { action: 'demote', node: n, reason }
    }
  }
  return undefined
}

/** What autopilot needs of its node. */
export interface AutopilotHost {
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly state: RegistryState
  readonly clock: Clock
  readonly log: Logger
  readonly nodeId: string
  /** Voters wanted (odd). */
  readonly voters: number
  /** How long a learner must have been healthy before it is promoted. */
  readonly stabilizationMs: number
  /** Remove a node declared gone for this long; undefined: never. */
  readonly deadNodeTimeoutMs: number | undefined
  /** A learner at most this many entries behind the commit index counts as caught up. */
  readonly maxTrailingEntries: number
  /** A member heard from within this long counts as answering. */
  readonly heardWithinMs: number
  /** Wait this long after becoming leader before judging anyone (every node gets to reach it). */
  readonly settleMs: number
  stopped(): boolean
  /** Take a node out of the configuration (the same path as `Sworm.removeNode`). */
  remove(node: string): Promise<void>
  /** A change was made (committed). */
  changed(step: AutopilotStep): void
}

/** Autopilot of one node: acts only while it leads. */
export class Autopilot {
  private leaderSince = 0
  private busy = false
  /** Since when the voters have not been as wanted, and when that was last logged. */
  private unsettledSince: number | undefined
  private loggedAt = 0
  private readonly healthySince = new Map<string, number>()
  private readonly downSince = new Map<string, number>()

  constructor(private readonly host: AutopilotHost) {}

  /** This node became leader: judge everyone afresh. */
  onLeader(): void {
    this.leaderSince = this.host.clock.now()
    this.healthySince.clear()
    this.downSince.clear()
  }

  /** What the leader sees now (exposed for status and tests). */
  view(): AutopilotView {
    const { raft, state, clock, nodeId } = this.host
    const st = raft.status()
    const now = clock.now()
    const cfg = st.config
    const voters = Object.keys(cfg.voters)
    const learners = Object.keys(cfg.learners)
    const health = new Map<string, MemberHealth>()
    const stable = new Set<string>()
    const dead = new Set<string>()
    const zones = new Map<string, string>()
    for (const n of [...voters, ...learners]) {
      const rec = state.nodeRecord(n)
      if (rec?.zone !== undefined) zones.set(n, rec.zone)
      let h: MemberHealth
      if (n === nodeId) h = 'healthy'
      else if (rec === undefined) h = 'unknown'
      else if (!rec.up) h = 'down'
      else {
        const heard = raft.lastHeard(n)
        const match = raft.progressOf(n)?.match ?? 0
        h = heard !== undefined && now - heard < this.host.heardWithinMs && match + this.host.maxTrailingEntries >= st.commit ? 'healthy' : 'up'
      }
      health.set(n, h)
      if (h === 'healthy') {
        const since = this.healthySince.get(n) ?? now
        this.healthySince.set(n, since)
        if (now - since >= this.host.stabilizationMs) stable.add(n)
      } else this.healthySince.delete(n)
      // gone: declared gone, or a learner that never came up and this leader does not hear (its
      // process died between its join and its announcement)
      const heard = raft.lastHeard(n)
      const silentLearner = h === 'unknown' && !hasOwn(cfg.voters, n) && (heard === undefined || now - heard >= this.host.heardWithinMs)
      if (h === 'down' || silentLearner) {
        const since = this.downSince.get(n) ?? now
        this.downSince.set(n, since)
        if (this.host.deadNodeTimeoutMs !== undefined && now - since >= this.host.deadNodeTimeoutMs) dead.add(n)
      } else this.downSince.delete(n)
    }
    for (const n of [...this.healthySince.keys()]) if (!health.has(n)) this.healthySince.delete(n)
    for (const n of [...this.downSince.keys()]) if (!health.has(n)) this.downSince.delete(n)
    return { self: nodeId, voters, learners, health, stable, dead, zones, target: this.host.voters }
  }

  /**
   * The voters are not as wanted and no change is made now: say why, once they have been so for a
   * second, then every 5 s (an operator sees a cluster that does not heal, and why).
   */
  private waiting(view: AutopilotView, why: string): void {
    const now = this.host.clock.now()
    const ideal = idealVoters(view)
    if (ideal.length === view.voters.length && ideal.every((n) => view.voters.includes(n))) {
      this.unsettledSince = undefined
      return
    }
    if (this.unsettledSince === undefined) this.unsettledSince = now
    if (now - this.unsettledSince < 1000 || now - this.loggedAt < 5000) return
    this.loggedAt = now
    const health = Object.fromEntries([...view.voters, ...view.learners].map((n) => [n, `${view.voters.includes(n) ? 'voter' : 'learner'} ${view.health.get(n) ?? '?'}${view.stable.has(n) ? ' stable' : ''}`]))
    this.host.log.info(`autopilot: the voters are not as wanted yet: ${why}`, { wanted: ideal, voters: view.voters, target: view.target, waitingMs: Math.round(now - this.unsettledSince), health })
  }

  /** Run on a timer: on the leader, make the next change if one is due. */
  check(): void {
    const { raft, clock, log } = this.host
    if (this.host.stopped() || !raft.isLeader) return
    const view = this.view() // (also while a change is under way: stability is measured throughout)
    if (this.busy) return this.waiting(view, 'a change is being committed')
    const st = raft.status()
    // one change at a time: wait until the latest configuration is applied here
    if (JSON.stringify(st.config) !== JSON.stringify(st.appliedConfig)) return this.waiting(view, 'the last change is not applied here yet')
    const step = planVoters(view)
    if (!step) return this.waiting(view, 'no change is safe yet')
    // A new leader promotes a learner it has seen healthy for the stabilization time, but judges
    // no one gone before every node had the time to reach it (`settleMs`): what it has not heard
    // yet is no evidence. (After an election in a loaded cluster, this saves half a second.)
    if (step.action !== 'promote' && clock.now() - this.leaderSince < this.host.settleMs) return
    this.busy = true
    this.unsettledSince = undefined
    const done =
      step.action === 'remove' ? this.host.remove(step.node) : raft.setVoter(step.node, step.action === 'promote')
    done.then(
      () => {
        log.info(`autopilot: ${step.action === 'promote' ? 'promoted' : step.action === 'demote' ? 'demoted' : 'removed'} ${step.node}`, { peer: step.node, reason: step.reason })
        this.host.changed(step)
      },
      (err: unknown) => log.warn(`autopilot: could not ${step.action} ${step.node}; will try again`, { peer: step.node, reason: step.reason, err: String(err) }),
    ).finally(() => {
      this.busy = false
    })
  }
}
