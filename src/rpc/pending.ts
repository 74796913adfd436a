/**
 * Requests sent to another node that wait for its answer: each has an id, a timeout, and the node
 * it went to; an answer is taken only from that node.
 * @module
 */
import type { Clock, NodeId } from '../raft/types.js'

interface Entry {
  node: NodeId
  tag: string | undefined
  resolve: (v: unknown) => void
  reject: (e: Error) => void
  timer: unknown
}

/** The requests of one sworm that wait for an answer from another node. */
export class PendingRequests {
  private readonly waiting = new Map<number, Entry>()
  private seq = 0

  constructor(private readonly clock: Clock) {}

  /** Requests waiting for an answer. */
  get size(): number {
    return this.waiting.size
  }

  /**
   * Register a request to `node` and send it with `send(id)`. The promise settles with the answer,
   * or rejects with `onTimeout()` after `timeoutMs`. `tag` (e.g. the node incarnation asked) lets
   * {@link failNode} pick it out.
   */
  request<R>(node: NodeId, timeoutMs: number, onTimeout: () => Error, send: (id: number) => void, tag?: string): Promise<R> {
    const id = ++this.seq
    return new Promise<R>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.waiting.delete(id)
        reject(onTimeout())
      }, timeoutMs)
      this.waiting.set(id, { node, tag, resolve: resolve as (v: unknown) => void, reject, timer })
      send(id)
    })
  }

  /**
   * Settle request `id` with an answer from `from`: `'late'` when no such request waits (it timed
   * out), `'stranger'` when it went to another node (the answer is ignored), `'settled'` otherwise.
   */
  settle(from: NodeId, id: unknown, outcome: { ok: true; value: unknown } | { ok: false; error: Error }): 'settled' | 'late' | 'stranger' {
    const e = typeof id === 'number' ? this.waiting.get(id) : undefined
    if (!e) return 'late'
    if (e.node !== from) return 'stranger'
    this.waiting.delete(id as number)
    this.clock.clearTimeout(e.timer)
    if (outcome.ok) e.resolve(outcome.value)
    else e.reject(outcome.error)
    return 'settled'
  }

  /**
   * Reject every request waiting for an answer from `node` whose tag `match` picks with `err()`:
   * the node died, or the connection to it was lost, so no answer may come. Returns how many.
   */
  failNode(node: NodeId, match: (tag: string | undefined) => boolean, err: () => Error): number {
    let n = 0
    for (const [id, e] of this.waiting) {
      if (e.node !== node || !match(e.tag)) continue
      this.waiting.delete(id)
      this.clock.clearTimeout(e.timer)
      e.reject(err())
      n++
    }
    return n
  }

  /** Reject every waiting request with `err` (on stop). */
  failAll(err: Error): void {
    for (const e of this.waiting.values()) {
      this.clock.clearTimeout(e.timer)
      e.reject(err)
    }
    this.waiting.clear()
  }
}
