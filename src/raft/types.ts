/**
 * Shared types of the Raft engine: log entries, persistent state, the wire messages of the
 * protocol, and the two ports the engine talks through (storage and transport).
 *
 * The core (`core.ts`) is pure and only sees these values; `node.ts` moves them between the
 * core, a {@link RaftStorage} and a {@link Transport}.
 * @module
 */

/** Identifier of a Raft node; stable across restarts. */
export type NodeId = string

/**
 * A cluster configuration. Voters count towards quorums; learners receive the log but do not
 * vote. Each member maps to the address its peers reach it at (the transport uses it).
 */
export interface ClusterConfig {
  voters: Record<NodeId, string>
  learners: Record<NodeId, string>
  /**
   * The identity of each member's data directory (a random id its storage got when it was first
   * used), where known. A node whose storage has another identity lost what it promised as a voter:
   * it must not rejoin under that id.
   */
  disks?: Record<NodeId, string>
  /** The id of the cluster, fixed at its bootstrap; every Raft message carries it. */
  cluster?: string
  /**
   * The ids removed from the configuration, the latest last, at most 256 (`MAX_REMOVED_IDS`): a
   * removed id never comes back (an old configuration somewhere may still count it as a voter),
   * and a node asking to join under one is refused, whether or not it ever came up. Only
   * `RaftNode.addNode`, called on purpose, adds one back (and takes it off the list).
   */
  removed?: NodeId[]
}

/** How many removed ids a configuration remembers (see {@link ClusterConfig.removed}). */
export const MAX_REMOVED_IDS = 256

/**
 * The default of `RaftNodeOptions.maxEntryBytes`: the WebSocket transport's largest frame (64
 * MiB, `net/wire.ts`) less a MiB for the append message around one entry and the frame's tag.
 */
export const MAX_ENTRY_BYTES = 63 * 1024 * 1024

/** Whether `config` remembers `id` as removed (see {@link ClusterConfig.removed}). */
export function wasRemoved(config: Pick<ClusterConfig, 'removed'>, id: NodeId): boolean {
  return config.removed !== undefined && config.removed.includes(id)
}

/**
 * The identity of `id`'s data directory in `config`, if it records one (its own entry only: a node
 * id such as `constructor` finds nothing on the object's prototype).
 */
export function diskOf(config: Pick<ClusterConfig, 'disks'>, id: NodeId): string | undefined {
  const disks = config.disks
  return disks !== undefined && Object.prototype.hasOwnProperty.call(disks, id) ? disks[id] : undefined
}

/** What a log entry holds. */
export type EntryType =
  /** An application command, handed to the state machine. */
  | 'cmd'
  /** The no-op a new leader appends to commit entries of earlier terms. */
  | 'noop'
  /** A new cluster configuration (`data` is a {@link ClusterConfig}). */
  | 'conf'

/** One log entry. `data` is any msgpackr-encodable value. */
export interface Entry {
  index: number
  term: number
  type: EntryType
  data: unknown
}

/** The state that must be on stable storage before a vote or an append is acknowledged. */
export interface HardState {
  term: number
  vote: NodeId | undefined
  /** Highest index known committed; persisted lazily, only as a hint for restarts. */
  commit: number
}

/** Metadata of a snapshot: the last entry it covers and the configuration at that point. */
export interface SnapshotMeta {
  index: number
  term: number
  config: ClusterConfig
}

/** A snapshot of the state machine, as stored and as sent to lagging followers. */
export interface Snapshot {
  meta: SnapshotMeta
  /** Encoded state machine snapshot (opaque to Raft). */
  data: Uint8Array
}

/** What a node loads from storage when it starts. */
export interface PersistedState {
  hardState: HardState
  snapshot: Snapshot | undefined
  /** Entries after the snapshot (or from index 1), in order, without gaps. */
  entries: Entry[]
  /**
   * Set when the storage found corrupt records and dropped them (see {@link StorageRecovery}).
   * Persisted until a write with `recovered: true` clears it, so a crash during catch-up keeps it.
   */
  recovery?: StorageRecovery
}

/**
 * What a storage dropped when it repaired itself at load: a torn or corrupt entry and every entry
 * after it, or a corrupt snapshot and the log after it. This node may have acknowledged those
 * entries to a leader, so until it has learned a commit index of at least `lostUpTo` from a leader
 * (and holds every entry up to there again) it must neither vote nor campaign.
 */
export interface StorageRecovery {
  /** The highest log index the storage held before the repair. */
  lostUpTo: number
  /** What was found, for the log line. */
  reason: string
}

/**
 * One synced write to stable storage. Applied atomically, in this order: drop entries with
 * index >= `truncateFrom`, append `entries`, store `hardState`.
 */
export interface StorageWrite {
  hardState?: HardState
  truncateFrom?: number
  entries?: Entry[]
  /** Clear the {@link StorageRecovery} marker: the node has caught up past what was lost. */
  recovered?: true
}

/**
 * The storage port. Every method's promise resolves only once the data is durable (fsync).
 * A storage that detects a corrupt record rejects with {@link CorruptStorageError}.
 */
export interface RaftStorage {
  load(): Promise<PersistedState>
  write(w: StorageWrite): Promise<void>
  /** Persist a snapshot and drop every entry with index <= `snapshot.meta.index`. */
  saveSnapshot(snapshot: Snapshot): Promise<void>
  close(): Promise<void>
  /**
   * After a failed write (full disk, fsync error), try to make the storage usable again: reopen it
   * and prove that a synced write goes through. Rejects while the fault lasts. A storage without
   * this method cannot recover in place; its node stays stopped.
   */
  reopen?(): Promise<void>
  /**
   * The random identity of this data directory, stored at its first use (see
   * {@link RaftStorage.saveIdentity}); undefined if none was stored yet. Optional: without it a
   * node cannot tell that it lost its data, and refuses nothing.
   */
  identity?(): Promise<string | undefined>
  /** Durably store this data directory's identity (once, before the node talks to anyone). */
  saveIdentity?(id: string): Promise<void>
}

// ---------------------------------------------------------------------------------------------
// Wire messages of the protocol (Raft paper figure 2, plus pre-vote, ReadIndex, transfer).
// ---------------------------------------------------------------------------------------------

interface MsgBase {
  from: NodeId
  to: NodeId
  term: number
  /** The sender's cluster id, once it knows one; a node drops messages of another cluster. */
  cid?: string
  /**
   * The data directory the sender's configuration binds the receiver's id to, if it binds one
   * (`ClusterConfig.disks`). A node on another data directory drops the message: it lost the
   * state of the member it was (its term, its votes, its log) and must not answer as that member
   * (see `forAnotherDisk` in core.ts).
   */
  dk?: string
}

/** RequestVote (or the pre-vote probe when `pre` is true). */
export interface MsgVote extends MsgBase {
  t: 'vote'
  pre: boolean
  lastIndex: number
  lastTerm: number
  /** Set by a candidate started by leadership transfer: voters skip the leader-stickiness check. */
  transfer: boolean
}

/** Answer to {@link MsgVote}. For a pre-vote, `term` is the term that was asked for. */
export interface MsgVoteResp extends MsgBase {
  t: 'voteResp'
  pre: boolean
  granted: boolean
}

/** AppendEntries. */
export interface MsgAppend extends MsgBase {
  t: 'app'
  prevIndex: number
  prevTerm: number
  entries: Entry[]
  commit: number
}

/**
 * Heartbeat: asserts leadership and carries the commit index (never beyond what the follower
 * is known to match). `seq` numbers the leader's ReadIndex rounds.
 */
export interface MsgHeartbeat extends MsgBase {
  t: 'hb'
  commit: number
  seq: number
  /**
   * The acknowledgement `ack` renews this node's lease (from when it sent that answer): the leader
   * holds its lease, or a quorum acknowledged a round the leader sent after it received that
   * answer (see `RaftCore.renewalAck`).
   */
  lease?: boolean
  /**
   * A round this follower has acknowledged, as the leader saw it (node leases): the highest, or,
   * when only an earlier answer renews (see `lease`), that one.
   */
  ack?: number
  /** The `p` of the answer that acknowledged round `ack`: only the process that sent it renews its lease. */
  ackP?: number
}

/** Answer to {@link MsgHeartbeat}, echoing its `seq`. */
export interface MsgHeartbeatResp extends MsgBase {
  t: 'hbResp'
  seq: number
  /**
   * A number the answering process drew at its start ({@link CoreOptions.answerTag}): the leader
   * echoes it with its acknowledgement, so that a process of this node restarted meanwhile does
   * not take the acknowledgement of its predecessor's answer to the same round as its own.
   */
  p?: number
}

/** Answer to {@link MsgAppend}. On rejection, `hint` is where the leader should retry from. */
export interface MsgAppendResp extends MsgBase {
  t: 'appResp'
  success: boolean
  /** On success, the last index the follower now matches; on failure, the rejected prevIndex. */
  index: number
  hint: number
  /**
   * Set by a follower that lost log entries to storage corruption: it holds only up to `hint`,
   * so the leader must forget the match index it knew for it.
   */
  lost?: true
}

/**
 * One chunk of an InstallSnapshot transfer. A snapshot travels in chunks of bounded size, so no
 * frame limit bounds the state's size and heartbeats and appends keep flowing between chunks.
 * Every chunk names the whole snapshot (`meta`, `total`): a follower that lost its partial copy
 * (a restart) or holds another transfer asks for the start again.
 */
export interface MsgSnapshot extends MsgBase {
  t: 'snap'
  meta: SnapshotMeta
  /** Size of the whole snapshot's data in bytes. */
  total: number
  /** Where this chunk starts in the data. */
  offset: number
  data: Uint8Array
  /** CRC-32C of `data`: a chunk that fails it is dropped and asked for again. */
  crc: number
}

/**
 * A follower's answer to a snapshot chunk: it holds the first `offset` bytes of the snapshot at
 * `index`. `retry` asks the leader to resend from `offset` (a chunk was lost, out of order, or
 * corrupt). Once the last chunk is in, the follower installs the snapshot and answers with an
 * append acknowledgement instead.
 */
export interface MsgSnapshotResp extends MsgBase {
  t: 'snapResp'
  index: number
  offset: number
  retry?: true
}

/** TimeoutNow: the leader tells the transfer target to start an election at once. */
export interface MsgTimeoutNow extends MsgBase {
  t: 'timeoutNow'
}

/** A follower asks the leader for a read index on behalf of its clients. */
export interface MsgReadIndex extends MsgBase {
  t: 'readIndex'
  /** Request ids of the follower's pending reads. */
  ids: number[]
}

/** The leader's answer to {@link MsgReadIndex}: `index` = 0 means refused (not leader). */
export interface MsgReadIndexResp extends MsgBase {
  t: 'readIndexResp'
  ids: number[]
  index: number
}

/** Any protocol message between Raft cores. */
export type RaftMessage =
  | MsgVote
  | MsgVoteResp
  | MsgAppend
  | MsgAppendResp
  | MsgHeartbeat
  | MsgHeartbeatResp
  | MsgSnapshot
  | MsgSnapshotResp
  | MsgTimeoutNow
  | MsgReadIndex
  | MsgReadIndexResp

/**
 * The transport port: best-effort, unordered delivery of messages between nodes of one Raft
 * group. `send` never throws and never blocks; a message may be dropped (Raft retries).
 * Messages are plain objects encodable by msgpackr.
 */
export interface Transport {
  /** This node's id. */
  readonly self: NodeId
  /** Send `msg` to node `to`. Unknown peers and full queues drop the message. */
  send(to: NodeId, msg: unknown): void
  /** Set the handler for incoming messages (one per transport). */
  onMessage(handler: (from: NodeId, msg: unknown) => void): void
  /** Replace the set of known peers and their addresses. */
  setPeers(peers: Record<NodeId, string>): void
  close(): Promise<void>
  /**
   * Optional: set the handler told when the connection to a peer opens (`true`) or is lost
   * (`false`; messages sent on it may or may not have arrived). One per transport.
   */
  onConnection?(handler: (peer: NodeId, up: boolean) => void): void
  /**
   * Optional: send what was queued now, not at the end of this event-loop turn (a transport that
   * batches a turn's messages into one frame per peer). The Raft node calls it before it applies
   * committed entries, which may take long: followers then learn of the commit without waiting
   * for the leader's apply.
   */
  flush?(): void
}

/** The clock port: time in milliseconds and timers. Replaced by simulated time in tests. */
export interface Clock {
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms)
    t.unref?.()
    return t
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
}

/** Levels of the logger port, in order of importance. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** The logger port: structured, one line per event. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
}

/**
 * A logger writing one JSON line per event to stderr, at `level` and above.
 * @param level - the lowest level written
 * @param base - fields added to every line (for example `{ node: 'n1' }`)
 */
export function consoleLogger(level: LogLevel = 'info', base: Record<string, unknown> = {}): Logger {
  const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }
  const min = order[level]
  const write = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (order[lvl] < min) return
    process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level: lvl, msg, ...base, ...fields }) + '\n')
  }
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  }
}
