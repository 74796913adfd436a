/**
 * DNS discovery: how a node started with `discovery` instead of `peers` or `join` finds its
 * cluster, from the A/AAAA records of a name (a Kubernetes headless Service), or its SRV records.
 *
 * At start, until it knows what to do, every `intervalMs` the node resolves the name again and:
 * 1. learns the node id behind each address (the authenticated handshake: only nodes with the
 *    secret answer), itself excluded;
 * 2. probes them (the probe of cluster/identity.ts): if one is a member of a running cluster, this
 *    node joins through it (as with `join`: a learner first, a voter if autopilot wants one);
 * 3. with `expect: N`, once N nodes (itself included) answer and none runs a cluster, the N
 *    lowest ids it sees are the first members it proposes (once, for good); they start the new
 *    cluster once each of them proposes the same N:
 *    each of them starts as with `peers` (and the bootstrap probe then waits until all N are up);
 *    any other node waits and joins them. As with Consul's `bootstrap_expect`, set it to the
 *    number of instances the app starts with, and start them together.
 * A node whose data directory already holds a cluster starts from it whatever DNS says.
 * @module
 */
import { Resolver } from 'node:dns/promises'
import { isMember } from './config.js'
import { isProbe, isProbeResp, type ProbeMsg } from './identity.js'
import type { Clock, ClusterConfig, Logger, NodeId, Transport } from '../raft/types.js'

/** The `discovery` option of {@link SwormOptions}. */
export interface DiscoveryOptions {
  /**
   * The DNS name to resolve: its A and AAAA records (each address with `port`), or, for a name that
   * starts with `_` (such as `_sworm._tcp.app.default.svc.cluster.local`), its SRV records (each
   * target with its port).
   */
  dns: string
  /** Port of the addresses from A/AAAA records. Default: the port of `listen`. */
  port?: number
  /**
   * How many nodes start a new cluster: when no running cluster answers and this many nodes
   * (this one included) do, the ones with the lowest ids start it. Without it, a node only joins
   * a running cluster.
   */
  expect?: number
  /** DNS servers to ask (`host` or `host:port`). Default: the system's. */
  servers?: string[]
  /** Resolve again this often until the node knows where its cluster is. Default 1,000 ms. */
  intervalMs?: number
}

/** What discovery decided: start as with `peers`, or as with `join`. */
export type DiscoveryOutcome = { peers: Record<NodeId, string> } | { join: string }

/** Resolve `d.dns` to the URLs of the nodes behind it (none when the name has no such records yet). */
export async function resolveUrls(d: DiscoveryOptions, listen: string): Promise<string[]> {
  const u = new URL(listen)
  const r = new Resolver({ timeout: 2000, tries: 2 })
  if (d.servers) r.setServers(d.servers)
  const none = (): string[] => []
  if (d.dns.startsWith('_')) {
    const srv = await r.resolveSrv(d.dns).catch(() => [])
    return srv.map((s) => `${u.protocol}//${s.name.includes(':') ? `[${s.name}]` : s.name}:${s.port}`)
  }
  const port = d.port ?? Number(u.port)
  const [v4, v6] = await Promise.all([r.resolve4(d.dns).catch(none), r.resolve6(d.dns).catch(none)])
  return [...v4.map((a) => `${u.protocol}//${a}:${port}`), ...v6.map((a) => `${u.protocol}//[${a}]:${port}`)]
}

const isWsUrl = (v: string): boolean => {
  try {
    const u = new URL(v)
    return (u.protocol === 'ws:' || u.protocol === 'wss:') && u.port !== ''
  } catch {
    return false
  }
}

/** What {@link discoverStart} needs. */
export interface DiscoveryHost {
  readonly nodeId: NodeId
  readonly listen: string
  readonly discovery: DiscoveryOptions
  /** The node id of the hub listening at a URL (rejects when it cannot be reached or authenticated). */
  identify(url: string): Promise<NodeId>
  /** The sworm's message channel (probes ride it). */
  readonly transport: Transport
  /** This data directory's identity (any stable string). */
  readonly disk: string
  readonly clock: Clock
  readonly logger: Logger
  /** Resolve the name (default: {@link resolveUrls}). */
  resolve?: (d: DiscoveryOptions, listen: string) => Promise<string[]>
  /** Give up (rejects with this error) once it returns one. */
  stopped?: () => Error | undefined
}

/**
 * Find the cluster through DNS (see the module documentation). Installs its own handler on the
 * transport for the duration; the caller installs its own after.
 */
export async function discoverStart(h: DiscoveryHost): Promise<DiscoveryOutcome> {
  const { discovery: d, transport, clock, logger } = h
  const interval = d.intervalMs ?? 1000
  /** Address of each node found, as it advertises itself when it says so (else as DNS gives it). */
  const found = new Map<NodeId, string>()
  const fresh = new Set<NodeId>()
  /** The first members each node would start a cluster with, as it last said. */
  const seedsOf = new Map<NodeId, string>()
  /** The first members this node would start a cluster with (sorted ids), when `expect` is set. */
  let mine: NodeId[] = []
  let member: { from: NodeId; config: ClusterConfig } | undefined
  transport.onMessage((from, m) => {
    if (isProbe(m)) {
      transport.send(from, { t: 'probeResp', member: false, disk: h.disk, url: h.listen, ...(mine.length ? { seeds: mine } : {}) } satisfies ProbeMsg)
      return
    }
    if (!isProbeResp(m) || !found.has(from)) return
    if (m.member) member ??= { from, config: m.config }
    else {
      fresh.add(from)
      if (typeof m.url === 'string' && isWsUrl(m.url)) found.set(from, m.url)
      if (m.seeds !== undefined) seedsOf.set(from, m.seeds.join(','))
    }
  })
  /** Addresses whose node is known (this node's own among them). */
  const known = new Set<string>()
  const started = clock.now()
  let lastLog = started
  for (;;) {
    const stop = h.stopped?.()
    if (stop) throw stop
    const urls = await (h.resolve ?? resolveUrls)(d, h.listen).catch(() => [])
    await Promise.all(
      urls
        .filter((url) => url !== h.listen && !known.has(url))
        .map(async (url) => {
          const id = await h.identify(url).catch(() => undefined)
          if (id === undefined) return // not up yet: asked again next round
          known.add(url)
          if (id !== h.nodeId && !found.has(id)) found.set(id, url)
        }),
    )
    transport.setPeers(Object.fromEntries(found))
    for (const id of found.keys()) transport.send(id, { t: 'probe', disk: h.disk } satisfies ProbeMsg)
    await new Promise<void>((resolve) => clock.setTimeout(resolve, interval))
    if (member !== undefined) {
      const cfg = member.config
      // one of its first members that was a round late: it starts as they did, and the
      // bootstrap probe finds the cluster that lists it (or that this node lost its data)
      if (isMember(cfg, h.nodeId)) {
        logger.info('discovery: found the cluster started with this node; catching up', { via: member.from })
        return { peers: { ...cfg.voters, ...cfg.learners } }
      }
      logger.info('discovery: found a running cluster; joining it', { via: member.from, url: found.get(member.from) })
      return { join: found.get(member.from)! }
    }
    if (d.expect !== undefined && fresh.size + 1 >= d.expect) {
      // Chosen once and never changed: another node may already have started on what this one
      // said (a node that changed its mind could belong to two first groups, each with a quorum).
      if (mine.length === 0) mine = [h.nodeId, ...fresh].sort().slice(0, d.expect)
      const first = mine
      // only once every one of them said it would start with these very members: nodes that saw
      // different answers from DNS must not start two clusters
      const agreed = first.every((id) => id === h.nodeId || seedsOf.get(id) === first.join(','))
      if (agreed && first.includes(h.nodeId)) {
        const peers = Object.fromEntries(first.map((id) => [id, id === h.nodeId ? h.listen : found.get(id)!]))
        logger.info('discovery: no running cluster; starting a new one with the first nodes found', { peers: Object.keys(peers) })
        return { peers }
      }
    }
    if (clock.now() - lastLog >= 5000) {
      lastLog = clock.now()
      logger.info(
        d.expect === undefined
          ? 'discovery: no member of a running cluster found yet (set discovery.expect to start a new cluster)'
          : `discovery: waiting for a running cluster, or for ${d.expect} nodes to start one`,
        { dns: d.dns, answering: [...found.keys()], waitedMs: Math.round(lastLog - started) },
      )
    }
  }
}
