/**
 * What the Sworm node process (`sworm-node.ts`) understands: its command-line argument,
 * the requests it answers over IPC, and their results. Imported by the cluster harness, the tests,
 * the benches and the demo (types only: importing it starts nothing).
 * @module
 */
import type { SwormStatus, SwormStatusReport, WorkerRef } from '../../src/index.js'
import type { LoadStats } from './stats.js'

/** The single JSON command-line argument. */
export interface SwormProcessArgs {
  /** Name of the sworm. */
  name: string
  nodeId: string
  /** `ws://127.0.0.1:port` */
  listen: string
  /** Every node of a new cluster (this one included); or give `join`. */
  peers?: Record<string, string>
  /** Address of a member of a running cluster to join. */
  join?: string
  dataDir: string
  secret: string
  nodeDownAfterMs?: number
  requestTimeoutMs?: number
  /** Raft tuning passed to `Sworm.start` (`raft.snapshotEvery`). */
  snapshotEvery?: number
  /** `raft.snapshotChunkBytes` of `Sworm.start`. */
  snapshotChunkBytes?: number
  /** `raft.maxLogEntries` of `Sworm.start`. */
  maxLogEntries?: number
  /** `raft.electionTicks` of `Sworm.start` (the election timeout, in ticks of 50 ms). */
  electionTicks?: number
  /** Log level on stderr (default 'warn'). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error'
  /** `leaseTimeoutMs` of `Sworm.start` (default: the library's, 2,000 ms). */
  leaseTimeoutMs?: number
  /** `startTimeoutMs` of `Sworm.start`: how long a supervised registration waits for its worker (default: the library's). */
  workerStartTimeoutMs?: number
  /** `maxClockDriftMs` of `Sworm.start` (default: the library's, 500 ms). */
  maxClockDriftMs?: number
  /** `voters`, `zone`, `autopilot.stabilizationMs` and `deadNodeTimeoutMs` of `Sworm.start` (default: the library's). */
  voters?: number
  zone?: string
  stabilizationMs?: number
  deadNodeTimeoutMs?: number
  /**
   * Skew this process's clock (the one Sworm and Raft time leases, timeouts and ticks with): it
   * reads `clockOffsetMs` ahead and runs at `clockRate` times real speed (timers fire accordingly).
   * Change the rate later with the `clockRate` request.
   */
  clockRate?: number
  clockOffsetMs?: number
}

/** Requests understood over IPC (each also carries a numeric `id`). */
export type SwormRequest =
  | { op: 'spawnRegister'; name: string; tag: string }
  /** Spawn an echo worker here and register it as `name`; `{ won, ref }` (the worker exits if it lost). */
  | { op: 'registerStatic'; name: string }
  /** Every registration this node holds, as sorted `[name, node, id]` (local read). */
  | { op: 'dump' }
  /**
   * Run `clients` client loops for `ms` (the soak bench): each owns `slots` name slots and mixes
   * register (spawn + registerName), exit (the name goes with the worker), join a group,
   * whereisName (consistent and local) and call (a random client's name, on any node). The slots
   * persist between calls. See {@link SoakResult}.
   */
  | { op: 'soak'; clients: number; ms: number; slots: number; peers: string[] }
  /** Queue and table sizes of this node, see {@link QueueSizes}. */
  | { op: 'queues' }
  /** Change the rate of this process's skewed clock (see {@link SwormProcessArgs.clockRate}). */
  | { op: 'clockRate'; rate: number }
  /** Spawn an echo worker here (nothing registered); its ref. */
  | { op: 'spawnEcho'; tag: string }
  /** `registerName(name, ref)` for a ref spawned anywhere; the boolean it resolved with. */
  | { op: 'registerRef'; name: string; ref: WorkerRef }
  | {
      op: 'registerMany'
      prefix: string
      count: number
      concurrency: number
      /** First index (names are `${prefix}${start + i}`), default 0. */
      start?: number
      /** Stop issuing new registrations after this long (the result says how many ran). */
      maxMs?: number
    }
  | { op: 'whereis'; name: string; consistent?: boolean }
  | { op: 'whereisMany'; names: string[]; consistent?: boolean }
  | { op: 'missing'; names: string[] }
  | { op: 'registeredCount' }
  | { op: 'hasAll'; prefix: string; count: number; start?: number }
  | { op: 'whenHasAll'; prefix: string; count: number; start?: number; timeoutMs?: number }
  | { op: 'unregister'; name: string }
  | { op: 'call'; name: string; msg: unknown }
  | { op: 'join'; group: string; name: string }
  | { op: 'leave'; group: string; name: string }
  | { op: 'members'; group: string }
  | { op: 'exitWorker'; name: string }
  | { op: 'status' }
  | { op: 'cpu' }
  | { op: 'whereisLatency'; prefix: string; count: number; iterations: number; start?: number }
  | { op: 'callLatency'; name: string; iterations: number }
  /** The heap after two forced collections; with `compact`, after the node's log is compacted. */
  | { op: 'memory'; compact?: boolean }
  /** The longest and p99 event-loop delay since the previous call (the first call starts measuring). */
  | { op: 'loopDelay' }
  | { op: 'stop' }
  | {
      op: 'registerSupervisedMany'
      prefix: string
      count: number
      concurrency: number
      /** Module of the factory (absolute path or specifier) and its export; the factory gets `[name]`. */
      module: string
      fn: string
      /** First index (names are `${prefix}${start + i}`), default 0. */
      start?: number
      /**
       * `'placed'`: `registerName(name, spec, { wait: 'placed' })`, then wait until this node's
       * registry shows every worker's start reported (`ms` ends then; `placedMs` when the last
       * registration resolved).
       */
      wait?: 'placed'
    }
  /** `status` plus supervised count, lease and incarnation ({@link SwormProcessFullStatus}). */
  | { op: 'fullStatus' }
  /** `internals(sworm).faults.block(peer, blocked)` for each peer (this node's id is skipped). */
  | { op: 'blockPeers'; peers: string[]; blocked: boolean }
  /** Make this node's link to `peer` lossy, flip bits in the snapshot chunks it sends there, and delay them. */
  | { op: 'degradeLink'; peer: string; loss: number; corruptChunks: number; chunkDelayMs?: number }
  /** This node's snapshot transfers (`RaftNode.snapshotStats`). */
  | { op: 'snapshotStats' }
  /** Refs of `${prefix}${start + i}` (null when unbound), after one read barrier if `consistent`. */
  | { op: 'whereisAll'; prefix: string; count: number; start?: number; consistent?: boolean }
  /** Of the given (name, ref) pairs, the names whose ref is NOT a worker of this node incarnation answering a local `get`. */
  | { op: 'runsRefs'; refs: Array<[string, WorkerRef]> }
  /** Counter workers (tools/cluster/workers.ts) alive in this process whose name starts with `prefix`; `name*k` when k incarnations are. */
  | { op: 'aliveCounters'; prefix: string }
  /** Call every name at once (after one read barrier if `consistent`). */
  | { op: 'callEach'; names: string[]; msg: unknown; timeoutMs?: number; consistent?: boolean }
  /** Start (or restart) watching this node's lease every `everyMs` (default 10): see `leaseLosses`. */
  | { op: 'watchLease'; everyMs?: number }
  /** Times (epoch ms) the lease went from held to lost since `watchLease`, and whether it holds now. */
  | { op: 'leaseLosses' }
  /**
   * Fire `perName` concurrent `whereisOrRegisterName(name, { module, fn, args: [name] })` for every
   * name at once (names x perName calls in flight); see {@link WhereisOrRegisterManyResult}.
   */
  | { op: 'whereisOrRegisterMany'; names: string[]; perName: number; module: string; fn: string }
  /** How many times the counter factory ran in this process, per name starting with `prefix`. */
  | { op: 'factoryRuns'; prefix: string }
  /** Call each given ref directly (not by name) once, all at once; see {@link CallRefsResult}. */
  | { op: 'callRefs'; refs: Array<[string, WorkerRef]>; msg: unknown; timeoutMs?: number }
  /**
   * Call every name (by name, from this node) until each has answered once; names are retried
   * every `everyMs` (default 10) while they fail. Names whose local ref is on a node of `skipNodes`
   * are not called in that round (known dead). With `ride`, every name is called at once and
   * each call waits inside the sworm for the worker to run again (calls by name ride through a
   * move: what an app calling its workers sees), retried when it fails or times out
   * (`callTimeoutMs`); `skipNodes` is then unused. See {@link AwaitAnswersResult}.
   */
  | { op: 'awaitAnswers'; names: string[]; msg: unknown; callTimeoutMs?: number; everyMs?: number; timeoutMs?: number; skipNodes?: string[]; ride?: boolean }
  /** `sworm.drain({ timeoutMs })`; resolves with how long it took. */
  | { op: 'drain'; timeoutMs?: number }
  /** `sworm.undrain()`. */
  | { op: 'undrain' }
  /** `sworm.rebalance()`. */
  | { op: 'rebalance' }
  /**
   * Start calling `names` by name in the background, round robin, `concurrency` calls in flight
   * (default 4), each with `timeoutMs`, until `callLoopStop`; see {@link CallLoopResult}.
   */
  | { op: 'callLoopStart'; names: string[]; msg: unknown; timeoutMs: number; concurrency?: number }
  /** Stop the loop `callLoopStart` began (after the calls in flight end) and say how it went. */
  | { op: 'callLoopStop' }
  /**
   * Push this node's Sworm events to the parent from now on, as `{ events: SwormProcessEvent[] }`
   * messages (batched every `flushMs`, default 100); `events` limits which (default: all), and
   * events about a name starting with one of `skipNamePrefixes` are not pushed.
   */
  | { op: 'subscribe'; events?: string[]; flushMs?: number; skipNamePrefixes?: string[] }
  /** `statusReport()` plus commit latency totals, supervised names running here, and group members; see {@link DashStatus}. */
  | { op: 'dashStatus'; groups?: string[]; namesSince?: number }
  /** `sworm.removeNode(node, { timeoutMs })`. */
  | { op: 'removeNode'; node: string; timeoutMs?: number }
  /**
   * A digest of this node's registry (local read), to compare large registries cheaply; see
   * {@link RegistryDigest}. Names starting with one of `listPrefixes` are listed in full.
   */
  | { op: 'registryDigest'; listPrefixes: string[] }

/** Result of `registerMany`: what it measured (latencies of spawn + registerName). */
export interface RegisterManyResult extends LoadStats {
  /** Registrations that resolved `true`. */
  ok: number
  /** Registrations that resolved `false` (name taken). */
  taken: number
  /** Wall-clock time (epoch ms, sub-ms precision) of the last acknowledgement. */
  lastAckAt: number
}

/** Result of `soak`: operations per kind, with latency percentiles (ms) and errors by code. */
export interface SoakResult {
  ms: number
  kinds: Record<string, { n: number; p50: number; p99: number; max: number }>
  errors: Record<string, number>
}

/** Result of `queues`. */
export interface QueueSizes {
  /** Proposals waiting to be applied, forwarded proposals out, reads out (Raft). */
  raftPending: number
  raftForwardsOut: number
  raftReadsOut: number
  /** Frames queued to peers in the transport, and dropped so far. */
  hubQueued: number
  hubDropped: number
  /** Calls waiting for a reply from another node. */
  callsOut: number
  /** Messages queued in this node's worker mailboxes. */
  mailboxQueued: number
  names: number
  workers: number
}

/** Result of `status`: `Sworm.status()` and the process id. */
export interface SwormProcessStatus extends SwormStatus {
  pid: number
}

/** Result of `registerSupervisedMany`. */
export interface RegisterSupervisedManyResult {
  /** Registrations that resolved with a ref. */
  ok: number
  /** Registrations that failed (any error, AlreadyRegisteredError included). */
  errors: number
  errorSamples: string[]
  ms: number
  /** With `wait: 'placed'`: when the last registration resolved (`ms`: when every start was reported). */
  placedMs?: number
  /** Latency percentiles of registerName(name, spec) (until the worker runs; with `wait: 'placed'`, until placed), ms. */
  p50: number
  p99: number
  /** Where the workers were placed: node id -> count. */
  perNode: Record<string, number>
}

/** Result of `fullStatus`: `status` plus the supervisor's view. */
export interface SwormProcessFullStatus extends SwormProcessStatus {
  incarnation: string
}

/**
 * One event of the node's sworm, as pushed after `subscribe`. Besides the Sworm events, two the
 * fixture reads off the Raft log lines: `snapshotTaken` (`{ index, bytes }`) and `snapshotInstalled`
 * (`{ index }`).
 */
export interface SwormProcessEvent {
  /** The event's name (`registered`, `workerMoved`, `leaderChanged`, `snapshotInstalled`, ...). */
  event: string
  /** Wall-clock time (epoch ms) it fired. */
  at: number
  /** Its payload (plain JSON). */
  data: Record<string, unknown>
}

/** Result of `dashStatus`. */
export interface DashStatus extends SwormStatusReport {
  pid: number
  /** `sworm_raft_commit_latency_seconds` so far on this node: sum (s), count, and cumulative buckets `[le, count]`. */
  commitLatency: { sum: number; count: number; buckets: Array<[number, number]> }
  /** Version of the set of supervised names running here (changes whenever it does). */
  namesVersion: number
  /** Supervised names running on this node, sorted; only when `namesVersion` differs from the request's `namesSince`. */
  runningNames?: string[]
  /** Members of each requested group: their names (and nodes). */
  groups: Record<string, Array<{ name: string; node: string }>>
}

/** Result of `registryDigest`. */
export interface RegistryDigest {
  /** SHA-1 of every registration as `[name, node, id]`, sorted by name. */
  hash: string
  count: number
  /** Registrations per node. */
  perNode: Record<string, number>
  /** The registrations whose name starts with one of the requested prefixes, sorted, as `[name, node, id]`. */
  listed: Array<[string, string, number]>
}

/** Result of `callLoopStop`. */
export interface CallLoopResult {
  ok: number
  /** Failed calls by error code. */
  failed: Record<string, number>
  /** First few failures: name, code, message, and when (epoch ms). */
  samples: string[]
  /** The longest a successful call took, in ms. */
  slowestMs: number
}

/** Result of `callEach`. */
export interface CallEachResult {
  ok: number
  /** Names whose call failed. */
  failed: string[]
  /** First few error messages. */
  errorSamples: string[]
  /** Replies, JSON-encoded, with how many names gave each. */
  values: Record<string, number>
  ms: number
}

/** Result of `whereisOrRegisterMany`. */
export interface WhereisOrRegisterManyResult {
  /** Calls made (names x perName). */
  calls: number
  /** Per name: the distinct refs its callers got, JSON-encoded (one entry when all agree). */
  refs: Record<string, string[]>
  /** Calls that rejected. */
  errors: number
  errorSamples: string[]
  ms: number
}

/** Result of `callRefs`. */
export interface CallRefsResult {
  /** Names whose ref answered (with any value). */
  answered: string[]
  /** Error codes of the calls that failed, with how many calls gave each. */
  codes: Record<string, number>
  ms: number
}

/** Result of `awaitAnswers`. */
export interface AwaitAnswersResult {
  /** Names that answered. */
  answered: number
  /** Names that never answered within `timeoutMs`. */
  missing: string[]
  /** Wall-clock time (epoch ms, sub-ms precision) at which the last name answered. */
  doneAt: number
  /** With `ride`: when (epoch ms) half, and nine tenths, of the names had answered. */
  halfAt?: number
  nineTenthsAt?: number
  /** Rounds of calls made. */
  rounds: number
  ms: number
}

/** Result of `whereisLatency` (per local whereisName call). */
export interface WhereisLatency {
  p50Ns: number
  p99Ns: number
  meanNs: number
  calls: number
}

/** Result of `callLatency`, ms. */
export interface CallLatency {
  p50: number
  p99: number
  mean: number
  calls: number
}
