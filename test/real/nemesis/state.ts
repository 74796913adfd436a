/**
 * The state of one real-process nemesis run (`runRealNemesis`): what it records as it goes
 * ({@link Findings}), and the cluster of node processes with what the nemesis did to them
 * ({@link NemesisRun}: frozen, killed and cut nodes, process starts and exits, pauses), with the
 * actions on one node that keep that state true (kill, restart, freeze, thaw, stall, cuts).
 * @module
 */
import type { KvOperation } from '../../../src/testkit/linearizability.js'
import type { SwormProcessEvent, SwormProcessStatus } from '../../../tools/cluster/sworm-protocol.js'
import type { SwormCluster } from '../../../tools/cluster/sworm-cluster.js'

/** Nodes of a run. */
export const N = 5
/** Static keys per node in the clients' key space (`s:<node>:<k>`). */
export const STATIC_KEYS = 3
export const LEASE_MS = 1000
export const DRIFT_MS = 250
/**
 * Each process's clock runs at a rate within 1 ± this, and reads up to ±5 s off. Two rates then
 * differ by up to 6%: 60 ms over the lease, inside what the drift bound leaves once the fence check
 * interval (lease / 8 = 125 ms) is taken off: 250 - 125 = 125 ms.
 */
export const MAX_RATE_SKEW = 0.03
/** Prefix of the names of the large state. */
export const BIG = 'big:'

/** A link between two nodes, as "a|b" with a < b. */
export function linkKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** The wall clock, ms. */
export const wall = (): number => performance.timeOrigin + performance.now()
/** The machine's monotonic clock, as the life files use it (the same in every process). */
export const mono = (): number => Number(process.hrtime.bigint()) / 1e6

/** What a run records as it goes, from before its cluster starts (a failed start reports them too). */
export class Findings {
  /** Faults injected, by kind. */
  readonly faults: Record<string, number> = {}
  readonly problems: string[] = []
  /** What happened, with wall-clock times, for the dump of a failed run. */
  readonly trail: Array<{ at: number; what: string }> = []
  /** The nodes' events (registrations, node up and down, leaders, snapshots). */
  readonly events: Array<{ node: string } & SwormProcessEvent> = []

  constructor(private readonly log: (line: string) => void) {}

  count(k: string): void {
    this.faults[k] = (this.faults[k] ?? 0) + 1
  }

  /** Note `what` in the trail and the progress log. */
  note(what: string): void {
    this.trail.push({ at: performance.timeOrigin + performance.now(), what })
    this.log(what)
  }
}

/** The cluster of a run, what the nemesis did to it, and the run's seeded random stream. */
export class NemesisRun {
  /** The members: 5 ids, a wiped node's replaced by its new one once it is removed. */
  readonly ids: string[]
  /** Members removed from the cluster (wiped). */
  readonly retired: string[] = []
  readonly frozen = new Set<string>()
  /** Pauses (SIGSTOP .. SIGCONT, or .. SIGKILL) of each process `<node>.<k>`. */
  readonly pauses = new Map<string, Array<[number, number]>>()
  readonly down = new Set<string>()
  /** Links cut, as "a|b" with a < b. */
  readonly cut = new Set<string>()
  /** The monotonic time of each exit of a node's processes, by process start. */
  readonly exitedAt = new Map<string, number[]>()
  /** Processes started for each node. */
  readonly starts: Map<string, number>
  /** A wiped node until it is removed, then its successor until it has joined: no faults, no clients. */
  readonly busy = new Set<string>()
  /** When each node last suffered a fault of ours (a kill, a stop, a freeze, a cut link). */
  readonly lastFault = new Map<string, number>()
  /** The clients' history of static registrations (with the system's possible deletes). */
  readonly history: KvOperation[] = []
  clientSeq = 0
  /** Timers that end stalls. */
  readonly stallTimers = new Set<NodeJS.Timeout>()
  /** The wipe under way (one at a time, in the background: the removal waits for a quorum). */
  membership: Promise<void> | undefined
  /** The id of the next node to join. */
  nextId = N + 1

  constructor(
    readonly cl: SwormCluster,
    readonly r: () => number,
    readonly found: Findings,
  ) {
    this.ids = [...cl.ids]
    this.starts = new Map<string, number>(this.ids.map((id) => [id, 1]))
    cl.onEvents((node, evs) => {
      for (const e of evs) found.events.push({ node, ...e })
    })
  }

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!
  }

  /** The nodes clients and faults may use: running, not frozen, not busy with a wipe. */
  usable(): string[] {
    return this.ids.filter((id) => this.cl.isAlive(id) && !this.frozen.has(id) && !this.busy.has(id))
  }

  /** The current process of node `id`: `<node>.<k>`. */
  procOf(id: string): string {
    return `${id}.${this.starts.get(id) ?? 1}`
  }

  /** Ask `id` for the events the run records (skipping the large state's names). */
  subscribe(id: string): Promise<unknown> {
    return this.cl
      .request(
        id,
        {
          op: 'subscribe',
          events: ['registered', 'unregistered', 'nodeUp', 'nodeDown', 'leaderChanged', 'snapshotTaken', 'snapshotInstalled'],
          flushMs: 50,
          skipNamePrefixes: [BIG],
        },
        5000,
      )
      .catch(() => undefined)
  }

  /**
   * The static names of `node` ("s:<node>:<k>", bound only to its workers) may be dropped from now
   * on: deletes pending from now on in the clients' history.
   */
  maybeDropped(node: string): void {
    const at = wall()
    this.lastFault.set(node, at)
    for (let k = 0; k < STATIC_KEYS; k++) this.history.push({ client: `system-${this.clientSeq++}`, input: { op: 'delete', key: `s:${node}:${k}` }, call: at, ret: Infinity, output: undefined })
  }

  /** SIGSTOP `id`; returns its pause, open until {@link thawNode}. */
  freezeNode(id: string): [number, number] {
    this.cl.freeze(id)
    this.frozen.add(id)
    const list = this.pauses.get(this.procOf(id)) ?? []
    const pause: [number, number] = [mono(), Infinity]
    list.push(pause)
    this.pauses.set(this.procOf(id), list)
    return pause
  }

  thawNode(id: string): void {
    // a frozen process may have been ended meanwhile (killed, or its start failed): nothing to thaw
    if (this.cl.isAlive(id)) this.cl.thaw(id)
    this.frozen.delete(id)
    const last = this.pauses.get(this.procOf(id))?.at(-1)
    if (last) last[1] = mono()
  }

  /** SIGSTOP `id` now and SIGCONT it after `ms` (unless something else thawed or killed it first). */
  stall(id: string, ms: number): void {
    this.maybeDropped(id)
    const pause = this.freezeNode(id)
    const proc = this.procOf(id)
    const t = setTimeout(() => {
      this.stallTimers.delete(t)
      if (this.frozen.has(id) && this.procOf(id) === proc && this.cl.isAlive(id) && this.pauses.get(proc)?.at(-1) === pause) this.thawNode(id)
    }, ms)
    this.stallTimers.add(t)
  }

  /** Tell every usable node which of its links are cut ({@link cut}) and which are not. */
  async applyCuts(): Promise<void> {
    const { cl, ids, cut } = this
    for (const id of this.usable()) {
      const peersCut = ids.filter((o) => o !== id && cut.has(linkKey(id, o)))
      const peersOk = ids.filter((o) => o !== id && !cut.has(linkKey(id, o)))
      await cl.request(id, { op: 'blockPeers', peers: peersCut, blocked: true }, 3000).catch(() => {})
      await cl.request(id, { op: 'blockPeers', peers: peersOk, blocked: false }, 3000).catch(() => {})
    }
  }

  /** SIGKILL `id`. */
  async kill(id: string): Promise<void> {
    this.maybeDropped(id)
    this.frozen.delete(id)
    await this.cl.kill(id)
    this.down.add(id)
    this.noteExit(id)
  }

  /** Note that `id`'s current process has exited (its workers' incarnations end then). */
  noteExit(id: string): void {
    const list = this.exitedAt.get(id) ?? []
    list[(this.starts.get(id) ?? 1) - 1] = mono()
    this.exitedAt.set(id, list)
  }

  /** Start a process for `id` again (if none runs), subscribed and with the cuts applied. */
  async restart(id: string): Promise<void> {
    if (this.cl.isAlive(id)) return
    this.starts.set(id, (this.starts.get(id) ?? 1) + 1)
    await this.cl.restart(id)
    await this.subscribe(id)
    this.down.delete(id)
    await this.applyCuts()
  }

  /** The leader of the highest term among the usable nodes (undefined if none answers as one). */
  async leaderNow(): Promise<string | undefined> {
    const sts = await Promise.all(this.usable().map((id) => this.cl.request<SwormProcessStatus>(id, { op: 'status' }, 1000).catch(() => undefined)))
    const leaders = sts.filter((st): st is SwormProcessStatus => st?.role === 'leader')
    return leaders.length ? leaders.reduce((a, b) => (b.term > a.term ? b : a)).node : undefined
  }
}
