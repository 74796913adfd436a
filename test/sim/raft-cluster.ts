/**
 * A simulated Raft cluster: real RaftNode code over a SimNetwork, MemoryStorage and simulated
 * clocks, with a KV state machine, fault injection and the safety checkers.
 */
import { FROZEN_SEGMENT, setFrozenSegment } from '../../src/raft/log.js'
import { MemoryStorage } from '../../src/raft/storage/memory-storage.js'
import { RaftNode } from '../../src/raft/node.js'
import type { ClusterConfig, Logger, NodeId, Transport } from '../../src/raft/types.js'
import { KvStateMachine } from '../../src/testkit/kv-state-machine.js'
import type { KvInput, KvOperation, KvOutput } from '../../src/testkit/linearizability.js'
import { SimNetwork, SimScheduler } from '../../src/testkit/sim.js'
import { RegistryKvStateMachine } from './registry-kv.js'

/** What the simulated nodes replicate: the test KV store, or the registry behind a KV face. */
export type SimMachine = KvStateMachine | RegistryKvStateMachine

export interface SimMember {
  id: NodeId
  node: RaftNode<KvInput, KvOutput> | undefined
  sm: SimMachine
  storage: MemoryStorage
  fastDisk: boolean
  /** While true, every write to this member's disk fails (full disk, fsync error). */
  diskFault: boolean
  /** While true, its snapshot writes fail (a snapshot larger than the space left), its log writes work. */
  snapshotFault?: boolean
  transport: (Transport & { detach(): void }) | undefined
  alive: boolean
  generation: number
  skew: number
}

export interface SimClusterOptions {
  seed: number
  logger?: Logger
  snapshotEvery?: number
  /** Bytes per snapshot chunk (the node's default if unset). */
  snapshotChunkBytes?: number
  /** The nodes' `maxLogEntries` (their default if unset). */
  maxLogEntries?: number
  tickMs?: number
  /** The nodes' `learnerPaceMs` (their default if unset). */
  learnerPaceMs?: number
  /** Default 'kv'. */
  machine?: 'kv' | 'registry'
  /** Serve reads from the leader lease. Default false. */
  leaseRead?: boolean
}

/** The cluster under test plus the invariants it checks as it runs. */
export class SimCluster {
  readonly sched: SimScheduler
  readonly net: SimNetwork
  readonly members = new Map<NodeId, SimMember>()
  readonly violations: string[] = []
  readonly history: KvOperation[] = []
  private readonly leaderOfTerm = new Map<number, NodeId>()
  private readonly appliedAt = new Map<number, string>()
  private readonly opts: SimClusterOptions
  private nextClient = 0

  constructor(opts: SimClusterOptions) {
    this.opts = opts
    this.sched = new SimScheduler(opts.seed)
    // the logs freeze what they applied in segments of 4 to 1,024 entries (see raft/log.ts)
    setFrozenSegment([4, 32, FROZEN_SEGMENT][opts.seed % 3])
    this.net = new SimNetwork(this.sched)
  }

  get random(): () => number {
    return this.sched.random
  }

  /** Create and start members; `bootstrap` lists the initial voters (others start empty, to be added). */
  async start(ids: NodeId[], bootstrap: ClusterConfig | undefined): Promise<void> {
    for (const id of ids) {
      const m: SimMember = {
        id,
        node: undefined,
        sm: new KvStateMachine(),
        storage: undefined as unknown as MemoryStorage,
        fastDisk: false,
        diskFault: false,
        transport: undefined,
        alive: false,
        generation: 0,
        skew: 0,
      }
      m.storage = this.newStorage(m)
      this.members.set(id, m)
      await this.boot(m, bootstrap)
    }
  }

  private newStorage(m: { fastDisk: boolean; diskFault: boolean; snapshotFault?: boolean }): MemoryStorage {
    return new MemoryStorage({
      delay: async (op) => {
        if (!m.fastDisk) await this.sched.sleep(0.2 + this.sched.random() * 1.5)
        if (m.diskFault || (op === 'snapshot' && m.snapshotFault)) throw new Error('ENOSPC: no space left on device (simulated)')
      },
    })
  }

  private async boot(m: SimMember, bootstrap: ClusterConfig | undefined): Promise<void> {
    m.generation++
    const gen = m.generation
    m.alive = true
    const onApply = (index: number, cmd: KvInput): void => this.recordApply(m.id, index, cmd)
    m.sm = this.opts.machine === 'registry' ? new RegistryKvStateMachine(onApply) : new KvStateMachine(onApply)
    m.transport = this.net.endpoint(m.id)
    const clock = this.sched.clock({ skew: () => m.skew, alive: () => m.alive && m.generation === gen })
    const opts = {
      id: m.id,
      storage: m.storage,
      transport: m.transport,
      stateMachine: m.sm,
      clock,
      random: this.sched.random,
      snapshotEvery: this.opts.snapshotEvery ?? 200,
      ...(this.opts.snapshotChunkBytes ? { snapshotChunkBytes: this.opts.snapshotChunkBytes } : {}),
      ...(this.opts.maxLogEntries ? { maxLogEntries: this.opts.maxLogEntries } : {}),
      tickMs: this.opts.tickMs ?? 50,
      ...(this.opts.learnerPaceMs !== undefined ? { learnerPaceMs: this.opts.learnerPaceMs } : {}),
      requestTimeoutMs: 3000,
      leaseRead: this.opts.leaseRead ?? false,
      ...(this.opts.logger ? { logger: this.opts.logger } : {}),
      ...(bootstrap ? { bootstrap } : {}),
    }
    m.fastDisk = true // booting happens outside simulated time
    const node = await RaftNode.start<KvInput, KvOutput>(opts)
    m.fastDisk = false
    if (m.generation !== gen) return
    m.node = node
    node.on('role', (s) => {
      if (s.role !== 'leader') return
      const prev = this.leaderOfTerm.get(s.term)
      if (prev !== undefined && prev !== m.id) this.violations.push(`election safety: two leaders in term ${s.term}: ${prev} and ${m.id}`)
      this.leaderOfTerm.set(s.term, m.id)
    })
  }

  /** The command applied at each index so far (JSON), on any member. */
  appliedCommands(): ReadonlyMap<number, string> {
    return this.appliedAt
  }

  private recordApply(id: NodeId, index: number, cmd: KvInput): void {
    const s = JSON.stringify(cmd)
    const prev = this.appliedAt.get(index)
    if (prev === undefined) this.appliedAt.set(index, s)
    else if (prev !== s) this.violations.push(`state machine safety: index ${index} applied as ${prev} and as ${s} (on ${id})`)
  }

  /** Kill a member: its timers stop, its unsynced writes are lost, its promises never settle. */
  async crash(id: NodeId): Promise<void> {
    const m = this.members.get(id)
    if (!m || !m.alive) return
    m.alive = false
    m.transport?.detach()
    m.node = undefined
    // What the disk holds survives; a write still in flight (its delay not elapsed) is lost.
    // MemoryStorage models this: close() drops pending writes, the next load() reopens it.
    await m.storage.close()
  }

  /** Restart a crashed member from its storage. */
  async restart(id: NodeId): Promise<void> {
    const m = this.members.get(id)
    if (!m || m.alive) return
    await this.boot(m, undefined)
  }

  /** Remove a member for good (after it left the configuration). */
  async destroy(id: NodeId): Promise<void> {
    await this.crash(id)
    this.members.delete(id)
  }

  alive(): SimMember[] {
    return [...this.members.values()].filter((m) => m.alive && m.node)
  }

  /** The alive leader with the highest term, if any. */
  leader(): SimMember | undefined {
    let best: SimMember | undefined
    for (const m of this.alive()) {
      const st = m.node!.status()
      if (st.role === 'leader' && (!best || st.term > best.node!.status().term)) best = m
    }
    return best
  }

  /** A logger for `opts.logger` that keeps every line, for tests that check what a node said. */
  static recordingLogger(): Logger & { lines: Array<{ level: string; msg: string; fields: Record<string, unknown> | undefined }> } {
    const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> | undefined }> = []
    const rec = (level: string) => (msg: string, fields?: Record<string, unknown>): void => {
      lines.push({ level, msg, fields })
    }
    return { lines, debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') }
  }

  /** Run one client operation through member `via`, recording it in the history. */
  async clientOp(via: SimMember, input: KvInput): Promise<void> {
    const node = via.node
    if (!node) return
    const op: KvOperation = { client: this.nextClient++, input, call: this.sched.now, ret: Infinity, output: undefined }
    this.history.push(op)
    try {
      let out: KvOutput
      if (input.op === 'get' && this.random() < 0.5) {
        await node.read()
        out = { value: via.sm.data.get(input.key) }
      } else {
        out = await node.propose(input)
      }
      op.ret = this.sched.now
      op.output = out
    } catch (err) {
      const code = (err as { code?: string }).code
      // Definitely not applied: drop the op from the history. Otherwise its outcome is unknown.
      if (code === 'NOT_LEADER' || code === 'PROPOSAL_DROPPED' || input.op === 'get') {
        this.history.splice(this.history.indexOf(op), 1)
      }
    }
  }

  /** Every live member of the configuration applied the same prefix and holds the same data. */
  converged(): boolean {
    const leader = this.leader()
    if (!leader) return false
    const st = leader.node!.status()
    const ids = [...Object.keys(st.config.voters), ...Object.keys(st.config.learners)]
    const want = JSON.stringify([...leader.sm.data.entries()].sort())
    for (const id of ids) {
      const m = this.members.get(id)
      if (!m || !m.alive || !m.node) return false
      const s = m.node.status()
      if (s.applied !== st.commit || s.commit !== st.commit) return false
      if (JSON.stringify([...m.sm.data.entries()].sort()) !== want) return false
    }
    return st.applied === st.commit
  }

  async stopAll(): Promise<void> {
    for (const m of this.members.values()) {
      m.alive = false
      m.transport?.detach()
    }
  }
}

