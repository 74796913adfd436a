/**
 * The registry state machine: names, groups and nodes of one sworm, changed only by applying
 * {@link RegistryCommand}s in log order. Pure and deterministic (no clock, no I/O), so every
 * node that applies the same log holds the same registry, and reads are plain map lookups.
 * @module
 */
import { pack, unpack } from 'msgpackr'
import type { StateMachine } from '../raft/node.js'
import { refKey, sameRef, type NodeRecord, type Registration, type RegistryCommand, type RegistryResult, type WorkerRef } from './types.js'

/** A change the registry made, for events and for the local supervisor. */
export type RegistryChange =
  | { type: 'registered'; name: string; ref: WorkerRef }
  | { type: 'unregistered'; name: string; ref: WorkerRef }
  | { type: 'joined'; group: string; ref: WorkerRef }
  | { type: 'left'; group: string; ref: WorkerRef }
  | { type: 'nodeUp'; node: string; inc: string }
  | { type: 'nodeDown'; node: string; inc: string }

/** The replicated registry. */
export class RegistryState implements StateMachine<RegistryCommand, RegistryResult> {
  /** name -> registration */
  private readonly names = new Map<string, Registration>()
  /** worker -> its names */
  private readonly namesOf = new Map<string, Set<string>>()
  /** group -> worker key -> ref */
  private readonly groups = new Map<string, Map<string, WorkerRef>>()
  /** worker -> its groups */
  private readonly groupsOf = new Map<string, Set<string>>()
  /** node -> record */
  private readonly nodes = new Map<string, NodeRecord>()
  /** Highest log index applied. */
  appliedIndex = 0

  /** @param onChange - called for every change, after it is made (not during restore) */
  constructor(private readonly onChange?: (change: RegistryChange) => void) {}

  // ------------------------------------------------------------ reads

  /** The ref bound to `name`, if any. */
  whereis(name: string): WorkerRef | undefined {
    return this.names.get(name)?.ref
  }

  /** The registration of `name`, if any. */
  registration(name: string): Registration | undefined {
    return this.names.get(name)
  }

  /** Every name and its ref. */
  registered(): Array<[string, WorkerRef]> {
    const out: Array<[string, WorkerRef]> = []
    for (const [name, r] of this.names) out.push([name, r.ref])
    return out
  }

  /** Number of names. */
  get size(): number {
    return this.names.size
  }

  /** Members of `group`. */
  members(group: string): WorkerRef[] {
    const g = this.groups.get(group)
    return g ? [...g.values()] : []
  }

  /** Groups that have at least one member. */
  groupNames(): string[] {
    return [...this.groups.keys()]
  }

  /** Names held by `ref`. */
  namesOfRef(ref: WorkerRef): string[] {
    return [...(this.namesOf.get(refKey(ref)) ?? [])]
  }

  /** Whether `ref` holds at least one name. */
  isRegistered(ref: WorkerRef): boolean {
    const names = this.namesOf.get(refKey(ref))
    if (!names) return false
    for (const n of names) if (sameRef(this.names.get(n)!.ref, ref)) return true
    return false
  }

  /** Known nodes of the sworm. */
  nodeRecords(): NodeRecord[] {
    return [...this.nodes.values()].map((n) => ({ ...n }))
  }

  /** The record of one node. */
  nodeRecord(node: string): NodeRecord | undefined {
    const n = this.nodes.get(node)
    return n ? { ...n } : undefined
  }

  // ------------------------------------------------------------ apply

  /** Apply one command (deterministic). */
  apply(cmd: RegistryCommand, index: number): RegistryResult {
    this.appliedIndex = index
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
        this.dropWorker(cmd.ref)
        return true
      case 'nodeUp':
        return this.nodeUp(cmd.node, cmd.inc)
      case 'nodeDown':
        return this.nodeDown(cmd.node, cmd.inc)
      default:
        return undefined // unknown command from a newer version: no effect, same on every node
    }
  }

  private register(name: string, ref: WorkerRef): boolean {
    if (this.names.has(name)) return false
    const node = this.nodes.get(ref.node)
    // A ref of a node incarnation that is not (or no longer) up cannot take a name.
    if (!node || node.inc !== ref.inc || !node.up) return false
    this.names.set(name, { name, ref, kind: 'static' })
    const k = refKey(ref)
    let s = this.namesOf.get(k)
    if (!s) this.namesOf.set(k, (s = new Set()))
    s.add(name)
    this.onChange?.({ type: 'registered', name, ref })
    return true
  }

  private unregister(name: string): boolean {
    const r = this.names.get(name)
    if (!r) return false
    this.names.delete(name)
    const k = refKey(r.ref)
    const s = this.namesOf.get(k)
    s?.delete(name)
    this.onChange?.({ type: 'unregistered', name, ref: r.ref })
    if (!s || s.size === 0) {
      this.namesOf.delete(k)
      this.dropMemberships(r.ref)
    }
    return true
  }

  private join(group: string, ref: WorkerRef): RegistryResult {
    if (!this.isRegistered(ref)) return 'not-found'
    let g = this.groups.get(group)
    if (!g) this.groups.set(group, (g = new Map()))
    const k = refKey(ref)
    if (g.has(k)) return true
    g.set(k, ref)
    let s = this.groupsOf.get(k)
    if (!s) this.groupsOf.set(k, (s = new Set()))
    s.add(group)
    this.onChange?.({ type: 'joined', group, ref })
    return true
  }

  private leave(group: string, ref: WorkerRef): RegistryResult {
    if (!this.isRegistered(ref)) return 'not-found'
    const k = refKey(ref)
    const g = this.groups.get(group)
    if (!g || !g.delete(k)) return true
    if (g.size === 0) this.groups.delete(group)
    this.groupsOf.get(k)?.delete(group)
    this.onChange?.({ type: 'left', group, ref })
    return true
  }

  private dropMemberships(ref: WorkerRef): void {
    const k = refKey(ref)
    const gs = this.groupsOf.get(k)
    if (!gs) return
    this.groupsOf.delete(k)
    for (const group of gs) {
      const g = this.groups.get(group)
      if (!g) continue
      g.delete(k)
      if (g.size === 0) this.groups.delete(group)
      this.onChange?.({ type: 'left', group, ref })
    }
  }

  private dropWorker(ref: WorkerRef): void {
    const names = this.namesOf.get(refKey(ref))
    if (names) for (const n of [...names]) this.unregister(n)
    this.dropMemberships(ref)
  }

  /** Drop every static name held by a worker of `node` whose incarnation is not `keepInc`. */
  private dropNodeWorkers(node: string, keepInc: string | undefined): void {
    const victims: WorkerRef[] = []
    for (const r of this.names.values()) {
      if (r.ref.node === node && r.ref.inc !== keepInc && r.kind === 'static') victims.push(r.ref)
    }
    for (const ref of victims) this.dropWorker(ref)
  }

  private nodeUp(node: string, inc: string): boolean {
    const prev = this.nodes.get(node)
    if (prev && prev.inc === inc && prev.up) return true
    this.nodes.set(node, { node, inc, up: true })
    // A new incarnation means the old process is gone, and its workers with it.
    this.dropNodeWorkers(node, inc)
    this.onChange?.({ type: 'nodeUp', node, inc })
    return true
  }

  private nodeDown(node: string, inc: string): boolean {
    const prev = this.nodes.get(node)
    if (!prev || prev.inc !== inc || !prev.up) return false
    prev.up = false
    this.dropNodeWorkers(node, undefined)
    this.onChange?.({ type: 'nodeDown', node, inc })
    return true
  }

  // ------------------------------------------------------------ snapshots

  /** Encode the whole registry. */
  snapshot(): Uint8Array {
    const groups: Array<[string, WorkerRef[]]> = []
    for (const [g, m] of this.groups) groups.push([g, [...m.values()]])
    return pack({ v: 1, i: this.appliedIndex, names: [...this.names.values()], groups, nodes: [...this.nodes.values()] })
  }

  /** Replace the registry with a decoded snapshot. */
  restore(data: Uint8Array): void {
    const s = unpack(data) as { v: number; i: number; names: Registration[]; groups: Array<[string, WorkerRef[]]>; nodes: NodeRecord[] }
    this.names.clear()
    this.namesOf.clear()
    this.groups.clear()
    this.groupsOf.clear()
    this.nodes.clear()
    this.appliedIndex = s.i
    for (const n of s.nodes) this.nodes.set(n.node, n)
    for (const r of s.names) {
      this.names.set(r.name, r)
      const k = refKey(r.ref)
      let set = this.namesOf.get(k)
      if (!set) this.namesOf.set(k, (set = new Set()))
      set.add(r.name)
    }
    for (const [g, refs] of s.groups) {
      const m = new Map<string, WorkerRef>()
      for (const ref of refs) {
        const k = refKey(ref)
        m.set(k, ref)
        let set = this.groupsOf.get(k)
        if (!set) this.groupsOf.set(k, (set = new Set()))
        set.add(g)
      }
      this.groups.set(g, m)
    }
  }
}
