/**
 * A synchronous harness around the pure Raft core (`RaftCore`): no timers, no I/O. Each member
 * has an in-memory "disk" (hard state, entries, snapshot); {@link CoreHarness.settle} runs every
 * core's readies (persisting them, collecting committed entries and reads) and delivers messages
 * until nothing moves, dropping those over a cut link. It also checks election safety: two
 * leaders in one term throw. Used by `raft-core.test.ts` and `raft-review.test.ts`.
 * @module
 */
import { entryBytes, entryFromBytes } from '../../src/raft/entry-codec.js'
import { setFrozenSegment } from '../../src/raft/log.js'
import { RaftCore } from '../../src/raft/core.js'
import type { ClusterConfig, Entry, HardState, NodeId, RaftMessage, Snapshot } from '../../src/raft/types.js'
import { seededRandom } from '../../src/testkit/sim.js'

// the cores' logs freeze what they applied every few entries: the tests' short logs freeze too
setFrozenSegment(4)

/** What a member has persisted. */
export interface CoreDisk {
  hs: HardState
  entries: Entry[]
  snapshot: Snapshot | undefined
}

/** Options of {@link CoreHarness}. */
export interface CoreHarnessOptions {
  /** Seed of the cores' shared random source (default 7). */
  seed?: number
  /** `leaseRead` of the cores. */
  leaseRead?: boolean
  /** `leaderLease` of the cores (default: `leaseRead`). */
  leaderLease?: boolean
  /** `snapshotChunkBytes` and `snapshotWindow` of the cores. */
  snapshotChunkBytes?: number
  snapshotWindow?: number
  /** The cores' clock (ms; with a lease of 450 ms on it) and their `learnerPaceMs`. */
  now?: () => number
  learnerPaceMs?: number
  /** `maxAppendBytes`, `maxInflightBytes` and `entryBytes` of the cores. */
  maxAppendBytes?: number
  maxInflightBytes?: number
  entryBytes?: (e: Entry) => number
}

/** A configuration with `voters` (and `learners`), each member's address being its id. */
export const coreConfig = (voters: string[], learners: string[] = []): ClusterConfig => ({
  voters: Object.fromEntries(voters.map((v) => [v, v])),
  learners: Object.fromEntries(learners.map((v) => [v, v])),
})

/** Cores of `ids` on in-memory disks; the voters of `cfg` start with it committed at index 1, the others empty. */
export class CoreHarness {
  readonly cores = new Map<NodeId, RaftCore>()
  readonly disks = new Map<NodeId, CoreDisk>()
  /** Entries each member applied since it last booted. */
  readonly applied = new Map<NodeId, Entry[]>()
  /** Reads each member answered since it last booted. */
  readonly reads = new Map<NodeId, Array<{ id: number; index: number }>>()
  /** Messages sent and not delivered yet. */
  queue: RaftMessage[] = []
  /** Cut links, as `from>to`. */
  readonly cut = new Set<string>()
  /** The leader of each term seen so far. */
  readonly leaders = new Map<number, NodeId>()
  /**
   * Sees every message about to be delivered over an intact link: return it (or a changed copy)
   * to deliver, undefined to lose it.
   */
  deliver: (m: RaftMessage) => RaftMessage | undefined = (m) => m
  private readonly random: () => number
  private readonly leaseRead: boolean
  private readonly opts: CoreHarnessOptions

  constructor(ids: NodeId[], cfg: ClusterConfig, opts: CoreHarnessOptions = {}) {
    this.random = seededRandom(opts.seed ?? 7)
    this.leaseRead = opts.leaseRead ?? false
    this.opts = opts
    for (const id of ids) {
      const member = cfg.voters[id] !== undefined
      this.disks.set(id, {
        hs: { term: member ? 1 : 0, vote: undefined, commit: member ? 1 : 0 },
        entries: member ? [{ index: 1, term: 1, type: 'conf', data: cfg }] : [],
        snapshot: undefined,
      })
      this.boot(id)
    }
  }

  /** (Re)start a member from its disk. */
  boot(id: NodeId): RaftCore {
    const d = this.disks.get(id)!
    const core = new RaftCore(
      {
        id,
        electionTicks: 10,
        random: this.random,
        leaseRead: this.leaseRead,
        ...(this.opts.leaderLease !== undefined ? { leaderLease: this.opts.leaderLease } : {}),
        snapshotChunkBytes: this.opts.snapshotChunkBytes,
        snapshotWindow: this.opts.snapshotWindow,
        // applied entries frozen into bytes, in segments of a few entries (see `setFrozenSegment` above)
        entryCodec: { encode: entryBytes, decode: entryFromBytes },
        ...(this.opts.entryBytes ? { entryBytes: this.opts.entryBytes, maxAppendBytes: this.opts.maxAppendBytes, maxInflightBytes: this.opts.maxInflightBytes } : {}),
        ...(this.opts.now ? { now: this.opts.now, leaseMs: 450, learnerPaceMs: this.opts.learnerPaceMs } : {}),
      },
      { hardState: { ...d.hs }, entries: d.entries.map((e) => ({ ...e })), snapshot: d.snapshot },
    )
    this.cores.set(id, core)
    this.applied.set(id, [])
    this.reads.set(id, [])
    return core
  }

  /** The core of a member. */
  core(id: NodeId): RaftCore {
    return this.cores.get(id)!
  }

  /** Write a ready to a member's disk. */
  persist(id: NodeId, rd: ReturnType<RaftCore['ready']>): void {
    const d = this.disks.get(id)!
    if (rd.snapshot) {
      d.snapshot = rd.snapshot
      d.entries = d.entries.filter((e) => e.index > rd.snapshot!.meta.index)
    }
    if (rd.truncateFrom !== undefined) d.entries = d.entries.filter((e) => e.index < rd.truncateFrom!)
    d.entries.push(...rd.entries.map((e) => ({ ...e })))
    if (rd.hardState) d.hs = { ...rd.hardState }
  }

  /** Cut a member off from every other one (both directions). */
  isolate(id: NodeId): void {
    for (const o of this.cores.keys()) {
      if (o === id) continue
      this.cut.add(`${id}>${o}`)
      this.cut.add(`${o}>${id}`)
    }
  }

  /** Restore every link. */
  heal(): void {
    this.cut.clear()
  }

  /** Run readies and deliver messages until nothing moves; throws on two leaders in one term. */
  settle(max = 10_000): void {
    for (let round = 0; round < max; round++) {
      let moved = false
      for (const [id, c] of this.cores) {
        while (c.hasReady()) {
          moved = true
          const rd = c.ready()
          this.queue.push(...rd.messagesNow)
          this.persist(id, rd)
          this.queue.push(...rd.messages)
          this.applied.get(id)!.push(...rd.committed)
          this.reads.get(id)!.push(...rd.reads)
          if (rd.soft?.role === 'leader') {
            const prev = this.leaders.get(rd.soft.term)
            if (prev && prev !== id) throw new Error(`two leaders in term ${rd.soft.term}`)
            this.leaders.set(rd.soft.term, id)
          }
          c.advance(rd)
        }
      }
      const q = this.queue
      this.queue = []
      for (const m of q) {
        if (this.cut.has(`${m.from}>${m.to}`)) continue
        const d = this.deliver(m)
        const c = d && this.cores.get(d.to)
        if (d && c) {
          c.step(d)
          moved = true
        }
      }
      if (!moved) return
    }
    throw new Error('did not settle')
  }

  /** Tick one member `n` times, settling after each. */
  tick(id: NodeId, n = 1): void {
    for (let i = 0; i < n; i++) {
      this.core(id).tick()
      this.settle()
    }
  }

  /** Tick the given members `n` times, settling after each round. */
  tickSome(ids: NodeId[], n: number): void {
    for (let i = 0; i < n; i++) {
      for (const id of ids) this.core(id).tick()
      this.settle()
    }
  }

  /** Tick every member `n` times, settling after each round. */
  tickAll(n: number): void {
    this.tickSome([...this.cores.keys()], n)
  }

  /** Tick the given members until `cond` holds (at most `max` rounds); throws if it never does. */
  tickUntil(ids: NodeId[], cond: () => boolean, max = 200): void {
    for (let i = 0; i < max && !cond(); i++) {
      for (const id of ids) this.core(id).tick()
      this.settle()
    }
    if (!cond()) throw new Error('condition not reached')
  }

  /** Tick `id` until it leads; throws if it did not win. */
  elect(id: NodeId): void {
    this.tick(id, 25)
    if (this.core(id).status().role !== 'leader') throw new Error(`${id} was not elected`)
  }

  /** The leader of the highest term. */
  leader(): NodeId | undefined {
    let best: NodeId | undefined
    let term = -1
    for (const [id, c] of this.cores) {
      const s = c.status()
      if (s.role === 'leader' && s.term > term) {
        best = id
        term = s.term
      }
    }
    return best
  }

  /** The data of the command entries a member applied. */
  appliedCmds(id: NodeId): unknown[] {
    return this.applied.get(id)!.filter((e) => e.type === 'cmd').map((e) => e.data)
  }
}
