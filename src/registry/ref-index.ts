/**
 * The names each worker holds, indexed by node, incarnation and worker id. Most workers hold one
 * name, so a worker's entry is that name itself, and a set only once it holds more: at a million
 * names this index costs tens of bytes per name, where a string key and a set per worker cost
 * hundreds.
 * @module
 */
import type { WorkerRef } from './types.js'
import { ShardedMap } from '../util/sharded-map.js'

type Names = string | Set<string>

/** Worker ref → the names it holds (see the module documentation). */
export class RefIndex {
  private readonly byNode = new Map<string, Map<string, ShardedMap<number, Names>>>()
  /** The supervised name a worker holds, if any (at most one), by node, incarnation and id (no key string to build per lookup). */
  private readonly supervised = new Map<string, Map<string, Map<number, string>>>()

  /** Record that `ref` holds `name` (`supervised`: the name it was started for). */
  add(ref: WorkerRef, name: string, supervised = false): void {
    if (supervised) {
      let sIncs = this.supervised.get(ref.node)
      if (!sIncs) this.supervised.set(ref.node, (sIncs = new Map()))
      let sIds = sIncs.get(ref.inc)
      if (!sIds) sIncs.set(ref.inc, (sIds = new Map()))
      sIds.set(ref.id, name)
    }
    let incs = this.byNode.get(ref.node)
    if (!incs) this.byNode.set(ref.node, (incs = new Map()))
    let ids = incs.get(ref.inc)
    if (!ids) incs.set(ref.inc, (ids = new ShardedMap()))
    const cur = ids.get(ref.id)
    if (cur === undefined) ids.set(ref.id, name)
    else if (typeof cur === 'string') {
      if (cur !== name) ids.set(ref.id, new Set([cur, name]))
    } else cur.add(name)
  }

  /** Record that `ref` no longer holds `name`. */
  delete(ref: WorkerRef, name: string): void {
    if (this.supervised.size) {
      const sIncs = this.supervised.get(ref.node)
      const sIds = sIncs?.get(ref.inc)
      if (sIds?.get(ref.id) === name) {
        sIds.delete(ref.id)
        if (sIds.size === 0) {
          sIncs!.delete(ref.inc)
          if (sIncs!.size === 0) this.supervised.delete(ref.node)
        }
      }
    }
    const incs = this.byNode.get(ref.node)
    const ids = incs?.get(ref.inc)
    const cur = ids?.get(ref.id)
    if (cur === undefined) return
    if (typeof cur === 'string') {
      if (cur !== name) return
      ids!.delete(ref.id)
    } else {
      cur.delete(name)
      if (cur.size === 1) ids!.set(ref.id, cur.values().next().value as string)
      else if (cur.size === 0) ids!.delete(ref.id)
    }
    if (ids!.size === 0) {
      incs!.delete(ref.inc)
      if (incs!.size === 0) this.byNode.delete(ref.node)
    }
  }

  /** The names `ref` holds (a copy; empty if none). */
  names(ref: WorkerRef): string[] {
    const cur = this.byNode.get(ref.node)?.get(ref.inc)?.get(ref.id)
    if (cur === undefined) return []
    return typeof cur === 'string' ? [cur] : [...cur]
  }

  /** The supervised name `ref` holds, if any. */
  supervisedName(ref: WorkerRef): string | undefined {
    return this.supervised.size ? this.supervised.get(ref.node)?.get(ref.inc)?.get(ref.id) : undefined
  }

  /** One name `ref` holds (the first it took), without copying them all; undefined if none. */
  first(ref: WorkerRef): string | undefined {
    const cur = this.byNode.get(ref.node)?.get(ref.inc)?.get(ref.id)
    if (cur === undefined || typeof cur === 'string') return cur
    return cur.values().next().value
  }

  /** The names held by the workers of `node`, of the incarnations `incs` picks (a copy). */
  namesOfNode(node: string, incs: (inc: string) => boolean): string[] {
    const out: string[] = []
    for (const [inc, ids] of this.byNode.get(node) ?? []) {
      if (!incs(inc)) continue
      for (const cur of ids.values()) {
        if (typeof cur === 'string') out.push(cur)
        else for (const n of cur) out.push(n)
      }
    }
    return out
  }

  /** Whether `ref` holds any name. */
  has(ref: WorkerRef): boolean {
    return this.byNode.get(ref.node)?.get(ref.inc)?.has(ref.id) ?? false
  }

  clear(): void {
    this.byNode.clear()
    this.supervised.clear()
  }
}
