/**
 * Prometheus metrics of one sworm on one node, in a registry of its own (several sworms can live
 * in one process), every series labelled `sworm` and `node`.
 *
 * The hot path only touches plain counters: the commit latency goes into a fixed-bucket
 * histogram without allocating (see {@link LatencyHistogram}); gauges (term, role, indexes,
 * counts) are read from the node when the metrics are scraped.
 * @module
 */
import { Counter, Gauge, Registry, type Metric } from 'prom-client'

/** Upper bounds (seconds) of the commit latency buckets: 0.25 ms to 5 s. */
export const COMMIT_LATENCY_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] as const

/** Raft roles, in the order of the `sworm_raft_role` series. */
const ROLES = ['follower', 'precandidate', 'candidate', 'leader'] as const

/**
 * A Prometheus histogram that counts observations into preallocated buckets (no allocation, no
 * label hashing per observation) and renders itself when scraped.
 */
export class LatencyHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram' as const
  readonly aggregator = 'sum' as const
  private readonly bounds: readonly number[]
  private readonly counts: Float64Array
  private sum = 0
  private count = 0

  constructor(name: string, help: string, bounds: readonly number[]) {
    this.name = name
    this.help = help
    this.bounds = bounds
    this.counts = new Float64Array(bounds.length + 1)
  }

  /** Count one observation of `seconds`. */
  observe(seconds: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && seconds > b[i]!) i++
    this.counts[i]!++
    this.sum += seconds
    this.count++
  }

  /** Observations so far (for tests and `/status`). */
  get total(): number {
    return this.count
  }

  /** The series, in prom-client's shape (cumulative buckets, `+Inf`, sum, count). */
  get(): { name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> } {
    const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = []
    let acc = 0
    for (let i = 0; i < this.bounds.length; i++) {
      acc += this.counts[i]!
      values.push({ metricName: `${this.name}_bucket`, labels: { le: this.bounds[i]! }, value: acc })
    }
    values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf' }, value: this.count })
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum })
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.count })
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset(): void {
    this.counts.fill(0)
    this.sum = 0
    this.count = 0
  }
}

/** What the gauges read at scrape time. */
export interface MetricsSnapshot {
  role: string
  term: number
  commit: number
  applied: number
  lastIndex: number
  snapshotIndex: number
  /** Seconds since the last snapshot was taken or installed (or since start). */
  snapshotAgeSeconds: number
  voters: number
  learners: number
  names: number
  supervised: number
  localWorkers: number
  lease: boolean
  nodesUp: number
  /** Size of the latest snapshot (taken or installed), in bytes. */
  snapshotBytes: number
  /** How long the latest snapshot this node took took, in seconds. */
  snapshotSeconds: number
  /** Bytes of a snapshot this node is receiving, in so far and in all (0 and 0 when none). */
  snapshotReceivedBytes: number
  snapshotReceivingBytes: number
  /** Bytes of snapshots the leader still has to send (not yet acknowledged), over all followers. */
  snapshotSendingBytes: number
  /** Longest and 99th-percentile event-loop delay since the previous scrape, in seconds. */
  eventLoopDelayMaxSeconds: number
  eventLoopDelayP99Seconds: number
}

/** The metrics of one sworm on one node. */
export class SwormMetrics {
  /** The registry with this sworm's metrics only (merge it into yours with `Registry.merge`). */
  readonly registry = new Registry()
  readonly commitLatency = new LatencyHistogram(
    'sworm_raft_commit_latency_seconds',
    'Time from propose to applied on the proposing node, in seconds',
    COMMIT_LATENCY_BUCKETS,
  )
  readonly electionsStarted: Counter
  readonly leaderChanges: Counter
  readonly restarts: Counter
  readonly handoffs: Counter
  readonly leaseExpiries: Counter
  readonly fencedWorkers: Counter
  readonly castsDropped: Counter
  readonly callsRedirected: Counter
  readonly callsOutcomeUnknown: Counter
  readonly nodeEvents: Counter<'event'>
  readonly autopilotChanges: Counter<'action'>
  private readonly gauges: Record<keyof Omit<MetricsSnapshot, 'role' | 'lease'> | 'lease' | 'snapshotAgeEntries' | 'logEntries', Gauge>
  private readonly role: Gauge<'role'>

  constructor(
    labels: { sworm: string; node: string },
    private readonly read: () => MetricsSnapshot,
  ) {
    const reg = this.registry
    reg.setDefaultLabels(labels)
    const counter = (name: string, help: string): Counter => new Counter({ name, help, registers: [reg] })
    const gauge = (name: string, help: string): Gauge => new Gauge({ name, help, registers: [reg] })
    this.role = new Gauge({ name: 'sworm_raft_role', help: 'Raft role of this node (1 for the current role)', labelNames: ['role'], registers: [reg] })
    this.gauges = {
      term: gauge('sworm_raft_term', 'Current Raft term'),
      commit: gauge('sworm_raft_commit_index', 'Highest log index known committed'),
      applied: gauge('sworm_raft_applied_index', 'Highest log index applied to the registry'),
      lastIndex: gauge('sworm_raft_last_index', 'Last index of the Raft log'),
      logEntries: gauge('sworm_raft_log_entries', 'Entries in the Raft log after the latest snapshot (the log size)'),
      snapshotIndex: gauge('sworm_raft_snapshot_index', 'Last log index covered by the latest snapshot'),
      snapshotAgeEntries: gauge('sworm_raft_snapshot_age_entries', 'Entries applied since the latest snapshot'),
      snapshotAgeSeconds: gauge('sworm_raft_snapshot_age_seconds', 'Seconds since the latest snapshot was taken or installed (or since start)'),
      voters: gauge('sworm_raft_voters', 'Voters in the Raft configuration'),
      learners: gauge('sworm_raft_learners', 'Learners in the Raft configuration'),
      names: gauge('sworm_registry_names', 'Names registered in the sworm (whole cluster, local copy)'),
      supervised: gauge('sworm_supervised_workers', 'Supervised workers running on this node'),
      localWorkers: gauge('sworm_local_workers', 'Workers hosted by this node (supervised and spawned)'),
      lease: gauge('sworm_lease_ok', '1 when this node holds its lease (may run supervised workers)'),
      nodesUp: gauge('sworm_nodes_up', 'Nodes of the sworm the registry holds as up'),
      snapshotBytes: gauge('sworm_raft_snapshot_bytes', 'Size of the latest snapshot, taken or installed, in bytes'),
      snapshotSeconds: gauge('sworm_raft_snapshot_duration_seconds', 'How long the latest snapshot this node took took, start to durable'),
      snapshotReceivedBytes: gauge('sworm_raft_snapshot_received_bytes', 'Bytes received so far of the snapshot this node is being sent (0 when none)'),
      snapshotReceivingBytes: gauge('sworm_raft_snapshot_receiving_bytes', 'Size of the snapshot this node is being sent (0 when none)'),
      snapshotSendingBytes: gauge('sworm_raft_snapshot_sending_bytes', 'Bytes of snapshots this leader still has to send, over all followers'),
      eventLoopDelayMaxSeconds: gauge('sworm_event_loop_delay_max_seconds', 'Longest event-loop delay since the previous scrape (a stall: GC, long synchronous work)'),
      eventLoopDelayP99Seconds: gauge('sworm_event_loop_delay_p99_seconds', '99th percentile of the event-loop delay since the previous scrape'),
    }
    this.electionsStarted = counter('sworm_raft_elections_started_total', 'Elections this node started (became candidate)')
    this.leaderChanges = counter('sworm_raft_leader_changes_total', 'Leaders seen by this node (one per term with a known leader)')
    this.restarts = counter('sworm_worker_restarts_total', 'Supervised workers of this node restarted after they ended')
    this.handoffs = counter('sworm_worker_handoffs_total', 'Supervised workers of this node handed over to another node')
    this.leaseExpiries = counter('sworm_lease_expiries_total', 'Times this node lost its lease')
    this.fencedWorkers = counter('sworm_fenced_workers_total', 'Supervised workers stopped because this node lost its lease')
    this.castsDropped = counter('sworm_casts_dropped_total', 'Casts held while the worker moved or started (by name, or to a ref fixed at its placement) and dropped: buffer full, name gone, or held for castHoldMs')
    this.callsRedirected = counter('sworm_calls_redirected_total', 'Calls by name that found the worker gone (not handled) and went to its next incarnation')
    this.callsOutcomeUnknown = counter('sworm_calls_outcome_unknown_total', 'Calls rejected with OUTCOME_UNKNOWN: the node they went to died, or the connection was lost, before the reply')
    this.nodeEvents = new Counter({ name: 'sworm_node_events_total', help: 'Nodes declared up or down, as applied on this node', labelNames: ['event'], registers: [reg] })
    this.autopilotChanges = new Counter({ name: 'sworm_autopilot_changes_total', help: 'Configuration changes autopilot made as leader on this node (promote, demote, remove)', labelNames: ['action'], registers: [reg] })
    for (const action of ['promote', 'demote', 'remove']) this.autopilotChanges.inc({ action }, 0)
    this.nodeEvents.inc({ event: 'up' }, 0)
    this.nodeEvents.inc({ event: 'down' }, 0)
    reg.registerMetric(this.commitLatency as unknown as Metric<string>)
  }

  /** Refresh the gauges from the node. */
  private refresh(): void {
    const s = this.read()
    const g = this.gauges
    g.term.set(s.term)
    g.commit.set(s.commit)
    g.applied.set(s.applied)
    g.lastIndex.set(s.lastIndex)
    g.logEntries.set(Math.max(0, s.lastIndex - s.snapshotIndex))
    g.snapshotIndex.set(s.snapshotIndex)
    g.snapshotAgeEntries.set(Math.max(0, s.applied - s.snapshotIndex))
    g.snapshotAgeSeconds.set(s.snapshotAgeSeconds)
    g.voters.set(s.voters)
    g.learners.set(s.learners)
    g.names.set(s.names)
    g.supervised.set(s.supervised)
    g.localWorkers.set(s.localWorkers)
    g.lease.set(s.lease ? 1 : 0)
    g.nodesUp.set(s.nodesUp)
    g.snapshotBytes.set(s.snapshotBytes)
    g.snapshotSeconds.set(s.snapshotSeconds)
    g.snapshotReceivedBytes.set(s.snapshotReceivedBytes)
    g.snapshotReceivingBytes.set(s.snapshotReceivingBytes)
    g.snapshotSendingBytes.set(s.snapshotSendingBytes)
    g.eventLoopDelayMaxSeconds.set(s.eventLoopDelayMaxSeconds)
    g.eventLoopDelayP99Seconds.set(s.eventLoopDelayP99Seconds)
    for (const r of ROLES) this.role.set({ role: r }, r === s.role ? 1 : 0)
  }

  /** The metrics in the Prometheus text format. */
  async text(): Promise<string> {
    this.refresh()
    return this.registry.metrics()
  }

  /** Content type of {@link SwormMetrics.text}. */
  get contentType(): string {
    return this.registry.contentType
  }
}
