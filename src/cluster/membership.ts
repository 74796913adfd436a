/**
 * Membership of this node: joining a running cluster, announcing this incarnation in the registry
 * (and again after it was declared gone while alive), answering other nodes' join requests and
 * disk probes, and removing nodes.
 * @module
 */
import { ConfigChangeError, InvalidArgumentError, NodeDataLostError, NotFoundError, NotLeaderError, ProposalDroppedError, ShuttingDownError, SwormError, TimeoutError } from '../errors.js'
import { MAX_ID_LENGTH } from '../net/handshake.js'
import { validateUrl } from '../options.js'
import { clip, type RateLimitedLog } from '../observability/rate-limited-log.js'
import type { RaftNode } from '../raft/node.js'
import { diskOf, wasRemoved, type Clock, type Logger } from '../raft/types.js'
import type { RegistryChange, RegistryState } from '../registry/state.js'
import type { RegistryCommand, RegistryResult } from '../registry/types.js'
import type { PendingRequests } from '../rpc/pending.js'
import type { WireRouter } from '../rpc/router.js'
import { retry, sleep, withDeadline } from '../util/retry.js'
import { dataLostMessage, isProbe, isProbeResp } from './identity.js'
import { isMember } from './config.js'

/** What membership needs of its node. */
export interface MembershipHost {
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly state: RegistryState
  readonly clock: Clock
  readonly log: Logger
  readonly peerLog: RateLimitedLog
  readonly router: WireRouter
  readonly requests: PendingRequests
  readonly nodeId: string
  readonly incarnation: string
  /** This node's data directory identity (see cluster/identity.ts), if its storage keeps one. */
  readonly disk: string | undefined
  /** This node's `zone` option. */
  readonly zone: string | undefined
  /** Nodes to send a join request to (besides the leader), found again at each call; see bootstrap.ts. */
  readonly rejoinTargets: (() => Promise<string[]>) | undefined
  /** Add addresses to the message channel's address book. */
  addPeers(peers: Record<string, string>): void
  /** This node's `listen` address. */
  readonly listen: string
  readonly requestTimeoutMs: number
  readonly nodeDownAfterMs: number
  stopped(): boolean
  /** Called once this incarnation is up in the registry (each time it comes up). */
  onUp(): void
}

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

/** At most this many voters a joining node learns of from the answers to its probes. */
const MAX_LEARNED = 64

const stoppedError = (): ShuttingDownError => new ShuttingDownError('the sworm is stopped')

/** Membership of one node incarnation. */
export class Membership {
  private upPromise: Promise<void> | undefined
  private upResolved = false
  private readonly joining = new Set<string>()
  /** Voters a joining node learned of from the answers to its probes (id to address; at most {@link MAX_LEARNED}). */
  private readonly members = new Map<string, string>()
  /** When this node last asked to be added again (its clock). */
  private lastAsked = -Infinity
  /** Set when the cluster refused this node's join request. */
  private joinRefusal: SwormError | undefined

  constructor(private readonly host: MembershipHost) {
    const { router } = host
    router.on('joinReq', (from, m) => {
      // (a node id longer than a handshake takes could never connect: not added, nor later remembered as removed)
      if (typeof m.node === 'string' && m.node.length > 0 && m.node.length <= MAX_ID_LENGTH && typeof m.url === 'string' && (m.disk === undefined || typeof m.disk === 'string')) {
        validateUrl('join', m.url)
        this.onJoinRequest(from, m.node, m.url, m.disk)
      }
    })
    router.on('joinRefused', (_from, m) => {
      if (m.node !== host.nodeId || typeof m.message !== 'string' || this.joinRefusal) return
      const text = clip(m.message, 600)
      this.joinRefusal = m.code === 'DATA_LOST' ? new NodeDataLostError(host.nodeId, text) : new ConfigChangeError(text)
      host.log.error('the cluster refused to add this node', { reason: text })
    })
    host.raft.on('dataLost', (from) => this.noteDataLost(from))
    // (it may have come before this was listening: the node receives from its start)
    const early = host.raft.dataLostFrom
    if (early !== undefined) this.noteDataLost(early)
    router.on('probe', (from, m) => {
      if (!isProbe(m)) return
      // a node on an empty data directory asks whether a cluster runs here (cluster/identity.ts)
      const cfg = host.raft.status().config
      if (Object.keys(cfg.voters).length > 0) router.send(from, { t: 'probeResp', member: true, config: cfg })
      else if (host.disk !== undefined) router.send(from, { t: 'probeResp', member: false, disk: host.disk })
    })
    // The answer of a running member to a joining node's probe: the members, whom it asks too
    // (the node it joins through may die meanwhile). Also a late answer to the bootstrap probe.
    router.on('probeResp', (_from, m) => {
      if (!isProbeResp(m) || !m.member || this.upResolved) return
      const voters = Object.entries(m.config.voters).filter(([id, url]) => id !== host.nodeId && typeof url === 'string')
      if (voters.length === 0) return
      for (const [id, url] of voters.slice(0, 16)) if (this.members.size < MAX_LEARNED || this.members.has(id)) this.members.set(id, url)
      host.addPeers(Object.fromEntries(this.members))
    })
    router.on('removeReq', (from, m) => {
      if (typeof m.id !== 'number' || typeof m.node !== 'string' || m.node.length === 0) return
      const id = m.id
      this.removeAsLeader(m.node).then(
        () => router.send(from, { t: 'removeResp', id, ok: true }),
        (err: unknown) => {
          const e = err instanceof SwormError ? err : new SwormError('INTERNAL', String(err))
          const leader = e instanceof NotLeaderError ? e.leader : undefined
          router.send(from, { t: 'removeResp', id, ok: false, code: e.code, message: e.message, ...(leader !== undefined ? { leader } : {}) })
        },
      )
    })
    router.on('removeResp', (from, m) => {
      const error = m.ok ? undefined : adminError(String(m.code), String(m.message), typeof m.leader === 'string' ? m.leader : undefined)
      const got = host.requests.settle(from, m.id, error ? { ok: false, error } : { ok: true, value: undefined })
      if (got === 'stranger') router.drop(from, 'answer from a node that was not asked')
    })
  }

  /**
   * Raft messages from `from` were meant for this node id on another data directory: this node
   * lost its data, and a join must not wait for a refusal that its join target may never send
   * (one cut off from the cluster). Not while the applied configuration lists this node with its
   * own data directory: then `from`'s configuration is the stale one (found by review).
   */
  private noteDataLost(from: string): void {
    const { host } = this
    if (this.joinRefusal) return
    const applied = host.raft.status().appliedConfig
    if (isMember(applied, host.nodeId) && diskOf(applied, host.nodeId) === host.disk) return
    this.joinRefusal = new NodeDataLostError(host.nodeId, dataLostMessage(host.nodeId, `${clip(from)} knows this id with another data directory`))
    host.log.error('this node lost its data: the cluster knows its id with another data directory', { from: clip(from) })
  }

  /** Whether this incarnation is up in the registry. */
  get up(): boolean {
    return this.upResolved
  }

  /** Start announcing this incarnation (see {@link Membership.announce}). */
  begin(): void {
    this.upPromise = this.announce()
    this.upPromise.catch(() => {})
  }

  /** React to an applied change: if it declares this very node gone while alive, come back. */
  onChange(ch: RegistryChange): void {
    if (ch.type === 'nodeDown' && ch.node === this.host.nodeId) this.comeBackIfDeclaredGone()
  }

  /**
   * We were declared gone but we are alive: come back (our static names were dropped). Seen when
   * we apply the `nodeDown`, or later by the periodic check when we caught up from a snapshot
   * that already held it (restoring one emits no changes).
   */
  comeBackIfDeclaredGone(): void {
    const { host } = this
    if (host.stopped() || !this.upResolved) return
    const rec = host.state.nodeRecord(host.nodeId)
    if (!rec || rec.up || rec.inc !== host.incarnation) return
    this.upResolved = false
    this.begin()
  }

  /**
   * Ask the cluster (through `via`) to add this node, until a configuration that lists it (as a
   * learner; autopilot may promote it later) is committed (applied here: an appended one may still
   * be replaced by another leader's).
   */
  async askToJoin(via: string, url: string): Promise<void> {
    const { host } = this
    const notYet = new TimeoutError('the cluster did not add this node within 60 s (no quorum, or this id was removed: a removed node joins again under a new id)')
    // ask (again) every half second until the configuration lists this node; look every 100 ms
    // (a node that waited half a second to notice it was added started that much later)
    let checks = 0
    await retry(host.clock, { minMs: 100, deadlineMs: 60_000, retryable: (err) => err === notYet }, async () => {
      if (host.stopped()) throw stoppedError()
      if (this.joinRefusal) throw this.joinRefusal
      if (isMember(host.raft.status().appliedConfig, host.nodeId)) return
      if (checks++ % 5 !== 0) throw notYet
      // to the node it joins through, to the leader it knows of, if another, and to two voters it
      // learned of, two others each time (any of them may be gone, or cut off from the leader:
      // seed 185293598, where the node it joined through and the first two voters it learned of
      // were); and ask them for the members, so that one that reaches the leader tells the voters
      // of now, not those of when the node it joins through was cut off
      const req = { t: 'joinReq' as const, node: host.nodeId, url, ...(host.disk !== undefined ? { disk: host.disk } : {}) }
      const learned = [...this.members.keys()]
      const round = (checks - 1) / 5
      const some = learned.length === 0 ? [] : [learned[(2 * round) % learned.length], learned[(2 * round + 1) % learned.length]]
      const targets = new Set([via, host.raft.leader, ...some])
      for (const t of targets) if (t !== undefined && t !== host.nodeId) host.router.send(t, req)
      if (host.disk !== undefined) for (const t of [via, ...some]) if (t !== undefined && t !== host.nodeId) host.router.send(t, { t: 'probe', disk: host.disk })
      throw notYet
    })
    host.log.info('joined the cluster')
  }

  /**
   * A node asks to be added: the leader adds it; others pass the request on. Any node refuses, to
   * the asker, an id the cluster removed, and a member id asking from another data directory (it
   * lost its data: see cluster/identity.ts).
   */
  private onJoinRequest(from: string, node: string, url: string, disk: string | undefined): void {
    const { host } = this
    const cfg = host.raft.status().config
    const refuse = (code: string, message: string): void => {
      host.peerLog.warn(`join:${node}`, 'refused a join', { peer: clip(node), reason: message })
      host.router.send(from, { t: 'joinRefused', node, code, message })
    }
    if (isMember(cfg, node) && disk !== diskOf(cfg, node)) {
      refuse('DATA_LOST', dataLostMessage(node, `${host.nodeId} refused its join`))
      return
    }
    if (!isMember(cfg, node) && (host.state.nodeRecord(node) !== undefined || wasRemoved(cfg, node))) {
      // Raft counts on no voter ever forgetting its votes and log; a stale member may still hold a
      // configuration with this id as a voter, so a removed id comes back only as a new id. (The
      // registry knows the ids that came up; the configuration remembers the ids it lost, those
      // that never came up too: session 26's nemesis saw one removed while it was joining, its
      // process left running, added back 2 s later.)
      refuse('CONFIG_CHANGE', `node id ${node} was removed from the cluster and cannot join again: start the machine under a new node id, on an empty data directory`)
      return
    }
    if (!host.raft.isLeader) {
      const leader = host.raft.leader
      if (leader !== undefined && leader !== host.nodeId) host.router.send(leader, { t: 'joinReq', node, url, ...(disk !== undefined ? { disk } : {}) })
      return
    }
    if (this.joining.has(node)) return
    this.joining.add(node)
    host.raft
      // as a learner: autopilot promotes it once it is caught up and stable, if voters are wanted
      .addNode(node, url, { voter: false, ...(disk !== undefined ? { disk } : {}) })
      .then(
        () => host.log.info('node added to the cluster', { peer: node, url }),
        (err: unknown) => host.peerLog.warn('addNode', 'could not add node', { peer: clip(node), err: String(err) }),
      )
      .finally(() => this.joining.delete(node))
  }

  /** Propose `nodeUp` for this incarnation until it is applied (retrying while there is no quorum). */
  private async announce(): Promise<void> {
    const { host } = this
    await retry(host.clock, { minMs: 100, retryable: (err) => !(err instanceof ShuttingDownError) }, async () => {
      if (host.stopped()) throw stoppedError()
      // a node the configuration does not list yet (joining), or lists with another data directory
      // (it lost its data and is about to be refused), is not up in the registry
      const applied = host.raft.status().appliedConfig
      const bound = diskOf(applied, host.nodeId)
      if (!isMember(applied, host.nodeId) || (bound !== undefined && host.disk !== undefined && bound !== host.disk)) {
        // Not listed yet: ask (again) to be added. Its own log may list it in an entry that never
        // committed (the leader that appended it died, and the next one never contacts a node it
        // does not list); asking a member that is already listed changes nothing.
        if (!isMember(applied, host.nodeId)) await this.askAgain()
        throw new NotFoundError('not in the applied configuration yet')
      }
      // Compare and set: the incarnation the registry holds now (read linearizably) goes with the
      // command, which then takes effect only if no other incarnation came up since. So a late
      // copy of this command, applied after this process was replaced, cannot undo its successor;
      // and a copy whose leader is gone may go to the next leader at once (idempotent: applied
      // again, it changes nothing, or brings back this incarnation if it was declared gone, which
      // this live node does anyway: see comeBackIfDeclaredGone).
      await host.raft.read()
      const prev = host.state.nodeRecord(host.nodeId)?.inc ?? ''
      const zone = host.zone !== undefined ? { zone: host.zone } : {}
      const ok = await host.raft.propose({ c: 'nodeUp', node: host.nodeId, inc: host.incarnation, prev, ...zone, ord: 1 }, { idempotent: true })
      if (ok !== true) throw new ProposalDroppedError('nodeUp refused: another incarnation of this node came up meanwhile; trying again')
    })
    this.upResolved = true
    host.log.info('node up in sworm', { incarnation: host.incarnation })
    host.onUp()
  }

  /**
   * Send a join request again, at most every half second: to the leader this node last knew (it
   * may be gone: a learner never campaigns, so it keeps the name of a dead leader), and to the
   * nodes `rejoinTargets` finds (which pass it on to their leader).
   */
  private async askAgain(): Promise<void> {
    const { host } = this
    if (this.joinRefusal) throw this.joinRefusal
    const now = host.clock.now()
    if (now - this.lastAsked < 500) return
    this.lastAsked = now
    const req = { t: 'joinReq' as const, node: host.nodeId, url: host.listen, ...(host.disk !== undefined ? { disk: host.disk } : {}) }
    const leader = host.raft.leader
    if (leader !== undefined && leader !== host.nodeId) host.router.send(leader, req)
    const others = (await host.rejoinTargets?.().catch(() => undefined)) ?? []
    for (const o of others) if (o !== leader) host.router.send(o, req)
  }

  /**
   * Wait until this node is up in the registry, at most `requestTimeoutMs`: an operation never
   * hangs because there is no leader.
   */
  async ready(): Promise<void> {
    const { host } = this
    if (host.stopped()) throw stoppedError()
    if (this.upResolved) return
    await withDeadline(host.clock, this.upPromise ?? Promise.resolve(), host.requestTimeoutMs, () => {
      const leader = host.raft.leader
      return leader === undefined
        ? new NotLeaderError(undefined, `no leader seen within requestTimeoutMs (${host.requestTimeoutMs} ms): check that a majority of the peers are up and reachable, and that every node uses the same secret`)
        : new TimeoutError(`this node is not up in the cluster yet after requestTimeoutMs (${host.requestTimeoutMs} ms); the leader is ${leader}`)
    })
  }

  /** See {@link Sworm.removeNode}; `timeoutMs` is checked by the caller. */
  async removeNode(nodeId: string, timeoutMs: number, guard: () => void): Promise<void> {
    const { host } = this
    const deadline = host.clock.now() + timeoutMs
    const left = (): number => deadline - host.clock.now()
    // 1. out of the Raft configuration: done by the leader, retried across leader changes
    const again = (err: unknown): boolean => err instanceof NotLeaderError || err instanceof TimeoutError || err instanceof ProposalDroppedError
    await retry(host.clock, { minMs: 100, deadlineMs: timeoutMs, retryable: again }, async () => {
      guard()
      if (host.raft.isLeader) await this.removeAsLeader(nodeId)
      else await this.askLeaderToRemove(nodeId, Math.max(1, Math.min(left(), host.requestTimeoutMs)))
    }).catch((err: unknown) => {
      if (again(err)) throw new TimeoutError(`could not remove ${nodeId} within ${timeoutMs} ms (${err instanceof Error ? err.message : String(err)})`)
      throw err
    })
    if (nodeId === host.nodeId) return
    // 2. declared gone in the registry, once its lease must have run out (seen by this node)
    for (;;) {
      guard()
      await host.raft.read().catch(() => {})
      if (host.state.nodeRecord(nodeId)?.up !== true) return
      if (left() <= 0) throw new TimeoutError(`${nodeId} left the configuration but is not declared gone yet`)
      await sleep(host.clock, Math.min(50, left()))
    }
  }

  /** On the leader: take `node` out of the Raft configuration (nothing to do if it is out). */
  async removeAsLeader(node: string): Promise<void> {
    const { raft, state, log } = this.host
    if (!raft.isLeader) throw new NotLeaderError(raft.leader)
    if (!isMember(raft.status().config, node)) {
      if (state.nodeRecord(node) === undefined) {
        await raft.read() // our registry may lag the log
        if (state.nodeRecord(node) === undefined) throw new NotFoundError(`${node} is not a node of this sworm`)
      }
      // out of the latest configuration: done once that is committed (raft.removeNode waits)
      await raft.removeNode(node)
      return
    }
    await raft.removeNode(node)
    log.info('node removed from the cluster', { peer: node })
  }

  /** Send a `removeReq` to the leader and wait for its answer (taken only from the node asked). */
  private askLeaderToRemove(node: string, timeoutMs: number): Promise<void> {
    const { raft, nodeId, requests, router } = this.host
    const leader = raft.leader
    if (leader === undefined || leader === nodeId) return Promise.reject(new NotLeaderError(undefined))
    return requests.request<void>(
      leader,
      timeoutMs,
      () => new TimeoutError(`the leader (${leader}) did not answer within ${timeoutMs} ms`),
      (id) => router.send(leader, { t: 'removeReq', id, node }),
    )
  }
}
