/**
 * A Raft node: the pure {@link RaftCore} driven by a clock, a {@link RaftStorage}, a
 * {@link Transport} and the application's {@link StateMachine}.
 *
 * The loop takes a `Ready` from the core and carries it out in the order the core requires:
 * leader appends out, then one synced write (snapshot, truncation, entries, term/vote), then the
 * acknowledgements, then apply. Proposals that arrive while a write is in flight wait in the core
 * and share the next write and the next append message (group commit, pipelining).
 * @module
 */
import { EventEmitter } from 'node:events'
import { randomInt } from 'node:crypto'
import { RaftCore, forAnotherDisk, type CoreOptions, type CoreStatus, type Ready, type Role } from './core.js'
import {
  ConfigChangeError,
  InvalidArgumentError,
  NotLeaderError,
  ProposalDroppedError,
  ShuttingDownError,
  StorageError,
  SwormError,
  TimeoutError,
} from '../errors.js'
import type { ClusterConfig, Clock, Entry, Logger, NodeId, PersistedState, RaftStorage, Snapshot, Transport, RaftMessage } from './types.js'
import { diskOf, MAX_ENTRY_BYTES, MAX_REMOVED_IDS, silentLogger, systemClock } from './types.js'
import { decodeEntries, entryBytes, entryFromBytes, proposalCopy } from './entry-codec.js'
import { validateRaftMessage } from './validate.js'
import { Forwarder, type FwdMsg, type FwdRespMsg } from './forwarding.js'
import { NodeLease } from './node-lease.js'
import { droppedError, pending, rejectOnce, type Pending } from './pending.js'
import { ReadTracker } from './reads.js'
import { retry, sleep } from '../util/retry.js'
import { RateLimitedLog } from '../observability/rate-limited-log.js'

/** The encoding of commands on the wire and on disk (see {@link RaftNode.propose}). */

/**
 * The replicated state machine. `apply` must be deterministic: the same commands in the same
 * order give the same results and state on every node. Results must be msgpackr-encodable
 * (they travel back to the node that proposed the command).
 */
export interface StateMachine<C = unknown, R = unknown> {
  /**
   * Apply one committed command. `index` is its log index, `term` the term of the leader that
   * appended it. A thrown error is the result (deterministic).
   */
  apply(command: C, index: number, term: number): R
  /** Encode the whole state. */
  snapshot(): Uint8Array
  /** Replace the whole state with a decoded snapshot. */
  restore(data: Uint8Array): void
  /**
   * Optional: encode the state as it is now in steps of a few milliseconds each, so that a large
   * state never stalls the event loop. The node applies commands between steps: they must not
   * change what the snapshot holds.
   */
  snapshotSteps?(): StepTask<Uint8Array>
  /**
   * Optional: decode a snapshot in steps; the state changes at the last step only. The node
   * applies nothing until then.
   */
  restoreSteps?(data: Uint8Array): StepTask<true>
  /**
   * Optional: whether applying `command` may take long (it changes many entries of the state at
   * once). Before applying a batch that holds one, the node sends what it has queued (the commit
   * notices), so followers apply alongside it instead of after it.
   */
  slow?(command: C): boolean
}

/** Work done a step at a time: `step()` returns the result once the last step is done. */
export interface StepTask<T> {
  step(): T | undefined
  /** Give up on the task (no more steps will come): let go of what it holds. */
  abandon?(): void
}

/** Options of {@link RaftNode.start}. */
export interface RaftNodeOptions<C, R> {
  id: NodeId
  storage: RaftStorage
  transport: Transport
  stateMachine: StateMachine<C, R>
  /** Initial configuration when the storage is empty (a new cluster). Omit to join an existing one. */
  bootstrap?: ClusterConfig
  /**
   * Called instead of using {@link RaftNodeOptions.bootstrap} when the storage is empty: decides
   * the first configuration (undefined: start empty and wait for a leader's log), or rejects to
   * refuse the start (Sworm probes its peers here; see `cluster/identity.ts`).
   */
  resolveBootstrap?: () => Promise<ClusterConfig | undefined>
  /**
   * The identity of this node's data directory (see `RaftStorage.identity`). With it, the node
   * votes only while the configuration it holds lists it with this very identity (a configuration
   * that lists another one means this node lost its data); and while the configuration does not
   * list it at all (a node that asked to join), only if {@link RaftNodeOptions.voteUnlisted}.
   */
  disk?: string
  /** Whether a node with a `disk` votes before its configuration lists it. Default true. */
  voteUnlisted?: boolean | (() => boolean)
  /**
   * How long a lease lasts after its renewal, for {@link RaftNode.leaseLapses} (a renewal this late
   * or later counts as a new lease). Without it only the first renewal counts.
   */
  leaseTimeoutMs?: number
  /** Extra addresses to reach before a configuration is known (for example the node to join through). */
  seeds?: Record<NodeId, string>
  clock?: Clock
  logger?: Logger
  random?: () => number
  /** Tick length. Default 50 ms. */
  tickMs?: number
  /** Election timeout in ticks, randomized in [n, 2n). Default 6 (300–600 ms with 50 ms ticks). */
  electionTicks?: number
  /** Heartbeat interval in ticks. Default 1. */
  heartbeatTicks?: number
  /** Default true. */
  preVote?: boolean
  /** Default true. */
  checkQuorum?: boolean
  /**
   * Serve linearizable reads from the leader lease (no quorum round). Default false. Ticks then
   * catch up with the clock after a pause, and the lease is a tick shorter (`electionTicks - 2`
   * ticks, over `1 + clockDrift`): `electionTicks` must be 3 at least.
   */
  leaseRead?: boolean
  /**
   * Something relies on the leader's lease ({@link RaftNode.holdsLeaderLease}) besides reads, as
   * Sworm's node leases and failure detector do: no leader is then elected while an earlier one
   * may still hold its lease (see `CoreOptions.leaderLease`). Always on with `leaseRead`.
   */
  leaderLease?: boolean
  /**
   * The most two nodes' clocks may run apart, as a fraction of the time elapsed (0.1: one clock
   * advances at most 10% more than another over any interval). The leader holds its lease only
   * while a quorum acknowledged a heartbeat sent less than `(electionTicks - 1) * tickMs / (1 +
   * clockDrift)` ago by its clock (and renews a follower's from its latest answer then, or from an
   * earlier one a later quorum round confirmed: `RaftCore.renewalAck`). Default 0.1.
   */
  clockDrift?: number
  /**
   * Take a snapshot after this many applied entries. Default 10,000. A large state waits for a
   * longer log (one entry per 32 bytes of the last snapshot), up to `maxLogEntries`.
   */
  snapshotEvery?: number
  /**
   * The most entries the log holds after its snapshot before the node takes a new one, whatever
   * the state's size: a restart replays at most this many. Default 300,000 (applied entries are
   * kept as bytes, see `log.ts`: about 150 bytes each outside the heap, not four or five objects).
   */
  maxLogEntries?: number
  /**
   * Bytes per chunk of a snapshot sent to a follower, and chunks in flight per follower. A
   * snapshot of any size travels in chunks, between heartbeats and appends. Default 1 MiB and 4.
   */
  snapshotChunkBytes?: number
  snapshotWindow?: number
  /**
   * Leader: learners get appends and commit notices at most once per this many ms, each with
   * what came meanwhile; voters, and a learner waiting on a write it forwarded or a read it asked
   * for, get them at once. Default 0 (learners as voters).
   */
  learnerPaceMs?: number
  /** Log entries in flight to one follower at most (sent, not acknowledged yet; see the core option of that name). Default 512. */
  maxInflightEntries?: number
  /**
   * How long a proposal or read may take before it rejects with TimeoutError. Default 5,000 ms.
   * Give every node of a cluster the same value: a leader recognizes a proposal forwarded to it
   * again for twice its own value (see raft/forwarding.ts).
   */
  requestTimeoutMs?: number
  /** Proposals waiting at most (back-pressure); more reject at once. Default 100,000. */
  maxPending?: number
  /**
   * The largest command a proposal may carry, encoded: a larger one is refused with
   * {@link InvalidArgumentError} and nothing is appended (so is one costlier to decode than a
   * follower lets an entry be: 16 times its size plus 64 KiB). An entry travels to each follower
   * in an append of its own at least, so it must fit the transport's largest frame with room for
   * the append around it: a leader that appended one that does not fit could never send it, and
   * every later entry would wait behind it. Default 63 MiB (`MAX_ENTRY_BYTES` in `raft/types.ts`);
   * smaller on a transport with smaller frames.
   */
  maxEntryBytes?: number
  /**
   * Called with the time (ms) from `propose` to applied on this node, for each proposal of this
   * node that takes effect. Must be cheap (it runs on the apply path).
   */
  observeCommitMs?: (ms: number) => void
  /**
   * After a failed write (full disk, fsync error) the node stops serving and retries its storage
   * (`reopen`) after this long, doubling up to 30 s, until a synced write works; then it reloads
   * what is on disk and catches up from the leader. A failure within a minute of serving again
   * (a disk whose snapshots keep failing while small writes work) starts from twice the last
   * wait. Default 1,000 ms; 0 turns recovery off.
   */
  storageRetryMs?: number
}

/** Events of a {@link RaftNode}. */
export interface RaftNodeEvents {
  /** Role, term or leader changed. */
  role: [{ role: Role; term: number; leader: NodeId | undefined }]
  /** The node stopped serving because storage failed. */
  failed: [Error]
  /** Storage works again; the node reloaded it and serves again (catching up from the leader). */
  recovered: []
  /**
   * A peer's configuration binds this node's id to another data directory than this one: this
   * node lost its data (see `forAnotherDisk` in core.ts). Emitted once, with the peer's id, maybe
   * before anything listens (the node receives from its start): see {@link RaftNode.dataLostFrom}.
   * The node answers none of the Raft messages meant for that other data directory.
   */
  dataLost: [from: NodeId]
}

/**
 * How long a leader holds its lease after a heartbeat round a quorum acknowledged, by its clock:
 * the refusal of votes that round's voters keep up, `electionTicks - 1` ticks at least by their
 * clocks (a tick less with lease reads: see `RaftNodeOptions.leaseRead`), divided by `1 +
 * clockDrift` for clocks that run apart. Not positive when `electionTicks` is too small for it.
 */
export function leaseWindowMs(electionTicks: number, tickMs: number, clockDrift: number, leaseRead: boolean): number {
  return ((electionTicks - (leaseRead ? 2 : 1)) * tickMs) / (1 + clockDrift)
}

/** A running Raft node. Create with {@link RaftNode.start}. */
export class RaftNode<C = unknown, R = unknown> extends EventEmitter<RaftNodeEvents> {
  readonly id: NodeId
  private core: RaftCore
  private readonly coreOptions: CoreOptions
  private readonly storageRetryMs: number
  /** After a storage repair: the index the node must commit before the marker is cleared. */
  private recoveryUpTo: number | undefined
  private readonly storage: RaftStorage
  private readonly transport: Transport
  private readonly sm: StateMachine<C, R>
  private readonly clock: Clock
  private readonly log: Logger
  private readonly tickMs: number
  private readonly snapshotEvery: number
  private readonly maxLogEntries: number
  private readonly timeoutMs: number
  private readonly maxPending: number
  private readonly maxEntryBytes: number
  private readonly electionMs: number
  private readonly observeCommitMs: ((ms: number) => void) | undefined
  /** When (this clock) the latest snapshot was taken or installed, or the node started. */
  private snapshotAt: number

  private tickHandle: unknown
  /** Wakes the Ready loop when what waits for the learners' pace may go (see `learnerPaceMs`). */
  private paceHandle: unknown
  private running = false
  private scheduled = false
  private stopped = false
  private failure: Error | undefined
  /**
   * Storage failures in a row: each one that comes within {@link FAIL_STREAK_MS} of the node
   * serving again after the last doubles the wait before the next retry (see recoverStorage).
   */
  private failStreak = 0
  /** When the node last served again after a storage failure. */
  private recoveredAt: number | undefined
  private idleWaiters: Array<() => void> = []

  private applied = 0
  private appliedConfig: ClusterConfig
  private snapshotIndex = 0
  private lastSnapshotBytes = 0
  /** How long the latest snapshot this node took took, start to durable (ms). */
  private lastSnapshotMs = 0
  /** A snapshot is being taken (in the background, a step per turn). */
  private snapshotting = false
  /** A snapshot taken while the Ready loop ran: the log is compacted when it is done. */
  private compactPending: Snapshot | undefined
  /** The index of the latest snapshot from the leader being installed (saved, then restored). */
  private installingIndex = 0
  private seeds: Record<NodeId, string>

  private readonly pending = new Map<number, Pending<R>>()
  private readonly pendingOrder: Array<{ index: number; p: Pending<R> }> = []
  private readonly fwd: Forwarder<C, R>
  private readonly reads: ReadTracker
  private readonly lease: NodeLease
  private readSeq = 0
  /** The cluster id of the configuration this node holds (undefined until it has one). */
  private clusterId: string | undefined
  /** Clock time the last tick accounts for. */
  private lastTickAt = 0
  /** Time spent applying entries since the Ready loop last let the event loop run (ms). */
  private applyMsInSlice = 0
  private readonly leaseReads: boolean
  /** Bad messages from peers: at most one line per peer a second. */
  private readonly dropLog: RateLimitedLog
  /** The peer whose message emitted `dataLost`, if one did. */
  private dataLostPeer: NodeId | undefined
  private loggedLeader: NodeId | undefined
  private loggedTerm = 0
  private lastSoft: { role: Role; term: number; leader: NodeId | undefined } = { role: 'follower', term: 0, leader: undefined }

  private constructor(opts: RaftNodeOptions<C, R>, core: RaftCore, coreOptions: CoreOptions, appliedConfig: ClusterConfig, applied: number) {
    super()
    this.id = opts.id
    this.core = core
    this.coreOptions = coreOptions
    this.storageRetryMs = opts.storageRetryMs ?? 1_000
    this.storage = opts.storage
    this.transport = opts.transport
    this.sm = opts.stateMachine
    this.clock = opts.clock ?? systemClock
    this.log = opts.logger ?? silentLogger
    this.dropLog = new RateLimitedLog(this.log, () => this.clock.now())
    this.tickMs = opts.tickMs ?? 50
    this.snapshotEvery = opts.snapshotEvery ?? 10_000
    this.maxLogEntries = Math.max(this.snapshotEvery, opts.maxLogEntries ?? 300_000)
    this.timeoutMs = opts.requestTimeoutMs ?? 5_000
    this.maxPending = opts.maxPending ?? 100_000
    this.maxEntryBytes = opts.maxEntryBytes ?? MAX_ENTRY_BYTES
    if (!(this.maxEntryBytes > 0)) throw new RangeError(`maxEntryBytes must be a positive number of bytes (got ${String(opts.maxEntryBytes)})`)
    this.electionMs = this.tickMs * (opts.electionTicks ?? 6)
    this.leaseReads = opts.leaseRead ?? false
    this.lease = new NodeLease(this.clock, opts.leaseTimeoutMs, coreOptions.answerTag)
    this.reads = new ReadTracker(this.timeoutMs)
    this.observeCommitMs = opts.observeCommitMs
    this.snapshotAt = this.clock.now()
    this.appliedConfig = appliedConfig
    this.applied = applied
    this.snapshotIndex = applied
    this.seeds = { ...(opts.seeds ?? {}) }
    const rnd = opts.random ?? Math.random
    const boot = Math.floor(rnd() * 2 ** 48).toString(36)
    this.fwd = new Forwarder<C, R>({
      id: this.id,
      boot,
      clock: this.clock,
      timeoutMs: this.timeoutMs,
      tickMs: this.tickMs,
      resendMs: this.electionMs,
      reads: this.reads,
      core: () => this.core,
      applied: () => this.applied,
      trackLocal: (index, term, p) => this.trackLocal(index, term, p),
      kick: () => this.kick(),
      out: (to, m) => this.out(to, m),
      maxEntryBytes: this.maxEntryBytes,
      logDrop: (from, reason) => this.logDrop(from, reason),
      observeCommitMs: this.observeCommitMs,
    })
    this.readSeq = Math.floor(rnd() * 2 ** 40) // read ids never repeat across restarts
  }

  /**
   * Load the persisted state (or bootstrap a new cluster), restore the state machine from the
   * latest snapshot, and start ticking and serving.
   */
  static async start<C, R>(opts: RaftNodeOptions<C, R>): Promise<RaftNode<C, R>> {
    // (before anything touches the storage or the state machine)
    if (opts.leaseRead && !((opts.electionTicks ?? 6) >= 3)) throw new RangeError(`electionTicks must be 3 or more with leaseRead (got ${opts.electionTicks}): the lease lasts electionTicks - 2 ticks`)
    let persisted = await opts.storage.load()
    const fresh = persisted.entries.length === 0 && persisted.snapshot === undefined && persisted.hardState.term === 0
    const bootstrap = fresh ? (opts.resolveBootstrap ? await opts.resolveBootstrap() : opts.bootstrap) : undefined
    if (bootstrap) {
      if (!Object.prototype.hasOwnProperty.call(bootstrap.voters, opts.id)) {
        throw new TypeError(`bootstrap config must list this node (${opts.id}) as a voter`)
      }
      // Every bootstrapping node writes the same first entry, so their logs agree on it.
      const first: Entry = { index: 1, term: 1, type: 'conf', data: bootstrap }
      await opts.storage.write({ hardState: { term: 1, vote: undefined, commit: 1 }, entries: [first] })
      persisted = await opts.storage.load()
    }
    let appliedConfig: ClusterConfig = { voters: {}, learners: {} }
    let applied = 0
    if (persisted.snapshot) {
      await stepThrough(restoreTask(opts.stateMachine, persisted.snapshot.data), opts.clock ?? systemClock)
      appliedConfig = persisted.snapshot.meta.config
      applied = persisted.snapshot.meta.index
    }
    const clock = opts.clock ?? systemClock
    const electionTicks = opts.electionTicks ?? 6
    const coreOptions: CoreOptions = {
      id: opts.id,
      now: () => clock.now(),
      // (with lease reads, ticks catch up with the clock, a pause's ticks at once, but a message
      // handled while one tick is overdue sees the tick before it: a voter's refusal may end a tick
      // sooner than without them, so their lease is a tick shorter; found by review, session 24)
      leaseMs: leaseWindowMs(electionTicks, opts.tickMs ?? 50, opts.clockDrift ?? 0.1, opts.leaseRead ?? false),
      ...(opts.disk !== undefined ? { disk: opts.disk } : {}),
      voteUnlisted: typeof opts.voteUnlisted === 'function' ? opts.voteUnlisted() : (opts.voteUnlisted ?? true),
      // (drawn once per process: a restart of this node draws another; not from `random`, whose
      // seeded stream the simulation replays runs from: the tag is only ever compared)
      answerTag: randomInt(2 ** 31, 2 ** 32),
      electionTicks,
      heartbeatTicks: opts.heartbeatTicks ?? 1,
      preVote: opts.preVote ?? true,
      checkQuorum: opts.checkQuorum ?? true,
      leaseRead: opts.leaseRead ?? false,
      leaderLease: opts.leaderLease ?? false,
      random: opts.random ?? Math.random,
      snapshotChunkBytes: opts.snapshotChunkBytes,
      snapshotWindow: opts.snapshotWindow,
      learnerPaceMs: opts.learnerPaceMs,
      maxInflightEntries: opts.maxInflightEntries,
      // (the encoding sent, made once and kept: see entry-codec.ts)
      entryBytes: (e) => entryBytes(e).length,
      entryCodec: { encode: entryBytes, decode: entryFromBytes },
    }
    const core = new RaftCore(coreOptions, persisted)
    const node = new RaftNode<C, R>(opts, core, coreOptions, appliedConfig, applied)
    node.lastSnapshotBytes = persisted.snapshot?.data.length ?? 0
    node.recoveryUpTo = persisted.recovery?.lostUpTo
    node.updatePeers()
    opts.transport.onMessage((from, msg) => node.receive(from, msg))
    node.lastTickAt = node.clock.now()
    node.scheduleTick()
    node.kick()
    node.log.info('raft node started', {
      node: opts.id,
      term: persisted.hardState.term,
      lastIndex: core.lastIndex(),
      snapshot: persisted.snapshot?.meta.index ?? 0,
      ...(persisted.recovery ? { recoveringUpTo: persisted.recovery.lostUpTo } : {}),
    })
    return node
  }

  // ---------------------------------------------------------------- public API

  /** Role, term, leader, indexes and configuration of this node. */
  status(): CoreStatus & { appliedConfig: ClusterConfig } {
    const st = { ...this.core.status(), applied: this.applied, appliedConfig: this.appliedConfig }
    // a node whose disk failed serves nothing: it leads no more, whatever its core last was
    return this.failure ? { ...st, role: 'follower', leader: undefined } : st
  }

  /**
   * The storage failure that stopped this node from serving, while it lasts (the node retries the
   * disk and serves again once a synced write works); undefined when it serves.
   */
  storageFailure(): Error | undefined {
    return this.failure
  }

  /**
   * Snapshots on this node: the size of the latest one and how long the latest one it took
   * took (ms), the transfer it is receiving, if any, and (on the leader) those it is sending.
   */
  snapshotStats(): {
    bytes: number
    ms: number
    receiving: { index: number; received: number; total: number } | undefined
    sending: Array<{ to: NodeId; index: number; acked: number; total: number }>
  } {
    return { bytes: this.lastSnapshotBytes, ms: this.lastSnapshotMs, receiving: this.core.status().receiving, sending: this.core.snapshotTransfers() }
  }

  /** When (this node's clock) the latest snapshot was taken or installed; the start time if none since. */
  snapshotTakenAt(): number {
    return this.snapshotAt
  }

  /** Requests in flight on this node: proposals in its log, proposals forwarded to the leader, reads. */
  queueSizes(): { proposals: number; forwarded: number; reads: number } {
    return { proposals: this.pending.size, forwarded: this.fwd.size, reads: this.reads.size }
  }

  /** The leader this node knows of, if any (may be stale). */
  get leader(): NodeId | undefined {
    return this.lastSoft.leader
  }

  /**
   * Whether this node is the leader and holds its leader lease *now* (by its clock): a quorum
   * acknowledged one of its heartbeats recently enough that no other leader can have been elected
   * since. A leader that was stalled does not, until a new round is acknowledged.
   */
  holdsLeaderLease(): boolean {
    return !this.failure && this.core.leaseHeld()
  }

  /** Whether this node believes it is the leader. */
  get isLeader(): boolean {
    return this.lastSoft.role === 'leader'
  }

  /**
   * Replicate `command` and resolve with the state machine's result once it is committed and
   * applied on this node. Followers forward to the leader. Rejects with {@link NotLeaderError}
   * (no leader reachable), {@link TimeoutError} (outcome unknown), {@link ProposalDroppedError}
   * (did not take effect) or {@link ShuttingDownError}.
   *
   * @param opts.timeoutMs - how long it may take (default `requestTimeoutMs`)
   * @param opts.term - a decision of this node as the leader of that term: never forwarded
   * @param opts.idempotent - the state machine applies this command at most once however often it
   *   is appended (a client session, say): a forwarded copy whose leader is gone without an answer
   *   is then sent to the next leader. Without it, a copy goes again only to the same leader in the
   *   same term, which recognizes it (see raft/forwarding.ts).
   */
  propose(command: C, opts: { timeoutMs?: number; term?: number; idempotent?: boolean } = {}): Promise<R> {
    if (this.stopped) return Promise.reject(new ShuttingDownError())
    if (this.failure) return Promise.reject(this.failure)
    if (this.pending.size + this.fwd.size >= this.maxPending) {
      return Promise.reject(new SwormError('OVERLOADED', `too many proposals in flight (${this.maxPending})`))
    }
    // Every replica must apply the same value: followers get the command decoded from the wire
    // or the disk, so the leader applies a decoded copy too, never the caller's object (a Map
    // would stay a Map here only, and a later change by the caller would reach this replica only).
    // (appended, a command too large for a frame, or too costly for a follower to decode, could
    // never be replicated: every entry after it would wait behind it for ever)
    let copy: C
    let enc: Uint8Array
    try {
      const c = proposalCopy(command, this.maxEntryBytes)
      if ('problem' in c) return Promise.reject(new InvalidArgumentError(c.problem))
      copy = c.copy as C
      enc = c.enc
    } catch (err) {
      return Promise.reject(new InvalidArgumentError(`the command cannot be encoded: ${String(err)}`))
    }
    return new Promise<R>((resolve, reject) => {
      const p = pending(resolve, reject, this.clock.now(), opts.timeoutMs ?? this.timeoutMs)
      if (opts.term !== undefined && this.core.status().term !== opts.term) {
        reject(new NotLeaderError(this.leader, `no longer the leader of term ${opts.term}`))
        return
      }
      const res = this.core.propose(copy)
      if (res.ok) {
        this.trackLocal(res.index, res.term, p)
        this.kick()
        return
      }
      if (opts.term !== undefined) {
        // a decision of this node as the leader of `term`: never forwarded to another leader
        reject(new NotLeaderError(res.leader, `no longer the leader of term ${opts.term}`))
        return
      }
      if (res.reason === 'transferring') {
        reject(new NotLeaderError(undefined, 'leadership transfer in progress'))
        return
      }
      // forward to the leader (or wait for one until the deadline)
      this.fwd.enqueue(p, copy, enc, opts.idempotent === true)
    })
  }

  /**
   * A linearizable read barrier (ReadIndex): resolves once this node's state machine reflects
   * every write committed before the call. Read the state machine right after it resolves.
   */
  read(): Promise<void> {
    if (this.stopped) return Promise.reject(new ShuttingDownError())
    if (this.failure) return Promise.reject(this.failure)
    return new Promise<void>((resolve, reject) => {
      const id = ++this.readSeq
      this.reads.add(id, pending(resolve, reject, this.clock.now(), this.timeoutMs))
      this.core.readIndex(id)
      this.kick()
    })
  }

  /**
   * Add a node: first as a learner that receives the log without voting, then, once it has caught
   * up, as a voter. Must be called on the leader.
   */
  async addNode(id: NodeId, address: string, opts: { voter?: boolean; disk?: string } = {}): Promise<void> {
    const cfg = this.core.status().config
    if (opts.disk !== undefined && diskOf(cfg, id) !== undefined && diskOf(cfg, id) !== opts.disk) {
      throw new ConfigChangeError(`${id} is a member with another data directory: remove it first`)
    }
    await this.changeConfig((cur) => {
      if (cur.voters[id] !== undefined || cur.learners[id] !== undefined) return undefined
      const next: ClusterConfig = { ...cur, voters: { ...cur.voters }, learners: { ...cur.learners, [id]: address } }
      if (opts.disk !== undefined) next.disks = { ...cur.disks, [id]: opts.disk }
      // (an id added back on purpose, through this call, is no longer a removed one)
      if (cur.removed?.includes(id)) next.removed = cur.removed.filter((x) => x !== id)
      return next
    })
    if (opts.voter === false || this.core.status().config.voters[id] !== undefined) return
    // wait until the learner has caught up with what was committed when it was added (not with
    // the moving commit index: under writes, a learner sent to at its pace seldom matches it)
    const deadline = this.clock.now() + this.timeoutMs * 4
    const target = this.core.status().commit
    for (;;) {
      if (this.failure) throw this.failure
      const st = this.core.status()
      if (st.role !== 'leader') throw new NotLeaderError(st.leader)
      const pr = this.core.progressOf(id)
      if (pr && pr.match >= target) break
      if (this.clock.now() > deadline) throw new TimeoutError(`learner ${id} did not catch up in time`)
      await this.sleep(this.tickMs)
    }
    await this.setVoter(id, true)
  }

  /**
   * Make member `id` a voter (`voter` true) or a learner: one single-server configuration change,
   * resolved once it is committed. Must be called on the leader; the leader cannot demote itself.
   */
  async setVoter(id: NodeId, voter: boolean): Promise<void> {
    if (!voter && id === this.id) throw new ConfigChangeError('the leader cannot demote itself: transfer leadership first')
    await this.changeConfig((cur) => {
      const address = cur.voters[id] ?? cur.learners[id]
      if (address === undefined) throw new ConfigChangeError(`${id} is not a member`)
      if ((cur.voters[id] !== undefined) === voter) return undefined
      const voters = { ...cur.voters }
      const learners = { ...cur.learners }
      if (voter) {
        voters[id] = address
        delete learners[id]
      } else {
        learners[id] = address
        delete voters[id]
      }
      return { ...cur, voters, learners }
    })
  }

  /** On the leader: the highest log index `id` is known to hold, or undefined if it is not a follower of this leader. */
  progressOf(id: NodeId): { match: number } | undefined {
    const pr = this.core.progressOf(id)
    return pr ? { match: pr.match } : undefined
  }

  /** Remove a node (voter or learner) from the cluster. Must be called on the leader. */
  async removeNode(id: NodeId): Promise<void> {
    await this.changeConfig((cur) => {
      if (cur.voters[id] === undefined && cur.learners[id] === undefined) return undefined
      const voters = { ...cur.voters }
      const learners = { ...cur.learners }
      delete voters[id]
      delete learners[id]
      const next: ClusterConfig = { ...cur, voters, learners }
      if (cur.disks) {
        next.disks = { ...cur.disks }
        delete next.disks[id]
      }
      // remembered: a node asking to join under it again is refused (cluster/membership.ts)
      next.removed = [...(cur.removed ?? []).filter((x) => x !== id), id].slice(-MAX_REMOVED_IDS)
      return next
    })
    // Out of the latest configuration, but that may be a change not committed yet (this node may
    // even be a leader cut off with a minority): done only once the applied one is without it too
    // (found by the simulation: a removal answered "done" by a stale leader never took effect, and
    // the removed node stayed a voter).
    const deadline = this.clock.now() + this.timeoutMs
    while (this.appliedConfig.voters[id] !== undefined || this.appliedConfig.learners[id] !== undefined) {
      if (this.stopped) throw new ShuttingDownError()
      if (this.failure) throw this.failure
      if (this.clock.now() >= deadline) throw new TimeoutError(`the change that removes ${id} was not committed within ${this.timeoutMs} ms`)
      await this.sleep(this.tickMs)
    }
  }

  /** Replace `oldId` by a new node: add it (learner, catch up, voter), then remove the old one. */
  async replaceNode(oldId: NodeId, newId: NodeId, address: string): Promise<void> {
    await this.addNode(newId, address)
    await this.removeNode(oldId)
  }

  /**
   * Make one configuration change: `update` computes the next configuration from the current one
   * (undefined: nothing to change), again at every attempt, so a change that waited behind
   * another (a join behind autopilot's step, say) never undoes it. Resolves once it is committed.
   */
  private async changeConfig(update: (cur: ClusterConfig) => ClusterConfig | undefined): Promise<void> {
    const deadline = this.clock.now() + this.timeoutMs
    for (;;) {
      // (a failed node's core may still think it leads; nothing would ever answer the change)
      if (this.failure) throw this.failure
      const cur = this.core.status()
      if (cur.role !== 'leader') throw new NotLeaderError(cur.leader)
      const next = update(cur.config)
      if (next === undefined) return
      const res = this.core.proposeConfig(next)
      if (res.ok) {
        const p = new Promise<R>((resolve, reject) => {
          this.trackLocal(res.index, res.term, pending(resolve, reject, this.clock.now(), this.timeoutMs))
        })
        this.kick()
        await p
        this.log.info('configuration changed', { node: this.id, voters: Object.keys(next.voters), learners: Object.keys(next.learners) })
        return
      }
      if (res.reason === 'not-leader' || res.reason === 'transferring') throw new NotLeaderError(res.leader)
      if (res.reason === 'config-invalid') throw new ConfigChangeError('only one voter may be added or removed at a time, and a node cannot be both voter and learner')
      if (this.clock.now() > deadline) throw new TimeoutError('a previous configuration change is still pending')
      await this.sleep(this.tickMs)
    }
  }

  /**
   * Hand leadership to `to` (default: the most up-to-date other voter). Resolves when this node
   * is no longer leader, or rejects with TimeoutError. With `leaderLease`, a transfer that does
   * not happen within an election timeout makes this node step down (an election follows, which
   * `to` may or may not win): that resolves it too.
   */
  async transferLeadership(to?: NodeId): Promise<void> {
    const st = this.core.status()
    if (st.role !== 'leader' || this.failure) return
    const target = to ?? this.core.bestTransferTarget()
    if (target === undefined) throw new ConfigChangeError('no other voter to transfer leadership to')
    if (!this.core.transferLeadership(target)) throw new ConfigChangeError(`cannot transfer leadership to ${target}`)
    this.kick()
    const deadline = this.clock.now() + this.electionMs * 2
    while (this.core.status().role === 'leader') {
      // (failed meanwhile: it leads no more, but nor did it hand over; rebuilt: a new core)
      if (this.failure) throw this.failure
      if (this.clock.now() > deadline) throw new TimeoutError(`leadership transfer to ${target} timed out`)
      await this.sleep(this.tickMs / 2)
    }
  }

  /**
   * Stop: hand over leadership if this node leads (default), stop ticking, fail what is pending
   * with ShuttingDownError and close the storage. The transport belongs to the caller.
   */
  async stop(opts: { transfer?: boolean } = {}): Promise<void> {
    if (this.stopped) return
    if ((opts.transfer ?? true) && this.isLeader && Object.keys(this.core.status().config.voters).length > 1) {
      try {
        await this.transferLeadership()
      } catch (err) {
        this.log.warn('leadership transfer before stop failed', { node: this.id, err: String(err) })
      }
    }
    this.stopped = true
    this.clock.clearTimeout(this.tickHandle)
    this.clock.clearTimeout(this.paceHandle)
    this.transport.onMessage(() => {})
    await this.idle()
    this.failAll(new ShuttingDownError())
    await this.storage.close().catch(() => {})
    this.log.info('raft node stopped', { node: this.id })
  }

  // ---------------------------------------------------------------- internals

  private sleep(ms: number): Promise<void> {
    return sleep(this.clock, ms)
  }

  private idle(): Promise<void> {
    if (!this.running && !this.scheduled) return Promise.resolve()
    return new Promise((r) => this.idleWaiters.push(r))
  }

  private scheduleTick(ms = this.tickMs): void {
    this.tickHandle = this.clock.setTimeout(() => {
      if (this.stopped || this.failure) return
      if (this.leaseReads) this.catchUpTicks(true)
      else {
        // A timer may fire before its time by the clock: Node's count whole milliseconds of a
        // cached loop time, so `setTimeout(f, 50)` runs after 49.2 ms of `performance.now()` at
        // times. A tick comes no sooner than `tickMs` after the one before, so that a voter's
        // refusal of votes for `electionTicks` after it heard the leader lasts `(electionTicks -
        // 1) × tickMs` by its clock at least, as the leader's lease assumes (found by review,
        // session 25: with ticks of 49 ms a voter granted a vote while the leader it had
        // acknowledged still held its lease).
        const early = this.lastTickAt + this.tickMs - this.clock.now()
        if (early > 0) {
          this.scheduleTick(Math.max(1, Math.ceil(early))) // (whole ms: a fraction would come early again)
          return
        }
        this.core.tick()
        this.lastTickAt = this.clock.now()
      }
      this.expire()
      this.kick()
      this.scheduleTick()
    }, ms)
  }

  /**
   * Advance the core's logical time by the ticks that are due on the clock. After a pause (a long
   * GC, SIGSTOP) this runs before anything else is handled, so timeouts and leases measured in
   * ticks see the time that passed. `atTimer`: called by the tick timer (at least one tick).
   */
  private catchUpTicks(atTimer: boolean): void {
    const now = this.clock.now()
    const due = Math.floor((now - this.lastTickAt) / this.tickMs + 0.01)
    // Between two timer ticks a message handles nothing; only a real pause (2+ ticks late) counts.
    if (due <= 0 || (!atTimer && due < 2)) return
    const max = 1000 // after a very long pause, this many ticks say all there is to say
    for (let i = 0; i < Math.min(due, max); i++) this.core.tick()
    this.lastTickAt = due > max ? now : this.lastTickAt + due * this.tickMs
  }

  private trackLocal(index: number, term: number, p: Pending<R>): void {
    p.term = term
    const prev = this.pending.get(index)
    if (prev && !prev.settled && prev.term !== term) {
      // our earlier entry at this index was truncated: it can never commit (review F10)
      rejectOnce(prev, droppedError(prev, new ProposalDroppedError()))
    }
    this.pending.set(index, p)
    this.pendingOrder.push({ index, p })
  }

  /**
   * When this node's lease was last renewed (its clock): the time it sent a heartbeat answer that
   * the leader has since acknowledged as renewing (holding its own lease, or once a quorum round
   * sent after the answer came back), or, on the leader, when it sent the latest round a quorum
   * acknowledged. Contact in both directions is needed: a node that hears the leader but is not
   * heard by it does not renew.
   */
  leaseRenewedAt(): number | undefined {
    return this.lease.renewedAt()
  }

  /**
   * On the leader: when (its clock) `peer` last answered one of its heartbeats or appends in this
   * term, which proves the peer hears this leader; undefined if never. Anything else a peer sends
   * (a pre-vote, a forwarded request) does not count: a node behind a one-way cut that only talks
   * to the leader is cut off all the same, and its lease is not renewed.
   */
  lastHeard(peer: NodeId): number | undefined {
    return this.lease.lastHeard(peer)
  }

  /**
   * The first peer whose Raft message was meant for this node id on another data directory (the
   * `dataLost` event's), if any: this node lost its data, or that peer's configuration is stale.
   */
  get dataLostFrom(): NodeId | undefined {
    return this.dataLostPeer
  }

  private receive(from: NodeId, raw: unknown): void {
    if (this.stopped || this.failure) return
    // With lease reads, logical time must not lag behind the clock after a pause (the lease is
    // counted in ticks). Otherwise ticks stay timer-driven: a busy event loop then stretches
    // timeouts rather than firing elections and step-downs all at once.
    if (this.leaseReads) this.catchUpTicks(false)
    try {
      const cid = (raw as { cid?: unknown } | null)?.cid
      if (cid !== undefined && this.clusterId !== undefined && cid !== this.clusterId) {
        this.dropLog.warn(from, 'dropped a message from a node of another cluster: check its peers or join option and its dataDir', {
          node: this.id,
          from,
          cluster: this.clusterId,
          peerCluster: typeof cid === 'string' ? cid.slice(0, 64) : typeof cid,
        })
        return
      }
      const t = (raw as { t?: unknown } | null)?.t
      if (t === 'fwd') return this.fwd.onForward(from, raw)
      if (t === 'fwdResp') return this.fwd.onForwardResp(from, raw)
      if (t === 'app' && (raw as { ents?: unknown }).ents !== undefined) {
        const { ents, ...rest } = raw as { ents: unknown }
        const entries = decodeEntries(ents)
        if (typeof entries === 'string' || (rest as { entries?: unknown }).entries !== undefined) {
          this.logDrop(from, typeof entries === 'string' ? entries : 'app with both ents and entries')
          return
        }
        raw = { ...rest, entries }
      }
      const m = validateRaftMessage(raw, from, this.id)
      if (typeof m === 'string') {
        this.logDrop(from, m)
        return
      }
      if (forAnotherDisk(m, this.coreOptions.disk)) {
        // (dropped before the core and the lease see it: this node must not answer as the member
        // whose data it lost, nor be renewed by what was meant for that member)
        this.dropLog.warn(`disk:${from}`, 'a peer knows this node id with another data directory: this node lost its data (then start it under a new node id, on an empty data directory), or that peer\'s configuration is stale; it answers none of the Raft messages meant for that data directory', {
          node: this.id,
          from,
          disk: this.coreOptions.disk,
          known: m.dk,
        })
        if (this.dataLostPeer === undefined) {
          this.dataLostPeer = from
          this.emit('dataLost', from)
        }
        return
      }
      this.core.step(m)
      if ((m.t === 'hbResp' || m.t === 'appResp') && this.lastSoft.role === 'leader' && m.term === this.lastSoft.term) this.lease.heardFrom(from)
      if (m.t === 'hb' && m.lease && m.ack !== undefined) this.lease.acknowledged(this.core.status(), from, m.term, m.ack, m.ackP)
      this.kick()
    } catch (err) {
      this.log.error('failed to handle a message', { node: this.id, from, err: String(err) })
    }
  }

  private logDrop(from: NodeId, reason: string): void {
    this.dropLog.warn(from, 'dropped a bad message', { node: this.id, from, reason })
  }

  /** Run the Ready loop soon (coalescing everything that happens in this turn). */
  private kick(): void {
    if (this.running || this.scheduled || this.stopped || this.failure) return
    this.scheduled = true
    queueMicrotask(() => {
      this.scheduled = false
      void this.run()
    })
  }

  /** Run the Ready loop again when the learners' pace lets what waits for them go. */
  private armPace(): void {
    const at = this.core.learnersDueAt()
    if (at === undefined || this.paceHandle !== undefined || this.stopped || this.failure) return
    // at least 1 ms, and 1 ms past the due time: a timer that fires a hair early (a clock read
    // that rounds) finds the learners not due, and one armed at 0 again made a loop that never let
    // time pass (the simulation's clock, seed 1196760 on the branch early-starts)
    this.paceHandle = this.clock.setTimeout(
      () => {
        this.paceHandle = undefined
        this.kick()
      },
      Math.max(1, Math.ceil(at - this.clock.now()) + 1),
    )
  }

  private async run(): Promise<void> {
    if (this.running) return
    this.running = true
    try {
      this.applyMsInSlice = 0
      let appliedInSlice = 0
      while (!this.failure && this.core.hasReady()) {
        const rd = this.core.ready()
        await this.handleReady(rd)
        this.core.advance(rd)
        if (this.compactPending) {
          this.core.compact(this.compactPending)
          this.compactPending = undefined
        }
        if (!this.stopped) this.maybeSnapshot()
        // A long run of committed entries (catching up, a replay at restart) is applied in slices
        // of at most APPLY_SLICE_MS of applying (or APPLY_BATCH_YIELD entries), each in a turn of
        // the event loop, so timers, messages and reads are served between them. (Only applying
        // counts: a wait for the disk let the event loop run already.)
        appliedInSlice += rd.committed.length
        if (appliedInSlice >= APPLY_BATCH_YIELD || this.applyMsInSlice >= APPLY_SLICE_MS) {
          await new Promise<void>((resolve) => this.clock.setTimeout(resolve, 0))
          this.applyMsInSlice = 0
          appliedInSlice = 0
        }
      }
    } catch (err) {
      this.fail(err)
    } finally {
      this.running = false
      this.armPace()
      if (!this.scheduled) {
        const w = this.idleWaiters
        this.idleWaiters = []
        for (const f of w) f()
      }
    }
  }

  private async handleReady(rd: Ready): Promise<void> {
    for (const m of rd.messagesNow) this.out(m.to, m)
    if (rd.snapshot) {
      this.installingIndex = rd.snapshot.meta.index // a snapshot of our own in progress is moot now
      await this.storage.saveSnapshot(rd.snapshot)
      if (this.failure) return // failed meanwhile (its own snapshot): rebuilt from the disk later
      // in steps: the node keeps receiving (and the registry keeps serving reads) meanwhile
      await stepThrough(restoreTask(this.sm, rd.snapshot.data), this.clock)
      this.applied = rd.snapshot.meta.index
      this.snapshotIndex = rd.snapshot.meta.index
      this.lastSnapshotBytes = rd.snapshot.data.length
      this.appliedConfig = rd.snapshot.meta.config
      this.snapshotAt = this.clock.now()
      this.log.info('installed snapshot from leader', { node: this.id, index: rd.snapshot.meta.index })
      this.failStaleLocal(rd.snapshot.meta.index)
    }
    if (rd.entries.length || rd.hardState || rd.truncateFrom !== undefined) {
      const w: Parameters<RaftStorage['write']>[0] = {}
      if (rd.hardState) w.hardState = rd.hardState
      if (rd.truncateFrom !== undefined) w.truncateFrom = rd.truncateFrom
      if (rd.entries.length) w.entries = rd.entries
      const caughtUp = this.caughtUpFromRepair()
      if (caughtUp) w.recovered = true
      await this.storage.write(w)
      if (caughtUp) this.noteCaughtUp()
    } else if (this.caughtUpFromRepair()) {
      await this.storage.write({ recovered: true })
      this.noteCaughtUp()
    }
    // Failed while the write was on its way (its own snapshot failed): the write went through, but
    // a failed node sends nothing, renews no lease and reports no role (found by review: it could
    // report itself leader); the Ready's effects come back when it reloads its disk.
    if (this.failure) return
    const now = this.clock.now()
    for (const m of rd.messages) {
      if (m.t === 'hbResp') this.lease.answering(m.term, m.to, m.seq, now)
      this.out(m.to, m)
    }
    // The leader's lease: from when it sent the heartbeat round a quorum has acknowledged (its
    // clock, so a leader that was frozen finds its lease expired when it wakes).
    const sentAt = this.core.quorumAckedAt()
    if (sentAt !== undefined) this.lease.renew(sentAt)
    if (rd.soft) {
      const prev = this.lastSoft
      this.lastSoft = rd.soft
      if (prev.leader !== rd.soft.leader || prev.role !== rd.soft.role) {
        // One info line per leader change; the steps of an election are debug.
        const elected = rd.soft.leader !== undefined && (rd.soft.leader !== this.loggedLeader || rd.soft.term !== this.loggedTerm)
        if (elected) {
          this.loggedLeader = rd.soft.leader
          this.loggedTerm = rd.soft.term
        }
        this.log[elected ? 'info' : 'debug'](elected ? 'leader changed' : 'role changed', { node: this.id, role: rd.soft.role, term: rd.soft.term, leader: rd.soft.leader })
      }
      try {
        this.emit('role', rd.soft)
      } catch (err) {
        this.log.error('a role listener threw', { node: this.id, err: String(err) })
      }
      if (rd.soft.leader !== undefined) this.fwd.flush()
    }
    if (rd.committed.length) {
      // what this Ready sent (commit notices, appends) leaves before an apply that may be long (a
      // node's failure moves all its workers in one entry): followers apply meanwhile. Only
      // then: a flush in every Ready cost a second frame per peer and turn (15 nodes: about 10%
      // more of the leader's CPU per commit)
      if (this.transport.flush && this.sm.slow && rd.committed.some((e) => e.type === 'cmd' && this.sm.slow!(e.data as C))) this.transport.flush()
      const t0 = this.clock.now()
      this.applyEntries(rd.committed)
      this.applyMsInSlice += this.clock.now() - t0
    }
    if (rd.entries.some((e) => e.type === 'conf') || rd.snapshot || rd.committed.some((e) => e.type === 'conf')) this.updatePeers()
    for (const r of rd.reads) this.reads.confirmed(r.id, r.index, this.lastSoft.leader)
    this.reads.release(this.applied)
    this.fwd.sendResults()
  }

  /** Whether the node has just committed past what a storage repair lost (the marker can go). */
  private caughtUpFromRepair(): boolean {
    return this.recoveryUpTo !== undefined && this.core.status().recoveringUpTo === undefined
  }

  private noteCaughtUp(): void {
    this.log.info('caught up past the log entries lost to storage corruption: voting again', { node: this.id, lostUpTo: this.recoveryUpTo })
    this.recoveryUpTo = undefined
  }

  private applyEntries(entries: Entry[]): void {
    const observe = this.observeCommitMs
    let now = -1
    for (const e of entries) {
      let ok = true
      let result: unknown
      if (e.type === 'cmd') {
        try {
          result = this.sm.apply(e.data as C, e.index, e.term)
        } catch (err) {
          ok = false
          result = err
        }
      } else if (e.type === 'conf') {
        this.appliedConfig = e.data as ClusterConfig
      }
      this.applied = e.index
      const p = this.pending.get(e.index)
      if (p) {
        this.pending.delete(e.index)
        if (!p.settled) {
          p.settled = true
          if (p.term !== e.term) p.reject(droppedError(p, new ProposalDroppedError()))
          else if (ok) {
            if (observe) {
              if (now < 0) now = this.clock.now() // one clock read per batch
              observe(now - p.start)
            }
            p.resolve(result as R)
          }
          else p.reject(result instanceof Error ? result : new Error(String(result)))
        }
      }
      this.fwd.applied(e, ok, result)
    }
  }

  /** Proposals at or below `index` that a snapshot replaced can no longer be matched to entries. */
  private failStaleLocal(index: number): void {
    for (const [i, p] of this.pending) {
      if (i <= index) {
        this.pending.delete(i)
        rejectOnce(p, new TimeoutError('outcome unknown: the log was replaced by a snapshot'))
      }
    }
    this.fwd.forgetUpTo(index)
  }

  /**
   * Take a snapshot once the log since the last one is long enough: in the background, a step
   * per turn of the event loop, while the node goes on applying entries (the state machine keeps
   * the cut consistent; see {@link StateMachine.snapshotSteps}).
   */
  private maybeSnapshot(): void {
    if (this.snapshotting) return
    // A snapshot costs time in proportion to the state's size: wait for a log at least as long
    // as the last snapshot is big (one entry per 32 bytes), so the cost per entry stays flat,
    // but no longer than maxLogEntries, which bounds what a restart replays.
    const every = snapshotPeriod(this.snapshotEvery, this.maxLogEntries, this.lastSnapshotBytes)
    if (!snapshotDue(this.applied, this.snapshotIndex, every, this.snapshotPhase())) return
    const term = this.core.termAt(this.applied)
    if (term === undefined) return
    this.snapshotting = true
    const meta = { index: this.applied, term, config: this.appliedConfig }
    this.takeSnapshot(meta)
      .catch((err: unknown) => {
        // A snapshot installed from the leader meanwhile makes this one moot (the disk refuses
        // it); a disk that failed already failed the node.
        if (!this.superseded(meta.index) && !this.stopped && !this.failure) this.fail(err)
      })
      .finally(() => {
        this.snapshotting = false
      })
  }

  /**
   * Where in each snapshot period (see {@link snapshotPeriod}) this node takes its snapshots, as
   * a fraction: its rank among the members' ids, so that members snapshot one after another rather
   * than all at once (each applies the same entries; at the same index they would all spend the
   * same burst of CPU and allocation together, on machines they may share). Worked out again only
   * when the applied configuration changes.
   */
  private snapshotPhase(): number {
    if (this.phaseFor !== this.appliedConfig) {
      this.phaseFor = this.appliedConfig
      const ids = [...Object.keys(this.appliedConfig.voters), ...Object.keys(this.appliedConfig.learners)].sort()
      const rank = ids.indexOf(this.id)
      this.phase = rank <= 0 ? 0 : rank / ids.length
    }
    return this.phase
  }
  private phaseFor: ClusterConfig | undefined
  private phase = 0

  /**
   * Take a snapshot of what this node has applied and compact its log up to it now, whatever the
   * snapshot period says: what benches call before they measure the memory a replica holds with
   * its log compacted. Waits for a snapshot being taken to end first.
   * @internal
   * @throws TimeoutError after `timeoutMs`; the node's failure if it fails or stops meanwhile
   */
  async compactNow(timeoutMs = 120_000): Promise<void> {
    const deadline = this.clock.now() + timeoutMs
    const pause = async (): Promise<void> => {
      if (this.stopped || this.failure) throw this.failure ?? new Error(`node ${this.id} stopped`)
      if (this.clock.now() > deadline) throw new TimeoutError(`node ${this.id}: the log was not compacted within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => this.clock.setTimeout(resolve, 10))
    }
    while (this.snapshotting) await pause()
    const term = this.core.termAt(this.applied)
    if (this.applied > this.snapshotIndex && term !== undefined) {
      this.snapshotting = true
      try {
        await this.takeSnapshot({ index: this.applied, term, config: this.appliedConfig })
      } finally {
        this.snapshotting = false
      }
    }
    while (this.compactPending) await pause() // (the Ready loop compacts at the end of its pass)
  }

  /** Whether a snapshot at `index` is no use: one as new is stored, or being installed. */
  private superseded(index: number): boolean {
    return index <= Math.max(this.snapshotIndex, this.installingIndex)
  }

  private async takeSnapshot(meta: Snapshot['meta']): Promise<void> {
    const started = this.clock.now()
    const task: StepTask<Uint8Array> = this.sm.snapshotSteps ? this.sm.snapshotSteps() : { step: () => this.sm.snapshot() }
    const data = await stepThrough(task, this.clock, () => this.stopped || this.failure !== undefined || this.superseded(meta.index))
    if (!data || this.superseded(meta.index)) return // stopped, failed, or overtaken by an install
    const snap: Snapshot = { meta, data }
    await this.storage.saveSnapshot(snap)
    if (this.superseded(meta.index)) return
    this.lastSnapshotBytes = data.length
    this.lastSnapshotMs = this.clock.now() - started
    this.snapshotIndex = meta.index
    this.snapshotAt = this.clock.now()
    if (this.running) this.compactPending = snap
    else this.core.compact(snap)
    this.log.debug('snapshot taken', { node: this.id, index: meta.index, bytes: data.length, ms: Math.round(this.clock.now() - started) })
  }

  /**
   * How many times this node's lease started anew: held for the first time, or renewed after it
   * had run out (see {@link RaftNodeOptions.leaseTimeoutMs}). Equal counts at two instants, with
   * the lease valid at both, mean it held all the time between.
   */
  leaseLapses(): number {
    return this.lease.lapses()
  }

  /** Send `m` with this node's cluster id, once it knows one. */
  private out(to: NodeId, m: RaftMessage | FwdMsg | FwdRespMsg): void {
    if (this.clusterId !== undefined) m.cid = this.clusterId
    if (m.t === 'snap' && m.offset === 0) this.log.info('sending a snapshot to a node that is behind', { node: this.id, to, index: m.meta.index, bytes: m.total })
    if (m.t === 'app') {
      // the entries travel as their encoding, made once for every follower (entry-codec.ts)
      const { entries, ...rest } = m
      let ents: Uint8Array[]
      try {
        ents = entries.map(entryBytes)
      } catch (err) {
        this.dropLog.warn(to, 'could not encode log entries for a follower; not sent', { node: this.id, to, err: String(err) })
        return
      }
      this.transport.send(to, { ...rest, ents })
      return
    }
    this.transport.send(to, m)
  }

  private updatePeers(): void {
    const cfg = this.core.status().config
    this.clusterId = cfg.cluster ?? this.appliedConfig.cluster
    const peers: Record<NodeId, string> = { ...this.seeds }
    for (const c of [this.appliedConfig, cfg]) {
      Object.assign(peers, c.voters, c.learners)
    }
    delete peers[this.id]
    this.transport.setPeers(peers)
  }

  // ---------------------------------------------------------------- timeouts and failure

  private expire(): void {
    const now = this.clock.now()
    while (this.pendingOrder.length && (this.pendingOrder[0]!.p.settled || this.pendingOrder[0]!.p.deadline <= now)) {
      const { index, p } = this.pendingOrder.shift()!
      // (an error only for one still waiting: most were answered, and an error's stack costs)
      if (!p.settled) rejectOnce(p, new TimeoutError(`proposal at index ${index} not applied within ${this.timeoutMs} ms; it may still take effect`))
      if (this.pending.get(index) === p) this.pending.delete(index)
    }
    this.fwd.expire(now, this.lastSoft.leader)
    this.reads.expire(now, (id) => this.core.forgetRead(id))
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) rejectOnce(p, err)
    this.pending.clear()
    this.pendingOrder.length = 0
    this.fwd.failAll(err)
    this.reads.failAll(err)
  }

  private fail(err: unknown): void {
    if (this.failure) return // failing already (a second write that failed with the first one)
    const e = err instanceof SwormError ? err : new StorageError(`storage failed: ${String(err)}`, { cause: err })
    this.failure = e
    this.clock.clearTimeout(this.tickHandle)
    const retry = this.storageRetryMs > 0 && typeof this.storage.reopen === 'function'
    this.log.error(
      retry
        ? 'raft node stopped serving: storage failure; it will retry the disk and rejoin from what is on it'
        : 'raft node stopped serving: storage failure',
      { node: this.id, err: e.message },
    )
    this.failAll(e)
    this.fwd.dropLeaderState()
    // It serves nothing until its disk works again (rebuild() reports its role then): it leads
    // no more, and listeners (autopilot, the failure detector, status) must not act as if it did.
    this.lastSoft = { role: 'follower', term: this.lastSoft.term, leader: undefined }
    this.emitSafely('role', { ...this.lastSoft })
    this.emitSafely('failed', e)
    if (retry) void this.recoverStorage()
  }

  /**
   * After a storage failure: retry the disk with backoff until a synced write works, then rebuild
   * the core from what is durable (a restart in place: what was not synced was never acknowledged)
   * and rejoin. The state machine keeps what it applied: every applied entry was committed.
   */
  private async recoverStorage(): Promise<void> {
    const gone = (): boolean => this.stopped || !this.failure
    // A disk that fails again soon after the node served again (a snapshot that never fits, while
    // the log's small writes do: every retry's probe write works, and the next snapshot fails)
    // must not have the node stop and start again every second: each failure in a row waits
    // twice as long as the last, up to the backoff's cap.
    const now = this.clock.now()
    this.failStreak = this.recoveredAt !== undefined && now - this.recoveredAt < FAIL_STREAK_MS ? this.failStreak + 1 : 0
    const cap = Math.max(MAX_STORAGE_RETRY_MS, this.storageRetryMs)
    const first = Math.min(cap, this.storageRetryMs * 2 ** Math.min(this.failStreak, 16))
    if (this.failStreak > 0) {
      this.log.warn('storage failed again soon after the node served again; waiting longer before the next retry', {
        node: this.id,
        inARow: this.failStreak + 1,
        retryMs: first,
      })
    }
    await this.sleep(first)
    const policy = {
      minMs: Math.min(cap, first * 2),
      maxMs: cap,
      stopped: gone,
      onRetry: (err: unknown, attempts: number): void => {
        // one line at the first failed retry, then one every ten (the backoff caps at 30 s)
        if (attempts === 1 || attempts % 10 === 0) {
          this.log.warn('storage still failing; the node keeps refusing to serve', { node: this.id, attempts, err: String(err) })
        }
      },
    }
    await retry(this.clock, policy, async () => {
      if (gone()) return
      await this.idle()
      await this.storage.reopen!()
      const persisted = await this.storage.load()
      if (!this.stopped) this.rebuild(persisted)
    }).catch(() => {}) // stopped while the disk still failed
  }

  private rebuild(persisted: PersistedState): void {
    if (persisted.snapshot && persisted.snapshot.meta.index > this.applied) {
      this.sm.restore(persisted.snapshot.data)
      this.applied = persisted.snapshot.meta.index
      this.appliedConfig = persisted.snapshot.meta.config
    }
    this.snapshotIndex = persisted.snapshot?.meta.index ?? 0
    this.lastSnapshotBytes = persisted.snapshot?.data.length ?? 0
    this.core = new RaftCore(this.coreOptions, persisted, this.applied)
    this.recoveryUpTo = persisted.recovery?.lostUpTo
    this.lease.reset()
    this.lastSoft = { role: 'follower', term: persisted.hardState.term, leader: undefined }
    this.failure = undefined
    this.recoveredAt = this.clock.now()
    this.installingIndex = 0 // an install the failure cut short is moot (its index must not hold back our own snapshots)
    this.updatePeers()
    this.lastTickAt = this.clock.now()
    this.scheduleTick()
    this.log.info('storage works again: the node reloaded its disk and rejoins the cluster', {
      node: this.id,
      term: persisted.hardState.term,
      lastIndex: this.core.lastIndex(),
      applied: this.applied,
    })
    this.emitSafely('role', { ...this.lastSoft })
    this.emitSafely('recovered')
    this.kick()
  }

  /** Emit `event`; a listener that throws is logged, and the other events still go out. */
  private emitSafely<K extends 'role' | 'failed' | 'recovered'>(event: K, ...args: RaftNodeEvents[K]): void {
    try {
      ;(this.emit as (e: K, ...a: RaftNodeEvents[K]) => boolean)(event, ...args)
    } catch (err) {
      this.log.error(`a ${event} listener threw`, { node: this.id, err: String(err) })
    }
  }
}

/** The longest wait between two retries of a failed disk. */
const MAX_STORAGE_RETRY_MS = 30_000
/** A storage failure this soon after the node served again counts as one more in a row (see `recoverStorage`). */
const FAIL_STREAK_MS = 60_000

/** After applying this many entries without a pause, the Ready loop lets the event loop run... */
const APPLY_BATCH_YIELD = 2048
/** ... or after applying entries for this long (ms), whichever comes first. */
const APPLY_SLICE_MS = 10

/** Restoring `data` into `sm` as a task: in steps if the state machine has them, else at once. */
function restoreTask(sm: StateMachine<never, unknown>, data: Uint8Array): StepTask<true> {
  if (sm.restoreSteps) return sm.restoreSteps(data)
  return {
    step: () => {
      sm.restore(data)
      return true
    },
  }
}

/** Steps of {@link snapshotPeriod} per doubling. */
const PERIOD_STEPS = 4

/**
 * Entries between two snapshots: `snapshotEvery`, more for a large state (one entry per 32 bytes
 * of the last snapshot, so that a snapshot's cost per entry stays flat), at most `maxLogEntries`.
 * Rounded down to a step of a fixed scale (`snapshotEvery` times a power of 2^(1/4), at most 19%
 * under the exact figure), so that every member, whose state is the same, gets the same period,
 * and the period stays put while the state grows or shrinks a little: the members' marks (see
 * {@link snapshotDue}) keep their places, rather than move with every snapshot and bring the next
 * one early.
 */
export function snapshotPeriod(snapshotEvery: number, maxLogEntries: number, lastSnapshotBytes: number): number {
  const exact = Math.ceil(lastSnapshotBytes / 32)
  if (exact <= snapshotEvery) return Math.min(maxLogEntries, snapshotEvery)
  const step = Math.floor(Math.log2(exact / snapshotEvery) * PERIOD_STEPS + 1e-9)
  return Math.min(maxLogEntries, Math.max(snapshotEvery, Math.floor(snapshotEvery * 2 ** (step / PERIOD_STEPS))))
}

/**
 * Whether a node that applied `applied` entries, with its last snapshot at `snapshotIndex`,
 * should take a snapshot now, given `every` (the period) and its `phase` in [0, 1). Due once the
 * log since the snapshot is `every` entries long, whatever the phase (so a restart never replays
 * more), and earlier, from half of it on, when the index passes one of this node's own marks
 * (`k * every - phase * every`): the members, each with its own phase, snapshot at indexes apart,
 * and a node whose snapshots were moved (one installed from the leader) is back on its marks
 * after one period.
 */
export function snapshotDue(applied: number, snapshotIndex: number, every: number, phase: number): boolean {
  const since = applied - snapshotIndex
  if (since >= every) return true
  if (since < every / 2) return false
  const shift = Math.floor(phase * every)
  return Math.floor((applied + shift) / every) > Math.floor((snapshotIndex + shift) / every)
}

/**
 * Run `task` a step per turn of `clock`'s timers, so that timers, messages and reads are served
 * between steps. Undefined if `gone()` says to stop first.
 */
async function stepThrough<T>(task: StepTask<T>, clock: Clock, gone?: () => boolean): Promise<T | undefined> {
  for (;;) {
    const done = task.step()
    if (done !== undefined) return done
    await new Promise<void>((resolve) => clock.setTimeout(resolve, 0))
    if (gone?.()) {
      task.abandon?.()
      return undefined
    }
  }
}
