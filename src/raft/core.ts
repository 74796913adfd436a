/**
 * The Raft core: a pure, deterministic state machine with no I/O.
 *
 * Inputs: `tick()` (logical time), `step(message)`, `propose()`, `readIndex()`,
 * `proposeConfig()`, `transferLeadership()`, and `advance()` once the node has carried out a
 * {@link Ready}. Output: `ready()` returns what the node must do, in this order:
 *
 *  1. send `messagesNow` (a leader's appends may leave before its own disk write, as the
 *     thesis allows: the leader counts itself only for what it has persisted);
 *  2. persist `snapshot`, then `truncateFrom` / `entries` / `hardState` in one synced write;
 *  3. send `messages` (votes and acknowledgements: they promise what was just persisted);
 *  4. apply `committed` entries, answer `reads`;
 *  5. call `advance(ready)`.
 *
 * While the node persists one Ready, new proposals pile up in the core and go out together in
 * the next one: that is the group commit.
 * @module
 */
import type {
  ClusterConfig,
  Entry,
  EntryType,
  HardState,
  MsgAppend,
  MsgAppendResp,
  MsgHeartbeat,
  MsgHeartbeatResp,
  MsgReadIndex,
  MsgReadIndexResp,
  MsgSnapshot,
  MsgSnapshotResp,
  MsgVote,
  MsgVoteResp,
  NodeId,
  PersistedState,
  RaftMessage,
  Snapshot,
} from './types.js'
import { diskOf } from './types.js'
import { cloneConfig, emptyConfig, RaftLog, type EntryCodec } from './log.js'
import { acknowledge, newProgress, sent, toProbe, toSnapshot, type Progress } from './progress.js'
import { crc32c } from '../util/crc32c.js'

/**
 * The largest snapshot a follower takes (4 GiB: the largest byte array Node.js 20 holds). Its
 * buffer is allocated at the first chunk, from the size the leader declares.
 */
const MAX_SNAPSHOT_BYTES = 2 ** 32 - 1
/**
 * Answers to heartbeat rounds a leader keeps per follower until a quorum round confirms them (see
 * `RaftCore.renewalAck`; at 50 ms ticks, rounds coming back up to 3 s late); when full, newer ones
 * are not kept until the oldest are confirmed.
 */
const MAX_UNCONFIRMED_ANSWERS = 64
/**
 * Heartbeat rounds a leader keeps the send time of: those of the last `ROUND_KEEP_LEASES` leader
 * leases, `MAX_ROUNDS_KEPT` at most (a round starts at every Ready with a read waiting: at a read
 * a millisecond, keeping 88 rounds, as until session 26, forgot a round before a quorum answered
 * it once answers took 60 ms, and no lease was renewed: found by review).
 */
const ROUND_KEEP_LEASES = 16
const MAX_ROUNDS_KEPT = 8192

/**
 * Whether `m` is addressed to another data directory than `disk`, this node's: the sender's
 * configuration binds this node's id to a data directory (`ClusterConfig.disks`) and this node
 * runs on another one. Such a node lost its data and started again under its id (an empty
 * `dataDir`, with `join`): it forgot its term, its votes and its log, and answering as the member
 * it was would count it in quorums it can no longer be part of. A stale leader's heartbeats
 * answered by it gave two leaders their leases at once, a read that missed a committed entry,
 * and two different entries committed at one index (session 27, found by review). It drops every
 * such message (it neither takes the sender's term nor answers); the cluster then refuses its
 * join (`DATA_LOST`). A node without a data directory id, or a sender whose configuration binds
 * none to it (one from before such ids), is not checked.
 */
export function forAnotherDisk(m: { dk?: string }, disk: string | undefined): boolean {
  return disk !== undefined && m.dk !== undefined && m.dk !== disk
}

/** Roles of a Raft node. `precandidate` is a node running a pre-vote. */
export type Role = 'follower' | 'precandidate' | 'candidate' | 'leader'

/** Tunables of the core, all in ticks or counts. */
export interface CoreOptions {
  id: NodeId
  /** Minimum election timeout in ticks; the actual one is random in [n, 2n). Default 10. */
  electionTicks?: number
  /** Heartbeat interval in ticks. Default 1. */
  heartbeatTicks?: number
  /** Run a pre-vote before a real election (no term bump unless a quorum would vote). Default true. */
  preVote?: boolean
  /** A leader that has not heard from a quorum for an election timeout steps down; followers
   * that heard from a leader within the timeout refuse votes. Default true. */
  checkQuorum?: boolean
  /** Serve reads at the commit index without a quorum round while the leader lease holds.
   * Relies on bounded clock drift between nodes (see README). Default false. */
  leaseRead?: boolean
  /**
   * Something relies on the leader's lease ({@link RaftCore.leaseHeld}) besides reads. Then no
   * leader may be elected while an earlier one may still hold its lease, so: a node refuses votes
   * for an election timeout after it last heard a leader whatever happened to its term since (a
   * stale answer of a higher term makes it forget whom it follows), and after its own start (as if
   * it had just heard one); and a leader whose transfer of leadership timed out steps down rather
   * than lead on (the `timeoutNow` it sent may still elect the target, whose voters skip their
   * stickiness). Without it, a voter restarted next to a leader that keeps its lease through it
   * grants the first candidate at once (found by the nemesis, session 24; the others by its
   * reviews). Always on with `leaseRead`; default false otherwise.
   */
  leaderLease?: boolean
  /**
   * Turns entries into bytes and back: with it, the log keeps the entries the state machine has
   * applied as bytes rather than objects (see `log.ts`). Default: none, entries stay objects.
   */
  entryCodec?: EntryCodec
  /** Entries per append message. Default 256 (half the window below: a follower catching up has the next append on its way while it stores one). */
  maxAppendEntries?: number
  /**
   * Bytes of entries per append message (as {@link CoreOptions.entryBytes} counts them), at least
   * one entry whatever its size. Default 8 MiB: an append of 256 large entries would pass the
   * transport's frame limit, be dropped, and be sent again unchanged at every probe, so the
   * follower would get nothing more until the leader's log was compacted past it.
   */
  maxAppendBytes?: number
  /**
   * The size of an entry as sent (default: none counted, so `maxAppendBytes` bounds nothing).
   * With an `entryCodec` too, count the codec's encoding (a node does: both are `entryBytes()`):
   * the log then decodes no more of its frozen entries for an append than the bound keeps. Sizes
   * smaller than the encodings only make appends shorter.
   */
  entryBytes?: (e: Entry) => number
  /** Append messages in flight per follower. Default 64. */
  maxInflight?: number
  /**
   * Bytes of entries in flight per follower (sent, not yet acknowledged, as
   * {@link CoreOptions.entryBytes} counts them); one more append goes out while fewer are, so at
   * most this plus `maxAppendBytes`. Default 4 MiB: with the default append bound, at most 12 MiB
   * of one Raft group wait in a slow follower's socket, under the transport's 16 MiB past which
   * it drops messages (heartbeats and read confirmations among them; the socket is the peer's,
   * shared by every sworm of a hub and by their messages). Bounds nothing without `entryBytes`,
   * and only appends streamed to a follower (one in probe state gets one append per heartbeat
   * answer).
   */
  maxInflightBytes?: number
  /**
   * Entries in flight per follower (sent, not yet acknowledged): a follower catching up gets them
   * in bursts it can decode and store in a few milliseconds, not 65,536 at once (which held a
   * node that had just installed a snapshot for a quarter of a second; 2,048 still held a node
   * joining 100k names for 60-105 ms, two appends decoded, checked and encoded for its disk in one
   * turn of its event loop; 1,024 for 55-81 ms, 512 for 37-39 ms). Default 512.
   */
  maxInflightEntries?: number
  /** Bytes per snapshot chunk. Default 1 MiB. */
  snapshotChunkBytes?: number
  /** Snapshot chunks in flight per follower, beyond what it acknowledged. Default 4. */
  snapshotWindow?: number
  /**
   * Committed entries handed out per Ready at most (a node catching up, or replaying its log at
   * a restart, applies them in batches it can interleave with other work). Default 256: a
   * batch takes milliseconds, even in a process whose code is not optimized yet.
   */
  maxCommittedPerReady?: number
  /**
   * Learners (non-voting replicas) get appends and commit notices at most once per this many ms
   * on {@link CoreOptions.now}'s clock, each carrying what came meanwhile, where voters get them at
   * every Ready: learners do not count for commits, and with 10 of them a leader spent more on
   * its learners than on its quorum. Recovery (a refused append, a heartbeat answer from a learner
   * behind, a snapshot) is not paced, nor is a learner waiting on an index of its own (see
   * {@link RaftCore.expedite}). Default 0: learners are sent to as voters are. Needs `now`.
   */
  learnerPaceMs?: number
  /** Random source in [0, 1); pass a seeded one for deterministic runs. */
  random?: () => number
  /**
   * The node's clock (ms), read for every lease decision. Ticks only drive timeouts: after a
   * stall (a GC pause, SIGSTOP) ticks lag behind the clock, and a lease counted in ticks would
   * outlive a new leader's election. Without it (pure core tests) the lease is counted in ticks.
   */
  now?: () => number
  /**
   * How old (on {@link CoreOptions.now}'s clock) the latest heartbeat round a quorum acknowledged
   * may be for the leader to hold its lease. It must be shorter than the shortest election
   * timeout measured on any voter's clock: voters that acknowledged that round refuse to vote for
   * anyone else for an election timeout after it. Default (ticks): `electionTicks - 1`.
   */
  leaseMs?: number
  /**
   * The identity of this node's data directory. With it, the node votes and campaigns only while
   * the configuration lists it with this very identity (another one means it lost what it
   * promised), and, while the configuration does not list it at all, only if `voteUnlisted`.
   */
  disk?: string
  /** Whether a node with a `disk` votes before its configuration lists it. Default true. */
  voteUnlisted?: boolean
  /**
   * A number this process drew at its start, sent with each heartbeat answer (`hbResp.p`) and
   * echoed by the leader with its acknowledgement (`hb.ackP`): a node's lease is renewed only by
   * the acknowledgement of an answer its own process sent. Found by review (session 22): a node
   * restarted under the same id answered a late copy of a heartbeat round its previous process
   * had answered, and the leader's acknowledgement of that answer renewed the new process's lease
   * from a time after the leader last heard the node. Without it (pure core tests), answers carry
   * no tag.
   */
  answerTag?: number
}

/** A read that is ready to be served once the state machine has applied `index`. */
export interface ReadState {
  id: number
  /** The read index; 0 when the read failed (no leader, or leadership lost). */
  index: number
}

/** Role, term and known leader; exposed so the node can report and route. */
export interface SoftState {
  role: Role
  term: number
  leader: NodeId | undefined
}

/** The work the node must carry out; see the module documentation for the order. */
export interface Ready {
  messagesNow: RaftMessage[]
  snapshot: Snapshot | undefined
  truncateFrom: number | undefined
  entries: Entry[]
  hardState: HardState | undefined
  messages: RaftMessage[]
  committed: Entry[]
  reads: ReadState[]
  /** Present when role, term or leader changed since the last Ready. */
  soft: SoftState | undefined
}

interface PendingRead {
  ids: number[]
  /** Undefined for this node's own reads; the follower to answer otherwise. */
  from: NodeId | undefined
  index: number
  seq: number
}

/** Outcome of a proposal: its place in the log, or why it was refused. */
export type ProposeResult =
  | { ok: true; index: number; term: number }
  | { ok: false; reason: 'not-leader' | 'transferring' | 'config-pending' | 'config-invalid'; leader: NodeId | undefined }


/** Read-only view of the core's state for tests and status reports. */
export interface CoreStatus {
  id: NodeId
  role: Role
  term: number
  vote: NodeId | undefined
  leader: NodeId | undefined
  commit: number
  applied: number
  lastIndex: number
  snapshotIndex: number
  config: ClusterConfig
  /**
   * Set while this node, after its storage dropped corrupt records, has not yet caught up past
   * what it lost: it neither votes nor campaigns until its commit index reaches this.
   */
  recoveringUpTo: number | undefined
  /** A snapshot transfer this node is receiving: its index, the bytes in so far, and its size. */
  receiving: { index: number; received: number; total: number } | undefined
}

/** A snapshot a follower is receiving, chunk by chunk, from one leader in one term. */
interface IncomingSnapshot {
  from: NodeId
  term: number
  index: number
  snapTerm: number
  total: number
  /**
   * The snapshot, `received` bytes of it so far: each chunk is copied in as it is taken (a copy of
   * all at the end wrote a whole snapshot's worth of new memory in one turn, a page fault a page).
   */
  data: Uint8Array | undefined
  received: number
  /** The tick of the latest chunk taken. */
  at: number
}

/** The Raft state machine. See the module documentation. */
export class RaftCore {
  readonly id: NodeId
  private readonly electionTicks: number
  private readonly heartbeatTicks: number
  private readonly preVote: boolean
  private readonly checkQuorum: boolean
  private readonly leaseRead: boolean
  /** The leader's lease is relied on: see {@link CoreOptions.leaderLease}. */
  private readonly leases: boolean
  /** `ticks` when this node last heard a leader (its start counts as such; see {@link CoreOptions.leaderLease}). */
  private heardLeaderTick = 0
  private readonly maxAppendEntries: number
  private readonly maxAppendBytes: number
  private readonly entryBytes: ((e: Entry) => number) | undefined
  private readonly maxInflight: number
  private readonly maxInflightBytes: number
  private readonly maxInflightEntries: number
  private readonly snapshotChunkBytes: number
  private readonly snapshotWindow: number
  private readonly maxCommittedPerReady: number
  private readonly learnerPaceMs: number
  private readonly random: () => number
  private readonly answerTag: number | undefined

  // persistent
  private term = 0
  private vote: NodeId | undefined
  /** The snapshot and the entries after it (see log.ts). */
  private log: RaftLog

  // volatile
  private role: Role = 'follower'
  private leader: NodeId | undefined
  private commit = 0
  private applied = 0
  private stableIndex = 0
  private config: ClusterConfig = emptyConfig()
  private electionElapsed = 0
  private heartbeatElapsed = 0
  private randomizedTimeout = 0
  private votes = new Map<NodeId, boolean>()
  private progress = new Map<NodeId, Progress>()
  private transferee: NodeId | undefined
  private transferElapsed = 0
  /** After a storage repair: no votes and no campaigns until `commit` reaches this (0: none). */
  private lostUpTo = 0
  /** The snapshot being received, if any. */
  private incoming: IncomingSnapshot | undefined

  // reads
  private readSeq = 0
  /** Ticks since start. */
  private ticks = 0
  /** The clock of lease decisions (see {@link CoreOptions.now}). */
  private readonly now: () => number
  private readonly leaseMs: number
  private readonly disk: string | undefined
  private readonly voteUnlisted: boolean
  /** When (on `now`) each heartbeat round was sent. */
  private readonly roundAt = new Map<number, number>()
  private pendingReads: PendingRead[] = []
  private readsAwaitingCommit: PendingRead[] = []
  private followerReadIds: number[] = []
  /** Follower reads sent to a leader and not answered yet: to whom, in which term, at which tick. */
  private readonly readsSent = new Map<number, { leader: NodeId; term: number; at: number }>()
  private readyReads: ReadState[] = []

  // pending outputs
  private msgsNow: RaftMessage[] = []
  private msgsAfter: RaftMessage[] = []
  private pendingTruncate: number | undefined
  private pendingSnapshot: Snapshot | undefined
  private hardDirty = false
  private lastSoft: SoftState
  private appendsDirty = false
  /** Leader: learners have appends or a commit notice waiting for their pace (see `learnerPaceMs`). */
  private learnersDirty = false
  /** Leader: when (on `now`) learners were last sent what waited for them. */
  private learnersSentAt = -Infinity
  /**
   * Leader: learners waiting on an index of their own (a proposal they forwarded, a read they
   * asked for), sent to at once, as voters, until told that index is committed.
   */
  private readonly urgent = new Map<NodeId, number>()

  /**
   * @param opts - timing, features and the random source
   * @param persisted - what the node loaded from its storage
   * @param applied - what the node's state machine has applied already, when the core is rebuilt
   * in a running node (after its storage recovered): committed entries up to there are not
   * handed out again. Defaults to the snapshot's index.
   */
  constructor(opts: CoreOptions, persisted: PersistedState, applied?: number) {
    this.id = opts.id
    this.electionTicks = opts.electionTicks ?? 10
    this.heartbeatTicks = opts.heartbeatTicks ?? 1
    this.preVote = opts.preVote ?? true
    this.checkQuorum = opts.checkQuorum ?? true
    this.leaseRead = opts.leaseRead ?? false
    this.leases = this.leaseRead || (opts.leaderLease ?? false)
    this.maxAppendEntries = opts.maxAppendEntries ?? 256
    this.maxAppendBytes = opts.maxAppendBytes ?? 8 * 1024 * 1024
    this.entryBytes = opts.entryBytes
    this.maxInflight = opts.maxInflight ?? 64
    this.maxInflightBytes = opts.maxInflightBytes !== undefined && opts.maxInflightBytes >= 1 ? opts.maxInflightBytes : 4 * 1024 * 1024
    this.maxInflightEntries = Math.max(1, opts.maxInflightEntries ?? 512)
    this.snapshotChunkBytes = opts.snapshotChunkBytes ?? 1024 * 1024
    this.snapshotWindow = opts.snapshotWindow ?? 4
    this.maxCommittedPerReady = Math.max(1, opts.maxCommittedPerReady ?? 256)
    if (!(this.snapshotChunkBytes >= 1) || !(this.snapshotWindow >= 1)) throw new RangeError('snapshotChunkBytes and snapshotWindow must be at least 1')
    this.random = opts.random ?? Math.random
    this.now = opts.now ?? (() => this.ticks)
    this.learnerPaceMs = opts.now ? Math.max(0, opts.learnerPaceMs ?? 0) : 0
    this.disk = opts.disk
    this.voteUnlisted = opts.voteUnlisted ?? true
    this.answerTag = opts.answerTag
    this.leaseMs = opts.leaseMs ?? (opts.now ? 0 : this.electionTicks - 1)
    if (opts.now && !(this.leaseMs > 0)) throw new RangeError('leaseMs must be positive when a clock is given')
    if (this.electionTicks <= this.heartbeatTicks) throw new RangeError('electionTicks must be greater than heartbeatTicks')

    this.term = persisted.hardState.term
    this.vote = persisted.hardState.vote
    this.log = new RaftLog(persisted.snapshot, persisted.entries, opts.entryCodec)
    this.stableIndex = this.lastIndex()
    this.commit = Math.min(Math.max(persisted.hardState.commit, this.log.snapIndex), this.lastIndex())
    this.applied = this.log.snapIndex
    if (applied !== undefined && applied > this.log.snapIndex) {
      // entries the state machine applied were committed, and were durable here before it applied them
      this.applied = Math.min(applied, this.lastIndex())
      this.commit = Math.max(this.commit, this.applied)
    }
    this.lostUpTo = persisted.recovery?.lostUpTo ?? 0
    this.config = this.log.latestConfig()
    this.resetRandomizedTimeout()
    this.lastSoft = this.soft()
  }

  // ------------------------------------------------------------------ log helpers

  /** Index of the last entry (or of the snapshot when the log is empty). */
  lastIndex(): number {
    return this.log.lastIndex()
  }

  /** Term of the entry at `index`; undefined when unknown (compacted or beyond the end). */
  termAt(index: number): number | undefined {
    return this.log.termAt(index)
  }

  private truncateFrom(index: number): void {
    this.log.truncateFrom(index)
    this.pendingTruncate = this.pendingTruncate === undefined ? index : Math.min(this.pendingTruncate, index)
    this.stableIndex = Math.min(this.stableIndex, index - 1)
    this.config = this.log.latestConfig()
  }

  private append(entries: Entry[]): void {
    this.log.append(entries)
    for (const e of entries) if (e.type === 'conf') this.config = cloneConfig(e.data as ClusterConfig)
  }

  private isVoter(id: NodeId = this.id): boolean {
    return Object.prototype.hasOwnProperty.call(this.config.voters, id)
  }

  private voters(): NodeId[] {
    return Object.keys(this.config.voters)
  }

  private peers(): NodeId[] {
    return [...Object.keys(this.config.voters), ...Object.keys(this.config.learners)].filter((p) => p !== this.id)
  }

  private quorum(): number {
    return Math.floor(this.voters().length / 2) + 1
  }

  private upToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.log.lastTerm()
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex())
  }

  // ------------------------------------------------------------------ public inputs

  /** Current state, for status and tests. */
  status(): CoreStatus {
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      vote: this.vote,
      leader: this.leader,
      commit: this.commit,
      applied: this.applied,
      lastIndex: this.lastIndex(),
      snapshotIndex: this.log.snapIndex,
      config: cloneConfig(this.config),
      recoveringUpTo: this.recovering() ? this.lostUpTo : undefined,
      receiving: this.incoming && { index: this.incoming.index, received: this.incoming.received, total: this.incoming.total },
    }
  }

  /**
   * Replication progress of a follower, on the leader; `snapshot` while it is being sent a
   * snapshot: its index, the bytes the follower acknowledged, and its size.
   */
  progressOf(id: NodeId): { match: number; next: number; snapshot?: { index: number; acked: number; total: number } } | undefined {
    const pr = this.progress.get(id)
    if (!pr) return undefined
    if (!pr.snap) return { match: pr.match, next: pr.next }
    return { match: pr.match, next: pr.next, snapshot: { index: pr.snap.meta.index, acked: pr.snapAcked, total: pr.snap.data.length } }
  }

  /** On the leader: the snapshots being sent, to whom, and how far each follower acknowledged. */
  snapshotTransfers(): Array<{ to: NodeId; index: number; acked: number; total: number }> {
    const out: Array<{ to: NodeId; index: number; acked: number; total: number }> = []
    if (this.role !== 'leader') return out
    for (const [to, pr] of this.progress) if (pr.snap) out.push({ to, index: pr.snap.meta.index, acked: pr.snapAcked, total: pr.snap.data.length })
    return out
  }

  /** The voter with the highest match index (the best leadership-transfer target). */
  bestTransferTarget(): NodeId | undefined {
    let best: NodeId | undefined
    let bestMatch = -1
    for (const v of this.voters()) {
      if (v === this.id) continue
      const m = this.progress.get(v)?.match ?? 0
      if (m > bestMatch) {
        best = v
        bestMatch = m
      }
    }
    return best
  }

  /** Advance logical time by one tick. */
  tick(): void {
    this.ticks++
    this.electionElapsed++
    if (this.readsSent.size) this.askAgain()
    // a transfer the leader gave up on (this node was removed, say) is not kept forever
    if (this.incoming && this.ticks - this.incoming.at > 4 * this.electionTicks) this.incoming = undefined
    if (this.role === 'leader') {
      this.heartbeatElapsed++
      if (this.transferee !== undefined && ++this.transferElapsed >= this.electionTicks) {
        this.transferee = undefined
        if (this.leases) {
          // the timeoutNow sent may still elect the target at any time: lead on, and this node
          // would hold its lease again while another leader may be elected (see leaderLease)
          this.becomeFollower(this.term, undefined)
          return
        }
      }
      for (const pr of this.progress.values()) if (pr.state === 'snapshot') pr.snapTicks++
      if (this.electionElapsed >= this.electionTicks) {
        this.electionElapsed = 0
        if (this.checkQuorum && !this.quorumActive()) {
          this.becomeFollower(this.term, undefined)
          return
        }
      }
      if (this.heartbeatElapsed >= this.heartbeatTicks) {
        this.heartbeatElapsed = 0
        this.newRound()
        this.broadcastHeartbeat(this.readSeq)
      }
      return
    }
    if (this.electionElapsed >= this.randomizedTimeout && this.canCampaign()) this.campaign(false)
  }

  /**
   * Whether this node lost log entries to corruption and has not caught up past them. It may have
   * acknowledged those entries, so voting for (or becoming) a leader without them could lose a
   * committed entry (Leader Completeness). A commit index learned from a leader at or beyond them
   * proves its log holds every entry it ever acknowledged again.
   */
  private recovering(): boolean {
    return this.commit < this.lostUpTo
  }

  /** See {@link CoreOptions.disk}. */
  private mayVote(): boolean {
    if (this.disk === undefined) return true
    const bound = diskOf(this.config, this.id)
    if (bound !== undefined) return bound === this.disk
    return this.isVoter() || this.voteUnlisted
  }

  private canCampaign(): boolean {
    if (!this.isVoter() || this.recovering() || !this.mayVote()) return false
    // Never campaign with committed entries not yet applied that may hold a config change:
    // harmless here because the config in use is always the latest in the log.
    return true
  }

  /**
   * Append a command (or a config / no-op entry) to the leader's log.
   * Returns where it landed, or why it was refused (the node then forwards or rejects).
   */
  propose(data: unknown, type: EntryType = 'cmd'): ProposeResult {
    if (this.role !== 'leader') return { ok: false, reason: 'not-leader', leader: this.leader }
    if (this.transferee !== undefined) return { ok: false, reason: 'transferring', leader: this.leader }
    const e: Entry = { index: this.lastIndex() + 1, term: this.term, type, data }
    this.append([e])
    this.appendsDirty = true
    return { ok: true, index: e.index, term: e.term }
  }

  /** Append many commands at once (one Ready, one write). */
  proposeBatch(datas: unknown[]): ProposeResult {
    if (this.role !== 'leader') return { ok: false, reason: 'not-leader', leader: this.leader }
    if (this.transferee !== undefined) return { ok: false, reason: 'transferring', leader: this.leader }
    const first = this.lastIndex() + 1
    const entries = datas.map((data, i): Entry => ({ index: first + i, term: this.term, type: 'cmd', data }))
    this.append(entries)
    this.appendsDirty = true
    return { ok: true, index: first, term: this.term }
  }

  /**
   * Propose a new configuration. One server at a time: the voter sets of the current and new
   * configuration may differ by at most one member; learners may change freely. Refused while
   * another change is uncommitted or before the leader committed an entry of its term.
   */
  proposeConfig(next: ClusterConfig): ProposeResult {
    if (this.role !== 'leader') return { ok: false, reason: 'not-leader', leader: this.leader }
    if (this.log.lastConfigIndex() > this.commit || !this.committedInTerm()) {
      return { ok: false, reason: 'config-pending', leader: this.leader }
    }
    const cur = new Set(this.voters())
    const nxt = new Set(Object.keys(next.voters))
    let diff = 0
    for (const v of cur) if (!nxt.has(v)) diff++
    for (const v of nxt) if (!cur.has(v)) diff++
    for (const l of Object.keys(next.learners)) if (nxt.has(l)) return { ok: false, reason: 'config-invalid', leader: this.id }
    if (diff > 1 || nxt.size === 0) return { ok: false, reason: 'config-invalid', leader: this.id }
    return this.propose(cloneConfig(next), 'conf')
  }

  /** Ask for a linearizable read. The answer comes in a later Ready's `reads`. */
  readIndex(id: number): void {
    if (this.role === 'leader') {
      this.leaderRead({ ids: [id], from: undefined, index: 0, seq: 0 })
    } else if (this.leader !== undefined && this.leader !== this.id) {
      this.followerReadIds.push(id)
    } else {
      this.readyReads.push({ id, index: 0 })
    }
  }

  /** Hand leadership to `to` (a voter). Proposals are refused until it is done or times out. */
  transferLeadership(to: NodeId): boolean {
    if (this.role !== 'leader' || to === this.id || !this.isVoter(to)) return false
    this.transferee = to
    this.transferElapsed = 0
    const pr = this.progress.get(to)
    if (pr && pr.match === this.lastIndex()) this.send({ t: 'timeoutNow', from: this.id, to, term: this.term })
    else this.appendsDirty = true
    return true
  }

  /**
   * Install a snapshot the node took of its own state machine at `snapshot.meta.index`
   * (<= applied), and drop the log entries it covers. The node has already persisted it.
   */
  compact(snapshot: Snapshot): void {
    const idx = snapshot.meta.index
    if (idx <= this.log.snapIndex || idx > this.applied || idx > this.stableIndex) return
    this.log.compact(snapshot)
  }

  /** Feed one message from a peer. Malformed input must be filtered by the caller. */
  step(m: RaftMessage): void {
    if (m.to !== this.id || forAnotherDisk(m, this.disk)) return
    // Term handling (paper §5.1, with the pre-vote and leader-stickiness rules of the thesis §9.6).
    if (m.term > this.term) {
      if (m.t === 'vote') {
        if (this.leaderFresh() && !m.transfer) return // a leader is alive: ignore the disruptive candidate
        if (m.pre) {
          this.handleVote(m)
          return
        }
      }
      if (m.t === 'voteResp' && m.pre && m.granted) {
        // the term we asked for: no bump
      } else if (m.t === 'readIndex' || m.t === 'readIndexResp') {
        // not term-bearing for safety; fall through to handlers
      } else {
        const lead = m.t === 'app' || m.t === 'hb' || m.t === 'snap' ? m.from : undefined
        this.becomeFollower(m.term, lead)
      }
    } else if (m.term < this.term) {
      if (m.t === 'app' || m.t === 'hb' || m.t === 'snap') {
        // tell the stale leader about the newer term so it steps down
        this.send({ t: 'appResp', from: this.id, to: m.from, term: this.term, success: false, index: 0, hint: 0 })
      } else if (m.t === 'vote') {
        this.send({ t: 'voteResp', from: this.id, to: m.from, term: this.term, pre: m.pre, granted: false })
      }
      if (m.t !== 'readIndex' && m.t !== 'readIndexResp') return
    }

    switch (m.t) {
      case 'vote':
        return this.handleVote(m)
      case 'voteResp':
        return this.handleVoteResp(m)
      case 'app':
        return this.handleAppend(m)
      case 'appResp':
        return this.handleAppendResp(m)
      case 'hb':
        return this.handleHeartbeat(m)
      case 'hbResp':
        return this.handleHeartbeatResp(m)
      case 'snap':
        return this.handleSnapshot(m)
      case 'snapResp':
        return this.handleSnapshotResp(m)
      case 'timeoutNow':
        if (this.isVoter() && this.role !== 'leader' && !this.recovering() && this.mayVote()) this.campaign(true)
        return
      case 'readIndex':
        return this.handleReadIndex(m)
      case 'readIndexResp':
        return this.handleReadIndexResp(m)
    }
  }

  // ------------------------------------------------------------------ roles

  private resetRandomizedTimeout(): void {
    this.randomizedTimeout = this.electionTicks + Math.floor(this.random() * this.electionTicks)
  }

  private soft(): SoftState {
    return { role: this.role, term: this.term, leader: this.leader }
  }

  private becomeFollower(term: number, leader: NodeId | undefined): void {
    const wasLeader = this.role === 'leader'
    if (term !== this.term) {
      this.term = term
      this.vote = undefined
      this.hardDirty = true
      this.incoming = undefined
    }
    this.role = 'follower'
    this.leader = leader
    this.electionElapsed = 0
    this.votes.clear()
    this.transferee = undefined
    this.resetRandomizedTimeout()
    if (wasLeader) {
      this.progress.clear()
      for (const r of [...this.pendingReads, ...this.readsAwaitingCommit]) this.failRead(r)
      this.pendingReads = []
      this.readsAwaitingCommit = []
    }
  }

  private campaign(transfer: boolean): void {
    if (this.preVote && !transfer) {
      this.role = 'precandidate'
      this.leader = undefined
      this.votes.clear()
      this.electionElapsed = 0
      this.resetRandomizedTimeout()
      this.poll(this.id, true)
      if (this.role !== 'precandidate') return
      for (const v of this.voters()) {
        if (v === this.id) continue
        this.send({ t: 'vote', from: this.id, to: v, term: this.term + 1, pre: true, lastIndex: this.lastIndex(), lastTerm: this.log.lastTerm(), transfer: false })
      }
      return
    }
    this.becomeCandidate(transfer)
  }

  private becomeCandidate(transfer: boolean): void {
    this.role = 'candidate'
    this.term++
    this.incoming = undefined
    this.vote = this.id
    this.hardDirty = true
    this.leader = undefined
    this.votes.clear()
    this.electionElapsed = 0
    this.resetRandomizedTimeout()
    this.poll(this.id, true)
    if (this.role !== 'candidate') return
    for (const v of this.voters()) {
      if (v === this.id) continue
      this.send({ t: 'vote', from: this.id, to: v, term: this.term, pre: false, lastIndex: this.lastIndex(), lastTerm: this.log.lastTerm(), transfer })
    }
  }

  /** Record a vote and act on the tally. */
  private poll(from: NodeId, granted: boolean): void {
    if (!this.isVoter(from)) return
    this.votes.set(from, granted)
    let yes = 0
    let no = 0
    for (const [id, g] of this.votes) {
      if (!this.isVoter(id)) continue
      if (g) yes++
      else no++
    }
    const q = this.quorum()
    if (yes >= q) {
      if (this.role === 'precandidate') this.becomeCandidate(false)
      else if (this.role === 'candidate') this.becomeLeader()
    } else if (no >= q) {
      this.becomeFollower(this.term, undefined)
    }
  }

  private becomeLeader(): void {
    this.role = 'leader'
    this.leader = this.id
    this.electionElapsed = 0
    this.heartbeatElapsed = 0
    this.transferee = undefined
    this.progress.clear()
    this.urgent.clear()
    for (const p of this.peers()) this.progress.set(p, newProgress(this.lastIndex() + 1))
    // A no-op of the new term lets entries of earlier terms commit (paper §5.4.2).
    const e: Entry = { index: this.lastIndex() + 1, term: this.term, type: 'noop', data: null }
    this.append([e])
    this.appendsDirty = true
  }

  private syncProgress(): void {
    // Membership may have changed: add/remove followers to replicate to.
    const peers = new Set(this.peers())
    for (const id of [...this.progress.keys()]) if (!peers.has(id)) this.progress.delete(id)
    for (const p of peers) if (!this.progress.has(p)) this.progress.set(p, newProgress(this.lastIndex() + 1))
  }

  private quorumActive(): boolean {
    let active = 0
    for (const v of this.voters()) {
      if (v === this.id) active++
      else if (this.progress.get(v)?.active) active++
    }
    for (const pr of this.progress.values()) pr.active = false
    return active >= this.quorum()
  }

  private committedInTerm(): boolean {
    return this.termAt(this.commit) === this.term
  }

  // ------------------------------------------------------------------ votes

  private handleVote(m: MsgVote): void {
    let granted = false
    if (this.recovering() || !this.mayVote()) {
      // refuse, see recovering() and mayVote()
    } else if (m.pre) {
      // Would we vote for it in term m.term? (no state change)
      granted = m.term > this.term && this.upToDate(m.lastIndex, m.lastTerm)
    } else {
      // (a request of this node's own term skipped the stickiness check in step(): where the
      // leader's lease is relied on, a new vote waits for it too; found by review, session 24)
      const canVote = this.vote === m.from || (this.vote === undefined && this.leader === undefined && !(this.leases && !m.transfer && this.leaderFresh()))
      granted = canVote && this.upToDate(m.lastIndex, m.lastTerm)
      if (granted) {
        this.vote = m.from
        this.hardDirty = true
        this.electionElapsed = 0
      }
    }
    // A pre-vote answer carries the term that was asked for, so a grant does not look stale.
    this.send({ t: 'voteResp', from: this.id, to: m.from, term: m.pre && granted ? m.term : this.term, pre: m.pre, granted })
  }

  /**
   * Leader stickiness (thesis §9.6): whether a leader may be alive, so that this node refuses
   * a candidate (unless it runs for a transfer). Where the leader's lease is relied on, counted
   * from when this node last heard a leader, whatever happened to its term since, and from its
   * start (a node that just started does not know whether a leader is alive): see leaderLease.
   */
  private leaderFresh(): boolean {
    if (this.leases && this.ticks - this.heardLeaderTick < this.electionTicks) return true
    return this.checkQuorum && this.leader !== undefined && this.electionElapsed < this.electionTicks
  }

  private handleVoteResp(m: MsgVoteResp): void {
    if (m.pre && this.role === 'precandidate') this.poll(m.from, m.granted)
    else if (!m.pre && this.role === 'candidate') this.poll(m.from, m.granted)
  }

  // ------------------------------------------------------------------ replication (follower)

  private handleAppend(m: MsgAppend): void {
    this.role = 'follower'
    this.leader = m.from
    this.electionElapsed = 0
    this.heardLeaderTick = this.ticks
    if (m.prevIndex < this.commit) {
      // Everything up to our commit matches the leader's log already; skip that part.
      const skip = this.commit - m.prevIndex
      if (skip >= m.entries.length) {
        // Our committed prefix is in the leader's log (leader completeness): we match up to it.
        this.send({ t: 'appResp', from: this.id, to: m.from, term: this.term, success: true, index: this.commit, hint: 0 })
        return
      }
      m = { ...m, prevIndex: this.commit, prevTerm: m.entries[skip - 1]!.term, entries: m.entries.slice(skip) }
    }
    const t = this.termAt(m.prevIndex)
    if (t === undefined || t !== m.prevTerm) {
      let hint = Math.min(m.prevIndex - 1, this.lastIndex())
      // Skip back over entries of terms the leader cannot have at those indices.
      while (hint > this.commit && (this.termAt(hint) ?? 0) > m.prevTerm) hint--
      const resp: MsgAppendResp = { t: 'appResp', from: this.id, to: m.from, term: this.term, success: false, index: m.prevIndex, hint }
      if (this.recovering()) resp.lost = true
      this.send(resp)
      return
    }
    let i = 0
    for (; i < m.entries.length; i++) {
      const e = m.entries[i]!
      const have = this.termAt(e.index)
      if (have === undefined) break
      if (have !== e.term) {
        this.truncateFrom(e.index)
        break
      }
    }
    if (i < m.entries.length) this.append(m.entries.slice(i))
    const lastNew = m.prevIndex + m.entries.length
    const c = Math.min(m.commit, lastNew)
    if (c > this.commit) this.commit = c
    this.send({ t: 'appResp', from: this.id, to: m.from, term: this.term, success: true, index: lastNew, hint: 0 })
  }

  private handleHeartbeat(m: MsgHeartbeat): void {
    this.role = 'follower'
    this.leader = m.from
    this.electionElapsed = 0
    this.heardLeaderTick = this.ticks
    const c = Math.min(m.commit, this.lastIndex())
    if (c > this.commit) this.commit = c
    if (this.recovering() && m.commit > this.lastIndex()) {
      // The leader believes we hold entries we lost (it never sends a commit beyond our match):
      // tell it where our log really ends, or it would never send them again.
      this.send({ t: 'appResp', from: this.id, to: m.from, term: this.term, success: false, index: m.commit, hint: this.lastIndex(), lost: true })
    }
    this.send({ t: 'hbResp', from: this.id, to: m.from, term: this.term, seq: m.seq, ...(this.answerTag !== undefined ? { p: this.answerTag } : {}) })
  }

  /**
   * A chunk of a snapshot from the leader. Chunks are taken in order only: a duplicate is
   * acknowledged again, a gap or a chunk that fails its checksum is asked for again from what
   * this node holds. The last chunk installs the snapshot.
   */
  private handleSnapshot(m: MsgSnapshot): void {
    this.role = 'follower'
    this.leader = m.from
    this.electionElapsed = 0
    this.heardLeaderTick = this.ticks
    const meta = m.meta
    if (meta.index <= this.commit) {
      this.incoming = undefined
      this.send({ t: 'appResp', from: this.id, to: m.from, term: this.term, success: true, index: this.commit, hint: 0 })
      return
    }
    if (this.termAt(meta.index) === meta.term) {
      // We already have that entry: just commit up to it (paper §7).
      this.incoming = undefined
      this.commit = meta.index
      this.send({ t: 'appResp', from: this.id, to: m.from, term: this.term, success: true, index: meta.index, hint: 0 })
      return
    }
    let inc = this.incoming
    if (!inc || inc.from !== m.from || inc.term !== m.term || inc.index !== meta.index || inc.snapTerm !== meta.term || inc.total !== m.total) {
      // another transfer (or this node lost its partial copy): start this one from its beginning
      if (m.offset !== 0) return this.snapshotResp(m, 0, true)
      if (m.total > MAX_SNAPSHOT_BYTES) return // (no buffer can hold it: a leader that sends one is broken)
      inc = this.incoming = { from: m.from, term: m.term, index: meta.index, snapTerm: meta.term, total: m.total, data: undefined, received: 0, at: this.ticks }
    }
    if (m.offset < inc.received) return this.snapshotResp(m, inc.received, false)
    if (m.offset > inc.received || m.data.length > inc.total - inc.received || crc32c(m.data) !== m.crc) return this.snapshotResp(m, inc.received, true)
    // (copied even when it is the whole snapshot: the chunk is a view into the frame it came in)
    inc.data ??= new Uint8Array(inc.total)
    inc.data.set(m.data, inc.received)
    inc.received += m.data.length
    inc.at = this.ticks
    if (inc.received < inc.total) return this.snapshotResp(m, inc.received, false)
    this.incoming = undefined
    this.installSnapshot({ meta, data: inc.data }, m.from)
  }

  private snapshotResp(m: MsgSnapshot, offset: number, retry: boolean): void {
    const r: MsgSnapshotResp = { t: 'snapResp', from: this.id, to: m.from, term: this.term, index: m.meta.index, offset }
    if (retry) r.retry = true
    this.send(r)
  }

  /** Replace the log (and, once the node has persisted it, the state machine) by `snapshot`. */
  private installSnapshot(snapshot: Snapshot, from: NodeId): void {
    const meta = snapshot.meta
    this.log.install(snapshot)
    this.pendingTruncate = this.pendingTruncate === undefined ? meta.index + 1 : Math.min(this.pendingTruncate, meta.index + 1)
    this.pendingSnapshot = snapshot
    this.commit = meta.index
    this.applied = meta.index
    this.stableIndex = meta.index
    this.config = cloneConfig(meta.config)
    this.send({ t: 'appResp', from: this.id, to: from, term: this.term, success: true, index: meta.index, hint: 0 })
  }

  // ------------------------------------------------------------------ replication (leader)

  private handleAppendResp(m: MsgAppendResp): void {
    if (this.role !== 'leader') return
    const pr = this.progress.get(m.from)
    if (!pr) return
    pr.active = true
    if (!m.success) {
      if (m.index === 0) return // stale-term notice, handled by the term rules
      if (m.lost) {
        // The follower lost entries to corruption: what we knew it matched is gone. (Entries
        // committed with its help stay committed; it will not vote until it holds them again.)
        if (m.hint < pr.match) pr.match = m.hint
        toProbe(pr, Math.max(1, m.hint + 1))
        this.sendAppend(m.from, pr)
        return
      }
      if (pr.state === 'replicate' && m.index <= pr.match) return // stale rejection
      if (pr.state === 'probe' && m.index !== pr.next - 1) return // answer to an older probe
      toProbe(pr, Math.max(Math.min(m.hint + 1, pr.next - 1), pr.match + 1, 1))
      this.sendAppend(m.from, pr)
      return
    }
    if (m.index > pr.match) {
      acknowledge(pr, m.index)
      pr.paused = false
      this.maybeCommit()
      if (this.transferee === m.from && pr.match === this.lastIndex()) {
        this.send({ t: 'timeoutNow', from: this.id, to: m.from, term: this.term })
      }
    } else if (pr.state === 'probe') {
      pr.paused = false
    }
    this.appendsDirty = true
  }

  private handleHeartbeatResp(m: MsgHeartbeatResp): void {
    if (this.role !== 'leader') return
    const pr = this.progress.get(m.from)
    if (!pr) return
    pr.active = true
    if (m.seq > pr.ackSeq) {
      pr.ackSeq = m.seq
      pr.ackP = m.p
      // (when full, the newest waits: the oldest are the next a quorum round confirms)
      if (pr.answers.length < MAX_UNCONFIRMED_ANSWERS) pr.answers.push({ seq: m.seq, p: m.p, at: this.now() })
    }
    if (pr.state === 'probe') pr.paused = false
    if (pr.state === 'replicate') {
      // Appends may have been lost (a partition, a dropped frame): if the follower made no
      // progress over several heartbeats while behind, start over from what it has.
      if (pr.match < this.lastIndex() && pr.match === pr.matchAtHb) {
        if (++pr.stalls >= 3) {
          toProbe(pr, pr.match + 1)
          pr.stalls = 0
        }
      } else pr.stalls = 0
      pr.matchAtHb = pr.match
    }
    if (pr.state === 'snapshot' && pr.snapTicks > this.electionTicks) {
      // No progress for an election timeout: chunks were lost, the connection dropped, or the
      // follower restarted. Resume from what it acknowledged (it asks for the start if need be).
      pr.snapTicks = 0
      pr.snapNext = pr.snapAcked
      pr.snapRewound = -1
      this.sendSnapshotChunks(m.from, pr)
    }
    // A follower still behind may have lost appends: an append (empty if need be) finds out.
    if (pr.match < this.lastIndex()) this.sendAppend(m.from, pr, true)
    this.releaseReads()
  }

  /** Send what `pr` is missing, within flow control. */
  private sendAppend(to: NodeId, pr: Progress, sendIfEmpty = false): void {
    if (pr.state === 'snapshot') return
    if (pr.state === 'probe' && pr.paused) return
    if (pr.next <= this.log.snapIndex) {
      if (!this.log.snapshot) return
      toSnapshot(pr, this.log.snapshot)
      this.sendSnapshotChunks(to, pr)
      return
    }
    const last = this.lastIndex()
    for (;;) {
      const full =
        pr.state === 'replicate' &&
        (pr.inflight.length >= this.maxInflight || pr.next - 1 - pr.match >= this.maxInflightEntries || pr.bytesInFlight >= this.maxInflightBytes)
      // Full, an append is still sent when asked (a heartbeat's answer from a follower behind),
      // but empty: if what is in flight was lost, the follower's refusal says so at once.
      if (full && !sendIfEmpty) return
      const prevIndex = pr.next - 1
      const prevTerm = this.termAt(prevIndex)
      if (prevTerm === undefined) return
      const [entries, bytes] = !full && pr.next <= last ? this.withinBytes(this.log.from(pr.next, this.maxAppendEntries, this.appendBudget)) : [[], 0]
      if (entries.length === 0 && pr.state === 'replicate' && !sendIfEmpty) return
      this.send({ t: 'app', from: this.id, to, term: this.term, prevIndex, prevTerm, entries, commit: this.commit })
      pr.sentCommit = Math.max(pr.sentCommit, Math.min(this.commit, prevIndex + entries.length))
      if (pr.state === 'probe') {
        pr.paused = true
        return
      }
      if (entries.length === 0) return
      pr.next += entries.length
      sent(pr, pr.next - 1, bytes)
      if (pr.next > last) return
    }
  }

  /**
   * The bytes of frozen entries the log decodes for one append at most: `maxAppendBytes` where
   * entries are sized, since `withinBytes` would drop the rest (the log's sizes are its codec's
   * encodings, which `entryBytes` counts: both are `entryBytes()` in a node); nothing without sizes,
   * where `maxAppendBytes` bounds nothing.
   */
  private get appendBudget(): number {
    return this.entryBytes ? this.maxAppendBytes : Infinity
  }

  /** The first of `entries` that fit in `maxAppendBytes` (one at least), and their bytes (0 without `entryBytes`). */
  private withinBytes(entries: Entry[]): [Entry[], number] {
    const size = this.entryBytes
    if (!size) return [entries, 0]
    let bytes = 0
    for (let i = 0; i < entries.length; i++) {
      const b = size(entries[i]!)
      if (bytes + b > this.maxAppendBytes && i > 0) return [entries.slice(0, i), bytes]
      bytes += b
    }
    return [entries, bytes]
  }

  /** Send chunks of the snapshot `pr` is receiving, up to the window beyond what it acknowledged. */
  private sendSnapshotChunks(to: NodeId, pr: Progress): void {
    const snap = pr.snap
    if (!snap) return
    const total = snap.data.length
    const end = Math.min(total, pr.snapAcked + this.snapshotWindow * this.snapshotChunkBytes)
    let sent = false
    while (pr.snapNext < end || (total === 0 && !sent)) {
      const data = snap.data.subarray(pr.snapNext, Math.min(total, pr.snapNext + this.snapshotChunkBytes))
      this.send({ t: 'snap', from: this.id, to, term: this.term, meta: snap.meta, total, offset: pr.snapNext, data, crc: crc32c(data) })
      pr.snapNext += data.length
      sent = true
    }
  }

  private handleSnapshotResp(m: MsgSnapshotResp): void {
    if (this.role !== 'leader') return
    const pr = this.progress.get(m.from)
    if (!pr) return
    pr.active = true
    if (pr.state !== 'snapshot' || !pr.snap || m.index !== pr.snap.meta.index || m.offset > pr.snap.data.length) return
    if (m.retry) {
      // The follower holds `offset` bytes and dropped what came after (a lost, corrupt or early
      // chunk): resend from there, once for each gap (the chunks behind it ask for it too).
      if (m.offset === pr.snapRewound) return
      pr.snapRewound = m.offset
      pr.snapAcked = m.offset
      pr.snapNext = m.offset
      pr.snapTicks = 0
    } else if (m.offset > pr.snapAcked) {
      pr.snapAcked = m.offset
      pr.snapTicks = 0
      if (pr.snapNext < m.offset) pr.snapNext = m.offset
    }
    this.sendSnapshotChunks(m.from, pr)
  }

  /** Send appends, within flow control, to the voters among the followers, or to the learners. */
  private sendAppends(learners: boolean): void {
    for (const [id, pr] of this.progress) if (this.isVoter(id) !== learners) this.sendAppend(id, pr)
  }

  /** Send each voter (or each learner) a commit index it has not been told, up to what it holds. */
  private noticeCommit(learners: boolean): void {
    const lease = this.leaseValid()
    const quorumSentAt = this.quorumAckedAt()
    for (const [id, pr] of this.progress) if (this.isVoter(id) !== learners) this.noticeCommitTo(id, pr, lease, quorumSentAt)
  }

  /** Send `id` the commit index, up to what it holds, if it has not been told it yet. */
  private noticeCommitTo(id: NodeId, pr: Progress, lease = this.leaseValid(), quorumSentAt = this.quorumAckedAt()): void {
    const c = Math.min(pr.match, this.commit)
    if (c <= pr.sentCommit) return
    pr.sentCommit = c
    this.send({ t: 'hb', from: this.id, to: id, term: this.term, commit: c, seq: this.readSeq, ...this.renewalAck(pr, lease, quorumSentAt) })
  }

  /**
   * Leader: learner `peer` waits for `index` (a proposal it forwarded landed there, or a read it
   * asked for must apply that far): until it is told that `index` is committed, it gets entries
   * and commit indexes at once, not at the learners' pace. No effect on voters, or without a pace.
   */
  expedite(peer: NodeId, index: number): void {
    if (this.role !== 'leader' || this.learnerPaceMs === 0 || this.isVoter(peer) || !this.progress.has(peer)) return
    if ((this.urgent.get(peer) ?? 0) >= index || (this.progress.get(peer)?.sentCommit ?? 0) >= index) return
    this.urgent.set(peer, index)
    this.appendsDirty = true
  }

  /** Send the learners that wait on an index of their own what they miss (see {@link RaftCore.expedite}). */
  private sendUrgent(): void {
    for (const [id, index] of this.urgent) {
      const pr = this.progress.get(id)
      if (!pr || this.isVoter(id)) {
        this.urgent.delete(id)
        continue
      }
      this.sendAppend(id, pr)
      this.noticeCommitTo(id, pr)
      if (pr.sentCommit >= index) this.urgent.delete(id)
    }
  }

  private hasLearners(): boolean {
    for (const _ in this.config.learners) return true
    return false
  }

  /** Whether the learners' pace allows sending them what waits. */
  private learnersDue(): boolean {
    return this.learnerPaceMs === 0 || this.now() >= this.learnersSentAt + this.learnerPaceMs
  }

  /**
   * Leader: when (on `now`'s clock) learners have what waited for them, if something waits for
   * their pace; the node runs a Ready then (see {@link CoreOptions.learnerPaceMs}).
   */
  learnersDueAt(): number | undefined {
    return this.role === 'leader' && this.learnersDirty && this.learnerPaceMs > 0 ? this.learnersSentAt + this.learnerPaceMs : undefined
  }

  /** Start a heartbeat round: a new sequence number, stamped with the time it was sent at. */
  private newRound(): void {
    this.readSeq++
    const now = this.now()
    this.roundAt.set(this.readSeq, now)
    // (oldest first; a few are always kept, as with a clock of ticks)
    for (const [k, at] of this.roundAt) {
      if (this.roundAt.size <= 2 * this.electionTicks + 32) break
      if (this.roundAt.size <= MAX_ROUNDS_KEPT && now - at < ROUND_KEEP_LEASES * this.leaseMs) break
      this.roundAt.delete(k)
    }
  }

  /**
   * Leader lease: a quorum acknowledged a heartbeat round sent less than `leaseMs` ago, read on
   * the clock at the moment of the decision (never counted in ticks: a stalled leader wakes up
   * with few ticks elapsed but its lease over). Voters that acknowledged that round ignore
   * candidates for an election timeout after it, so no other leader can exist yet, as long as
   * `leaseMs` stays below the shortest election timeout on any voter's clock.
   */
  private leaseValid(): boolean {
    if (this.transferee !== undefined) return false
    const acks = this.voters().map((v) => (v === this.id ? this.readSeq : (this.progress.get(v)?.ackSeq ?? 0)))
    acks.sort((a, b) => b - a)
    const sentAt = this.roundAt.get(acks[this.quorum() - 1]!)
    return sentAt !== undefined && this.now() - sentAt < this.leaseMs
  }

  private broadcastHeartbeat(seq = this.readSeq): void {
    const lease = this.leaseValid()
    const quorumSentAt = this.quorumAckedAt()
    for (const [id, pr] of this.progress) {
      const commit = Math.min(pr.match, this.commit)
      pr.sentCommit = Math.max(pr.sentCommit, commit)
      this.send({ t: 'hb', from: this.id, to: id, term: this.term, commit, seq, ...this.renewalAck(pr, lease, quorumSentAt) })
    }
  }

  /**
   * What a heartbeat to `pr`'s node acknowledges of its answers, and whether that renews its
   * lease (`lease`: the node renews from when it sent that answer). Two acknowledgements renew:
   * - the latest answer, while this leader holds its lease (`leaseHeld`, the heartbeat's moment):
   *   no leader of a later term can have been elected before now, so before the answer was sent;
   * - an earlier answer, received before a heartbeat round that a quorum has since acknowledged
   *   was sent (`quorumSentAt`, see {@link RaftCore.quorumAckedAt}), however late the
   *   acknowledgements came (within the rounds kept: `ROUND_KEEP_LEASES`). A voter acknowledges a round only in this leader's term, so before
   *   any vote it gives in a later term; a leader of a later term needs a quorum of votes, one of
   *   them from a voter of that round; so it was elected after the round was sent, after the
   *   answer. The leader's own lease rests on the same round (`NodeLease.renew` from
   *   `quorumAckedAt`).
   * The second keeps renewing nodes while heartbeat rounds take longer than the leader's lease to
   * come back (until session 26 only the first renewed: with rounds coming back in more than the
   * 200-227 ms of the lease, over slow links or from event loops waiting for a core, no follower
   * was ever renewed; `test/lease-renewal-lag.test.ts`).
   * Otherwise the latest answer, not renewing (what the node makes of it, see NodeLease).
   */
  private renewalAck(pr: Progress, leaseHeld: boolean, quorumSentAt: number | undefined): Pick<MsgHeartbeat, 'lease' | 'ack' | 'ackP'> {
    if (quorumSentAt !== undefined) {
      // (strictly before: the round was sent after the answer had been received)
      while (pr.answers.length > 0 && pr.answers[0]!.at < quorumSentAt) pr.confirmed = pr.answers.shift()!
    }
    const latest = { ack: pr.ackSeq, ...(pr.ackP !== undefined ? { ackP: pr.ackP } : {}) }
    if (leaseHeld) return { lease: true, ...latest }
    const c = pr.confirmed
    if (c) return { lease: true, ack: c.seq, ...(c.p !== undefined ? { ackP: c.p } : {}) }
    return { lease: false, ...latest }
  }

  /** Whether this node is leader and holds its lease (see {@link RaftCore.leaseValid}). */
  leaseHeld(): boolean {
    return this.role === 'leader' && this.leaseValid()
  }

  /**
   * On the leader: when (on {@link CoreOptions.now}'s clock) it sent the latest heartbeat round a
   * quorum has acknowledged; undefined when not leader, transferring, or no round of this term
   * was acknowledged yet. In a single-voter cluster, now.
   */
  quorumAckedAt(): number | undefined {
    if (this.role !== 'leader' || this.transferee !== undefined || !this.isVoter()) return undefined
    if (this.voters().length === 1) return this.now()
    const acks = this.voters().map((v) => (v === this.id ? this.readSeq : (this.progress.get(v)?.ackSeq ?? 0)))
    acks.sort((a, b) => b - a)
    return this.roundAt.get(acks[this.quorum() - 1]!)
  }

  private maybeCommit(): void {
    const matches = this.voters().map((v) => (v === this.id ? this.stableIndex : (this.progress.get(v)?.match ?? 0)))
    if (matches.length === 0) return
    matches.sort((a, b) => b - a)
    const n = matches[this.quorum() - 1]!
    if (n > this.commit && this.termAt(n) === this.term) {
      this.commit = n
      this.appendsDirty = true // followers learn the new commit index with the next append
      if (this.readsAwaitingCommit.length) {
        const waiting = this.readsAwaitingCommit
        this.readsAwaitingCommit = []
        for (const r of waiting) this.leaderRead(r)
      }
      // A leader removed from the configuration steps down once the change is committed.
      if (!this.isVoter() && this.log.lastConfigIndex() <= this.commit) this.becomeFollower(this.term, undefined)
    }
  }

  // ------------------------------------------------------------------ reads

  private leaderRead(r: PendingRead): void {
    if (!this.committedInTerm()) {
      this.readsAwaitingCommit.push(r)
      return
    }
    // Everything this leader appended before the read, not only what it committed: a read barrier
    // then also covers a decision already in the log but not yet committed (a node declared
    // gone, say), so a node that reads before acting cannot miss it.
    r.index = this.lastIndex()
    if ((this.isVoter() && this.voters().length === 1) || (this.leaseRead && this.leaseValid())) {
      this.answerRead(r)
      return
    }
    r.seq = this.readSeq + 1
    this.pendingReads.push(r)
  }

  private answerRead(r: PendingRead): void {
    if (r.from === undefined) for (const id of r.ids) this.readyReads.push({ id, index: r.index })
    else {
      this.send({ t: 'readIndexResp', from: this.id, to: r.from, term: this.term, ids: r.ids, index: r.index })
      this.expedite(r.from, r.index)
    }
  }

  private failRead(r: PendingRead): void {
    if (r.from === undefined) for (const id of r.ids) this.readyReads.push({ id, index: 0 })
    else this.send({ t: 'readIndexResp', from: this.id, to: r.from, term: this.term, ids: r.ids, index: 0 })
  }

  private releaseReads(): void {
    if (!this.pendingReads.length) return
    const acks = this.voters().map((v) => (v === this.id ? this.readSeq : (this.progress.get(v)?.ackSeq ?? 0)))
    acks.sort((a, b) => b - a)
    const confirmed = acks[this.quorum() - 1]!
    let k = 0
    while (k < this.pendingReads.length && this.pendingReads[k]!.seq <= confirmed) this.answerRead(this.pendingReads[k++]!)
    if (k) this.pendingReads = this.pendingReads.slice(k)
  }

  private handleReadIndex(m: MsgReadIndex): void {
    if (this.role !== 'leader' || m.term > this.term) {
      this.send({ t: 'readIndexResp', from: this.id, to: m.from, term: this.term, ids: m.ids, index: 0 })
      return
    }
    this.leaderRead({ ids: m.ids, from: m.from, index: 0, seq: 0 })
  }

  private handleReadIndexResp(m: MsgReadIndexResp): void {
    // Only answers from the leader we asked, in the term we asked in (review F4).
    for (const id of m.ids) {
      const sent = this.readsSent.get(id)
      if (!sent || sent.leader !== m.from || sent.term !== m.term) continue
      this.readsSent.delete(id)
      this.readyReads.push({ id, index: m.index })
    }
  }

  /**
   * Ask again for the follower reads not answered: those sent to a node that no longer leads (in
   * our view), or in an earlier term, at once; the others after an election timeout. The request
   * or its answer may have been lost (a full send queue, a reconnect), and a leader that stepped
   * down answers in its new term, which the answer check refuses: without this, such a read waits
   * for its deadline (`requestTimeoutMs`), and so does whatever waits for it (a supervisor's start).
   * Asking again is safe: the index a leader confirms is its last index when it receives the
   * request, which the read's call precedes; only the first answer counts.
   */
  private askAgain(): void {
    if (this.role !== 'leader' && this.leader === undefined) return // once a leader is known
    for (const [id, s] of this.readsSent) {
      if (s.leader === this.leader && s.term === this.term && this.ticks - s.at < this.electionTicks) continue
      this.readsSent.delete(id)
      this.readIndex(id)
    }
  }

  /** Forget a read the node gave up on (timeout). */
  forgetRead(id: number): void {
    this.readsSent.delete(id)
  }

  // ------------------------------------------------------------------ output

  private send(m: RaftMessage): void {
    // (the data directory this configuration binds the receiver to: see forAnotherDisk)
    const dk = diskOf(this.config, m.to)
    if (dk !== undefined) m.dk = dk
    if (this.role === 'leader') this.msgsNow.push(m)
    else this.msgsAfter.push(m)
  }

  /** Whether `ready()` has anything for the node. */
  hasReady(): boolean {
    return (
      this.msgsNow.length > 0 ||
      this.msgsAfter.length > 0 ||
      this.appendsDirty ||
      (this.learnersDirty && this.role === 'leader' && this.learnersDue()) ||
      this.hardDirty ||
      this.pendingSnapshot !== undefined ||
      this.pendingTruncate !== undefined ||
      this.stableIndex < this.lastIndex() ||
      this.applied < this.commit ||
      this.readyReads.length > 0 ||
      this.followerReadIds.length > 0 ||
      (this.role === 'leader' && this.pendingReads.some((r) => r.seq > this.readSeq)) ||
      !sameSoft(this.lastSoft, this.soft())
    )
  }

  /** Collect the work for the node. Call `advance(ready)` once it is done, before the next `ready()`. */
  ready(): Ready {
    if (this.role === 'leader') {
      this.syncProgress()
      if (this.pendingReads.some((r) => r.seq > this.readSeq)) {
        this.newRound()
        this.broadcastHeartbeat(this.readSeq)
      }
      if (this.appendsDirty) {
        this.appendsDirty = false
        if (this.hasLearners()) this.learnersDirty = true
        this.sendAppends(false)
      }
      // Tell followers about a new commit index at once, not at the next heartbeat, so their
      // state machines (and local reads) lag by one round trip only.
      this.noticeCommit(false)
      // Learners get what waited for them at their pace (see CoreOptions.learnerPaceMs).
      if (this.learnersDirty && this.learnersDue()) {
        this.learnersDirty = false
        if (this.learnerPaceMs > 0) this.learnersSentAt = this.now()
        this.sendAppends(true)
        this.noticeCommit(true)
      }
      // ... except those waiting on an index of their own: they get it as voters do
      if (this.urgent.size) this.sendUrgent()
      // single-voter cluster: the leader's own persistence commits
    } else {
      this.appendsDirty = false
      if (this.followerReadIds.length) {
        if (this.leader !== undefined) {
          this.send({ t: 'readIndex', from: this.id, to: this.leader, term: this.term, ids: this.followerReadIds })
          for (const id of this.followerReadIds) this.readsSent.set(id, { leader: this.leader, term: this.term, at: this.ticks })
        } else {
          for (const id of this.followerReadIds) this.readyReads.push({ id, index: 0 })
        }
        this.followerReadIds = []
      }
    }
    const soft = this.soft()
    const softChanged = !sameSoft(this.lastSoft, soft)
    this.lastSoft = soft
    const committedUpTo = Math.min(this.commit, this.lastIndex(), this.applied + this.maxCommittedPerReady)
    // A leader may send appends before its own write only when its term and vote are already
    // durable; right after a single-voter election they are in this very write (review F1).
    const early = this.hardDirty ? [] : this.msgsNow
    const late = this.hardDirty ? [...this.msgsNow, ...this.msgsAfter] : this.msgsAfter
    const rd: Ready = {
      messagesNow: early,
      snapshot: this.pendingSnapshot,
      truncateFrom: this.pendingTruncate,
      entries: this.log.between(this.stableIndex),
      hardState: this.hardDirty ? { term: this.term, vote: this.vote, commit: this.commit } : undefined,
      messages: late,
      committed: this.applied < committedUpTo ? this.log.between(this.applied, committedUpTo) : [],
      reads: this.readyReads,
      soft: softChanged ? soft : undefined,
    }
    this.msgsNow = []
    this.msgsAfter = []
    this.readyReads = []
    this.pendingSnapshot = undefined
    this.pendingTruncate = undefined
    this.hardDirty = false
    if (rd.committed.length) this.applied = rd.committed[rd.committed.length - 1]!.index
    return rd
  }

  /** The node carried out `rd`: its entries are durable. */
  advance(rd: Ready): void {
    if (rd.entries.length) {
      let stable = rd.entries[rd.entries.length - 1]!.index
      // A truncation (or a snapshot) after ready() may have replaced part of what was written.
      if (this.pendingTruncate !== undefined) stable = Math.min(stable, this.pendingTruncate - 1)
      stable = Math.min(stable, this.lastIndex())
      if (stable > this.stableIndex) this.stableIndex = stable
      if (this.role === 'leader') this.maybeCommit()
    }
    // what is applied and durable is needed again only by followers that lag: as bytes
    this.log.freezeUpTo(Math.min(this.applied, this.stableIndex))
  }
}

function sameSoft(a: SoftState, b: SoftState): boolean {
  return a.role === b.role && a.term === b.term && a.leader === b.leader
}
