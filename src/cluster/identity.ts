/**
 * Who may start a cluster, and who may rejoin one: the identity of a data directory, and the
 * bootstrap probe of a node started with `peers` on an empty one.
 *
 * Raft is safe only if no voter ever forgets its votes and its log. A voter restarted on an empty
 * data directory (a lost volume, "wipe it to resync") would otherwise bootstrap again as if the
 * cluster were new, vote with no memory, and help a stale node lose acknowledged writes. So:
 *
 * - Every data directory gets a random identity (its "disk id") at its first use, stored before
 *   the node talks to anyone. The configuration records each member's disk id.
 * - A node with an empty log and `peers` probes every peer first. A peer that holds a cluster
 *   answers with its configuration; a peer that is probing too answers with its disk id.
 *   - If every other peer is probing, the cluster is new: each node bootstraps with the same
 *     first entry, which lists every member's disk id, and a cluster id derived from it.
 *   - If a peer holds a cluster that lists this node with this very disk id, this node is an
 *     original member that had not written its first entry yet: it starts empty and catches up
 *     from the leader.
 *   - If that cluster lists this node id with another disk id (or without one), this node lost
 *     its data: it refuses to start ({@link NodeDataLostError}).
 *   - If that cluster does not list this node, it refuses too ({@link ClusterExistsError}): a new
 *     node joins with `join`.
 *   - While some peer has not answered, it waits (a new cluster starts when every peer is up).
 *
 * The probe rides the sworm's message channel, not the Raft one, so a running node answers it
 * whatever its Raft state.
 * @module
 */
import { createHash } from 'node:crypto'
import { ClusterExistsError, NodeDataLostError } from '../errors.js'
import { isMember } from './config.js'
import { diskOf, type Clock, type ClusterConfig, type Logger, type NodeId, type RaftStorage, type Transport } from '../raft/types.js'

/** A probe, and its answers, on the message channel. */
export type ProbeMsg =
  | { t: 'probe'; disk: string }
  /** From a node that holds a cluster: its configuration. */
  | { t: 'probeResp'; member: true; config: ClusterConfig }
  /**
   * From a node that is probing too; one finding its cluster through DNS also says where it
   * listens and, once it knows, the first members it would start a cluster with (cluster/discovery.ts).
   */
  | { t: 'probeResp'; member: false; disk: string; url?: string; seeds?: string[] }

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isStrMap = (v: unknown): v is Record<string, string> => isObj(v) && Object.values(v).every((x) => typeof x === 'string')

/** Whether `m` is a well-formed probe answer. */
export function isProbeResp(m: unknown): m is Extract<ProbeMsg, { t: 'probeResp' }> {
  if (!isObj(m) || m.t !== 'probeResp') return false
  if (m.member === false) {
    return (
      typeof m.disk === 'string' &&
      m.disk.length > 0 &&
      m.disk.length <= 64 &&
      (m.url === undefined || (typeof m.url === 'string' && m.url.length <= 2048)) &&
      (m.seeds === undefined || (Array.isArray(m.seeds) && m.seeds.length <= 64 && m.seeds.every((x) => typeof x === 'string' && x.length <= 1024)))
    )
  }
  if (m.member !== true || !isObj(m.config)) return false
  const c = m.config
  return isStrMap(c.voters) && isStrMap(c.learners) && (c.disks === undefined || isStrMap(c.disks)) && (c.cluster === undefined || typeof c.cluster === 'string')
}

/** Whether `m` is a well-formed probe. */
export function isProbe(m: unknown): m is Extract<ProbeMsg, { t: 'probe' }> {
  return isObj(m) && m.t === 'probe' && typeof m.disk === 'string' && m.disk.length > 0 && m.disk.length <= 64
}

/**
 * This data directory's identity: the stored one, or a new random one, stored durably before it
 * is returned (so a crash right after cannot change it). Undefined when the storage cannot keep
 * one (then nothing is refused).
 */
export async function diskIdentity(storage: RaftStorage, random: () => number): Promise<string | undefined> {
  if (!storage.identity || !storage.saveIdentity) return undefined
  const known = await storage.identity()
  if (known !== undefined) return known
  let id = ''
  for (let i = 0; i < 4; i++) id += Math.floor(random() * 2 ** 32).toString(36).padStart(7, '0')
  await storage.saveIdentity(id)
  return id
}

/** The id of a cluster bootstrapped with `config`: a digest of its members and their disk ids. */
export function clusterIdOf(config: ClusterConfig): string {
  const canon = Object.keys(config.voters)
    .sort()
    .map((id) => [id, config.voters[id], diskOf(config, id) ?? ''])
  return createHash('sha256').update(JSON.stringify(canon)).digest('hex').slice(0, 16)
}

/**
 * The message of a {@link NodeDataLostError} for `node`: what happened and what the operator does.
 * `how`: how it is known (who reported it).
 */
export function dataLostMessage(node: NodeId, how: string): string {
  return (
    `node ${node} is a member of the cluster with another data directory than this one (${how}): it lost the votes and log entries it ` +
    `acknowledged, and rejoining under the same id could lose acknowledged writes. Remove it (sworm.removeNode('${node}') on any live node) ` +
    `and start this machine under a new node id, with "join", on an empty data directory.`
  )
}

/** What the probe decided. `bootstrap`: the first configuration to write; undefined: start empty. */
export interface ProbeOutcome {
  bootstrap: ClusterConfig | undefined
}

/**
 * Probe the peers before bootstrapping an empty data directory (see the module documentation).
 * Installs its own handler on `transport` for the duration; the caller installs its own after.
 * Resolves with the configuration to bootstrap with, or rejects with {@link NodeDataLostError} or
 * {@link ClusterExistsError}. `stopped()` ends the wait (it rejects with the error it returns).
 */
export async function probePeers(o: {
  nodeId: NodeId
  peers: Record<NodeId, string>
  disk: string
  transport: Transport
  clock: Clock
  logger: Logger
  /** Probe again this often (default 500 ms). */
  intervalMs?: number
}): Promise<ProbeOutcome> {
  const others = Object.keys(o.peers).filter((p) => p !== o.nodeId)
  const fresh = new Map<NodeId, string>()
  let member: { from: NodeId; config: ClusterConfig } | undefined
  let wake: (() => void) | undefined
  o.transport.setPeers(Object.fromEntries(others.map((p) => [p, o.peers[p]!])))
  o.transport.onMessage((from, m) => {
    if (isProbe(m)) {
      o.transport.send(from, { t: 'probeResp', member: false, disk: o.disk } satisfies ProbeMsg)
      return
    }
    if (!isProbeResp(m) || !others.includes(from)) return
    if (m.member) member ??= { from, config: m.config }
    else fresh.set(from, m.disk)
    wake?.()
  })
  const interval = o.intervalMs ?? 500
  const started = o.clock.now()
  let lastLog = started
  for (;;) {
    if (member) break
    if (fresh.size === others.length) break
    for (const p of others) if (!fresh.has(p)) o.transport.send(p, { t: 'probe', disk: o.disk } satisfies ProbeMsg)
    await new Promise<void>((resolve) => {
      wake = resolve
      o.clock.setTimeout(resolve, interval)
    })
    wake = undefined
    if (o.clock.now() - lastLog >= 5000 && !member && fresh.size < others.length) {
      lastLog = o.clock.now()
      o.logger.info('waiting for every peer before starting a new cluster (this data directory is empty)', {
        node: o.nodeId,
        waitingFor: others.filter((p) => !fresh.has(p)),
        waitedMs: Math.round(lastLog - started),
      })
    }
  }
  if (member) {
    const cfg = member.config
    const listed = isMember(cfg, o.nodeId)
    if (listed && diskOf(cfg, o.nodeId) === o.disk) {
      o.logger.info('the cluster was started with this node meanwhile: catching up from the leader', { node: o.nodeId, via: member.from })
      return { bootstrap: undefined }
    }
    if (listed) {
      o.logger.error('refusing to start: this node lost its data', { node: o.nodeId, via: member.from })
      throw new NodeDataLostError(o.nodeId, dataLostMessage(o.nodeId, `${member.from} reports it, and this data directory is empty`))
    }
    throw new ClusterExistsError(
      `the peers already run a cluster (${member.from} answered) that does not list node ${o.nodeId}: start a new node with "join" (the URL of a member), not "peers"`,
    )
  }
  const disks: Record<NodeId, string> = { [o.nodeId]: o.disk }
  for (const [p, d] of fresh) disks[p] = d
  const config: ClusterConfig = { voters: { ...o.peers }, learners: {}, disks }
  config.cluster = clusterIdOf(config)
  return { bootstrap: config }
}
