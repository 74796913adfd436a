/**
 * The registry state machine: names, groups, nodes and supervised placements of one sworm,
 * changed only by applying {@link RegistryCommand}s in log order. Pure and deterministic (no
 * clock, no I/O), so every node that applies the same log holds the same registry, and reads are
 * plain map lookups.
 *
 * Placement of supervised workers happens here, when the `supervise` (or `nodeDown`, `moveOff`,
 * `nodeUp`, `stopped`, `handedOff`, `drain`, `rebalance`) entry is applied: every replica computes the same node from the same committed state, so the
 * choice is the log's, made with an up-to-date view, and needs no extra round.
 * @module
 */
import type { StateMachine, StepTask } from '../raft/node.js'
import { defaultPlacement, type PlacementStrategy } from './placement.js'
import { StaticName } from './static-name.js'
import type { ShardedMap } from '../util/sharded-map.js'
import { SnapshotReader, SnapshotWriter, addPlaced, deletePlaced, emptyTables, firstNames, sortedNames, type Member, type Session, type Tables } from './snapshot.js'
import {
  refKey,
  sameRef,
  type NodeRecord,
  type Registration,
  type RegistryCommand,
  type RegistryOp,
  type RegistryResult,
  type SessionTag,
  type StartSpec,
  type SuperviseResult,
  type WorkerRef,
} from './types.js'

/** The names an entry may move at most (`max` of `nodeDown` and `moveOff`): all without one. */
const sliceOf = (max: unknown): number => (Number.isSafeInteger(max) && (max as number) > 0 ? (max as number) : Infinity)

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isWorkerRef = (v: unknown): v is WorkerRef =>
  isObj(v) && typeof v.sworm === 'string' && typeof v.node === 'string' && typeof v.inc === 'string' && Number.isSafeInteger(v.id)

/** A change the registry made, for events and for the local supervisor. */
export type RegistryChange =
  | { type: 'registered'; name: string; ref: WorkerRef }
  | { type: 'unregistered'; name: string; ref: WorkerRef | undefined; node: string | undefined }
  | { type: 'joined'; group: string; ref: WorkerRef }
  | { type: 'left'; group: string; ref: WorkerRef }
  | { type: 'nodeUp'; node: string; inc: string }
  | { type: 'nodeDown'; node: string; inc: string }
  /**
   * A supervised name must (re)start on `node` for `epoch`. `by`: the node whose registration
   * placed it (a `supervise` proposed in its session), which waits to hear that it runs.
   */
  | { type: 'placed'; name: string; node: string; epoch: number; moved: boolean; from: string | undefined; by?: string }
  | { type: 'started'; name: string; ref: WorkerRef; epoch: number }
  | { type: 'startFailed'; name: string; epoch: number; error: string }
  /** The worker `ref` of a supervised name must stop (its name moved away or was removed). */
  | { type: 'stopWorker'; name: string; ref: WorkerRef }
  /** The worker of `name` on `node` should hand its state over (it moves to `to`). */
  | { type: 'handoff'; name: string; node: string; epoch: number; to: string }
  /** A supervised name lost its node and no other node can take it. */
  | { type: 'unplaced'; name: string }
  /** A supervised name was unregistered: its node must stop the worker and confirm. */
  | { type: 'retire'; name: string; node: string; epoch: number }

/** The replicated registry. */
export class RegistryState implements StateMachine<RegistryCommand, RegistryResult> {
  // The tables (see snapshot.ts). A name or a group is changed only through edit(), setName(),
  // deleteName(), editGroup() and deleteGroup(): they hand a snapshot in progress the value it
  // needs first. (The tables hold readonly registrations and group maps, so that a write
  // elsewhere stands out; keep every function that changes one taking a Readonly one.)
  private names: ShardedMap<string, Readonly<Registration>>
  private namesOf: Tables['namesOf']
  private aliasesOf: Map<string, Set<string>>
  private groups: Map<string, ReadonlyMap<string, Member>>
  private groupsOf: Map<string, Set<string>>
  private nodes: Map<string, NodeRecord>
  /** Client sessions, by node: its incarnation, the lowest seq still wanted, results by seq. */
  private sessions: Map<string, Session>
  private placed: Map<string, Set<string>>
  private unplaced: Set<string>
  /** The snapshot being taken, if any. */
  private cut: SnapshotWriter | undefined
  /** Highest log index applied. */
  appliedIndex = 0
  /**
   * How many snapshots replaced the registry (restore() makes no change events: whoever keeps
   * something in step with the tables looks at them again when this moves).
   */
  restores = 0
  /** The sworm name of stored refs, one string for all (see {@link RegistryState.stored}). */
  private swormName: string | undefined

  /**
   * @param onChange - called for every change, after it is made (not during restore)
   * @param placement - picks a node for a supervised name; must be the same pure function on
   *   every node (it runs inside the state machine)
   */
  constructor(
    private readonly onChange?: (change: RegistryChange) => void,
    private readonly placement: PlacementStrategy = defaultPlacement,
  ) {
    const t = emptyTables()
    // (the same as setTables(t), spelled out for the compiler's definite assignment)
    this.names = t.names
    this.namesOf = t.namesOf
    this.aliasesOf = t.aliasesOf
    this.groups = t.groups
    this.groupsOf = t.groupsOf
    this.nodes = t.nodes
    this.sessions = t.sessions
    this.placed = t.placed
    this.unplaced = t.unplaced
  }

  // ------------------------------------------------------------ reads

  /**
   * The ref answering to `name`, if any (aliases resolve to their worker): a supervised name's
   * once a node reported its worker running, or, fixed at its placement (`fx`), from then on.
   */
  whereis(name: string): WorkerRef | undefined {
    const r = this.names.get(name)
    if (!r) return undefined
    if (r.kind === 'alias') return this.names.get(r.target!)?.ref
    return r.retiring ? undefined : r.ref
  }

  /**
   * Whether `name` is registered and stays so: its worker runs, or is starting or moving (a name
   * being unregistered, whose worker is stopping, is not).
   */
  hasName(name: string): boolean {
    const r = this.names.get(name)
    return r !== undefined && r.retiring !== true
  }

  /** The registration of `name`, if any (a copy). */
  registration(name: string): Registration | undefined {
    const r = this.names.get(name)
    if (!r) return undefined
    return r instanceof StaticName ? r.copy() : { ...r }
  }

  /**
   * Every name and its ref (names of workers that are (re)starting are left out, but for a ref
   * fixed at its placement: see {@link RegistryState.whereis}).
   */
  registered(): Array<[string, WorkerRef]> {
    const out: Array<[string, WorkerRef]> = []
    for (const name of this.names.keys()) {
      const ref = this.whereis(name)
      if (ref) out.push([name, ref])
    }
    return out
  }

  /** Number of names (including supervised names that are starting). */
  get size(): number {
    return this.names.size
  }

  /**
   * The registration of `name` as the registry holds it: no copy, so read it at once and never
   * change it (the next applied entry may change it in place, or replace it).
   */
  peek(name: string): Readonly<Registration> | undefined {
    return this.names.get(name)
  }

  /**
   * The supervised names placed on `node`, live: names placed there while it is being gone
   * through are seen, names moved away are not (until the next applied snapshot, which replaces
   * the tables: an iterator from before it goes on through the old ones).
   */
  supervisedNamesOn(node: string): IterableIterator<string> {
    return (this.placed.get(node) ?? new Set<string>()).values()
  }

  /** Supervised registrations placed on `node` (copies). */
  supervisedOn(node: string): Registration[] {
    const out: Registration[] = []
    for (const name of this.placed.get(node) ?? []) {
      const r = this.names.get(name)
      if (r) out.push({ ...r })
    }
    return out
  }

  /** Members of `group` that have a ref (see {@link RegistryState.whereis}). */
  members(group: string): WorkerRef[] {
    const g = this.groups.get(group)
    if (!g) return []
    const out: WorkerRef[] = []
    for (const m of g.values()) {
      const ref = 'ref' in m ? m.ref : this.names.get(m.name)?.ref
      if (ref) out.push(ref)
    }
    return out
  }

  /** Groups that have at least one member. */
  groupNames(): string[] {
    return [...this.groups.keys()]
  }

  /** Names held by the worker `ref` (not counting aliases). */
  namesOfRef(ref: WorkerRef): string[] {
    return this.namesOf.names(ref)
  }

  /**
   * The supervised name whose ref `ref` was fixed at its placement, while no node has reported
   * its worker running (see {@link Registration.fx}); undefined for any other ref.
   */
  startingName(ref: WorkerRef): string | undefined {
    if (!(ref.id < 0)) return undefined // (only a fixed ref has a negative id)
    const r = this.ownerOf(ref)
    return r?.fx === 1 ? r.name : undefined
  }

  /** Whether `ref` (the current incarnation) holds at least one name. */
  isRegistered(ref: WorkerRef): boolean {
    return this.ownerOf(ref) !== undefined
  }

  /** Whether `ref` is a member of a group by its ref (as a static worker is; a supervised worker is by its name). */
  isMemberByRef(ref: WorkerRef): boolean {
    return this.groupsOf.has(`r:${refKey(ref)}`)
  }

  /** Known nodes of the sworm (copies). */
  nodeRecords(): NodeRecord[] {
    return [...this.nodes.values()].map((n) => ({ ...n }))
  }

  /** The aliases of supervised name `name` (none for other names). */
  aliasesOfName(name: string): Iterable<string> {
    return this.aliasesOf.get(name) ?? []
  }

  /** Whether incarnation `inc` of `node` is the one up in the registry. */
  isUp(node: string, inc: string): boolean {
    const n = this.nodes.get(node)
    return n !== undefined && n.up && n.inc === inc
  }

  /** The record of one node. */
  nodeRecord(node: string): NodeRecord | undefined {
    const n = this.nodes.get(node)
    return n ? { ...n } : undefined
  }

  /** Supervised names per node. */
  loadByNode(): Record<string, number> {
    return Object.fromEntries([...this.placed].map(([node, s]) => [node, s.size]))
  }

  // ------------------------------------------------------------ apply

  /**
   * Whether applying `cmd` may touch many names at once (a node's failure, restart, graceful stop
   * or drain, a rebalance, a node's batch of restarts): the Raft node sends its commit notices
   * before applying it.
   */
  slow(cmd: RegistryCommand): boolean {
    const c = (cmd as { c?: unknown } | null)?.c
    return c === 'nodeDown' || c === 'nodeUp' || c === 'workersDown' || c === 'drain' || c === 'rebalance' || c === 'stoppedMany' || c === 'moveOff'
  }

  /** Apply one command (deterministic). */
  apply(cmd: RegistryCommand, index: number, term?: number): RegistryResult {
    this.appliedIndex = index
    if ((cmd.c === 'nodeDown' || cmd.c === 'moveOff') && cmd.term !== undefined && term !== undefined && cmd.term !== term) return false
    if (cmd.s !== undefined) return this.applyInSession(cmd, cmd.s)
    return this.applyOp(cmd)
  }

  /**
   * Apply a command of a client session at most once (see {@link SessionTag}). A session lives as
   * long as its node incarnation: commands of an older incarnation (a process that is gone) are
   * refused with `'session-expired'`, and a node's session is dropped when a new incarnation of it
   * comes up.
   */
  private applyInSession(cmd: RegistryCommand, s: SessionTag): RegistryResult {
    if (!isObj(s) || typeof s.node !== 'string' || typeof s.inc !== 'string' || !Number.isSafeInteger(s.seq) || !Number.isSafeInteger(s.low)) return 'session-expired'
    const rec = this.nodes.get(s.node)
    if (!rec || rec.inc !== s.inc) return 'session-expired'
    let sess = this.sessions.get(s.node)
    if (!sess || sess.inc !== s.inc) this.sessions.set(s.node, (sess = { inc: s.inc, low: 0, results: new Map() }))
    if (s.low > sess.low) {
      for (const k of sess.results.keys()) if (k < s.low) sess.results.delete(k)
      sess.low = s.low
    }
    if (sess.results.has(s.seq)) return sess.results.get(s.seq)
    if (s.seq < sess.low) return 'session-expired' // answered and forgotten: the proposer gave up on it
    const res = this.applyOp(cmd)
    sess.results.set(s.seq, res)
    return res
  }

  private applyOp(cmd: RegistryCommand): RegistryResult {
    switch (cmd.c) {
      case 'register':
        return this.register(cmd.name, cmd.ref)
      case 'unregister':
        return this.unregister(cmd.name)
      case 'join':
        return this.join(cmd.group, cmd.ref)
      case 'leave':
        return this.leave(cmd.group, cmd.ref)
      case 'workerDown':
        this.dropStaticWorker(cmd.ref)
        return true
      case 'workersDown':
        if (typeof cmd.node !== 'string' || typeof cmd.inc !== 'string') return false
        this.dropStaticOfNode(cmd.node, (inc) => inc === cmd.inc)
        return true
      case 'nodeUp':
        return this.nodeUp(cmd.node, cmd.inc, cmd.prev, typeof cmd.zone === 'string' ? cmd.zone : undefined, cmd.ord === 1)
      case 'nodeDown':
        return this.nodeDown(cmd.node, cmd.inc, cmd.ord === 1, sliceOf(cmd.max))
      case 'moveOff':
        return this.moveOff(cmd.node, cmd.inc, sliceOf(cmd.max))
      case 'supervise':
        return this.supervise(cmd.name, cmd.spec, cmd.ue === 1, cmd.s?.node, cmd.ue === 1 && typeof cmd.fx === 'string' ? cmd.fx : undefined)
      case 'started':
        return this.started(cmd.name, cmd.epoch, cmd.ref)
      case 'startedMany':
        return this.startedMany(cmd)
      case 'startFailed':
        return this.startFailed(cmd.name, cmd.epoch, cmd.error)
      case 'stopped':
        return this.stopped(cmd.name, cmd.epoch, cmd.restart)
      case 'stoppedMany':
        return this.stoppedMany(cmd.stops)
      case 'drain':
        return this.drain(cmd.node, cmd.on, cmd.pu === 1)
      case 'handedOff':
        return this.handedOff(cmd.name, cmd.epoch, cmd.state)
      case 'rebalance':
        return this.rebalance()
      default:
        return undefined // unknown command from a newer version: no effect, same on every node
    }
  }

  // ------------------------------------------------------------ names

  /** The registration owning the current incarnation `ref`: a static or supervised name. */
  private ownerOf(ref: WorkerRef): Readonly<Registration> | undefined {
    // The supervised name first, whatever the order of the index (a replica restored from a
    // snapshot holds a worker's names in another order than one that applied the log); else any
    // of its static names (which one does not matter: all are static). Both without going
    // through every name the worker holds (one worker may hold many).
    const sup = this.namesOf.supervisedName(ref)
    if (sup !== undefined) {
      const r = this.names.get(sup)
      if (r?.kind === 'supervised' && r.ref && sameRef(r.ref, ref)) return r
    }
    const first = this.namesOf.first(ref)
    if (first === undefined) return undefined
    const r = this.names.get(first)
    const held = r?.ref // (a static name's is made at each read: once)
    if (held && sameRef(held, ref)) return r
    for (const n of this.namesOf.names(ref)) {
      const x = this.names.get(n)
      const its = x?.ref
      if (its && sameRef(its, ref)) return x
    }
    return undefined
  }

  private indexRef(name: string, ref: WorkerRef, supervised = false): void {
    this.namesOf.add(ref, name, supervised)
  }

  private unindexRef(name: string, ref: WorkerRef | undefined): void {
    if (ref) this.namesOf.delete(ref, name)
  }

  /**
   * The ref to keep for a worker of the node incarnation `n`: its strings are the node record's
   * and one sworm name, shared by every stored ref, not the copies each decoded entry carries
   * (at a million names, that is a hundred bytes a name).
   */
  private stored(ref: WorkerRef, n: NodeRecord): WorkerRef {
    if (this.swormName !== ref.sworm) {
      if (this.swormName === undefined) this.swormName = ref.sworm
      else return { sworm: ref.sworm, node: n.node, inc: n.inc, id: ref.id }
    }
    return { sworm: this.swormName, node: n.node, inc: n.inc, id: ref.id }
  }

  private register(name: string, ref: WorkerRef): boolean | 'node-down' {
    if (this.names.has(name)) return false
    // An extra name for a supervised worker: an alias that follows it.
    const owner = this.ownerOf(ref)
    if (owner?.kind === 'supervised') {
      this.setName(name, { name, kind: 'alias', ref: undefined, target: owner.name })
      let s = this.aliasesOf.get(owner.name)
      if (!s) this.aliasesOf.set(owner.name, (s = new Set()))
      s.add(name)
      this.onChange?.({ type: 'registered', name, ref })
      return true
    }
    const node = this.nodes.get(ref.node)
    // A ref of a node incarnation that is not (or no longer) up cannot take a name.
    if (!node || node.inc !== ref.inc || !node.up) return 'node-down'
    const kept = this.stored(ref, node)
    this.setName(name, new StaticName(name, kept.sworm, kept.node, kept.inc, kept.id))
    this.indexRef(name, kept)
    this.onChange?.({ type: 'registered', name, ref: kept })
    return true
  }

  private unregister(name: string): boolean {
    const r = this.names.get(name)
    if (!r) return false
    if (r.kind === 'alias') {
      this.deleteName(name)
      this.aliasesOf.get(r.target!)?.delete(name)
      this.onChange?.({ type: 'unregistered', name, ref: this.names.get(r.target!)?.ref, node: undefined })
      return true
    }
    if (r.retiring) return false
    const host = r.kind === 'supervised' && r.node !== undefined ? this.nodes.get(r.node) : undefined
    if (host?.up) {
      // Its node may be running (or starting) the worker: keep the name reserved until the node
      // confirms the stop with `stopped` (restart: false), so no new incarnation can overlap it.
      const w = this.edit(r)
      w.retiring = true
      w.handoffTo = undefined
      for (const a of this.aliasesOf.get(r.name) ?? []) {
        this.deleteName(a)
        this.onChange?.({ type: 'unregistered', name: a, ref: r.ref, node: r.node })
      }
      this.aliasesOf.delete(r.name)
      this.dropMemberships(`n:${r.name}`, r.ref)
      this.onChange?.({ type: 'retire', name: r.name, node: r.node!, epoch: r.epoch! })
      return true
    }
    this.removeName(r)
    return true
  }

  /** Remove a static or supervised name with everything that hangs on it. */
  private removeName(r: Readonly<Registration>): void {
    const ref = r.ref // (a static name's is made at each read)
    this.deleteName(r.name)
    this.unindexRef(r.name, ref)
    if (r.kind === 'supervised') {
      deletePlaced(this.index(), r.name, r.node)
      for (const a of this.aliasesOf.get(r.name) ?? []) {
        this.deleteName(a)
        this.onChange?.({ type: 'unregistered', name: a, ref: r.ref, node: r.node })
      }
      this.aliasesOf.delete(r.name)
      this.dropMemberships(`n:${r.name}`, r.ref)
      if (r.ref) this.onChange?.({ type: 'stopWorker', name: r.name, ref: r.ref })
      this.onChange?.({ type: 'unregistered', name: r.name, ref: r.ref, node: r.node })
      return
    }
    this.onChange?.({ type: 'unregistered', name: r.name, ref, node: ref?.node })
    if (ref && !this.namesOf.has(ref)) this.dropMemberships(`r:${refKey(ref)}`, ref)
  }

  private dropStaticWorker(ref: WorkerRef): void {
    for (const n of this.namesOf.names(ref)) {
      const r = this.names.get(n)
      if (r?.kind === 'static') this.removeName(r)
    }
    this.dropMemberships(`r:${refKey(ref)}`, ref)
  }

  // ------------------------------------------------------------ groups

  private memberOf(ref: WorkerRef): { key: string; member: Member } | undefined {
    const owner = this.ownerOf(ref)
    if (!owner) return undefined
    if (owner.kind === 'supervised') return { key: `n:${owner.name}`, member: { name: owner.name } }
    return { key: `r:${refKey(ref)}`, member: { ref } }
  }

  private join(group: string, ref: WorkerRef): RegistryResult {
    const m = this.memberOf(ref)
    if (!m) return 'not-found'
    if (this.groups.get(group)?.has(m.key)) return true
    this.editGroup(group).set(m.key, m.member)
    let s = this.groupsOf.get(m.key)
    if (!s) this.groupsOf.set(m.key, (s = new Set()))
    s.add(group)
    this.onChange?.({ type: 'joined', group, ref })
    return true
  }

  private leave(group: string, ref: WorkerRef): RegistryResult {
    const m = this.memberOf(ref)
    if (!m) return 'not-found'
    if (!this.groups.get(group)?.has(m.key)) return true
    const g = this.editGroup(group)
    g.delete(m.key)
    if (g.size === 0) this.deleteGroup(group)
    this.groupsOf.get(m.key)?.delete(group)
    this.onChange?.({ type: 'left', group, ref })
    return true
  }

  private dropMemberships(key: string, ref: WorkerRef | undefined): void {
    const gs = this.groupsOf.get(key)
    if (!gs) return
    this.groupsOf.delete(key)
    for (const group of gs) {
      if (!this.groups.get(group)?.has(key)) continue
      const g = this.editGroup(group)
      g.delete(key)
      if (g.size === 0) this.deleteGroup(group)
      if (ref) this.onChange?.({ type: 'left', group, ref })
    }
  }

  // ------------------------------------------------------------ nodes

  /** The placement index, for {@link addPlaced} and {@link deletePlaced}. */
  private index(): Pick<Tables, 'placed' | 'unplaced'> {
    return { placed: this.placed, unplaced: this.unplaced }
  }

  /** Supervised names placed on `node`. */
  private loadOf(node: string): number {
    return this.placed.get(node)?.size ?? 0
  }

  /** Nodes that can take supervised workers, sorted by id (deterministic). */
  private candidates(exclude?: string): Array<{ node: string; load: number }> {
    const out: Array<{ node: string; load: number }> = []
    for (const n of this.nodes.values()) {
      if (n.up && !n.draining && n.node !== exclude) out.push({ node: n.node, load: this.loadOf(n.node) })
    }
    // in node id order (ids are unique): inserted one by one, as `Array.prototype.sort` allocated
    // its work arrays at every call (session 23: half of a failover's move allocations)
    for (let i = 1; i < out.length; i++) {
      const c = out[i]!
      let j = i
      for (; j > 0 && out[j - 1]!.node > c.node; j--) out[j] = out[j - 1]!
      out[j] = c
    }
    return out
  }

  private choose(name: string, exclude?: string): string | undefined {
    const c = this.candidates(exclude)
    if (c.length === 0) return undefined
    const pick = this.placement(name, c)
    return c.some((x) => x.node === pick) ? pick : c[0]!.node
  }

  /** Put supervised `r` on a (new) node with a new epoch; the node starts it. */
  private place(reg: Readonly<Registration>, node: string | undefined, moved: boolean, by?: string): void {
    if (reg.retiring) {
      // its node is gone (or restarted): nothing runs any more, the name can go
      this.removeName(reg)
      return
    }
    const r = this.edit(reg)
    const from = r.node
    deletePlaced(this.index(), r.name, r.node)
    if (r.ref) {
      this.unindexRef(r.name, r.ref)
      const old = r.ref
      r.ref = undefined
      this.onChange?.({ type: 'stopWorker', name: r.name, ref: old })
    }
    if (r.fx !== undefined) r.fx = undefined // (a handoff forgot the ref already)
    r.node = node
    // A registration with unique epochs takes the index of this entry: no entry places one name
    // twice, so its epochs stay below the index of any later registration of the name.
    r.epoch = r.ue === 1 ? Math.max((r.epoch ?? 0) + 1, this.appliedIndex) : (r.epoch ?? 0) + 1
    r.handoffTo = undefined
    addPlaced(this.index(), r.name, node)
    if (node === undefined) {
      this.onChange?.({ type: 'unplaced', name: r.name })
      return
    }
    this.onChange?.({ type: 'placed', name: r.name, node, epoch: r.epoch, moved, from, ...(by !== undefined ? { by } : {}) })
  }

  private nodeUp(node: string, inc: string, seen: string | undefined, zone: string | undefined, byName: boolean): boolean {
    const prev = this.nodes.get(node)
    if (prev && prev.inc === inc && prev.up) {
      // (a replica restored from a snapshot of a version without zones learns it here)
      if (zone !== undefined && prev.zone !== zone) prev.zone = zone
      return true
    }
    // A copy from a process replaced since (it read another incarnation than the current one)
    if (seen !== undefined && (prev?.inc ?? '') !== inc && (prev?.inc ?? '') !== seen) return false
    // A late copy of this incarnation's first announcement, after it was declared gone: only the
    // live process comes back (it read itself declared gone), not a copy its dead process left.
    if (seen !== undefined && prev && prev.inc === inc && !prev.up && seen !== inc) return false
    const newInc = !prev || prev.inc !== inc
    this.nodes.set(node, { node, inc, up: true, draining: newInc ? false : (prev?.draining ?? false), ...(zone !== undefined ? { zone } : {}) })
    if (newInc) {
      this.sessions.delete(node) // the old process and its retries are gone
      // The old process is gone, and its workers with it.
      this.dropStaticOfNode(node, (old) => old !== inc)
      // Its supervised workers start again here, under a new epoch.
      // (placed again on the same node, each on its own: the order decides nothing)
      for (const name of [...(this.placed.get(node) ?? [])]) this.place(this.names.get(name)!, node, false)
    }
    this.onChange?.({ type: 'nodeUp', node, inc })
    // Names that had nowhere to go can now be placed.
    if (this.unplaced.size) for (const name of this.inOrder(this.unplaced, byName)) this.place(this.names.get(name)!, this.choose(name), true)
    return true
  }

  /** Drop the static names (and group memberships) of the workers of `node`'s incarnations `incs` picks. */
  private dropStaticOfNode(node: string, incs: (inc: string) => boolean): void {
    const victims: WorkerRef[] = []
    for (const name of this.namesOf.namesOfNode(node, incs)) {
      const r = this.names.get(name)
      if (r instanceof StaticName && r.refNode === node && incs(r.refInc)) victims.push(r.ref)
    }
    for (const ref of victims) this.dropStaticWorker(ref)
  }

  /**
   * The names of `index` (supervised names placed on a node, or on none) in the order they are
   * to be placed in: each choice counts the load of the ones placed before it, so every replica
   * must take them in the same order, whatever order its index holds them in (that depends on
   * its history: a replica restored from a snapshot rebuilt it). `byName`: in name order; else in
   * the order of the name table (a scan of every name), as entries of version 4 were applied.
   */
  private inOrder(index: ReadonlySet<string>, byName: boolean): string[] {
    if (byName) return sortedNames(index)
    const out: string[] = []
    for (const r of this.names.values()) if (index.has(r.name) && r.kind === 'supervised') out.push(r.name)
    return out
  }

  private nodeDown(node: string, inc: string, byName: boolean, max: number): boolean {
    const prev = this.nodes.get(node)
    if (!prev || prev.inc !== inc || !prev.up) return false
    prev.up = false
    this.dropStaticOfNode(node, () => true)
    this.onChange?.({ type: 'nodeDown', node, inc })
    // Its supervised workers move (the leader waited for the node's lease to run out): all of
    // them, or the first `max` (the leader moves the rest with `moveOff`).
    this.moveNames(node, byName, max)
    return true
  }

  /** The next slice of the names still placed on `node`, declared gone (see `moveOff`). */
  private moveOff(node: string, inc: string, max: number): boolean {
    const rec = this.nodes.get(node)
    if (typeof inc !== 'string' || !rec || rec.inc !== inc || rec.up) return false
    this.moveNames(node, true, max)
    return true
  }

  private moveNames(node: string, byName: boolean, max: number): void {
    const moving = this.placed.get(node)
    if (!moving) return
    const names = byName && max < moving.size ? firstNames(moving, max) : this.inOrder(moving, byName).slice(0, max)
    for (const name of names) this.place(this.names.get(name)!, this.choose(name), true)
  }

  /**
   * How many supervised names are still placed on `node` while it is down (declared gone, and
   * not back): what the leader has yet to move with `moveOff`.
   */
  leftOn(node: string): number {
    const rec = this.nodes.get(node)
    return rec && !rec.up ? this.loadOf(node) : 0
  }

  // ------------------------------------------------------------ supervision

  private supervise(name: string, spec: StartSpec, uniqueEpochs: boolean, by: string | undefined, fixIn: string | undefined): SuperviseResult {
    const existing = this.names.get(name)
    if (existing) return { placed: false, exists: true, kind: existing.kind, ref: this.whereis(name) }
    const node = this.choose(name)
    if (node === undefined) return { placed: false, exists: false, noNode: true }
    const r: Registration = { name, kind: 'supervised', ref: undefined, spec, node: undefined, epoch: 0, ...(uniqueEpochs ? { ue: 1 as const } : {}) }
    this.setName(name, r)
    // (a ref fixed here needs no word that the worker runs: its caller does not wait for it)
    this.place(r, node, false, fixIn === undefined ? by : undefined)
    if (fixIn === undefined) return { placed: true, epoch: r.epoch!, node }
    // The worker's ref, fixed now: the entry's index (the epoch of a fresh registration with
    // unique epochs) is unique in the log, so no other worker of that node incarnation can have
    // it, and a node gives its own workers positive ids.
    const n = this.nodes.get(node)!
    const w = this.edit(r)
    w.ref = this.stored({ sworm: fixIn, node, inc: n.inc, id: -r.epoch! }, n)
    w.fx = 1
    this.indexRef(name, w.ref, true)
    return { placed: true, epoch: r.epoch!, node, ref: w.ref }
  }

  private current(name: string, epoch: number): Readonly<Registration> | undefined {
    const r = this.names.get(name)
    return r && r.kind === 'supervised' && r.epoch === epoch ? r : undefined
  }

  private started(name: string, epoch: number, ref: WorkerRef): boolean {
    // a malformed report (a bug in its proposer) changes nothing, rather than store a ref that
    // no index or snapshot could hold, the same way on every replica
    if (typeof name !== 'string' || !Number.isSafeInteger(epoch) || !isWorkerRef(ref)) return false
    const r = this.current(name, epoch)
    if (r?.fx === 1) {
      // the start of a worker whose ref was fixed at its placement: it runs now (on the same
      // conditions as any other start)
      const n = this.nodes.get(ref.node)
      if (!r.ref || !sameRef(r.ref, ref) || r.retiring || !n || !n.up || n.inc !== ref.inc) return false
      const w = this.edit(r)
      w.fx = undefined
      w.handoffState = undefined
      this.onChange?.({ type: 'started', name, ref: r.ref, epoch })
      return true
    }
    // The same start reported again (the supervisor retries a report whose outcome it does not
    // know): it took effect, so say so; the supervisor would otherwise stop a worker in use.
    if (r?.ref && sameRef(r.ref, ref)) return true
    const n = this.nodes.get(ref.node)
    if (!r || r.ref || r.retiring || r.node !== ref.node || !n || !n.up || n.inc !== ref.inc) return false
    const w = this.edit(r)
    w.ref = this.stored(ref, n)
    w.handoffState = undefined
    this.indexRef(name, w.ref, true)
    this.onChange?.({ type: 'started', name, ref, epoch })
    return true
  }

  private startedMany(cmd: Extract<RegistryOp, { c: 'startedMany' }>): boolean[] | undefined {
    // malformed: no effect, the same on every replica
    if (!Array.isArray(cmd.starts) || typeof cmd.sworm !== 'string' || typeof cmd.node !== 'string' || typeof cmd.inc !== 'string') return undefined
    const out: boolean[] = []
    for (const s of cmd.starts) {
      const ok = Array.isArray(s) && this.started(s[0], s[1], { sworm: cmd.sworm, node: cmd.node, inc: cmd.inc, id: s[2] })
      out.push(ok)
    }
    return out
  }

  private startFailed(name: string, epoch: number, error: string): boolean {
    const r = this.current(name, epoch)
    if (!r || (r.ref && r.fx !== 1)) return false
    this.onChange?.({ type: 'startFailed', name, epoch, error })
    this.removeName(r)
    return true
  }

  private stopped(name: string, epoch: number, restart: boolean): boolean {
    const r = this.current(name, epoch)
    if (!r) return false
    if (!restart) {
      this.removeName(r)
      return true
    }
    this.place(r, r.node, false)
    return true
  }

  private stoppedMany(stops: unknown): boolean[] | undefined {
    // malformed: no effect, the same on every replica
    if (!Array.isArray(stops)) return undefined
    const out: boolean[] = []
    for (const s of stops) {
      const ok = Array.isArray(s) && typeof s[0] === 'string' && Number.isSafeInteger(s[1]) && (s[2] === 0 || s[2] === 1) && this.stopped(s[0], s[1] as number, s[2] === 1)
      out.push(ok)
    }
    return out
  }

  private drain(node: string, on: boolean, placeUnplaced: boolean): boolean {
    const n = this.nodes.get(node)
    if (!n) return false
    if (n.draining === on) return true
    n.draining = on
    if (!on) {
      // Names that had nowhere to go (every node that could take them was draining when theirs
      // went) can go here now. Found by the nemesis (seed 2480216): three nodes draining when
      // the fourth was declared gone, its names placed on none, then every drain ended, and they
      // waited for a node to come up, forever.
      if (placeUnplaced && n.up && this.unplaced.size) for (const name of sortedNames(this.unplaced)) this.place(this.names.get(name)!, this.choose(name), true)
      return true
    }
    const inFlight = this.loadWithMoves()
    for (const r of this.names.values()) {
      if (r.kind !== 'supervised' || r.node !== node || r.retiring || r.handoffTo !== undefined) continue
      const c = this.candidates(node).map((x) => ({ node: x.node, load: inFlight.get(x.node) ?? x.load }))
      if (c.length === 0) continue // nowhere to go: it stays until a node can take it
      const pick = this.placement(r.name, c)
      const to = c.some((x) => x.node === pick) ? pick : c[0]!.node
      inFlight.set(to, (inFlight.get(to) ?? 0) + 1)
      this.startHandoff(r, to)
    }
    return true
  }

  /** Even without a ref the node may be starting the worker: the node itself must let go. */
  private startHandoff(r: Readonly<Registration>, to: string): void {
    this.edit(r).handoffTo = to
    this.onChange?.({ type: 'handoff', name: r.name, node: r.node!, epoch: r.epoch!, to })
  }

  /** Load per node counting moves in progress at their destination. */
  private loadWithMoves(): Map<string, number> {
    const load = new Map([...this.placed].map(([node, s]) => [node, s.size]))
    for (const r of this.names.values()) {
      if (r.kind !== 'supervised' || r.handoffTo === undefined) continue
      load.set(r.handoffTo, (load.get(r.handoffTo) ?? 0) + 1)
      if (r.node !== undefined) load.set(r.node, (load.get(r.node) ?? 0) - 1)
    }
    return load
  }

  /** Move workers (with handoff) from the most to the least loaded nodes until loads are even. */
  private rebalance(): boolean {
    const cands = this.candidates()
    if (cands.length < 2) return true
    const load = this.loadWithMoves()
    for (const c of cands) if (!load.has(c.node)) load.set(c.node, 0)
    let total = 0
    for (const c of cands) total += load.get(c.node)!
    const target = Math.ceil(total / cands.length)
    const movable = [...this.names.values()]
      .filter((r) => r.kind === 'supervised' && r.node !== undefined && load.has(r.node) && r.handoffTo === undefined && !r.retiring)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    for (const r of movable) {
      const from = r.node!
      if (load.get(from)! <= target) continue
      let best: string | undefined
      for (const c of cands) if (best === undefined || load.get(c.node)! < load.get(best)!) best = c.node
      if (best === undefined || load.get(best)! + 1 >= load.get(from)!) continue
      load.set(best, load.get(best)! + 1)
      load.set(from, load.get(from)! - 1)
      this.startHandoff(r, best)
    }
    return true
  }

  private handedOff(name: string, epoch: number, state: unknown): boolean {
    const r = this.current(name, epoch)
    if (!r || r.handoffTo === undefined) return false
    const to = this.nodes.get(r.handoffTo)
    const target = to && to.up && !to.draining ? r.handoffTo : this.choose(name, r.node)
    // the old worker has stopped already (it handed over): forget its ref without a stop order
    this.unindexRef(name, r.ref)
    const w = this.edit(r)
    w.ref = undefined
    w.handoffState = state
    this.place(w, target, true)
    return true
  }

  // ------------------------------------------------------------ writes

  /** `r`, writable: a snapshot in progress keeps its value first. */
  private edit(r: Readonly<Registration>): Registration {
    this.cut?.touchName(r.name, this.names.get(r.name))
    return r as Registration
  }

  private setName(name: string, r: Readonly<Registration>): void {
    this.cut?.touchName(name, this.names.get(name))
    this.names.set(name, r)
  }

  private deleteName(name: string): void {
    this.cut?.touchName(name, this.names.get(name))
    this.names.delete(name)
  }

  /** The members of `group`, writable (a new group if there is none). */
  private editGroup(group: string): Map<string, Member> {
    const g = this.groups.get(group)
    this.cut?.touchGroup(group, g)
    if (g) return g as Map<string, Member>
    const created = new Map<string, Member>()
    this.groups.set(group, created)
    return created
  }

  private deleteGroup(group: string): void {
    this.cut?.touchGroup(group, this.groups.get(group))
    this.groups.delete(group)
  }

  // ------------------------------------------------------------ snapshots

  /** Encode the whole registry at once. */
  snapshot(): Uint8Array {
    const w = this.snapshotSteps()
    for (;;) {
      const data = w.step()
      if (data) return data
    }
  }

  /**
   * Encode the registry as it is now, a frame per step (a few milliseconds each), while commands
   * go on being applied (see snapshot.ts). Starting another snapshot abandons this one.
   * @param namesPerFrame - names per step (default 4,096; tests use small frames)
   * @param copyPerStep - bytes of frames copied into the whole snapshot per step, at the end
   *   (default 2 MiB; tests use less)
   */
  snapshotSteps(namesPerFrame?: number, copyPerStep?: number): StepTask<Uint8Array> {
    const w = new SnapshotWriter(this.tables(), this.appliedIndex, this.swormName, namesPerFrame, copyPerStep)
    this.cut = w
    return {
      step: () => {
        const data = w.step()
        // (once its frames are encoded, it reads the registry no more: writes go on uncopied)
        if (this.cut === w && (data || w.framesDone)) this.cut = undefined
        return data
      },
      abandon: () => {
        if (this.cut === w) this.cut = undefined // or every later write would keep old values for it
      },
    }
  }

  /** Replace the registry with a decoded snapshot. */
  restore(data: Uint8Array): void {
    const r = this.restoreSteps(data)
    while (!r.step());
  }

  /**
   * Decode a snapshot a frame per step; the registry changes only at the last step, all at once
   * (until then it serves, and applies, what it held).
   */
  restoreSteps(data: Uint8Array): StepTask<true> {
    const reader = new SnapshotReader(data)
    return {
      step: () => {
        const done = reader.step()
        if (!done) return undefined
        this.cut = undefined // a snapshot in progress goes on with the tables it was reading
        this.setTables(done.tables)
        this.restores++
        this.appliedIndex = done.index
        this.swormName = done.sworm
        return true
      },
    }
  }

  private setTables(t: Tables): void {
    ;({ names: this.names, namesOf: this.namesOf, aliasesOf: this.aliasesOf, groups: this.groups, groupsOf: this.groupsOf, nodes: this.nodes, sessions: this.sessions, placed: this.placed, unplaced: this.unplaced } = t)
  }

  private tables(): Tables {
    const { names, namesOf, aliasesOf, groups, groupsOf, nodes, sessions, placed, unplaced } = this
    return { names, namesOf, aliasesOf, groups, groupsOf, nodes, sessions, placed, unplaced }
  }
}
