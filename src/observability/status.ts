/**
 * What a node tells about itself: {@link Sworm.status}, the report `GET /status` serves, the
 * gauges of the Prometheus metrics, whether it is ready, and the HTTP server of `/metrics`,
 * `/status` and `/ready` (whose address
 * the nodes tell each other, for the dashboard and `sworm status`).
 * @module
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import type { RaftNode } from '../raft/node.js'
import type { Clock, Logger } from '../raft/types.js'
import type { RegistryChange, RegistryState } from '../registry/state.js'
import type { RegistryCommand, RegistryResult } from '../registry/types.js'
import type { WireRouter } from '../rpc/router.js'
import type { LocalWorkers } from '../supervisor/local-workers.js'
import type { Supervisor } from '../supervisor/supervisor.js'
import type { MetricsSnapshot, SwormMetrics } from './metrics.js'
import { startMetricsServer, type MetricsServer } from './metrics-server.js'

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

/**
 * Whether this node serves the sworm now (see {@link Sworm.readiness}): what `GET /ready` answers,
 * with status 200 when `ready`, 503 when not.
 */
export interface SwormReadiness {
  /**
   * This incarnation is up in the registry and holds its lease, it is not stopping, and its disk
   * works (a draining node is ready: it serves calls; its `reason` says it drains).
   */
  ready: boolean
  /** Why not (or `'up'`): a line an operator can act on. */
  reason: string
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

/** What the status needs of its node. */
export interface StatusHost {
  readonly name: string
  readonly nodeId: string
  readonly incarnation: string
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly state: RegistryState
  readonly workers: LocalWorkers
  readonly supervisor: Supervisor
  readonly metrics: SwormMetrics
  readonly router: WireRouter
  readonly clock: Clock
  readonly log: Logger
  leaseOk(): boolean
  stopped(): boolean
  /** Whether this incarnation's announcement (`nodeUp`) is applied here. */
  up(): boolean
  /** Whether `stop()` was called (or a signal asked for it). */
  stopping(): boolean
}

/** Status, metrics and the metrics server of one node. */
export class NodeStatus {
  private loopDelay: IntervalHistogram | undefined
  private server: MetricsServer | undefined
  private readonly startedAt = Date.now()
  /** Metrics addresses other nodes told us. */
  private readonly peers = new Map<string, string>()

  constructor(private readonly host: StatusHost) {
    host.router.on('metricsAt', (from, m) => {
      if (typeof m.url === 'string' && m.url.length <= 256 && /^https?:\/\/[^\s/]+$/.test(m.url)) {
        const known = this.peers.get(from)
        this.peers.set(from, m.url)
        if (m.reply === true && this.server && known !== m.url) host.router.send(from, { t: 'metricsAt', url: this.server.address, reply: false })
      }
    })
  }

  /** `http://host:port` of the metrics server, if it runs. */
  get address(): string | undefined {
    return this.server?.address
  }

  /** See {@link Sworm.status}. */
  status(): SwormStatus {
    const { raft, state, workers, supervisor, nodeId } = this.host
    const s = raft.status()
    return {
      node: nodeId,
      role: s.role,
      term: s.term,
      leader: s.leader,
      commit: s.commit,
      applied: s.applied,
      names: state.size,
      workers: workers.size,
      supervised: supervisor.size,
      lease: this.host.leaseOk(),
      storageFailure: raft.storageFailure()?.message,
      recoveringUpTo: s.recoveringUpTo,
    }
  }

  /** See {@link Sworm.statusReport}. */
  report(): SwormStatusReport {
    const { raft, state, name, nodeId, incarnation } = this.host
    const s = raft.status()
    const metricsPeers: Record<string, string> = {}
    if (this.server) metricsPeers[nodeId] = this.server.address
    for (const [n, url] of this.peers) metricsPeers[n] = url
    return {
      sworm: name,
      ...this.status(),
      incarnation,
      lastIndex: s.lastIndex,
      snapshotIndex: s.snapshotIndex,
      peers: { voters: { ...s.config.voters }, learners: { ...s.config.learners } },
      nodes: state.nodeRecords().map((n) => ({ node: n.node, up: n.up, draining: n.draining })),
      uptime: Math.round((Date.now() - this.startedAt) / 100) / 10,
      metricsAddress: this.server?.address,
      metricsPeers,
    }
  }

  /** See {@link Sworm.readiness}. */
  readiness(): SwormReadiness {
    const { raft, state, nodeId, incarnation } = this.host
    if (this.host.stopping() || this.host.stopped()) return { ready: false, reason: 'stopping: stop() was called (a graceful stop hands its supervised workers to other nodes first)' }
    const failure = raft.storageFailure()
    if (failure) return { ready: false, reason: `storage failure, not serving until its disk works again: ${failure.message}` }
    const rec = state.nodeRecord(nodeId)
    if (!this.host.up() || !rec || !rec.up || rec.inc !== incarnation) {
      const leader = raft.status().leader
      return {
        ready: false,
        reason:
          leader === undefined
            ? 'not up in the sworm yet: no leader seen (a majority of the voters must be up and reachable, with the same secret)'
            : `not up in the sworm yet: its announcement is not applied here (the leader is ${leader})`,
      }
    }
    // cut off from a quorum, it cannot apply its own removal: its record stays up while its fence
    // stops its supervised workers and the others take them over
    if (!this.host.leaseOk()) return { ready: false, reason: 'lease ran out: no contact with a quorum of voters (its supervised workers are stopped)' }
    // a drained node serves calls and reads; only placement passes it over
    if (rec.draining) return { ready: true, reason: 'up, draining: it takes no supervised workers (undrain() takes them again)' }
    return { ready: true, reason: 'up' }
  }

  /** What the gauges of the metrics read. */
  snapshot(): MetricsSnapshot {
    const { raft, state, workers, supervisor, clock } = this.host
    const s = raft.status()
    let nodesUp = 0
    for (const n of state.nodeRecords()) if (n.up) nodesUp++
    const snap = raft.snapshotStats()
    let sending = 0
    for (const x of snap.sending) sending += x.total - x.acked
    const loop = this.eventLoopDelay()
    return {
      role: s.role,
      term: s.term,
      commit: s.commit,
      applied: s.applied,
      lastIndex: s.lastIndex,
      snapshotIndex: s.snapshotIndex,
      snapshotAgeSeconds: Math.max(0, (clock.now() - raft.snapshotTakenAt()) / 1000),
      voters: Object.keys(s.config.voters).length,
      learners: Object.keys(s.config.learners).length,
      names: state.size,
      supervised: supervisor.size,
      localWorkers: workers.size,
      lease: this.host.leaseOk(),
      nodesUp,
      snapshotBytes: snap.bytes,
      snapshotSeconds: snap.ms / 1000,
      snapshotReceivedBytes: snap.receiving?.received ?? 0,
      snapshotReceivingBytes: snap.receiving?.total ?? 0,
      snapshotSendingBytes: sending,
      eventLoopDelayMaxSeconds: loop.max,
      eventLoopDelayP99Seconds: loop.p99,
    }
  }

  /** Start the HTTP server of `/metrics`, `/status` and `/ready`, and tell the peers where it is. */
  async serve(hostname: string, port: number): Promise<void> {
    const { metrics, raft, nodeId, log } = this.host
    this.server = await startMetricsServer(hostname, port, {
      metrics: () => metrics.text(),
      metricsContentType: metrics.contentType,
      status: () => this.report(),
      ready: () => this.readiness(),
    })
    log.info('metrics server listening', { address: this.server.address })
    const cfg = raft.status().config
    for (const peer of new Set([...Object.keys(cfg.voters), ...Object.keys(cfg.learners)])) {
      if (peer !== nodeId) this.tell(peer)
    }
  }

  /** A node came up: tell it where our metrics are. */
  onChange(ch: RegistryChange): void {
    if (ch.type === 'nodeUp' && ch.node !== this.host.nodeId && !this.host.stopped()) this.tell(ch.node)
  }

  /** Stop the metrics server, if it runs. */
  async close(): Promise<void> {
    this.loopDelay?.disable()
    await this.server?.close().catch(() => {})
  }

  /**
   * The longest and the 99th-percentile event-loop delay since the previous call, in seconds.
   * The monitor starts at the first call (the first scrape), so a node nobody scrapes runs none.
   */
  private eventLoopDelay(): { max: number; p99: number } {
    if (!this.loopDelay) {
      this.loopDelay = monitorEventLoopDelay({ resolution: 10 })
      this.loopDelay.enable()
      return { max: 0, p99: 0 }
    }
    const h = this.loopDelay
    const out = h.count > 0 ? { max: h.max / 1e9, p99: h.percentile(99) / 1e9 } : { max: 0, p99: 0 }
    h.reset()
    return out
  }

  private tell(peer: string): void {
    if (this.server) this.host.router.send(peer, { t: 'metricsAt', url: this.server.address, reply: true })
  }
}
