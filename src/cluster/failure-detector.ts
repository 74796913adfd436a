/**
 * Failure detection, on the leader: a node that has been silent towards it for the lease and the
 * drift (once it has led that long), or out of the Raft configuration for `nodeDownAfterMs`, is
 * declared gone in the registry (its static names are dropped and its supervised workers move).
 * Only a leader that holds its lease at that moment decides, and the `nodeDown` it proposes takes
 * effect only in an entry of its own term.
 * The `nodeDown` moves the first `moveSlice` of the node's supervised names; the leader moves the
 * rest in `moveOff` entries, one after another, so that no replica's event loop is held for all
 * of them at once.
 * @module
 */
import type { RaftNode } from '../raft/node.js'
import type { Clock } from '../raft/types.js'
import type { RegistryChange, RegistryState } from '../registry/state.js'
import type { RegistryCommand, RegistryResult } from '../registry/types.js'
import { isMember } from './config.js'

/** What the detector needs of its node. */
export interface FailureDetectorHost {
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly state: RegistryState
  readonly clock: Clock
  readonly nodeId: string
  /**
   * See {@link ResolvedOptions.nodeDownAfterMs}: how long a node must be out of the configuration
   * before it is declared gone. At least `silentAfterMs`.
   */
  readonly nodeDownAfterMs: number
  /**
   * How long after this leader last heard a node (an answer to its heartbeats or appends, in this
   * term), or after this leader's election, that node's lease has surely run out: `leaseTimeoutMs +
   * maxClockDriftMs` (see {@link FailureDetector.check}). At most `nodeDownAfterMs`.
   */
  readonly silentAfterMs: number
  /** Supervised names a gone node's entries move at most, each (default 4,096; the simulation uses a few). */
  readonly moveSlice?: number
  /** Told just before this leader proposes that `node` (incarnation `inc`) is gone (the simulation checks its lease is over). */
  decided?(node: string, inc: string): void
  stopped(): boolean
}

/**
 * How often a leader moving a gone node's names looks again whether its lease holds, while it
 * leads without it (see `FailureDetector.moveOff`).
 */
const LEASE_RECHECK_MS = 5

/** The default of {@link FailureDetectorHost.moveSlice}: about 50-130 ms of each replica's event loop an entry, on a loaded 2-core machine. */
export const MOVE_SLICE = 4096

/** The failure detector of one node (acting only while it leads). */
export class FailureDetector {
  private leaderSince = 0
  private readonly pendingDown = new Set<string>()
  /** Gone nodes whose names this leader is moving, a slice an entry (see `moveOff`). */
  private readonly moving = new Set<string>()
  /** On the leader: nodes with a registry record that are out of the Raft configuration, since when (this clock). */
  private readonly outOfConfigSince = new Map<string, number>()
  /** The configuration `outOfConfigSince` was measured against. */
  private outOfConfigKey: string | undefined

  constructor(private readonly host: FailureDetectorHost) {}

  /** This node became leader: every node gets a full wait to reach it. */
  onLeader(): void {
    this.leaderSince = this.host.clock.now()
    this.outOfConfigSince.clear()
    this.outOfConfigKey = undefined
  }

  /** A node came up or was declared gone: a proposal about it is no longer pending. */
  onChange(ch: RegistryChange): void {
    if (ch.type === 'nodeUp' || ch.type === 'nodeDown') this.pendingDown.delete(ch.node)
  }

  /**
   * On the leader: declare nodes gone after `silentAfterMs` of silence towards this leader, once
   * it has led for `silentAfterMs` too, or after `nodeDownAfterMs` out of the Raft configuration (a
   * removed node may still talk to us, but no leader renews its lease). Returns how long until a
   * node could be declared gone at the earliest, if nothing is heard meanwhile (Infinity when this
   * node does not decide now): the caller checks again then, so a failover starts when the wait
   * ends, not at the next turn of a periodic check.
   *
   * Why `lease + drift` (`silentAfterMs`) is enough, from the last answer this leader heard and
   * from its election alike: a node's lease is renewed only from when it sent an answer to a
   * heartbeat round that a leader acknowledged *holding its own lease*, or after a quorum had
   * acknowledged a round it sent once it had received that answer (the Raft core's `renewalAck`).
   * - This leader acknowledges only answers it received, and it notes each one it receives
   *   (`lastHeard`) once it leads, and its acknowledgement renews only the process that sent the
   *   answer (`hbResp.p`): none of its renewals starts after the last time it heard the node.
   * - An earlier leader (a lower term) renews from an answer only while it holds its lease, and
   *   no leader of a later term is elected while it does (the Raft node's `leaderLease`: a voter
   *   that acknowledged the round that lease rests on refuses every vote for an election timeout
   *   after it heard it, longer than the lease by either clock; restarts, stale answers of a
   *   higher term, votes of the voter's own term and timed-out transfers included, see "Leases
   *   and fencing" in the README); or once a quorum acknowledged a round it sent after it
   *   received the answer, and a voter acknowledges a round of a term only before it votes in a
   *   later one, so this leader, elected by a quorum that shares a voter with that one, was
   *   elected after that round was sent. So every renewal by an earlier leader started from an
   *   answer sent before this leader's election, before `leaderSince`.
   * Either way the lease it gave ends `lease + drift` after that on this clock. Until session 25
   * the wait from `leaderSince` added `(electionTicks - 1)` ticks (`nodeDownAfterMs`), for an
   * earlier leader renewing up to that long after the round its lease rests on: with the premise
   * above those renewals end before the election, and the margin cost every leader failover 250
   * ms by default. The simulation checks the outcome at every decision (`decided`: the node's
   * lease is over by its own clock), under cut-off leaders kept leased through a restarted bridge.
   */
  check(): number {
    const { raft, clock, state, nodeDownAfterMs, silentAfterMs } = this.host
    // Only a leader that holds its lease right now (by its clock) decides: one that was stalled
    // may have been replaced meanwhile, and its view of who answered it is stale.
    if (this.host.stopped() || !raft.isLeader || !raft.holdsLeaderLease()) return Infinity
    // names left on a node declared gone (by a leader that moved them a slice at a time and lost
    // its leadership, or by this one, whose next slice went astray): moved on at once
    // (never its own: this node leads, so it is about to announce itself up again)
    for (const rec of state.nodeRecords()) if (!rec.up && rec.node !== this.host.nodeId && state.leftOn(rec.node) > 0) this.moveOff(rec.node, rec.inc)
    const now = clock.now()
    // every node gets a chance to reach the new leader (and earlier leaders' renewals are over: see above)
    const led = Math.min(silentAfterMs, nodeDownAfterMs)
    if (now - this.leaderSince < led) return this.leaderSince + led - now
    let next = Infinity
    const cfg = raft.status().config
    // After a change of the members, measure again: a node may have been a member (and had its
    // lease renewed by us) between two runs of this check.
    // (the members only: autopilot's promotions and demotions do not restart the count)
    const key = JSON.stringify([...Object.keys(cfg.voters), ...Object.keys(cfg.learners)].sort())
    if (key !== this.outOfConfigKey) {
      this.outOfConfigSince.clear()
      this.outOfConfigKey = key
    }
    for (const rec of state.nodeRecords()) {
      if (!rec.up || rec.node === this.host.nodeId || this.pendingDown.has(rec.node)) continue
      if (!isMember(cfg, rec.node)) {
        const since = this.outOfConfigSince.get(rec.node)
        if (since === undefined) this.outOfConfigSince.set(rec.node, now)
        if (since === undefined || now - since < nodeDownAfterMs) {
          next = Math.min(next, (since ?? now) + nodeDownAfterMs - now)
          continue
        }
      } else {
        // (silence since this leader last heard it: see above; leaderSince's wait is over)
        const heard = raft.lastHeard(rec.node)
        if (heard !== undefined && now - heard < led) {
          next = Math.min(next, heard + led - now)
          continue
        }
      }
      this.pendingDown.add(rec.node)
      this.host.decided?.(rec.node, rec.inc)
      const term = raft.status().term
      const done = (): void => {
        this.pendingDown.delete(rec.node)
        // the first slice of its names moved: the rest, one entry after another
        if (state.leftOn(rec.node) > 0) this.moveOff(rec.node, rec.inc)
      }
      raft.propose({ c: 'nodeDown', node: rec.node, inc: rec.inc, term, ord: 1, max: this.slice() }, { term }).then(done, done)
    }
    return next
  }

  private slice(): number {
    return this.host.moveSlice ?? MOVE_SLICE
  }

  /**
   * On the leader: move the names left on gone node `node` (incarnation `inc`), a slice an entry,
   * each proposed once the one before it is applied, until none is left or this node no longer
   * leads (the next leader goes on: check()). While it leads without its lease, it waits for the
   * lease, looking again every `LEASE_RECHECK_MS`.
   */
  private moveOff(node: string, inc: string): void {
    if (this.moving.has(node)) return
    const { raft, state, clock } = this.host
    const next = (): void => {
      if (this.host.stopped() || !raft.isLeader || state.leftOn(node) === 0 || state.nodeRecord(node)?.inc !== inc) {
        this.moving.delete(node)
        return
      }
      if (!raft.holdsLeaderLease()) {
        // Its lease lapsed (a survivor busy applying the last slice, or starting its share, did
        // not answer a heartbeat round in time: the usual case in a failover on a busy machine).
        // Go on as soon as a round is acknowledged again, not at the next 100 ms check: found by
        // a failover timeline (session 22), where that wait cost 230-470 ms in 4 of 45 runs.
        clock.setTimeout(next, LEASE_RECHECK_MS)
        return
      }
      const term = raft.status().term
      raft.propose({ c: 'moveOff', node, inc, term, max: this.slice() }, { term }).then(
        (moved) => (moved === true ? next() : this.moving.delete(node)),
        () => this.moving.delete(node),
      )
    }
    this.moving.add(node)
    next()
  }
}
