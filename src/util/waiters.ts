/**
 * Lists of waiters by key, each of which can take itself out: what a wait that may be cancelled
 * (raced against a deadline, or against another wait) needs, so that nothing piles up under a key
 * nobody settles.
 * @module
 */

/** Waiters `W` by key `K`. */
export class WaiterLists<K, W> {
  private readonly lists = new Map<K, W[]>()

  /**
   * Add `w` under `key`; the function returned takes it out again (after {@link take}, out of the
   * list `take` returned: call it once the waiter is done with, not while that list is gone through).
   */
  add(key: K, w: W): () => void {
    let list = this.lists.get(key)
    if (!list) this.lists.set(key, (list = []))
    const waiters = list
    waiters.push(w)
    return () => {
      const at = waiters.indexOf(w)
      if (at >= 0) waiters.splice(at, 1)
      if (waiters.length === 0 && this.lists.get(key) === waiters) this.lists.delete(key)
    }
  }

  /** The waiters under `key`, taken out (an empty list when there are none). */
  take(key: K): W[] {
    const list = this.lists.get(key)
    if (!list) return []
    this.lists.delete(key)
    return list
  }

  /** A copy of the waiters under `key`, left in place. */
  list(key: K): W[] {
    const list = this.lists.get(key)
    return list ? [...list] : []
  }

  /** The keys anyone waits under (a copy: settling them while going through it is fine). */
  keys(): K[] {
    return [...this.lists.keys()]
  }

  /** How many wait under `key`. */
  count(key: K): number {
    return this.lists.get(key)?.length ?? 0
  }
}
