/**
 * A scan over a live collection that goes on across calls, a slice per call, and says when one
 * whole pass over it ended and since which generation that pass ran: what a periodic safety net
 * needs to know whether it has looked at everything since the last thing that could have changed
 * its findings (see the supervisor's reconcile).
 * @module
 */

/** What one call of {@link SliceScan.take} found. */
export interface Slice<T> {
  /** The next items, at most the number asked for. */
  readonly items: T[]
  /**
   * The generation at which the pass that ended in this call began, if one ended: every item was
   * looked at since then. Undefined while the pass goes on.
   */
  readonly passFrom: number | undefined
}

/** A scan in slices that restarts once it went through everything; see the module documentation. */
export class SliceScan<T> {
  private it: Iterator<T> | undefined = undefined
  private from = 0

  /** @param fresh - a new iterator over the collection as it is now */
  constructor(private readonly fresh: () => Iterator<T>) {}

  /**
   * Up to `n` more items. A call after the pass ended begins a new one, recorded as begun at
   * generation `gen`. A pass that ends exactly after a full slice is known to have ended at the
   * next call (which may then return no item).
   */
  take(n: number, gen: number): Slice<T> {
    if (this.it === undefined) {
      this.it = this.fresh()
      this.from = gen
    }
    const items: T[] = []
    while (items.length < n) {
      const r = this.it.next()
      if (r.done) {
        this.it = undefined
        return { items, passFrom: this.from }
      }
      items.push(r.value)
    }
    return { items, passFrom: undefined }
  }

  /** Drop the pass under way: the next call begins a new one. */
  restart(): void {
    this.it = undefined
  }
}
