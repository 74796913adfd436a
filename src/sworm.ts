/**
 * The public API: a sworm is a named registry (and, later, supervisor) of workers, replicated
 * by Raft across the nodes that start it. Every change goes through the log; reads are local.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { join as joinPath } from 'node:path'
import { pack } from 'msgpackr'
import { dataLostMessage, diskIdentity, isProbe, probePeers, type ProbeMsg } from './cluster/bootstrap.js'
import { PeerFaults } from './net/faults.js'
import { acquireHub, releaseHub } from './net/hub-pool.js'
import {
  AlreadyRegisteredError,
  ConfigChangeError,
  InvalidArgumentError,
  NotLeaderError,
  ProposalDroppedError,
  NoNodeError,
  StartError,
  NoWorkerError,
  NodeDataLostError,
  NotFoundError,
  ShuttingDownError,
  SwormError,
  TimeoutError,
  WorkerCrashedError,
} from './raft/errors.js'
import { pinoLogger } from './logging.js'
import { SwormMetrics, type MetricsSnapshot } from './metrics.js'
import { startMetricsServer, type MetricsServer } from './metrics-server.js'
import { LevelStorage } from './raft/level-storage.js'
import { RateLimitedLog, clip } from './raft/rate-limited-log.js'
import { RaftNode } from './raft/node.js'
import { systemClock, type Clock, type Logger, type LogLevel, type NodeId, type RaftStorage, type Transport } from './raft/types.js'
import { secretProblem } from './net/handshake.js'
import type { WsHub } from './net/hub.js'
import { RegistryState, type RegistryChange } from './registry/state.js'
import { defaultPlacement, hashPlacement, type PlacementStrategy } from './registry/placement.js'
import type { RegistryCommand, RegistryResult, StartSpec, SuperviseResult, WorkerRef } from './registry/types.js'
import { LocalWorkers, type ExitReason, type Worker } from './supervisor/local-workers.js'
import { Supervisor, type StartOutcome } from './supervisor/supervisor.js'

/** Options of {@link Sworm.start}. */
export interface SwormOptions {
  /** Name of the sworm. Several sworms can run in one cluster and share a port; each sees only its names. */
  name: string
  /** Stable id of this node. */
  nodeId: string
  /** Where the other nodes reach this one: `ws://host:port` (or `wss://` with `tls`). */
  listen: string
  /**
   * Every node of a new cluster, id to address, this one included. On a fresh `dataDir` this
   * bootstraps the cluster; on an existing one it only gives addresses.
   */
  peers?: Record<string, string>
  /**
   * Instead of `peers`: the address of any member of a running cluster. A node on a fresh
   * `dataDir` asks to be added (as a learner first, then a voter once it has caught up); so does
   * one whose earlier join was cut short. `start` resolves once it is a voter.
   */
  join?: string
  /**
   * Cluster secret shared by every node; peers without it are refused. At least 32 characters
   * with at least 8 distinct ones (128 bits when random: `openssl rand -hex 16`); anything less
   * throws a TypeError. Anyone who records a handshake can try guesses offline, so make it random.
   */
  secret: string
  /** Directory for this node's data (one LevelDB per sworm below it). */
  dataDir: string
  /** TLS material when `listen` is `wss://`. */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer; rejectUnauthorized?: boolean }
  /** Where log lines go. Default: JSON lines on stderr at `logLevel`. */
  logger?: Logger
  /** Default `'info'`. Ignored when `logger` is given. */
  logLevel?: LogLevel
  /**
   * A node runs supervised workers only while its lease holds: it must have exchanged heartbeats
   * with a leader that holds a quorum within this time, or it stops them (fencing). Default 2,000 ms.
   */
  leaseTimeoutMs?: number
  /**
   * The most two nodes' clocks may drift apart over `leaseTimeoutMs`. The leader moves a silent
   * node's workers only after `leaseTimeoutMs + maxClockDriftMs + (electionTicks - 1) * tickMs`. Default 500 ms.
   */
  maxClockDriftMs?: number
  /** Where supervised workers go: `'load'` (default: the least loaded node), `'hash'` (consistent hashing), or your own pure function. */
  placement?: 'load' | 'hash' | PlacementStrategy
  /** Directory that relative `module` specifiers of start specs resolve against. Default `process.cwd()`. */
  moduleBase?: string
  /** How long `registerName(name, spec)` waits for the worker to start. Default 10,000 ms. */
  startTimeoutMs?: number
  /**
   * When this node joins (or comes back), move existing supervised workers to it (with handoff)
   * until the load is even. Default false: only new names go to the new node.
   */
  rebalance?: boolean
  /** Longest name, in UTF-8 bytes. Default 1,024. */
  maxNameBytes?: number
  /** Largest message for `send`/`call`, encoded. Default 1 MiB. */
  maxMessageBytes?: number
  /** Default `call` timeout. Default 5,000 ms. */
  callTimeoutMs?: number
  /** How long a registry operation may take. Default 5,000 ms. */
  requestTimeoutMs?: number
  /** Raft tuning (defaults suit a LAN). */
  raft?: { tickMs?: number; electionTicks?: number; snapshotEvery?: number }
  /**
   * Serve `GET /metrics` (Prometheus) and `GET /status` (JSON) over HTTP on this port (0: a free
   * port; see {@link Sworm.metricsAddress}). Default: no server ({@link Sworm.metrics} still works).
   */
  metricsPort?: number
  /** Interface the metrics server listens on. Default: the host of `listen`. */
  metricsHost?: string
}

/**
 * What a sworm is built from (see {@link Sworm.assemble}).
 * @internal
 */
export interface SwormDeps {
  storage: RaftStorage
  raftTransport: Transport
  msgTransport: Transport
  clock: Clock
  logger: Logger
  /** Incarnation id of this start. */
  inc: string
  random?: () => number
  hub?: WsHub
  discover?: (url: string) => Promise<string>
  loadModule?: (specifier: string) => Promise<Record<string, unknown>>
  /** Release transports and hub after stop. */
  release: () => Promise<void>
  /** Called with the sworm as soon as it exists, before it joins or announces itself (the simulation crashes nodes mid-join). */
  created?: (sworm: Sworm) => void
}

/** Why a worker stopped: its exit kind. */
export type WorkerStopReason = ExitReason['kind']

/**
 * Events of a {@link Sworm}. Registry-level events (names, groups, nodes) fire on every node as it
 * applies the change; worker-level events (`workerStarted`, `workerStopped`, `workerMoved`) and
 * lease events fire on the node concerned. A listener that throws is logged and ignored.
 */
export interface SwormEvents {
  /** A name was bound: a static registration, or a supervised worker (re)started (on any node; seen when this node applies it). */
  registered: [{ name: string; ref: WorkerRef }]
  /** A name was removed (`ref` is undefined for a supervised name that was not running). */
  unregistered: [{ name: string; ref: WorkerRef | undefined }]
  /** A worker joined a group. */
  joined: [{ group: string; ref: WorkerRef }]
  /** A worker left a group. */
  left: [{ group: string; ref: WorkerRef }]
  /** A node started serving this sworm. */
  nodeUp: [{ node: string }]
  /** The leader declared a node gone. */
  nodeDown: [{ node: string }]
  /** A leader was elected (as seen by this node): once per term with a known leader. */
  leaderChanged: [{ leader: string; term: number }]
  /** A supervised worker started on this node. */
  workerStarted: [{ name: string; ref: WorkerRef; node: string }]
  /** A supervised worker of this node stopped. */
  workerStopped: [{ name: string; ref: WorkerRef; reason: WorkerStopReason }]
  /** A supervised worker moved to this node (`to`) from node `from` (handoff, drain, or its node was declared gone). */
  workerMoved: [{ name: string; from: string; to: string }]
  /** This node's lease ran out: its supervised workers (`workers` of them) are stopped (fencing). */
  leaseLost: [{ node: string; workers: number }]
  /** This node's lease holds again after `leaseLost`. */
  leaseRenewed: [{ node: string }]
}

/** What {@link Sworm.status} returns: this node's replica and registry at a glance. */
export interface SwormStatus {
  node: string
  role: string
  term: number
  leader: string | undefined
  commit: number
  applied: number
  names: number
  workers: number
  supervised: number
  lease: boolean
  /**
   * Why this node stopped serving (its disk failed: full, or an fsync error), while that lasts. It
   * retries the disk and catches up from the leader once writes work again.
   */
  storageFailure: string | undefined
  /**
   * Set while this node catches up past log entries its storage dropped as corrupt at start; it
   * neither votes nor campaigns until then.
   */
  recoveringUpTo: number | undefined
}

/** What `GET /status` serves (see {@link Sworm.statusReport}). */
export interface SwormStatusReport extends SwormStatus {
  sworm: string
  incarnation: string
  lastIndex: number
  snapshotIndex: number
  peers: { voters: Record<string, string>; learners: Record<string, string> }
  nodes: Array<{ node: string; up: boolean; draining: boolean }>
  /** Seconds since this sworm started on this node. */
  uptime: number
  metricsAddress: string | undefined
  /** Metrics addresses known for the members (this node's included), node id to `http://host:port`. */
  metricsPeers: Record<string, string>
}

type WireMsg =
  | { t: 'cast'; to: WorkerRef; msg: unknown }
  | { t: 'call'; id: number; to: WorkerRef; msg: unknown }
  | { t: 'reply'; id: number; ok: true; value: unknown }
  | { t: 'reply'; id: number; ok: false; code: string; message: string }
  | { t: 'joinReq'; node: string; url: string; disk?: string }
  /** The cluster will not add the node that asked to join; `code` is DATA_LOST or CONFIG_CHANGE. */
  | { t: 'joinRefused'; node: string; code: string; message: string }
  | ProbeMsg
  /** Ask the leader to take `node` out of the Raft configuration; answered by `removeResp`. */
  | { t: 'removeReq'; id: number; node: string }
  | { t: 'removeResp'; id: number; ok: true }
  | { t: 'removeResp'; id: number; ok: false; code: string; message: string; leader?: string }
  /** Where a node serves its metrics (`reply`: answer with yours). */
  | { t: 'metricsAt'; url: string; reply: boolean }

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k)
/** Whether `node` is a voter or a learner of the Raft configuration `cfg`. */
const isMember = (cfg: { voters: Record<string, string>; learners: Record<string, string> }, node: string): boolean =>
  hasOwn(cfg.voters, node) || hasOwn(cfg.learners, node)

/** The typed error for a failed admin request answered by the leader. */
function adminError(code: string, message: string, leader: string | undefined): SwormError {
  switch (code) {
    case 'NOT_LEADER':
      return new NotLeaderError(leader, message)
    case 'SHUTTING_DOWN':
      return new NotLeaderError(undefined, `the leader is shutting down: ${message}`)
    case 'TIMEOUT':
      return new TimeoutError(message)
    case 'PROPOSAL_DROPPED':
      return new ProposalDroppedError(message)
    case 'CONFIG_CHANGE':
      return new ConfigChangeError(message)
    case 'NOT_FOUND':
      return new NotFoundError(message)
    case 'INVALID_ARGUMENT':
      return new InvalidArgumentError(message)
    default:
      return new SwormError(code, message)
  }
}

function requireString(opts: Record<string, unknown>, key: string): string {
  const v = opts[key]
  if (typeof v !== 'string' || v.length === 0) throw new TypeError(`Sworm.start: option "${key}" must be a non-empty string`)
  return v
}

function optionalPositive(opts: Record<string, unknown>, key: string, def: number): number {
  const v = opts[key]
  if (v === undefined) return def
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new TypeError(`Sworm.start: option "${key}" must be a positive number`)
  return v
}

function validateUrl(key: string, v: string): void {
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw new TypeError(`Sworm.start: option "${key}" must be a ws:// or wss:// URL, got ${JSON.stringify(v)}`)
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError(`Sworm.start: option "${key}" must be a ws:// or wss:// URL, got ${JSON.stringify(v)}`)
  if (!u.port) throw new TypeError(`Sworm.start: option "${key}" must include a port`)
}

/**
 * A sworm running on this node. Start one with {@link Sworm.start} on every node of the cluster.
 *
 * @example
 * ```ts
 * const sworm = await Sworm.start({ name: 'users', nodeId: 'n1', listen: 'ws://127.0.0.1:4001',
 *   peers: { n1: 'ws://127.0.0.1:4001', n2: 'ws://127.0.0.1:4002', n3: 'ws://127.0.0.1:4003' },
 *   dataDir: '/var/lib/app/sworm/n1', secret: process.env.SWORM_SECRET! })
 * const ref = sworm.spawn({ handleCall: (msg) => ({ echo: msg }) })
 * await sworm.registerName('user:42', ref)          // true, or false if the name is taken
 * await sworm.call('user:42', 'hi')                  // { echo: 'hi' }, from any node
 * ```
 */
export class Sworm extends EventEmitter<SwormEvents> {
  /** Name of this sworm. */
  readonly name: string
  /** Id of this node. */
  readonly nodeId: string
  /** Incarnation of this node: changes on every start. */
  readonly incarnation: string

  private readonly raft: RaftNode<RegistryCommand, RegistryResult>
  private readonly state: RegistryState
  private readonly hub: WsHub | undefined
  private readonly msgs: Transport
  private readonly log: Logger
  /** Warnings about what peers send, at most one per peer and reason a second. */
  private readonly peerLog: RateLimitedLog
  private readonly workers: LocalWorkers
  private readonly maxNameBytes: number
  private readonly maxMessageBytes: number
  private readonly callTimeoutMs: number
  private readonly nodeDownAfterMs: number
  private readonly requestTimeoutMs: number
  private readonly leaseTimeoutMs: number
  private readonly startTimeoutMs: number
  private readonly rebalanceOnJoin: boolean
  private readonly supervisor: Supervisor
  private supervisorTimer: unknown
  /** Fires when the lease as last seen runs out, so fencing is not late by up to a supervisor tick. */
  private fenceTimer: unknown
  private readonly clock: Clock
  private readonly release: () => Promise<void>
  private stopped = false
  private upPromise: Promise<void> | undefined
  private upResolved = false
  /** Calls waiting for a reply from `node`. */
  private readonly calls = new Map<number, { node: string; resolve: (v: unknown) => void; reject: (e: Error) => void; timer: unknown }>()
  private callSeq = 0
  private detectorTimer: unknown
  private leaderSince = 0
  private readonly pendingDown = new Set<string>()
  /** On the leader: nodes with a registry record that are out of the Raft configuration, since when (this clock). */
  private readonly outOfConfigSince = new Map<string, number>()
  /** The configuration `outOfConfigSince` was measured against. */
  private outOfConfigKey: string | undefined
  private readonly joining = new Set<string>()
  private readonly disk: string | undefined
  /** This incarnation's client session: the last sequence number used, and those in flight. */
  private sessionSeq = 0
  private readonly sessionInFlight = new Set<number>()
  /** Set when the cluster refused this node's join request. */
  private joinRefusal: SwormError | undefined
  private readonly metricsObj: SwormMetrics
  private metricsServer: MetricsServer | undefined
  private readonly startedAt = Date.now()
  /** Metrics addresses other nodes told us. */
  private readonly metricsPeers = new Map<string, string>()
  /** Supervised names placed on this node by a move, until they start: name -> previous node. */
  private readonly movedFrom = new Map<string, string>()
  private lastLeaderTerm = 0
  private lastLeader: string | undefined
  private lastRole = 'follower'
  private lastTerm = 0

  private constructor(init: {
    name: string
    nodeId: string
    inc: string
    raft: RaftNode<RegistryCommand, RegistryResult>
    state: RegistryState
    hub: WsHub | undefined
    msgs: Transport
    log: Logger
    workers: LocalWorkers
    opts: SwormOptions
    clock: Clock
    release: () => Promise<void>
    /** This node's data directory identity (see cluster/bootstrap.ts), if its storage keeps one. */
    disk?: string
    loadModule?: (specifier: string) => Promise<Record<string, unknown>>
    metrics: SwormMetrics
  }) {
    super()
    this.disk = init.disk
    this.metricsObj = init.metrics
    this.clock = init.clock
    this.release = init.release
    this.name = init.name
    this.nodeId = init.nodeId
    this.incarnation = init.inc
    this.raft = init.raft
    this.state = init.state
    this.hub = init.hub
    this.msgs = init.msgs
    this.log = init.log
    this.peerLog = new RateLimitedLog(init.log, () => init.clock.now())
    this.workers = init.workers
    this.maxNameBytes = init.opts.maxNameBytes ?? 1024
    this.maxMessageBytes = init.opts.maxMessageBytes ?? 1024 * 1024
    this.callTimeoutMs = init.opts.callTimeoutMs ?? 5000
    this.leaseTimeoutMs = init.opts.leaseTimeoutMs ?? 2000
    // A leader renews leases for at most (electionTicks - 1) ticks after the heartbeat round its
    // lease rests on, and any later leader was elected after that round was sent; so a new leader
    // waits that long too, on top of the lease and the drift (whatever voters' stickiness did).
    const raftTimes = init.opts.raft ?? {}
    this.nodeDownAfterMs = this.leaseTimeoutMs + (init.opts.maxClockDriftMs ?? 500) + ((raftTimes.electionTicks ?? 6) - 1) * (raftTimes.tickMs ?? 50)
    this.requestTimeoutMs = init.opts.requestTimeoutMs ?? 5000
    this.startTimeoutMs = init.opts.startTimeoutMs ?? 10_000
    this.rebalanceOnJoin = init.opts.rebalance === true
    this.supervisor = new Supervisor({
      sworm: this.name,
      nodeId: this.nodeId,
      inc: this.incarnation,
      state: this.state,
      workers: this.workers,
      log: this.log,
      moduleBase: init.opts.moduleBase ?? process.cwd(),
      propose: (cmd) => this.raft.propose(cmd),
      read: () => this.raft.read(),
      leaseOk: () => this.leaseOk(),
      leaseLapses: () => this.raft.leaseLapses(),
      leaseTimeoutMs: this.leaseTimeoutMs,
      stopped: () => this.stopped,
      clock: this.clock,
      ...(init.loadModule ? { loadModule: init.loadModule } : {}),
      events: {
        workerStopped: (name, ref, reason) => {
          if (reason === 'lease') this.metricsObj.fencedWorkers.inc()
          this.fire('workerStopped', { name, ref, reason })
        },
        restarting: () => this.metricsObj.restarts.inc(),
        handedOff: () => this.metricsObj.handoffs.inc(),
        leaseLost: (workers) => {
          this.metricsObj.leaseExpiries.inc()
          this.fire('leaseLost', { node: this.nodeId, workers })
        },
        leaseRenewed: () => this.fire('leaseRenewed', { node: this.nodeId }),
      },
    })
  }

  /**
   * Start this node's part of the sworm: open its data, connect to its peers, and announce the
   * node. Resolves once the node is running, without waiting for a quorum (start the nodes in any
   * order); operations wait for the cluster as needed.
   * @throws TypeError naming the option when an option is invalid
   */
  static async start(options: SwormOptions): Promise<Sworm> {
    if (!isObj(options)) throw new TypeError('Sworm.start: options must be an object')
    const o = options as unknown as Record<string, unknown>
    const name = requireString(o, 'name')
    const nodeId = requireString(o, 'nodeId')
    const listen = requireString(o, 'listen')
    const dataDir = requireString(o, 'dataDir')
    const secret = o.secret
    const secretBad = secretProblem(secret)
    if (secretBad !== undefined || typeof secret !== 'string') throw new TypeError(`Sworm.start: option "secret" ${secretBad}`)
    validateUrl('listen', listen)
    if (o.peers !== undefined) {
      if (!isObj(o.peers)) throw new TypeError('Sworm.start: option "peers" must be an object mapping node ids to ws:// URLs')
      for (const [id, url] of Object.entries(o.peers)) {
        if (typeof url !== 'string') throw new TypeError(`Sworm.start: option "peers" entry ${id} must be a URL string`)
        validateUrl(`peers.${id}`, url)
      }
      if (!Object.prototype.hasOwnProperty.call(o.peers, nodeId)) throw new TypeError(`Sworm.start: option "peers" must include this node (${nodeId})`)
    }
    if (o.join !== undefined) {
      if (typeof o.join !== 'string') throw new TypeError('Sworm.start: option "join" must be a ws:// URL string')
      validateUrl('join', o.join)
      if (o.peers !== undefined) throw new TypeError('Sworm.start: give either option "peers" or option "join", not both')
    }
    for (const k of ['leaseTimeoutMs', 'maxClockDriftMs', 'startTimeoutMs', 'maxNameBytes', 'maxMessageBytes', 'callTimeoutMs', 'requestTimeoutMs']) optionalPositive(o, k, 1)
    if (o.logger !== undefined && !isObj(o.logger)) throw new TypeError('Sworm.start: option "logger" must be a logger object')
    if (o.raft !== undefined && !isObj(o.raft)) throw new TypeError('Sworm.start: option "raft" must be an object')
    const raftOpts = (o.raft ?? {}) as Record<string, unknown>
    for (const k of ['tickMs', 'electionTicks', 'snapshotEvery']) optionalPositive(raftOpts, k, 1)

    if (o.placement !== undefined && o.placement !== 'load' && o.placement !== 'hash' && typeof o.placement !== 'function') {
      throw new TypeError('Sworm.start: option "placement" must be \'load\', \'hash\' or a function')
    }
    if (o.metricsPort !== undefined && (typeof o.metricsPort !== 'number' || !Number.isInteger(o.metricsPort) || o.metricsPort < 0 || o.metricsPort > 65535)) {
      throw new TypeError('Sworm.start: option "metricsPort" must be an integer port number (0: a free port)')
    }
    if (o.metricsHost !== undefined && (typeof o.metricsHost !== 'string' || o.metricsHost.length === 0)) {
      throw new TypeError('Sworm.start: option "metricsHost" must be a non-empty string')
    }
    if (o.logLevel !== undefined && !['debug', 'info', 'warn', 'error'].includes(o.logLevel as string)) {
      throw new TypeError('Sworm.start: option "logLevel" must be \'debug\', \'info\', \'warn\' or \'error\'')
    }
    const log = options.logger ?? pinoLogger(options.logLevel ?? 'info', { sworm: name, node: nodeId })
    const hub = await acquireHub({ nodeId, listen, secret, logger: log, ...(options.tls ? { tls: options.tls } : {}) })
    let raftChannel: Transport | undefined
    let msgs: Transport | undefined
    let sworm: Sworm | undefined
    const faults = new PeerFaults()
    try {
      raftChannel = faults.wrap(hub.channel(`raft:${name}`))
      msgs = faults.wrap(hub.channel(`msg:${name}`))
      const storage = await LevelStorage.open(joinPath(dataDir, encodeURIComponent(name)), { logger: log })
      const rc = raftChannel
      const mc = msgs
      sworm = await Sworm.assemble(options, {
        storage,
        raftTransport: rc,
        msgTransport: mc,
        clock: systemClock,
        logger: log,
        inc: randomBytes(6).toString('hex'),
        hub,
        discover: (url) => hub.discover(url),
        release: async () => {
          await mc.close()
          await rc.close()
          await releaseHub(hub)
        },
      })
      sworm.faults = faults
      if (options.metricsPort !== undefined) {
        const host = options.metricsHost ?? new URL(listen).hostname.replace(/^\[(.*)\]$/, '$1')
        try {
          await sworm.serveMetrics(host, options.metricsPort)
        } catch (err) {
          await sworm.stop().catch(() => {})
          throw err
        }
      }
      return sworm
    } catch (err) {
      await raftChannel?.close().catch(() => {})
      await msgs?.close().catch(() => {})
      await releaseHub(hub)
      throw err
    }
  }

  /**
   * Build a sworm from its parts (validated options, storage, transports, clock). `start` uses it
   * with LevelDB and WebSockets; the simulation uses it with in-memory storage, a simulated
   * network and simulated time.
   * @internal
   */
  static async assemble(options: SwormOptions, deps: SwormDeps): Promise<Sworm> {
    const { name, nodeId } = options
    const o = options as unknown as Record<string, unknown>
    const placement = o.placement === 'hash' ? hashPlacement : typeof o.placement === 'function' ? (o.placement as PlacementStrategy) : defaultPlacement
    let sworm: Sworm | undefined
    const metrics = new SwormMetrics({ sworm: name, node: nodeId }, () => sworm!.metricsSnapshot())
    const latency = metrics.commitLatency
    const state = new RegistryState((ch) => sworm?.onRegistryChange(ch), placement)
    const workers = new LocalWorkers((id, reason) => sworm?.onWorkerExit(id, reason))
    const disk = await diskIdentity(deps.storage, deps.random ?? (() => randomBytes(4).readUInt32BE() / 2 ** 32))
    let caughtUpFromPeers = false
    const peers = options.peers
    const raft = await RaftNode.start<RegistryCommand, RegistryResult>({
      ...(disk !== undefined ? { disk, voteUnlisted: options.join === undefined } : {}),
      leaseTimeoutMs: options.leaseTimeoutMs ?? 2000,
      ...(peers && disk !== undefined
        ? {
            resolveBootstrap: async () => {
              const out = await probePeers({ nodeId, peers, disk, transport: deps.msgTransport, clock: deps.clock, logger: deps.logger })
              caughtUpFromPeers = out.bootstrap === undefined
              return out.bootstrap
            },
          }
        : {}),
      id: nodeId,
      storage: deps.storage,
      transport: deps.raftTransport,
      stateMachine: state,
      clock: deps.clock,
      ...(deps.random ? { random: deps.random } : {}),
      ...(options.peers ? { bootstrap: { voters: { ...options.peers }, learners: {} }, seeds: { ...options.peers } } : {}),
      logger: deps.logger,
      requestTimeoutMs: options.requestTimeoutMs ?? 5000,
      // the drift bound the leases assume, as a rate (the leader's lease must end before any voter's election timeout)
      clockDrift: (options.maxClockDriftMs ?? 500) / (options.leaseTimeoutMs ?? 2000),
      ...(options.raft?.tickMs ? { tickMs: options.raft.tickMs } : {}),
      ...(options.raft?.electionTicks ? { electionTicks: options.raft.electionTicks } : {}),
      ...(options.raft?.snapshotEvery ? { snapshotEvery: options.raft.snapshotEvery } : {}),
      observeCommitMs: (ms) => latency.observe(ms / 1000),
    })
    try {
      const st = raft.status()
      const bound = st.config.disks?.[nodeId]
      if (disk !== undefined && bound !== undefined && bound !== disk) {
        // the configuration knows this node with another data directory: this one is not it
        deps.logger.error('refusing to start: this node lost its data', { node: nodeId })
        throw new NodeDataLostError(nodeId, dataLostMessage(nodeId, 'its own log says so'))
      }
      const fresh = st.lastIndex === 0 && Object.keys(st.config.voters).length === 0 && !caughtUpFromPeers
      let joinVia: string | undefined
      // A node started with `join` that its log does not list as a voter (fresh, or its join was
      // cut short after it became a learner) asks to be added.
      if (fresh || (options.join !== undefined && !hasOwn(st.config.voters, nodeId))) {
        if (!options.join || !deps.discover) throw new TypeError('Sworm.start: a new node needs option "peers" (a new cluster) or "join" (an existing one)')
        joinVia = await deps.discover(options.join)
        deps.msgTransport.setPeers({ [joinVia]: options.join })
      } else {
        deps.msgTransport.setPeers(options.peers ?? {})
      }
      sworm = new Sworm({
        name,
        nodeId,
        inc: deps.inc,
        raft,
        state,
        hub: deps.hub,
        msgs: deps.msgTransport,
        log: deps.logger,
        workers,
        opts: options,
        clock: deps.clock,
        release: deps.release,
        ...(disk !== undefined ? { disk } : {}),
        ...(deps.loadModule ? { loadModule: deps.loadModule } : {}),
        metrics,
      })
      deps.created?.(sworm)
      sworm.wire()
      if (joinVia !== undefined) await sworm.askToJoin(joinVia, options.listen)
      return sworm
    } catch (err) {
      await raft.stop({ transfer: false }).catch(() => {})
      throw err
    }
  }

  private wire(): void {
    this.msgs.onMessage((from, m) => this.onWire(from, m))
    this.raft.on('role', (s) => {
      if (s.role === 'leader') {
        this.leaderSince = this.clock.now()
        this.outOfConfigSince.clear()
        this.outOfConfigKey = undefined
      }
      if (s.role === 'candidate' && (this.lastRole !== 'candidate' || s.term !== this.lastTerm)) this.metricsObj.electionsStarted.inc()
      this.lastRole = s.role
      this.lastTerm = s.term
      if (s.leader !== undefined && (s.leader !== this.lastLeader || s.term !== this.lastLeaderTerm)) {
        this.lastLeader = s.leader
        this.lastLeaderTerm = s.term
        this.metricsObj.leaderChanges.inc()
        this.fire('leaderChanged', { leader: s.leader, term: s.term })
      }
    })
    this.upPromise = this.announce()
    this.upPromise.catch(() => {})
    this.every(100, (h) => (this.detectorTimer = h), () => {
      this.comeBackIfDeclaredGone()
      this.detectDownNodes()
    })
    this.every(Math.max(50, Math.min(250, this.leaseTimeoutMs / 8)), (h) => (this.supervisorTimer = h), () => {
      this.superviseTick()
      this.armFence()
    })
  }

  private superviseTick(): void {
    void this.supervisor.tick().catch((err: unknown) => this.log.error('supervisor tick failed', { err: String(err) }))
  }

  /**
   * Stop supervised workers the moment the lease runs out, not at the next supervisor tick: the
   * leader moves them after `leaseTimeoutMs + maxClockDriftMs` of its own clock, which leaves no
   * room for a late fence when the clocks' rates differ by all the drift allows.
   */
  private armFence(): void {
    this.clock.clearTimeout(this.fenceTimer)
    const at = this.raft.leaseRenewedAt()
    if (at === undefined || this.stopped || this.supervisor.size === 0) return
    const left = at + this.leaseTimeoutMs - this.clock.now()
    if (left <= 0) return // over already: the supervisor's tick fenced
    this.fenceTimer = this.clock.setTimeout(() => {
      // Not renewed since: the lease is over. (A timer may fire a hair early by this clock, when
      // leaseOk() would still say yes for that long: fence anyway.)
      if (this.raft.leaseRenewedAt() === at) void this.supervisor.fenceForLease()
      else this.armFence()
    }, left)
  }

  /** Run `fn` every `ms` on this sworm's clock until it stops. */
  private every(ms: number, keep: (h: unknown) => void, fn: () => void): void {
    const loop = (): void => {
      if (this.stopped) return
      try {
        fn()
      } catch (err) {
        this.log.error('periodic task failed', { err: String(err) })
      }
      keep(this.clock.setTimeout(loop, ms))
    }
    keep(this.clock.setTimeout(loop, ms))
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.clock.setTimeout(r, ms))
  }

  /**
   * Ask the cluster (through `via`) to add this node, until the configuration that lists it as a
   * voter is committed (applied here: an appended one may still be replaced by another leader's).
   */
  private async askToJoin(via: string, url: string): Promise<void> {
    const deadline = this.clock.now() + 60_000
    while (!hasOwn(this.raft.status().appliedConfig.voters, this.nodeId)) {
      if (this.stopped) throw new ShuttingDownError('the sworm is stopped')
      if (this.clock.now() > deadline) throw new TimeoutError('the cluster did not add this node within 60 s (no quorum, or this id was removed: a removed node joins again under a new id)')
      if (this.joinRefusal) throw this.joinRefusal
      const target = this.raft.leader ?? via
      this.msgs.send(target, { t: 'joinReq', node: this.nodeId, url, ...(this.disk !== undefined ? { disk: this.disk } : {}) } satisfies WireMsg)
      await this.sleep(500)
      if (this.joinRefusal) throw this.joinRefusal
    }
    this.log.info('joined the cluster')
  }

  /**
   * A node asks to be added: the leader adds it; others pass the request on. Any node refuses, to
   * the asker, an id the cluster removed, and a member id asking from another data directory (it
   * lost its data: see cluster/bootstrap.ts).
   */
  private onJoinRequest(from: string, node: string, url: string, disk: string | undefined): void {
    const cfg = this.raft.status().config
    const refuse = (code: string, message: string): void => {
      this.peerLog.warn(`join:${node}`, 'refused a join', { peer: clip(node), reason: message })
      this.msgs.send(from, { t: 'joinRefused', node, code, message } satisfies WireMsg)
    }
    if (isMember(cfg, node) && disk !== cfg.disks?.[node]) {
      refuse('DATA_LOST', dataLostMessage(node, `${this.nodeId} refused its join`))
      return
    }
    if (!isMember(cfg, node) && this.state.nodeRecord(node) !== undefined) {
      // Raft counts on no voter ever forgetting its votes and log; a stale member may still hold a
      // configuration with this id as a voter, so a removed id comes back only as a new id.
      refuse('CONFIG_CHANGE', `node id ${node} was removed from the cluster and cannot join again: start the machine under a new node id, on an empty data directory`)
      return
    }
    if (!this.raft.isLeader) {
      const leader = this.raft.leader
      if (leader !== undefined && leader !== this.nodeId) this.msgs.send(leader, { t: 'joinReq', node, url, ...(disk !== undefined ? { disk } : {}) } satisfies WireMsg)
      return
    }
    if (this.joining.has(node)) return
    this.joining.add(node)
    this.raft
      .addNode(node, url, disk !== undefined ? { disk } : {})
      .then(
        () => this.log.info('node added to the cluster', { peer: node, url }),
        (err: unknown) => this.peerLog.warn('addNode', 'could not add node', { peer: clip(node), err: String(err) }),
      )
      .finally(() => this.joining.delete(node))
  }

  /** Propose `nodeUp` for this incarnation until it is applied (retrying while there is no quorum). */
  private async announce(): Promise<void> {
    for (;;) {
      if (this.stopped) throw new ShuttingDownError('the sworm is stopped')
      // a node the configuration does not list yet (joining), or lists with another data directory
      // (it lost its data and is about to be refused), is not up in the registry
      const applied = this.raft.status().appliedConfig
      const bound = applied.disks?.[this.nodeId]
      if (!isMember(applied, this.nodeId) || (bound !== undefined && this.disk !== undefined && bound !== this.disk)) {
        await this.sleep(100)
        continue
      }
      try {
        await this.raft.propose({ c: 'nodeUp', node: this.nodeId, inc: this.incarnation })
        this.upResolved = true
        this.log.info('node up in sworm', { incarnation: this.incarnation })
        if (this.rebalanceOnJoin) void this.rebalance().catch((err: unknown) => this.log.warn('rebalance failed', { err: String(err) }))
        return
      } catch (err) {
        if (err instanceof ShuttingDownError) throw err
        await this.sleep(100)
      }
    }
  }

  /**
   * Wait until this node is up in the registry, at most `requestTimeoutMs`: an operation never
   * hangs because there is no leader.
   */
  private async ready(): Promise<void> {
    if (this.stopped) throw new ShuttingDownError('the sworm is stopped')
    if (this.upResolved) return
    let timer: unknown
    const timeout = new Promise<never>((_, reject) => {
      timer = this.clock.setTimeout(() => {
        const leader = this.raft.leader
        reject(
          leader === undefined
            ? new NotLeaderError(undefined, `no leader seen within requestTimeoutMs (${this.requestTimeoutMs} ms): check that a majority of the peers are up and reachable, and that every node uses the same secret`)
            : new TimeoutError(`this node is not up in the cluster yet after requestTimeoutMs (${this.requestTimeoutMs} ms); the leader is ${leader}`),
        )
      }, this.requestTimeoutMs)
    })
    try {
      await Promise.race([this.upPromise, timeout])
    } finally {
      this.clock.clearTimeout(timer)
    }
  }

  // ------------------------------------------------------------------ input checks

  private checkName(name: unknown, what = 'name'): string {
    if (typeof name !== 'string') throw new InvalidArgumentError(`${what} must be a string, got ${typeof name}`)
    // a UTF-16 code unit takes at most 3 bytes in UTF-8: short names need no count
    if (name.length * 3 > this.maxNameBytes && Buffer.byteLength(name) > this.maxNameBytes) {
      throw new InvalidArgumentError(`${what} is longer than ${this.maxNameBytes} bytes`)
    }
    return name
  }

  private checkRef(ref: unknown): WorkerRef {
    if (
      !isObj(ref) ||
      typeof ref.node !== 'string' ||
      ref.node.length === 0 ||
      typeof ref.inc !== 'string' ||
      ref.inc.length === 0 ||
      typeof ref.id !== 'number' ||
      !Number.isSafeInteger(ref.id) ||
      ref.id < 1 ||
      typeof ref.sworm !== 'string'
    ) {
      throw new InvalidArgumentError('not a WorkerRef')
    }
    if (ref.sworm !== this.name) throw new InvalidArgumentError(`the ref belongs to sworm ${JSON.stringify(ref.sworm)}, not ${JSON.stringify(this.name)}`)
    return { sworm: ref.sworm, node: ref.node, inc: ref.inc, id: ref.id }
  }

  private checkMessage(msg: unknown): void {
    let size: number
    try {
      size = pack(msg).length
    } catch (err) {
      throw new InvalidArgumentError(`the message cannot be encoded: ${String(err)}`)
    }
    if (size > this.maxMessageBytes) throw new InvalidArgumentError(`the message is ${size} bytes, more than ${this.maxMessageBytes}`)
  }

  /** A string name or a ref, checked; for `send` and `call`. */
  private checkTarget(target: unknown): string | WorkerRef {
    return typeof target === 'string' ? this.checkName(target) : this.checkRef(target)
  }

  private guard(): void {
    if (this.stopped) throw new ShuttingDownError('the sworm is stopped')
  }

  // ------------------------------------------------------------------ registry API

  /**
   * Host `worker` on this node and return its ref. Its messages are handled one at a time, in
   * order; a handler that throws or rejects ends it (and its names are removed everywhere).
   */
  spawn(worker: Worker): WorkerRef {
    this.guard()
    if (!isObj(worker)) throw new InvalidArgumentError('a worker must be an object with optional handleCall/handleCast/terminate methods')
    for (const k of ['handleCall', 'handleCast', 'terminate', 'beginHandoff', 'endHandoff']) {
      const f = (worker as Record<string, unknown>)[k]
      if (f !== undefined && typeof f !== 'function') throw new InvalidArgumentError(`worker.${k} must be a function`)
    }
    const id = this.workers.add(worker)
    return { sworm: this.name, node: this.nodeId, inc: this.incarnation, id }
  }

  /**
   * Stop a worker of this node (its `terminate` runs) and remove its names and group memberships
   * everywhere.
   * @throws InvalidArgumentError (not a ref of this node), NoWorkerError (no such worker runs here)
   */
  async exit(ref: WorkerRef): Promise<void> {
    this.guard()
    const r = this.checkRef(ref)
    if (r.node !== this.nodeId || r.inc !== this.incarnation) throw new InvalidArgumentError('exit() takes a worker of this node')
    if (!this.workers.has(r.id)) throw new NoWorkerError('no such worker on this node (it has ended, or never was)')
    await this.workers.stop(r.id, 'normal')
  }

  /**
   * Bind `name` to `ref` (a worker spawned by the app) in the whole cluster. Resolves `true`, or
   * `false` when the name is taken (or the ref's node is gone). Linearizable; the name is visible
   * to local reads on this node as soon as the promise resolves. Registering a supervised
   * worker's ref under another name adds an alias that follows the worker.
   */
  registerName(name: string, ref: WorkerRef): Promise<boolean>
  /**
   * Register a supervised worker: the registry places it on a node, which starts it with
   * `(await import(spec.module))[spec.fn](...spec.args)`, restarts it per `spec.restart`, and
   * moves it when the node is gone. Resolves with the ref once it runs.
   * @throws AlreadyRegisteredError (with the existing ref), StartError (the cause attached), NoNodeError
   */
  registerName(name: string, spec: StartSpec): Promise<WorkerRef>
  registerName(name: string, target: WorkerRef | StartSpec): Promise<boolean | WorkerRef> {
    if (isObj(target) && "module" in target) return this.registerSupervised(name, target as StartSpec, false)
    return this.registerStatic(name, target as WorkerRef)
  }

  /**
   * The ref of the worker registered as `name`; if there is none, register a supervised worker
   * from `spec` and return its ref. Called from many nodes at once, the factory runs once and
   * every caller gets the same ref.
   */
  whereisOrRegisterName(name: string, spec: StartSpec): Promise<WorkerRef> {
    return this.registerSupervised(name, spec, true)
  }

  private checkSpec(spec: unknown): StartSpec {
    if (!isObj(spec)) throw new InvalidArgumentError('a start spec must be an object { module, fn, args }')
    if (typeof spec.module !== 'string' || spec.module.length === 0) throw new InvalidArgumentError('spec.module must be a non-empty string')
    if (typeof spec.fn !== 'string' || spec.fn.length === 0) throw new InvalidArgumentError('spec.fn must be a non-empty string')
    const args = spec.args ?? []
    if (!Array.isArray(args)) throw new InvalidArgumentError('spec.args must be an array')
    const restart = spec.restart ?? 'transient'
    if (restart !== 'transient' && restart !== 'permanent' && restart !== 'temporary') {
      throw new InvalidArgumentError("spec.restart must be 'transient', 'permanent' or 'temporary'")
    }
    for (const k of ['maxRestarts', 'maxSeconds'] as const) {
      const v = spec[k]
      if (v !== undefined && (typeof v !== 'number' || !(v >= 0))) throw new InvalidArgumentError(`spec.${k} must be a non-negative number`)
    }
    const out: StartSpec = { module: spec.module, fn: spec.fn, args, restart }
    if (typeof spec.maxRestarts === 'number') out.maxRestarts = spec.maxRestarts
    if (typeof spec.maxSeconds === 'number') out.maxSeconds = spec.maxSeconds
    let size: number
    try {
      size = pack(out).length
    } catch (err) {
      throw new InvalidArgumentError(`spec.args cannot be encoded: ${String(err)}`)
    }
    if (size > this.maxMessageBytes) throw new InvalidArgumentError(`the start spec is ${size} bytes, more than ${this.maxMessageBytes}`)
    return out
  }

  private async registerSupervised(name: string, spec: StartSpec, orExisting: boolean): Promise<WorkerRef> {
    this.guard()
    const n = this.checkName(name)
    const sp = this.checkSpec(spec)
    if (orExisting) {
      const ref = this.state.whereis(n)
      if (ref) return ref
    }
    await this.ready()
    const res = (await this.proposeRetrying({ c: 'supervise', name: n, spec: sp })) as SuperviseResult
    if (!res.placed) {
      if (!res.exists) throw new NoNodeError()
      if (!orExisting) throw new AlreadyRegisteredError(n, res.ref)
      if (res.ref) return res.ref
    }
    let timer: unknown
    const outcome = await Promise.race([
      this.supervisor.waitForStart(n),
      new Promise<StartOutcome>((resolve) => {
        timer = this.clock.setTimeout(() => resolve({ ok: false, error: `the worker did not start within ${this.startTimeoutMs} ms` }), this.startTimeoutMs)
      }),
    ])
    this.clock.clearTimeout(timer)
    if (outcome.ok) return outcome.ref
    throw new StartError(`could not start ${JSON.stringify(n)}: ${outcome.error}`, { cause: new Error(outcome.error) })
  }

  private async registerStatic(name: string, ref: WorkerRef): Promise<boolean> {
    this.guard()
    const n = this.checkName(name)
    const r = this.checkRef(ref)
    if (r.node === this.nodeId && r.inc === this.incarnation && !this.workers.has(r.id)) throw new NoWorkerError('the worker has ended')
    await this.ready()
    const res = await this.proposeRetrying({ c: 'register', name: n, ref: r })
    if (res === 'node-down') throw new NoWorkerError(`the worker's node (${r.node}) is not up in the cluster: declared gone, or restarted since`)
    return res === true
  }

  /** Remove `name` everywhere. Resolves `false` when the name was not registered. */
  async unregisterName(name: string): Promise<boolean> {
    this.guard()
    const n = this.checkName(name)
    await this.ready()
    return (await this.proposeRetrying({ c: 'unregister', name: n })) === true
  }

  /**
   * The ref bound to `name`, read from this node's copy (no round trip; may lag the leader by the
   * replication delay). With `{ consistent: true }`, a linearizable read: a Promise that sees every
   * registration acknowledged before the call.
   * @throws InvalidArgumentError (not a string, too long), ShuttingDownError (after `stop()`)
   */
  whereisName(name: string): WorkerRef | undefined
  whereisName(name: string, opts: { consistent: true }): Promise<WorkerRef | undefined>
  whereisName(name: string, opts?: { consistent?: boolean }): WorkerRef | undefined | Promise<WorkerRef | undefined>
  whereisName(name: string, opts?: { consistent?: boolean }): WorkerRef | undefined | Promise<WorkerRef | undefined> {
    if (opts?.consistent) {
      return (async () => {
        this.guard()
        const n = this.checkName(name)
        await this.raft.read()
        return this.state.whereis(n)
      })()
    }
    this.guard()
    return this.state.whereis(this.checkName(name))
  }

  /** Every name of the sworm with its ref (local read). @throws ShuttingDownError after `stop()` */
  registered(): Array<[string, WorkerRef]> {
    this.guard()
    return this.state.registered()
  }

  /**
   * Add `ref` to `group`.
   * @throws NotFoundError when `ref` holds no name in this sworm
   */
  async join(group: string, ref: WorkerRef): Promise<void> {
    this.guard()
    const g = this.checkName(group, 'group')
    const r = this.checkRef(ref)
    await this.ready()
    const res = await this.proposeRetrying({ c: 'join', group: g, ref: r })
    if (res === 'not-found') throw new NotFoundError('the ref is not registered in this sworm')
  }

  /**
   * Remove `ref` from `group`.
   * @throws NotFoundError when `ref` holds no name in this sworm
   */
  async leave(group: string, ref: WorkerRef): Promise<void> {
    this.guard()
    const g = this.checkName(group, 'group')
    const r = this.checkRef(ref)
    await this.ready()
    const res = await this.proposeRetrying({ c: 'leave', group: g, ref: r })
    if (res === 'not-found') throw new NotFoundError('the ref is not registered in this sworm')
  }

  /** Names of the groups that have at least one member (local read). @throws ShuttingDownError after `stop()` */
  groups(): string[] {
    this.guard()
    return this.state.groupNames()
  }

  /**
   * Members of `group` (local read).
   * @throws InvalidArgumentError (not a string, too long), ShuttingDownError (after `stop()`)
   */
  members(group: string): WorkerRef[] {
    this.guard()
    return this.state.members(this.checkName(group, 'group'))
  }

  // ------------------------------------------------------------------ messaging

  /**
   * Deliver `msg` to the worker registered as `name` (or to `ref`), wherever it runs. Fire and
   * forget: resolves once sent.
   * @throws InvalidArgumentError (bad target, message too large or not encodable), NoWorkerError
   * (the name is not registered, the local worker has ended, or the ref's node is not in the sworm)
   */
  async send(target: string | WorkerRef, msg: unknown): Promise<void> {
    this.guard()
    const t = this.checkTarget(target)
    this.checkMessage(msg)
    const ref = await this.resolveTarget(t)
    this.guard() // stop() may have begun while the name was looked up (its pending calls are already failed)
    if (this.isLocal(ref)) {
      if (!this.gate(ref.id) || !this.workers.cast(ref.id, msg)) throw new NoWorkerError('the worker has ended')
      return
    }
    this.msgs.send(ref.node, { t: 'cast', to: ref, msg } satisfies WireMsg)
  }

  /**
   * Send `msg` to the worker registered as `name` (or to `ref`) and resolve with its reply.
   * @throws InvalidArgumentError (bad target, message or timeout), NoWorkerError (no such name or
   * worker), TimeoutError, WorkerCrashedError
   */
  async call<R = unknown>(target: string | WorkerRef, msg: unknown, opts: { timeout?: number } = {}): Promise<R> {
    this.guard()
    const t = this.checkTarget(target)
    this.checkMessage(msg)
    const timeout = this.checkTimeout(opts, 'timeout') ?? this.callTimeoutMs
    const ref = await this.resolveTarget(t)
    this.guard() // stop() may have begun while the name was looked up (its pending calls are already failed)
    if (this.isLocal(ref)) {
      if (!this.gate(ref.id)) throw new NoWorkerError('the worker has stopped (this node lost its lease)')
      let timer: unknown
      try {
        return (await Promise.race([
          this.workers.call(ref.id, msg),
          new Promise<never>((_, rej) => {
            timer = this.clock.setTimeout(() => rej(new TimeoutError(`call not answered within ${timeout} ms`)), timeout)
          }),
        ])) as R
      } finally {
        this.clock.clearTimeout(timer)
      }
    }
    const id = ++this.callSeq
    return new Promise<R>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.calls.delete(id)
        reject(new TimeoutError(`call not answered within ${timeout} ms`))
      }, timeout)
      this.calls.set(id, { node: ref.node, resolve: resolve as (v: unknown) => void, reject, timer })
      this.msgs.send(ref.node, { t: 'call', id, to: ref, msg } satisfies WireMsg)
    })
  }

  /**
   * The ref for a name from the local copy; on a miss, one linearizable read before giving up, so a
   * name registered on another node a moment ago is found (the local copy may lag).
   */
  private async resolveTarget(target: string | WorkerRef): Promise<WorkerRef> {
    if (typeof target !== 'string') {
      if (!this.isLocal(target) && !this.knowsNode(target.node)) throw new NoWorkerError(`no node ${JSON.stringify(clip(target.node))} in this sworm`)
      return target
    }
    const name = target
    let ref = this.state.whereis(name)
    if (!ref) {
      await this.raft.read().catch(() => {})
      this.guard()
      ref = this.state.whereis(name)
    }
    if (!ref) throw new NoWorkerError(`no worker is registered as ${JSON.stringify(target)}`)
    return ref
  }

  /**
   * Before a supervised worker handles anything, check the lease (a node that was frozen, by
   * SIGSTOP or a long pause, fences its workers first thing when it wakes).
   */
  private gate(id: number): boolean {
    if (!this.supervisor.isSupervised(id)) return true
    if (this.leaseOk()) return true
    void this.supervisor.fenceForLease()
    return false
  }

  /** Whether this node's lease holds (see {@link SwormOptions.leaseTimeoutMs}). */
  leaseOk(): boolean {
    const at = this.raft.leaseRenewedAt()
    return at !== undefined && this.clock.now() - at < this.leaseTimeoutMs
  }

  /** Whether `node` is, or was, a node of this sworm (a ref of any other node cannot be reached). */
  private knowsNode(node: string): boolean {
    if (this.state.nodeRecord(node) !== undefined) return true
    const cfg = this.raft.status().config
    return Object.prototype.hasOwnProperty.call(cfg.voters, node) || Object.prototype.hasOwnProperty.call(cfg.learners, node)
  }

  /** `opts[key]` as a timeout: undefined, or a positive finite number of milliseconds. */
  private checkTimeout(opts: unknown, key: string): number | undefined {
    if (opts === undefined) return undefined
    if (!isObj(opts)) throw new InvalidArgumentError('options must be an object')
    const v = opts[key]
    if (v === undefined) return undefined
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidArgumentError(`${key} must be a positive number of milliseconds`)
    return v
  }

  private isLocal(ref: WorkerRef): boolean {
    return ref.node === this.nodeId && ref.inc === this.incarnation
  }

  private onWire(from: NodeId, raw: unknown): void {
    if (!isObj(raw)) {
      this.peerLog.warn(`wire:${from}`, 'dropped a bad worker message', { from, reason: 'not an object' })
      return
    }
    const m = raw as WireMsg
    try {
      if (m.t === 'cast' || m.t === 'call') {
        const to = m.to as unknown
        const local = isObj(to) && to.node === this.nodeId && to.inc === this.incarnation && typeof to.id === 'number'
        if (m.t === 'cast') {
          if (local && this.gate(to.id as number)) this.workers.cast(to.id as number, m.msg)
          return
        }
        if (typeof m.id !== 'number') {
          this.peerLog.warn(`wire:${from}`, 'dropped a bad worker message', { from, reason: 'call without id' })
          return
        }
        if (!local || !this.gate(to.id as number) || !this.workers.has(to.id as number)) {
          this.msgs.send(from, { t: 'reply', id: m.id, ok: false, code: 'NO_WORKER', message: 'no such worker on that node' } satisfies WireMsg)
          return
        }
        this.workers.call(to.id as number, m.msg).then(
          (value) => this.msgs.send(from, { t: 'reply', id: m.id, ok: true, value } satisfies WireMsg),
          (err: unknown) => {
            const e = err instanceof SwormError ? err : new WorkerCrashedError(String(err))
            this.msgs.send(from, { t: 'reply', id: m.id, ok: false, code: e.code, message: e.message } satisfies WireMsg)
          },
        )
        return
      }
      if (m.t === 'joinReq') {
        if (typeof m.node === 'string' && typeof m.url === 'string' && (m.disk === undefined || typeof m.disk === 'string')) {
          validateUrl('join', m.url)
          this.onJoinRequest(from, m.node, m.url, m.disk)
        }
        return
      }
      if (m.t === 'joinRefused') {
        if (m.node !== this.nodeId || typeof m.message !== 'string' || this.joinRefusal) return
        const text = clip(m.message, 600)
        this.joinRefusal = m.code === 'DATA_LOST' ? new NodeDataLostError(this.nodeId, text) : new ConfigChangeError(text)
        this.log.error('the cluster refused to add this node', { reason: text })
        return
      }
      if (isProbe(m)) {
        // a node on an empty data directory asks whether a cluster runs here (cluster/bootstrap.ts)
        const cfg = this.raft.status().config
        if (Object.keys(cfg.voters).length > 0) this.msgs.send(from, { t: 'probeResp', member: true, config: cfg } satisfies WireMsg)
        else if (this.disk !== undefined) this.msgs.send(from, { t: 'probeResp', member: false, disk: this.disk } satisfies WireMsg)
        return
      }
      if (m.t === 'removeReq') {
        if (typeof m.id !== 'number' || typeof m.node !== 'string' || m.node.length === 0) return
        const id = m.id
        this.removeAsLeader(m.node).then(
          () => this.msgs.send(from, { t: 'removeResp', id, ok: true } satisfies WireMsg),
          (err: unknown) => {
            const e = err instanceof SwormError ? err : new SwormError('INTERNAL', String(err))
            const leader = e instanceof NotLeaderError ? e.leader : undefined
            this.msgs.send(from, { t: 'removeResp', id, ok: false, code: e.code, message: e.message, ...(leader !== undefined ? { leader } : {}) } satisfies WireMsg)
          },
        )
        return
      }
      if (m.t === 'removeResp') {
        const c = typeof m.id === 'number' ? this.calls.get(m.id) : undefined
        if (!c) return
        if (c.node !== from) {
          this.peerLog.warn(`wire:${from}`, 'dropped a bad worker message', { from, reason: 'answer from a node that was not asked' })
          return
        }
        this.calls.delete(m.id)
        this.clock.clearTimeout(c.timer)
        if (m.ok) c.resolve(undefined)
        else c.reject(adminError(String(m.code), String(m.message), typeof m.leader === 'string' ? m.leader : undefined))
        return
      }
      if (m.t === 'metricsAt') {
        if (typeof m.url === 'string' && m.url.length <= 256 && /^https?:\/\/[^\s/]+$/.test(m.url)) {
          const known = this.metricsPeers.get(from)
          this.metricsPeers.set(from, m.url)
          if (m.reply === true && this.metricsServer && known !== m.url) this.msgs.send(from, { t: 'metricsAt', url: this.metricsServer.address, reply: false } satisfies WireMsg)
        }
        return
      }
      if (m.t === 'reply') {
        const c = typeof m.id === 'number' ? this.calls.get(m.id) : undefined
        if (!c) return // late: the call timed out
        if (c.node !== from) {
          this.peerLog.warn(`wire:${from}`, 'dropped a bad worker message', { from, reason: 'reply from a node the call did not go to' })
          return
        }
        this.calls.delete(m.id)
        this.clock.clearTimeout(c.timer)
        if (m.ok) c.resolve(m.value)
        else if (m.code === 'NO_WORKER') c.reject(new NoWorkerError(String(m.message)))
        else c.reject(new WorkerCrashedError(String(m.message)))
        return
      }
      this.peerLog.warn(`wire:${from}`, 'dropped a bad worker message', { from, reason: 'unknown type', type: clip(String(raw.t)) })
    } catch (err) {
      this.peerLog.warn(`wire:${from}`, 'dropped a bad worker message', { from, err: clip(String(err), 200) })
    }
  }

  // ------------------------------------------------------------------ reactions

  /**
   * Emit `event` to each listener in turn; a listener that throws (or rejects) is logged and the
   * others still run. Nothing a listener does can break the node (emits happen during apply).
   */
  private fire<K extends keyof SwormEvents>(event: K, ...args: SwormEvents[K]): void {
    if (this.listenerCount(event) === 0) return
    const list = this.rawListeners(event) as Array<(...a: unknown[]) => unknown>
    for (const fn of list) {
      try {
        const r = fn.apply(this, args)
        if (r && typeof (r as Promise<unknown>).then === 'function') {
          ;(r as Promise<unknown>).then(undefined, (err: unknown) => this.log.error('an event listener rejected', { event, err: String(err) }))
        }
      } catch (err) {
        this.log.error('an event listener threw', { event, err: String(err) })
      }
    }
  }

  private onRegistryChange(ch: RegistryChange): void {
    this.supervisor.onChange(ch)
    switch (ch.type) {
      case 'registered':
        this.fire('registered', { name: ch.name, ref: ch.ref })
        // A name for a worker of this node that is not (or no longer) here: it ended while the
        // registration was in flight, or the ref never existed. Drop the name everywhere.
        if (this.isLocal(ch.ref) && !this.workers.has(ch.ref.id) && !this.stopped) void this.proposeUntilDone({ c: 'workerDown', ref: ch.ref })
        return
      case 'started':
        this.fire('registered', { name: ch.name, ref: ch.ref })
        if (ch.ref.node === this.nodeId && ch.ref.inc === this.incarnation) {
          this.fire('workerStarted', { name: ch.name, ref: ch.ref, node: this.nodeId })
          const from = this.movedFrom.get(ch.name)
          if (from !== undefined) {
            this.movedFrom.delete(ch.name)
            this.fire('workerMoved', { name: ch.name, from, to: this.nodeId })
          }
        }
        return
      case 'placed':
        if (ch.node === this.nodeId && ch.moved && ch.from !== undefined && ch.from !== this.nodeId) this.movedFrom.set(ch.name, ch.from)
        else if (this.movedFrom.size) this.movedFrom.delete(ch.name)
        return
      case 'unregistered':
        if (this.movedFrom.size) this.movedFrom.delete(ch.name)
        this.fire('unregistered', { name: ch.name, ref: ch.ref })
        return
      case 'joined':
        this.fire('joined', { group: ch.group, ref: ch.ref })
        return
      case 'left':
        this.fire('left', { group: ch.group, ref: ch.ref })
        return
      case 'nodeUp':
        this.pendingDown.delete(ch.node)
        this.metricsObj.nodeEvents.inc({ event: 'up' })
        this.log.info('node up', { peer: ch.node })
        this.fire('nodeUp', { node: ch.node })
        if (ch.node !== this.nodeId && this.metricsServer && !this.stopped) {
          this.msgs.send(ch.node, { t: 'metricsAt', url: this.metricsServer.address, reply: true } satisfies WireMsg)
        }
        return
      case 'nodeDown':
        this.pendingDown.delete(ch.node)
        this.metricsObj.nodeEvents.inc({ event: 'down' })
        this.log.warn('node declared gone', { peer: ch.node })
        this.fire('nodeDown', { node: ch.node })
        if (ch.node === this.nodeId) this.comeBackIfDeclaredGone()
        return
      default:
        return
    }
  }

  private onWorkerExit(id: number, reason: ExitReason): void {
    if (this.supervisor.onExit(id, reason)) return
    if (reason.kind === 'crash') this.log.warn('worker crashed', { worker: id, err: String(reason.error) })
    const ref: WorkerRef = { sworm: this.name, node: this.nodeId, inc: this.incarnation, id }
    if (this.state.namesOfRef(ref).length === 0 && !this.stopped) return
    void this.proposeUntilDone({ c: 'workerDown', ref })
  }

  /**
   * We were declared gone but we are alive: come back (our static names were dropped). Seen when
   * we apply the `nodeDown`, or later by the periodic check when we caught up from a snapshot
   * that already held it (restoring one emits no changes).
   */
  private comeBackIfDeclaredGone(): void {
    if (this.stopped || !this.upResolved) return
    const rec = this.state.nodeRecord(this.nodeId)
    if (!rec || rec.up || rec.inc !== this.incarnation) return
    this.upResolved = false
    this.upPromise = this.announce()
    this.upPromise.catch(() => {})
  }

  /**
   * Propose a command for an API call, in this incarnation's client session (see
   * {@link SessionTag}): the state machine applies it at most once, so it is proposed again, with
   * the same sequence number, after a leader change or a dropped proposal, until `requestTimeoutMs`
   * runs out (one attempt never ends early on a timer: that would only add load under a backlog). A
   * TimeoutError then still means the outcome is unknown.
   */
  private async proposeRetrying(cmd: RegistryCommand): Promise<RegistryResult> {
    const seq = ++this.sessionSeq
    this.sessionInFlight.add(seq)
    const deadline = this.clock.now() + this.requestTimeoutMs
    // once an attempt's outcome is unknown, so is the call's, whatever the later attempts say
    let unknown: TimeoutError | undefined
    try {
      for (let attempt = 1; ; attempt++) {
        const low = this.sessionInFlight.values().next().value as number
        const left = deadline - this.clock.now()
        try {
          // One attempt may take all the time left: proposing again while the first may still be
          // in the log would only add load (the node re-forwards to a new leader by itself); the
          // session makes the attempts after a definite failure safe.
          const res = await this.raft.propose({ ...cmd, s: { node: this.nodeId, inc: this.incarnation, seq, low } }, { timeoutMs: Math.max(1, left) })
          if (res === 'session-expired') throw new ShuttingDownError('this node incarnation is no longer the one the cluster knows (it restarted, or was declared gone)')
          return res
        } catch (err) {
          if (err instanceof TimeoutError) unknown ??= err
          const again = err instanceof ProposalDroppedError || err instanceof TimeoutError || err instanceof NotLeaderError
          if (!again || this.stopped || this.clock.now() >= deadline) {
            if (unknown && !(err instanceof TimeoutError)) {
              throw new TimeoutError(`the outcome is unknown: an attempt timed out (${unknown.message}), and the last one failed (${err instanceof Error ? err.message : String(err)})`)
            }
            throw err
          }
          await this.sleep(Math.min(10 * attempt, 200))
        }
      }
    } finally {
      this.sessionInFlight.delete(seq)
    }
  }

  /** Background proposal that must eventually happen (retried until applied or stopped). */
  private async proposeUntilDone(cmd: RegistryCommand): Promise<void> {
    for (let attempt = 0; !this.stopped || attempt === 0; attempt++) {
      try {
        await this.raft.propose(cmd)
        return
      } catch (err) {
        if (err instanceof ShuttingDownError) return
        await this.sleep(200)
      }
    }
  }

  /**
   * On the leader: declare nodes gone after `nodeDownAfterMs` of silence, or of being out of the
   * Raft configuration (a removed node may still talk to us, but no leader renews its lease).
   */
  private detectDownNodes(): void {
    // Only a leader that holds its lease right now (by its clock) decides: one that was stalled
    // may have been replaced meanwhile, and its view of who answered it is stale.
    if (this.stopped || !this.raft.isLeader || !this.raft.holdsLeaderLease()) return
    const now = this.clock.now()
    const sinceLeader = now - this.leaderSince
    if (sinceLeader < this.nodeDownAfterMs) return // give every node a chance to reach the new leader
    const cfg = this.raft.status().config
    // After any configuration change, measure again: a node may have been a member (and had its
    // lease renewed by us) between two runs of this check.
    const key = JSON.stringify(cfg)
    if (key !== this.outOfConfigKey) {
      this.outOfConfigSince.clear()
      this.outOfConfigKey = key
    }
    for (const rec of this.state.nodeRecords()) {
      if (!rec.up || rec.node === this.nodeId || this.pendingDown.has(rec.node)) continue
      if (!isMember(cfg, rec.node)) {
        const since = this.outOfConfigSince.get(rec.node)
        if (since === undefined) this.outOfConfigSince.set(rec.node, now)
        if (since === undefined || now - since < this.nodeDownAfterMs) continue
      } else {
        const heard = this.raft.lastHeard(rec.node)
        if (heard !== undefined && now - heard < this.nodeDownAfterMs) continue
      }
      this.pendingDown.add(rec.node)
      const term = this.raft.status().term
      this.raft.propose({ c: 'nodeDown', node: rec.node, inc: rec.inc, term }, { term }).then(
        () => this.pendingDown.delete(rec.node),
        () => this.pendingDown.delete(rec.node),
      )
    }
  }

  // ------------------------------------------------------------------ status and stop

  /** Role, term, leader and indexes of this node's Raft replica, plus registry counts. */
  status(): SwormStatus {
    const s = this.raft.status()
    return {
      node: this.nodeId,
      role: s.role,
      term: s.term,
      leader: s.leader,
      commit: s.commit,
      applied: s.applied,
      names: this.state.size,
      workers: this.workers.size,
      supervised: this.supervisor.size,
      lease: this.leaseOk(),
      storageFailure: this.raft.storageFailure()?.message,
      recoveringUpTo: s.recoveringUpTo,
    }
  }

  /**
   * What `GET /status` serves: {@link Sworm.status} plus the sworm's name, the Raft configuration,
   * the log and snapshot indexes, the nodes the registry holds, uptime in seconds, and the metrics
   * addresses of this node and of the peers that told theirs.
   */
  statusReport(): SwormStatusReport {
    const s = this.raft.status()
    const metricsPeers: Record<string, string> = {}
    if (this.metricsServer) metricsPeers[this.nodeId] = this.metricsServer.address
    for (const [n, url] of this.metricsPeers) metricsPeers[n] = url
    return {
      sworm: this.name,
      ...this.status(),
      incarnation: this.incarnation,
      lastIndex: s.lastIndex,
      snapshotIndex: s.snapshotIndex,
      peers: { voters: { ...s.config.voters }, learners: { ...s.config.learners } },
      nodes: this.state.nodeRecords().map((n) => ({ node: n.node, up: n.up, draining: n.draining })),
      uptime: Math.round((Date.now() - this.startedAt) / 100) / 10,
      metricsAddress: this.metricsServer?.address,
      metricsPeers,
    }
  }

  /** What the gauges of {@link Sworm.metrics} read. */
  private metricsSnapshot(): MetricsSnapshot {
    const s = this.raft.status()
    let nodesUp = 0
    for (const n of this.state.nodeRecords()) if (n.up) nodesUp++
    return {
      role: s.role,
      term: s.term,
      commit: s.commit,
      applied: s.applied,
      lastIndex: s.lastIndex,
      snapshotIndex: s.snapshotIndex,
      snapshotAgeSeconds: Math.max(0, (this.clock.now() - this.raft.snapshotTakenAt()) / 1000),
      voters: Object.keys(s.config.voters).length,
      learners: Object.keys(s.config.learners).length,
      names: this.state.size,
      supervised: this.supervisor.size,
      localWorkers: this.workers.size,
      lease: this.leaseOk(),
      nodesUp,
    }
  }

  /** This sworm's metrics on this node, in the Prometheus text format (see the README for the list). */
  metrics(): Promise<string> {
    return this.metricsObj.text()
  }

  /** The prom-client `Registry` holding this sworm's metrics (to merge into an application's registry). */
  get metricsRegistry(): SwormMetrics['registry'] {
    return this.metricsObj.registry
  }

  /** `http://host:port` of this sworm's metrics server (option `metricsPort`), if it runs. */
  get metricsAddress(): string | undefined {
    return this.metricsServer?.address
  }

  /** Start the HTTP server of `/metrics` and `/status`, and tell the peers where it is. */
  private async serveMetrics(host: string, port: number): Promise<void> {
    this.metricsServer = await startMetricsServer(host, port, {
      metrics: () => this.metrics(),
      metricsContentType: this.metricsObj.contentType,
      status: () => this.statusReport(),
    })
    this.log.info('metrics server listening', { address: this.metricsServer.address })
    const cfg = this.raft.status().config
    for (const peer of new Set([...Object.keys(cfg.voters), ...Object.keys(cfg.learners)])) {
      if (peer !== this.nodeId) this.msgs.send(peer, { t: 'metricsAt', url: this.metricsServer.address, reply: true } satisfies WireMsg)
    }
  }

  /**
   * Move this node's supervised workers to other nodes, with state handoff, and take no new ones.
   * Resolves when every worker that was here runs on another node (or no other node can take them).
   */
  async drain(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.guard()
    const timeoutMs = this.checkTimeout(opts, 'timeoutMs')
    await this.ready()
    const moving = this.state.supervisedOn(this.nodeId).map((r) => r.name)
    await this.proposeRetrying({ c: 'drain', node: this.nodeId, on: true })
    const deadline = this.clock.now() + (timeoutMs ?? this.startTimeoutMs * 3)
    for (;;) {
      const left = this.state.supervisedOn(this.nodeId).length
      const elsewhere = this.state.nodeRecords().some((n) => n.up && !n.draining && n.node !== this.nodeId)
      if (!elsewhere) return
      // done when none is placed here and every moved name runs on its new node (or is gone)
      const settling = moving.filter((name) => {
        const r = this.state.registration(name)
        return r !== undefined && r.kind === 'supervised' && !r.retiring && (r.ref === undefined || r.ref.node === this.nodeId)
      }).length
      if (left === 0 && settling === 0) return
      if (this.clock.now() > deadline) throw new TimeoutError(`drain: ${left} workers still on this node, ${settling} not yet running elsewhere`)
      await this.sleep(20)
    }
  }

  /** Even out supervised workers over the nodes (moves with handoff). */
  async rebalance(): Promise<void> {
    this.guard()
    await this.ready()
    await this.proposeRetrying({ c: 'rebalance' })
  }

  /**
   * Remove node `nodeId` from the cluster (an admin operation; call it on any node). The node is
   * taken out of the Raft configuration by the leader, so it votes and replicates no more and no
   * leader renews its lease: it stops its supervised workers when the lease runs out. The leader
   * then declares it gone in the registry (after `leaseTimeoutMs + maxClockDriftMs + (electionTicks - 1) * tickMs`, like a silent
   * node): its static names are dropped and its supervised workers start elsewhere. Resolves once
   * this node sees it gone (on the removed node itself: once the configuration change is
   * committed). Idempotent: removing a node that is out already resolves.
   *
   * A removed node comes back only under a new `nodeId`, on a fresh `dataDir`, with `join`: a
   * node that was removed (or still runs, cut off) may hold an old configuration that counts the
   * old id as a voter, and Raft is safe only if no voter forgets its votes and log. The leader
   * refuses a join from an id the registry knows but the configuration no longer lists.
   *
   * @param opts.timeoutMs - default `requestTimeoutMs` + the node-down wait
   * @throws InvalidArgumentError when `nodeId` is not a non-empty string
   * @throws NotFoundError when no such node is a member or known to the registry (so also when a
   *   node that never came up in the registry was removed already)
   * @throws ConfigChangeError when the configuration cannot lose it (it is the last voter)
   * @throws TimeoutError when it did not finish in time (no quorum, say); it may still happen, and
   *   calling again is safe
   * @throws ShuttingDownError when this sworm stops meanwhile
   */
  async removeNode(nodeId: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    this.guard()
    if (typeof nodeId !== 'string' || nodeId.length === 0) throw new InvalidArgumentError('nodeId must be a non-empty string')
    const timeoutMs = opts.timeoutMs ?? this.requestTimeoutMs + this.nodeDownAfterMs
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) throw new InvalidArgumentError('timeoutMs must be a positive number')
    const deadline = this.clock.now() + timeoutMs
    const left = (): number => deadline - this.clock.now()
    // 1. out of the Raft configuration: done by the leader, retried across leader changes
    for (;;) {
      this.guard()
      try {
        if (this.raft.isLeader) await this.removeAsLeader(nodeId)
        else await this.askLeaderToRemove(nodeId, Math.max(1, Math.min(left(), this.requestTimeoutMs)))
        break
      } catch (err) {
        if (!(err instanceof NotLeaderError || err instanceof TimeoutError || err instanceof ProposalDroppedError)) throw err
        if (left() <= 0) throw new TimeoutError(`could not remove ${nodeId} within ${timeoutMs} ms (${err.message})`)
        await this.sleep(Math.min(100, left()))
      }
    }
    if (nodeId === this.nodeId) return
    // 2. declared gone in the registry, once its lease must have run out (seen by this node)
    for (;;) {
      this.guard()
      await this.raft.read().catch(() => {})
      if (this.state.nodeRecord(nodeId)?.up !== true) return
      if (left() <= 0) throw new TimeoutError(`${nodeId} left the configuration but is not declared gone yet`)
      await this.sleep(Math.min(50, left()))
    }
  }

  /** On the leader: take `node` out of the Raft configuration (nothing to do if it is out). */
  private async removeAsLeader(node: string): Promise<void> {
    if (!this.raft.isLeader) throw new NotLeaderError(this.raft.leader)
    if (!isMember(this.raft.status().config, node)) {
      if (this.state.nodeRecord(node) === undefined) {
        await this.raft.read() // our registry may lag the log
        if (this.state.nodeRecord(node) === undefined) throw new NotFoundError(`${node} is not a node of this sworm`)
      }
      return
    }
    await this.raft.removeNode(node)
    this.log.info('node removed from the cluster', { peer: node })
  }

  /** Send a `removeReq` to the leader and wait for its answer. */
  private askLeaderToRemove(node: string, timeoutMs: number): Promise<void> {
    const leader = this.raft.leader
    if (leader === undefined || leader === this.nodeId) return Promise.reject(new NotLeaderError(undefined))
    const id = ++this.callSeq
    return new Promise<void>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.calls.delete(id)
        reject(new TimeoutError(`the leader (${leader}) did not answer within ${timeoutMs} ms`))
      }, timeoutMs)
      // the answer is taken only from the node asked (see onWire's reply handling)
      this.calls.set(id, { node: leader, resolve: () => resolve(), reject, timer })
      this.msgs.send(leader, { t: 'removeReq', id, node } satisfies WireMsg)
    })
  }

  /** Take supervised workers again after {@link Sworm.drain}. */
  async undrain(): Promise<void> {
    this.guard()
    await this.ready()
    await this.proposeRetrying({ c: 'drain', node: this.nodeId, on: false })
  }

  /** The WebSocket hub of this node (shared by the sworms listening on its address); for tests and tools. */
  hubForTests(): WsHub {
    if (!this.hub) throw new InvalidArgumentError('this sworm runs without a WebSocket hub')
    return this.hub
  }

  /** Set by {@link Sworm.start}: the faults wrapped around this sworm's two channels. */
  private faults: PeerFaults | undefined

  /**
   * The fault injector around this sworm's channels (Raft and messages): `block(peer, true)` drops
   * everything to and from `peer` until `block(peer, false)`; for tests and tools.
   */
  faultsForTests(): PeerFaults {
    if (!this.faults) throw new InvalidArgumentError('this sworm runs without a WebSocket hub')
    return this.faults
  }

  /**
   * Model a crash for the simulation: stop every activity at once, without terminate callbacks,
   * proposals or leadership transfer. Returns the worker objects that were alive.
   * @internal
   */
  crashForTests(): Worker[] {
    const alive = this.workers.objects()
    this.stopped = true
    this.clock.clearTimeout(this.detectorTimer)
    this.clock.clearTimeout(this.supervisorTimer)
    this.clock.clearTimeout(this.fenceTimer)
    return alive
  }

  /** The Raft node behind this sworm (for tests, tools and membership changes). */
  get raftNode(): RaftNode<RegistryCommand, RegistryResult> {
    return this.raft
  }

  /**
   * Leave gracefully: this node's workers stop (their `terminate` runs) and their names are
   * removed everywhere, leadership is handed over, and the node's resources are released.
   */
  async stop(): Promise<void> {
    if (this.stopped) return
    // Hand supervised workers over to other nodes before leaving.
    if (this.upResolved && this.state.supervisedOn(this.nodeId).length > 0) {
      await this.drain({ timeoutMs: this.startTimeoutMs }).catch((err: unknown) => this.log.warn('drain before stop did not finish', { err: String(err) }))
    }
    const local = this.workers.ids().map((id): WorkerRef => ({ sworm: this.name, node: this.nodeId, inc: this.incarnation, id }))
    const named = local.filter((r) => this.state.namesOfRef(r).length > 0)
    this.stopped = true
    this.clock.clearTimeout(this.detectorTimer)
    this.clock.clearTimeout(this.supervisorTimer)
    this.clock.clearTimeout(this.fenceTimer)
    await this.metricsServer?.close().catch(() => {})
    await this.workers.stopAll('shutdown')
    // best effort: drop our names now rather than waiting for the leader to declare us gone
    await Promise.race([
      Promise.allSettled(named.map((ref) => this.raft.propose({ c: 'workerDown', ref }))),
      this.sleep(2000),
    ])
    for (const c of this.calls.values()) {
      this.clock.clearTimeout(c.timer)
      c.reject(new ShuttingDownError('the sworm is stopped'))
    }
    this.calls.clear()
    await this.raft.stop()
    await this.release()
    this.log.info('sworm stopped')
  }
}

