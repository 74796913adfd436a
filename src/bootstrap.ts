/**
 * How a sworm node is put together: `start` opens the real parts (the WebSocket hub and its
 * channels, LevelDB under `dataDir`); `assemble` builds the node from given parts (the simulation
 * gives in-memory storage, a simulated network and simulated time): the registry state machine,
 * the local workers, the disk identity and bootstrap probe, and the Raft node, and decides
 * whether this node must first ask a cluster to add it.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { join as joinPath } from 'node:path'
import { dataLostMessage, diskIdentity, probePeers } from './cluster/identity.js'
import { discoverStart, resolveUrls, type DiscoveryOptions, type DiscoveryOutcome } from './cluster/discovery.js'
import { isMember } from './cluster/config.js'
import { NodeDataLostError } from './errors.js'
import { PeerFaults } from './net/faults.js'
import { acquireHub, releaseHub } from './net/hub-pool.js'
import { SwormMetrics, type MetricsSnapshot } from './observability/metrics.js'
import { pinoLogger } from './observability/logging.js'
import type { ResolvedOptions } from './options.js'
import { LevelStorage } from './raft/storage/level-storage.js'
import { RaftNode } from './raft/node.js'
import { diskOf, systemClock, type Clock, type ClusterConfig, type Logger, type RaftStorage, type Transport } from './raft/types.js'
import type { WsHub } from './net/hub.js'
import { RegistryState, type RegistryChange } from './registry/state.js'
import type { RegistryCommand, RegistryResult } from './registry/types.js'
import { LocalWorkers, type ExitReason } from './supervisor/local-workers.js'

/**
 * What a sworm is built from (see {@link assemble}).
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
  /** Fault injection around the transports (tests cut links with it). */
  faults?: PeerFaults
  discover?: (url: string) => Promise<string>
  /** Resolve the `discovery` DNS name to URLs (default: cluster/discovery.ts resolveUrls). */
  resolveDns?: (d: DiscoveryOptions, listen: string) => Promise<string[]>
  loadModule?: (specifier: string) => Promise<Record<string, unknown>>
  /** Names the supervisor's safety net looks at per tick (default 10,000; the simulation uses a few, so that it goes through them in slices). */
  reconcileSlice?: number
  /** How often the supervisor's safety net looks again while nothing changed (default 10 s; the simulation makes it never in half its runs, so that a change the supervisor is not told of stands out). */
  reconcileRecheckMs?: number
  /** Supervised names a gone node's entries move at most, each (default 4,096; the simulation uses a few, so that moves come in slices). */
  moveSlice?: number
  /**
   * Told when this node, leading, decides that node `node` (incarnation `inc`) is gone, just before
   * it proposes so: the simulation checks that node's lease is over then (the failure detector's
   * promise, whatever the run's faults did to messages and clocks).
   */
  nodeDownDecided?: (node: string, inc: string) => void
  /** How long the Raft node waits before it first retries a failed disk (default 1 s; the simulation varies it, so that a disk comes back within a lease). */
  storageRetryMs?: number
  /** Release transports and hub after stop. */
  release: () => Promise<void>
}

/**
 * Where the parts built before the sworm report to it: the sworm sets these when it is made.
 * @internal
 */
export interface PartHooks {
  change: (ch: RegistryChange) => void
  exit: (id: number, reason: ExitReason) => void
  snapshot: () => MetricsSnapshot
}

/**
 * Everything a sworm is made of, built by {@link assemble}.
 * @internal
 */
export interface SwormParts {
  readonly options: ResolvedOptions
  /**
   * For a node its applied configuration does not list yet: nodes to send its join request to
   * (besides the leader), found again at each call (see {@link Membership}).
   */
  readonly rejoinTargets: (() => Promise<string[]>) | undefined
  /** Add addresses to the message channel's address book (nodes a joining node learned of). */
  readonly addPeers: (peers: Record<string, string>) => void
  readonly inc: string
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly state: RegistryState
  readonly workers: LocalWorkers
  readonly metrics: SwormMetrics
  readonly hooks: PartHooks
  readonly clock: Clock
  readonly log: Logger
  readonly msgs: Transport
  readonly hub: WsHub | undefined
  readonly faults: PeerFaults | undefined
  /** This node's data directory identity (see cluster/identity.ts), if its storage keeps one. */
  readonly disk: string | undefined
  readonly loadModule: ((specifier: string) => Promise<Record<string, unknown>>) | undefined
  readonly reconcileSlice: number | undefined
  readonly reconcileRecheckMs: number | undefined
  readonly moveSlice: number | undefined
  readonly nodeDownDecided: ((node: string, inc: string) => void) | undefined
  readonly release: () => Promise<void>
}

/**
 * What {@link assemble} needs of the sworm it makes.
 * @internal
 */
export interface Assembled {
  /** Start its timers and announce the node. */
  begin(): void
  /** Ask the cluster (through node `via`) to add this node, started with `join`. */
  askToJoin(via: string, url: string): Promise<void>
}

/**
 * Build a node from `deps`, make the sworm with `make`, start it, and let it join when it must.
 * `onMade` sees the sworm before it starts (the simulation crashes nodes mid-join).
 */
export async function assemble<S extends Assembled>(
  options: ResolvedOptions,
  deps: SwormDeps,
  make: (parts: SwormParts) => S,
  onMade?: (sworm: S) => void,
): Promise<S> {
  const { name, nodeId, peers } = options
  const hooks: PartHooks = { change: () => {}, exit: () => {}, snapshot: () => ({}) as MetricsSnapshot }
  const metrics = new SwormMetrics({ sworm: name, node: nodeId }, () => hooks.snapshot())
  const latency = metrics.commitLatency
  const state = new RegistryState((ch) => hooks.change(ch), options.placement)
  const workers = new LocalWorkers((id, reason) => hooks.exit(id, reason))
  const disk = await diskIdentity(deps.storage, deps.random ?? (() => randomBytes(4).readUInt32BE() / 2 ** 32))
  let caughtUpFromPeers = false
  /** What DNS discovery decided, on an empty data directory (cluster/discovery.ts). */
  let discovered: DiscoveryOutcome | undefined
  const discover = async (): Promise<DiscoveryOutcome> => {
    const d = options.discovery!
    if (!deps.discover) throw new TypeError('Sworm.start: option "discovery" needs the real network')
    return discoverStart({
      nodeId,
      listen: options.listen,
      discovery: d,
      identify: deps.discover,
      transport: deps.msgTransport,
      disk: disk ?? nodeId,
      clock: deps.clock,
      logger: deps.logger,
      ...(deps.resolveDns ? { resolve: deps.resolveDns } : {}),
    })
  }
  const bootstrapFrom = async (seeds: Record<string, string>, d: string): Promise<ClusterConfig | undefined> => {
    const out = await probePeers({ nodeId, peers: seeds, disk: d, transport: deps.msgTransport, clock: deps.clock, logger: deps.logger })
    caughtUpFromPeers = out.bootstrap === undefined
    return out.bootstrap
  }
  const raft = await RaftNode.start<RegistryCommand, RegistryResult>({
    // (read once the bootstrap step ran: a node that discovery sends to join must not vote with an empty log)
    ...(disk !== undefined ? { disk, voteUnlisted: () => options.join === undefined && !(discovered && 'join' in discovered) } : {}),
    leaseTimeoutMs: options.leaseTimeoutMs,
    ...(peers && disk !== undefined ? { resolveBootstrap: () => bootstrapFrom(peers, disk) } : {}),
    ...(options.discovery
      ? {
          // on an empty data directory only: a node with a log starts from it
          resolveBootstrap: async () => {
            discovered = await discover()
            return 'peers' in discovered ? bootstrapFrom(discovered.peers, disk ?? nodeId) : undefined
          },
        }
      : {}),
    id: nodeId,
    storage: deps.storage,
    transport: deps.raftTransport,
    stateMachine: state,
    clock: deps.clock,
    ...(deps.random ? { random: deps.random } : {}),
    ...(peers ? { bootstrap: { voters: { ...peers }, learners: {} }, seeds: { ...peers } } : {}),
    logger: deps.logger,
    requestTimeoutMs: options.requestTimeoutMs,
    // the drift bound the leases assume, as a rate (the leader's lease must end before any voter's election timeout)
    clockDrift: options.clockDrift,
    // the node leases and the failure detector rest on the leader's lease: a restarted voter must
    // not elect a new leader while the old one may hold it (see RaftNodeOptions.leaderLease)
    leaderLease: true,
    tickMs: options.raft.tickMs,
    electionTicks: options.raft.electionTicks,
    snapshotEvery: options.raft.snapshotEvery,
    snapshotChunkBytes: options.raft.snapshotChunkBytes,
    maxLogEntries: options.raft.maxLogEntries,
    learnerPaceMs: options.raft.learnerPaceMs,
    maxInflightEntries: options.raft.maxInflightEntries,
    ...(deps.storageRetryMs !== undefined ? { storageRetryMs: deps.storageRetryMs } : {}),
    observeCommitMs: (ms) => latency.observe(ms / 1000),
  })
  try {
    const st = raft.status()
    const bound = diskOf(st.config, nodeId)
    if (disk !== undefined && bound !== undefined && bound !== disk) {
      // the configuration knows this node with another data directory: this one is not it
      deps.logger.error('refusing to start: this node lost its data', { node: nodeId })
      throw new NodeDataLostError(nodeId, dataLostMessage(nodeId, 'its own log says so'))
    }
    // A disk with a term but no log belongs to a member that took part in elections before its
    // first entries reached it (its probe had found the cluster): it waits for the leader too.
    const waitingMember = (peers !== undefined || options.discovery !== undefined) && st.term > 0
    const fresh = st.lastIndex === 0 && Object.keys(st.config.voters).length === 0 && !caughtUpFromPeers && !waitingMember
    let joinVia: string | undefined
    const join = options.join ?? (discovered && 'join' in discovered ? discovered.join : undefined)
    // A node started with `join` that its log does not list (fresh, or its join was cut short)
    // asks to be added, and waits until the applied configuration lists it. One its log lists
    // starts at once (the node named by `join` may be gone by now); should the entry that lists
    // it be overwritten by another leader's log, it asks again (cluster/membership.ts).
    if (fresh || (join !== undefined && !isMember(st.config, nodeId))) {
      if (!join || !deps.discover) throw new TypeError('Sworm.start: a new node needs option "peers" (a new cluster), "join" (an existing one) or "discovery"')
      joinVia = await deps.discover(join)
    }
    /** The message channel's address book: what the start learned, plus the nodes asked to rejoin. */
    const msgPeers: Record<string, string> = joinVia !== undefined && join !== undefined ? { [joinVia]: join } : { ...(peers ?? (discovered && 'peers' in discovered ? discovered.peers : {})) }
    deps.msgTransport.setPeers(msgPeers)
    // Where a node that is not (or no longer) listed asks again: the address it joined through,
    // the voters its log knows, then the addresses DNS gives; up to 3 nodes that answer.
    const identify = deps.discover
    const rejoinTargets = identify
      ? async (): Promise<string[]> => {
          const urls = [...(join !== undefined ? [join] : []), ...Object.entries(raft.status().config.voters).filter(([id]) => id !== nodeId).map(([, u]) => u)]
          if (options.discovery) urls.push(...(await (deps.resolveDns ?? resolveUrls)(options.discovery, options.listen).catch(() => [])))
          const found: Record<string, string> = {}
          for (const url of new Set(urls)) {
            if (url === options.listen || Object.keys(found).length >= 3) continue
            const id = await identify(url).catch(() => undefined)
            if (id !== undefined && id !== nodeId) found[id] = url
          }
          Object.assign(msgPeers, found)
          deps.msgTransport.setPeers(msgPeers)
          return Object.keys(found)
        }
      : undefined
    const sworm = make({
      options,
      rejoinTargets,
      addPeers: (more) => {
        Object.assign(msgPeers, more)
        deps.msgTransport.setPeers(msgPeers)
      },
      inc: deps.inc,
      raft,
      state,
      workers,
      metrics,
      hooks,
      clock: deps.clock,
      log: deps.logger,
      msgs: deps.msgTransport,
      hub: deps.hub,
      faults: deps.faults,
      disk,
      loadModule: deps.loadModule,
      reconcileSlice: deps.reconcileSlice,
      reconcileRecheckMs: deps.reconcileRecheckMs,
      moveSlice: deps.moveSlice,
      nodeDownDecided: deps.nodeDownDecided,
      release: deps.release,
    })
    onMade?.(sworm)
    sworm.begin()
    if (joinVia !== undefined) await sworm.askToJoin(joinVia, options.listen)
    return sworm
  } catch (err) {
    await raft.stop({ transfer: false }).catch(() => {})
    throw err
  }
}

/**
 * Open the real parts (the WebSocket hub shared by the sworms on `listen`, this sworm's two
 * channels, LevelDB under `dataDir`) and assemble the node; on failure, release what was opened.
 */
export async function start<S extends Assembled & { stop(): Promise<void> }>(
  options: ResolvedOptions,
  make: (parts: SwormParts) => S,
  serveMetrics: (sworm: S, host: string, port: number) => Promise<void>,
): Promise<S> {
  const { name, nodeId, listen, secret } = options
  const log = options.logger ?? pinoLogger(options.logLevel, { sworm: name, node: nodeId })
  const hub = await acquireHub({ nodeId, listen, secret, logger: log, ...(options.tls ? { tls: options.tls } : {}) })
  // Both channels pass through one fault injector: a test that blocks a peer cuts both at once.
  const faults = new PeerFaults()
  let raftChannel: Transport | undefined
  let msgs: Transport | undefined
  try {
    raftChannel = faults.wrap(hub.channel(`raft:${name}`))
    msgs = faults.wrap(hub.channel(`msg:${name}`))
    const storage = await LevelStorage.open(joinPath(options.dataDir, encodeURIComponent(name)), { logger: log })
    const rc = raftChannel
    const mc = msgs
    const sworm = await assemble(
      options,
      {
        storage,
        raftTransport: rc,
        msgTransport: mc,
        clock: systemClock,
        logger: log,
        inc: randomBytes(6).toString('hex'),
        hub,
        faults,
        discover: (url) => hub.discover(url),
        release: async () => {
          await mc.close()
          await rc.close()
          await releaseHub(hub)
        },
      },
      make,
    )
    if (options.metricsPort !== undefined) {
      const host = options.metricsHost ?? new URL(listen).hostname.replace(/^\[(.*)\]$/, '$1')
      try {
        await serveMetrics(sworm, host, options.metricsPort)
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
