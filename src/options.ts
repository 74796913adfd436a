/**
 * The options of {@link Sworm.start}: their types and documentation, one table of defaults, and
 * {@link resolveOptions}, which checks them and fills in the defaults. Both `Sworm.start` and the
 * simulation's `assemble` resolve options here, so both run with the same checks and values.
 * @module
 */
import { resolve as resolvePath } from 'node:path'
import type { DiscoveryOptions } from './cluster/discovery.js'
import { secretProblem } from './net/handshake.js'
import type { Logger, LogLevel } from './raft/types.js'
import { leaseWindowMs } from './raft/node.js'
import { defaultPlacement, hashPlacement, type PlacementStrategy } from './registry/placement.js'

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
   * `dataDir` asks to be added, as a learner (the leader's autopilot makes it a voter if more
   * voters are wanted: see `voters`); so does one whose earlier join was cut short. `start`
   * resolves once it is a member.
   */
  join?: string
  /**
   * Instead of `peers` or `join`: find the cluster through DNS (a Kubernetes headless Service):
   * join a running cluster found at the addresses the name resolves to, or, with `expect`, start a
   * new one with the first nodes found. Used only on an empty `dataDir`; a node with a log starts
   * from it. See {@link DiscoveryOptions}.
   */
  discovery?: DiscoveryOptions
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
   * node's workers only after `leaseTimeoutMs + maxClockDriftMs` without an answer from it, and a
   * new leader not before it has led that long. Default 500 ms.
   * The leader's own lease lasts `(electionTicks - 1) * tickMs / (1 + maxClockDriftMs / leaseTimeoutMs)`
   * from a heartbeat a quorum answered; `Sworm.start` refuses options that make it shorter than two
   * heartbeats (`2 * tickMs`), under which no node would ever hold a lease.
   */
  maxClockDriftMs?: number
  /** Where supervised workers go: `'load'` (default: the least loaded node), `'hash'` (consistent hashing), or your own pure function. */
  placement?: 'load' | 'hash' | PlacementStrategy
  /**
   * Directory that relative `module` specifiers of start specs resolve against (made absolute
   * once, at start: a later `process.chdir()` changes nothing). Default `process.cwd()`.
   */
  moduleBase?: string
  /** How long `registerName(name, spec)` waits for the worker to start. Default 10,000 ms. */
  startTimeoutMs?: number
  /**
   * When this node joins (or comes back), move existing supervised workers to it (with handoff)
   * until the load is even. Default false: only new names go to the new node.
   */
  rebalance?: boolean
  /** Longest name, in UTF-8 bytes. Default 1,024; at most 1 MiB. */
  maxNameBytes?: number
  /**
   * Largest message for `send`/`call`, start-spec args and handoff state, encoded. Default 1 MiB;
   * at most 32 MiB (a supervised registration, with its name, must fit one Raft log entry, and an
   * entry one frame of the transport: 64 MiB).
   */
  maxMessageBytes?: number
  /**
   * Default `call` timeout. Default 5,000 ms. A call by name to a worker that is moving,
   * restarting, or whose node is unreachable or gone waits for the next incarnation within it.
   */
  callTimeoutMs?: number
  /**
   * Casts (`send` by name) held per name while its worker is moving or restarting, delivered in
   * order once it runs again (at most `callTimeoutMs` later). Beyond it the oldest is dropped and
   * counted in `sworm_casts_dropped_total`. Default 1,000.
   */
  castBufferSize?: number
  /** How long a registry operation may take. Default 5,000 ms. */
  requestTimeoutMs?: number
  /**
   * How many nodes vote in Raft (odd; default 5). While the cluster has fewer nodes, every node
   * votes. The others are learners: full replicas that host workers, answer local reads and
   * forward proposals, but do not count for quorum, so many app instances do not slow writes down.
   * The leader's autopilot promotes a healthy learner when a voter is gone, demotes extra voters,
   * and spreads voters over zones. Give every node the same value.
   */
  voters?: number
  /**
   * The failure domain of this node (an availability zone, a rack). Autopilot spreads the voters
   * over as many zones as it can. Default: none.
   */
  zone?: string
  /** Autopilot tuning. */
  autopilot?: {
    /** How long a learner must have been up, answering and caught up before it may be promoted. Default 3,000 ms. */
    stabilizationMs?: number
    /** A learner at most this many log entries behind the commit index counts as caught up. Default 1,000. */
    maxTrailingEntries?: number
  }
  /**
   * Remove a node from the cluster once it has been declared gone for this long, so a fleet whose
   * instances get new ids on every deploy does not grow forever. A removed id cannot join again
   * (start it under a new id), so leave this unset for nodes with stable ids that may be down for
   * long (a StatefulSet). Default: never.
   */
  deadNodeTimeoutMs?: number
  /**
   * Signals on which the sworm stops gracefully (as `stop()`: its supervised workers handed over
   * to other nodes first). Then, if nothing else in the process listens for the signal, it is
   * raised again and the process ends as it would have. `false`: no signal handling (call `stop()`
   * yourself). Default `['SIGTERM', 'SIGINT']`.
   */
  stopOnSignals?: NodeJS.Signals[] | false
  /** Raft tuning (defaults suit a LAN). */
  raft?: {
    tickMs?: number
    electionTicks?: number
    snapshotEvery?: number
    /** Bytes per chunk of a snapshot sent to a node that is behind. Default 1 MiB; at most 16 MiB. */
    snapshotChunkBytes?: number
    /**
     * Most log entries after the snapshot: a restart replays at most this many. Default 300,000
     * (applied entries are kept as bytes, about 150 each outside the heap, not as objects).
     */
    maxLogEntries?: number
    /**
     * The leader sends learners (the nodes beyond `voters`) new entries and commit indexes at most
     * once per this many ms, each time with all that came meanwhile; voters get them at once.
     * Learners do not count for commits, so this adds no write latency, and a leader with many
     * learners spends far less per write; a learner's local reads lag by up to this much more. 0:
     * learners are sent to as voters are. At most 1,000. Default 10 ms. A learner that waits on a
     * write it proposed or a read it asked for is sent to at once until it has what it waits for.
     */
    learnerPaceMs?: number
    /**
     * Log entries in flight to one follower (sent, not acknowledged yet). It bounds what a node
     * catching up decodes and stores at once (its event loop), and the replication rate to a
     * distant follower: at most this many entries per round trip (512 per 40 ms is about
     * 12,800/s). Raise it for followers far away. At least 1. Default 512.
     */
    maxInflightEntries?: number
  }
  /**
   * Serve `GET /metrics` (Prometheus), `GET /status` (JSON) and `GET /ready` (200 or 503: see
   * {@link Sworm.readiness}) over HTTP on this port (0: a free port; see
   * {@link Sworm.metricsAddress}). Default: no server ({@link Sworm.metrics} still works).
   */
  metricsPort?: number
  /** Interface the metrics server listens on. Default: the host of `listen`. */
  metricsHost?: string
}

/** The default of every tunable option (times in ms, sizes in bytes). */
export const DEFAULTS = {
  logLevel: 'info',
  leaseTimeoutMs: 2000,
  maxClockDriftMs: 500,
  startTimeoutMs: 10_000,
  rebalance: false,
  maxNameBytes: 1024,
  maxMessageBytes: 1024 * 1024,
  callTimeoutMs: 5000,
  castBufferSize: 1000,
  requestTimeoutMs: 5000,
  voters: 5,
  stopOnSignals: ['SIGTERM', 'SIGINT'],
  autopilot: { stabilizationMs: 3000, maxTrailingEntries: 1000 },
  raft: { tickMs: 50, electionTicks: 6, snapshotEvery: 10_000, snapshotChunkBytes: 1024 * 1024, maxLogEntries: 300_000, learnerPaceMs: 10, maxInflightEntries: 512 },
} as const

/**
 * Options after {@link resolveOptions}: checked, every default filled in, plus the times derived
 * from them.
 * @internal
 */
export interface ResolvedOptions {
  readonly name: string
  readonly nodeId: string
  readonly listen: string
  readonly peers: Readonly<Record<string, string>> | undefined
  readonly join: string | undefined
  readonly discovery: DiscoveryOptions | undefined
  readonly secret: string
  readonly dataDir: string
  readonly tls: SwormOptions['tls']
  readonly logger: Logger | undefined
  readonly logLevel: LogLevel
  readonly leaseTimeoutMs: number
  readonly maxClockDriftMs: number
  readonly placement: PlacementStrategy
  readonly moduleBase: string
  readonly startTimeoutMs: number
  readonly rebalance: boolean
  readonly maxNameBytes: number
  readonly maxMessageBytes: number
  readonly callTimeoutMs: number
  readonly castBufferSize: number
  readonly requestTimeoutMs: number
  readonly voters: number
  readonly zone: string | undefined
  readonly autopilot: { readonly stabilizationMs: number; readonly maxTrailingEntries: number }
  readonly deadNodeTimeoutMs: number | undefined
  readonly stopOnSignals: readonly NodeJS.Signals[]
  readonly raft: { readonly tickMs: number; readonly electionTicks: number; readonly snapshotEvery: number; readonly snapshotChunkBytes: number; readonly maxLogEntries: number; readonly learnerPaceMs: number; readonly maxInflightEntries: number }
  readonly metricsPort: number | undefined
  readonly metricsHost: string | undefined
  /**
   * How long a node must be out of the configuration before it is declared gone (and how long a
   * new leader waits before autopilot changes voters): the lease, the drift, and `(electionTicks -
   * 1)` ticks. Silence towards the leader, and the wait of a new leader before it declares any
   * node gone, need the lease and the drift only (see cluster/failure-detector.ts: every renewal
   * by an earlier leader starts from an answer sent before the next leader's election).
   */
  readonly nodeDownAfterMs: number
  /** The drift bound as a rate, as the Raft node takes it: `maxClockDriftMs / leaseTimeoutMs`. */
  readonly clockDrift: number
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

function requireString(opts: Record<string, unknown>, key: string): string {
  const v = opts[key]
  if (typeof v !== 'string' || v.length === 0) throw new TypeError(`Sworm.start: option "${key}" must be a non-empty string`)
  return v
}

function positive(opts: Record<string, unknown>, key: string, def: number): number {
  const v = opts[key]
  if (v === undefined) return def
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new TypeError(`Sworm.start: option "${key}" must be a positive number`)
  return v
}

/** The most `maxNameBytes` may be. */
const MAX_NAME_BYTES = 1024 * 1024
/** The most `raft.snapshotChunkBytes` may be: a chunk, with its message, fits a frame (64 MiB). */
const MAX_SNAPSHOT_CHUNK_BYTES = 16 * 1024 * 1024
/** The most `maxMessageBytes` may be: with a name, it fits one log entry (63 MiB, `MAX_ENTRY_BYTES`). */
const MAX_MESSAGE_BYTES = 32 * 1024 * 1024

function atMost(v: number, key: string, max: number, said: string): number {
  if (v > max) throw new TypeError(`Sworm.start: option "${key}" must be at most ${said} (${max}), got ${v}`)
  return v
}

function nonNegative(opts: Record<string, unknown>, key: string, def: number): number {
  const v = opts[key]
  if (v === undefined) return def
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new TypeError(`Sworm.start: option "${key}" must be a number, 0 or more`)
  return v
}

/**
 * Check that `v`, given as option `key`, is a `ws://` or `wss://` URL with a port.
 * @throws TypeError naming the option
 */
export function validateUrl(key: string, v: string): void {
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw new TypeError(`Sworm.start: option "${key}" must be a ws:// or wss:// URL, got ${JSON.stringify(v)}`)
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError(`Sworm.start: option "${key}" must be a ws:// or wss:// URL, got ${JSON.stringify(v)}`)
  if (!u.port) throw new TypeError(`Sworm.start: option "${key}" must include a port`)
}

/** Check the `discovery` option (see {@link DiscoveryOptions}). */
function discoveryOption(v: unknown, peersOrJoin: boolean): DiscoveryOptions | undefined {
  if (v === undefined) return undefined
  const bad = (what: string): TypeError => new TypeError(`Sworm.start: option "discovery" ${what}`)
  if (!isObj(v)) throw bad('must be an object such as { dns: "sworm.default.svc.cluster.local", expect: 3 }')
  if (peersOrJoin) throw new TypeError('Sworm.start: give one of options "peers", "join" and "discovery"')
  if (typeof v.dns !== 'string' || v.dns.length === 0 || v.dns.length > 253) throw bad('needs "dns": the DNS name to resolve')
  const int = (k: string, min: number, max: number): number | undefined => {
    const x = v[k]
    if (x === undefined) return undefined
    if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max) throw bad(`"${k}" must be an integer from ${min} to ${max}`)
    return x
  }
  const port = int('port', 1, 65535)
  const expect = int('expect', 1, 1000)
  const intervalMs = int('intervalMs', 10, 600_000)
  if (v.servers !== undefined && !(Array.isArray(v.servers) && v.servers.length > 0 && v.servers.every((x) => typeof x === 'string' && x.length > 0))) {
    throw bad('"servers" must be a non-empty array of "host" or "host:port" strings')
  }
  return {
    dns: v.dns,
    ...(port !== undefined ? { port } : {}),
    ...(expect !== undefined ? { expect } : {}),
    ...(intervalMs !== undefined ? { intervalMs } : {}),
    ...(v.servers !== undefined ? { servers: [...(v.servers as string[])] } : {}),
  }
}

/**
 * Check `options` and fill in the defaults.
 * @throws TypeError naming the option when an option is invalid
 * @internal
 */
export function resolveOptions(options: SwormOptions): ResolvedOptions {
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
  const discovery = discoveryOption(o.discovery, o.peers !== undefined || o.join !== undefined)
  const leaseTimeoutMs = positive(o, 'leaseTimeoutMs', DEFAULTS.leaseTimeoutMs)
  const maxClockDriftMs = positive(o, 'maxClockDriftMs', DEFAULTS.maxClockDriftMs)
  const startTimeoutMs = positive(o, 'startTimeoutMs', DEFAULTS.startTimeoutMs)
  const maxNameBytes = atMost(positive(o, 'maxNameBytes', DEFAULTS.maxNameBytes), 'maxNameBytes', MAX_NAME_BYTES, '1 MiB')
  const maxMessageBytes = atMost(positive(o, 'maxMessageBytes', DEFAULTS.maxMessageBytes), 'maxMessageBytes', MAX_MESSAGE_BYTES, '32 MiB')
  const callTimeoutMs = positive(o, 'callTimeoutMs', DEFAULTS.callTimeoutMs)
  const castBufferSize = positive(o, 'castBufferSize', DEFAULTS.castBufferSize)
  const requestTimeoutMs = positive(o, 'requestTimeoutMs', DEFAULTS.requestTimeoutMs)
  if (o.logger !== undefined && !isObj(o.logger)) throw new TypeError('Sworm.start: option "logger" must be a logger object')
  if (o.raft !== undefined && !isObj(o.raft)) throw new TypeError('Sworm.start: option "raft" must be an object')
  const r = (o.raft ?? {}) as Record<string, unknown>
  const raft = {
    tickMs: positive(r, 'tickMs', DEFAULTS.raft.tickMs),
    electionTicks: positive(r, 'electionTicks', DEFAULTS.raft.electionTicks),
    snapshotEvery: positive(r, 'snapshotEvery', DEFAULTS.raft.snapshotEvery),
    // (a chunk travels in one frame of the transport: 64 MiB)
    snapshotChunkBytes: atMost(positive(r, 'snapshotChunkBytes', DEFAULTS.raft.snapshotChunkBytes), 'snapshotChunkBytes', MAX_SNAPSHOT_CHUNK_BYTES, '16 MiB'),
    maxLogEntries: positive(r, 'maxLogEntries', DEFAULTS.raft.maxLogEntries),
    learnerPaceMs: nonNegative(r, 'learnerPaceMs', DEFAULTS.raft.learnerPaceMs),
    maxInflightEntries: positive(r, 'maxInflightEntries', DEFAULTS.raft.maxInflightEntries),
  }
  if (!Number.isSafeInteger(raft.maxInflightEntries)) throw new TypeError('Sworm.start: option "maxInflightEntries" must be an integer')
  if (raft.learnerPaceMs > 1000) throw new TypeError('Sworm.start: option "learnerPaceMs" must be at most 1000 (ms)')
  // The leader holds its lease only while a quorum answered a heartbeat sent less than
  // (electionTicks - 1) ticks / (1 + drift rate) ago. A window shorter than two heartbeats is
  // never met: no leader would ever hold its lease, so none would declare a node gone or renew a
  // lease at once (found by review, session 24: lease 1 s with a drift of 5 s gave 42 ms).
  const window = leaseWindowMs(raft.electionTicks, raft.tickMs, maxClockDriftMs / leaseTimeoutMs, false)
  if (window < 2 * raft.tickMs) {
    throw new TypeError(
      `Sworm.start: options "maxClockDriftMs" (${maxClockDriftMs}), "leaseTimeoutMs" (${leaseTimeoutMs}) and "raft.electionTicks" (${raft.electionTicks}) leave the leader a lease window of ` +
        `${window.toFixed(1)} ms, less than two heartbeats (${2 * raft.tickMs} ms): no leader could ever hold its lease. Raise "raft.electionTicks" or "leaseTimeoutMs", or lower "maxClockDriftMs"`,
    )
  }
  const voters = positive(o, 'voters', DEFAULTS.voters)
  if (!Number.isInteger(voters) || voters % 2 === 0) throw new TypeError('Sworm.start: option "voters" must be an odd integer (1, 3, 5, 7...)')
  if (o.zone !== undefined && (typeof o.zone !== 'string' || o.zone.length === 0 || o.zone.length > 256)) {
    throw new TypeError('Sworm.start: option "zone" must be a non-empty string of at most 256 characters')
  }
  if (o.autopilot !== undefined && !isObj(o.autopilot)) throw new TypeError('Sworm.start: option "autopilot" must be an object')
  const ap = (o.autopilot ?? {}) as Record<string, unknown>
  const autopilot = {
    stabilizationMs: positive(ap, 'stabilizationMs', DEFAULTS.autopilot.stabilizationMs),
    maxTrailingEntries: positive(ap, 'maxTrailingEntries', DEFAULTS.autopilot.maxTrailingEntries),
  }
  if (o.stopOnSignals !== undefined && o.stopOnSignals !== false && !(Array.isArray(o.stopOnSignals) && o.stopOnSignals.every((x) => typeof x === 'string' && /^SIG[A-Z0-9]+$/.test(x)))) {
    throw new TypeError('Sworm.start: option "stopOnSignals" must be false or an array of signal names such as \'SIGTERM\'')
  }
  const stopOnSignals: readonly NodeJS.Signals[] = o.stopOnSignals === false ? [] : ((o.stopOnSignals as NodeJS.Signals[] | undefined) ?? DEFAULTS.stopOnSignals)
  const deadNodeTimeoutMs = o.deadNodeTimeoutMs === undefined ? undefined : positive(o, 'deadNodeTimeoutMs', 0)
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
  if (o.moduleBase !== undefined && (typeof o.moduleBase !== 'string' || o.moduleBase.length === 0)) {
    throw new TypeError('Sworm.start: option "moduleBase" must be a non-empty string')
  }
  return {
    name,
    nodeId,
    listen,
    peers: options.peers,
    join: options.join,
    discovery,
    secret,
    dataDir,
    tls: options.tls,
    logger: options.logger,
    logLevel: options.logLevel ?? DEFAULTS.logLevel,
    leaseTimeoutMs,
    maxClockDriftMs,
    placement: options.placement === 'hash' ? hashPlacement : typeof options.placement === 'function' ? options.placement : defaultPlacement,
    moduleBase: resolvePath(options.moduleBase ?? process.cwd()),
    startTimeoutMs,
    rebalance: options.rebalance === true,
    maxNameBytes,
    maxMessageBytes,
    callTimeoutMs,
    castBufferSize,
    requestTimeoutMs,
    voters,
    zone: options.zone,
    autopilot,
    deadNodeTimeoutMs,
    stopOnSignals,
    raft,
    metricsPort: options.metricsPort,
    metricsHost: options.metricsHost,
    nodeDownAfterMs: leaseTimeoutMs + maxClockDriftMs + (raft.electionTicks - 1) * raft.tickMs,
    clockDrift: maxClockDriftMs / leaseTimeoutMs,
  }
}
