/**
 * Linearizable reads (ReadIndex) and read-your-writes on a node: a read waits for the leader to
 * confirm an index, then for this node to apply it; a forwarded write the leader applied waits for
 * this node to apply it too before it resolves.
 * @module
 */
import { NotLeaderError, TimeoutError } from '../errors.js'
import { rejectOnce, resolveOnce, type Pending } from './pending.js'
import type { NodeId } from './types.js'

/** The reads and applied-index waits of one node. */
export class ReadTracker {
  /** Reads the core has not confirmed yet, by id. */
  private readonly out = new Map<number, Pending<void>>()
  /** Confirmed reads waiting for this node to apply their index. */
  private waitingApply: Array<{ index: number; p: Pending<void> }> = []
  /** Callbacks waiting until this node has applied an index. */
  private waitApplied: Array<{ index: number; fn: () => void; deadline: number }> = []

  constructor(private readonly timeoutMs: number) {}

  /** Reads waiting for the leader's confirmation or for this node's apply. */
  get size(): number {
    return this.out.size + this.waitingApply.length
  }

  /** Track read `id`, just handed to the core. */
  add(id: number, p: Pending<void>): void {
    this.out.set(id, p)
  }

  /** The core answered read `id`: confirmed at `index`, or (0) no leader could confirm it. */
  confirmed(id: number, index: number, leader: NodeId | undefined): void {
    const p = this.out.get(id)
    if (!p) return
    this.out.delete(id)
    if (p.settled) return
    if (index === 0) {
      rejectOnce(p, new NotLeaderError(leader, 'no leader could confirm the read'))
      return
    }
    this.waitingApply.push({ index, p })
  }

  /** Run `fn` once this node has applied `index` (or at `deadline` at the latest). */
  whenApplied(index: number, fn: () => void, deadline: number): void {
    this.waitApplied.push({ index, fn, deadline })
  }

  /** This node has applied up to `applied`: release what waited for it. */
  release(applied: number): void {
    if (this.waitingApply.length) {
      const still: Array<{ index: number; p: Pending<void> }> = []
      for (const r of this.waitingApply) {
        if (r.index <= applied) resolveOnce(r.p, undefined)
        else still.push(r)
      }
      this.waitingApply = still
    }
    if (this.waitApplied.length) {
      const still: typeof this.waitApplied = []
      for (const w of this.waitApplied) {
        if (w.index <= applied) w.fn()
        else still.push(w)
      }
      this.waitApplied = still
    }
  }

  /** Give up on what passed its deadline at `now`; `forget(id)` tells the core to drop a read. */
  expire(now: number, forget: (id: number) => void): void {
    // The write took effect; if this node cannot apply it in time, answer anyway (review F5).
    if (this.waitApplied.length && this.waitApplied.some((w) => w.deadline <= now)) {
      const late = this.waitApplied.filter((w) => w.deadline <= now)
      this.waitApplied = this.waitApplied.filter((w) => w.deadline > now)
      for (const w of late) w.fn()
    }
    for (const [id, p] of this.out) {
      if (p.deadline <= now) {
        this.out.delete(id)
        forget(id)
        rejectOnce(p, new TimeoutError(`read not confirmed within ${this.timeoutMs} ms`))
      }
    }
    if (this.waitingApply.length) {
      this.waitingApply = this.waitingApply.filter((r) => {
        if (r.p.deadline > now) return true
        rejectOnce(r.p, new TimeoutError(`read not applied within ${this.timeoutMs} ms`))
        return false
      })
    }
  }

  /** Fail every read with `err`; the writes that wait took effect, so they are answered. */
  failAll(err: Error): void {
    for (const p of this.out.values()) rejectOnce(p, err)
    this.out.clear()
    for (const r of this.waitingApply) rejectOnce(r.p, err)
    this.waitingApply = []
    // these took effect; only the local apply is missing
    for (const w of this.waitApplied) w.fn()
    this.waitApplied = []
  }
}
