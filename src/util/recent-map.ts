/**
 * A map of recent entries: each is kept for at least `keepMs` after it was added, and forgotten
 * with the others of its slice of time, all at once. Used as a window of what was seen lately (a
 * leader's forwarded requests, to take each once however often the network delivers it).
 *
 * One `Map` used as a queue (add at one end, delete the oldest at the other) at ten thousand
 * entries a second holds a hundred thousand entries over ten seconds, and every so often rehashes
 * them all in one call: 60-110 ms of the event loop each time on a 2-core machine, 375 ms profiled
 * on a leader at a million names. Here the window is cut into `slices` maps of a slice of time
 * each: none grows past a slice's entries, the oldest is dropped whole (no deletion one by one),
 * and a lookup asks every slice (a few).
 * @module
 */

interface Slice<K, V> {
  /** When its first entry was added (the caller's clock). */
  since: number
  map: Map<K, V>
}

/** Recent entries, kept `keepMs` at least and forgotten by slices of time (see the module documentation). */
export class RecentMap<K, V> {
  private slices: Array<Slice<K, V>> = []
  private readonly sliceMs: number

  /**
   * @param keepMs - how long an entry is kept at least; it goes within `keepMs / slices` more
   * @param slices - how many maps the window is cut into (the more, the smaller each, the more a lookup asks)
   */
  constructor(
    private readonly keepMs: number,
    slices = 8,
  ) {
    this.sliceMs = Math.max(1, keepMs / Math.max(1, Math.floor(slices)))
  }

  /** Entries held (those past their time too, until {@link RecentMap.prune} drops them). */
  get size(): number {
    let n = 0
    for (const s of this.slices) n += s.map.size
    return n
  }

  /** Entries in the largest slice (what one rehash can move at most). */
  get largestSlice(): number {
    let n = 0
    for (const s of this.slices) n = Math.max(n, s.map.size)
    return n
  }

  has(key: K): boolean {
    for (const s of this.slices) if (s.map.has(key)) return true
    return false
  }

  get(key: K): V | undefined {
    for (const s of this.slices) {
      const v = s.map.get(key)
      if (v !== undefined || s.map.has(key)) return v
    }
    return undefined
  }

  /**
   * Set `key` to `value`: where it is if it is held (its time unchanged), else as added at `now`.
   * `now` never goes back (a clock that does keeps entries longer, never shorter).
   */
  set(key: K, value: V, now: number): this {
    if (this.replace(key, value)) return this
    let last = this.slices[this.slices.length - 1]
    if (!last || now - last.since >= this.sliceMs) this.slices.push((last = { since: now, map: new Map() }))
    last.map.set(key, value)
    return this
  }

  /** Set `key` to `value` if it is held (its time unchanged); whether it was. */
  replace(key: K, value: V): boolean {
    for (const s of this.slices) {
      if (s.map.has(key)) {
        s.map.set(key, value)
        return true
      }
    }
    return false
  }

  delete(key: K): boolean {
    for (const s of this.slices) if (s.map.delete(key)) return true
    return false
  }

  /** Drop the slices whose every entry was added `keepMs` or more before `now`. */
  prune(now: number): void {
    // a slice takes entries for `sliceMs` from its first (then a new one begins)
    let drop = 0
    while (drop < this.slices.length && now - (this.slices[drop]!.since + this.sliceMs) >= this.keepMs) drop++
    if (drop > 0) this.slices = this.slices.slice(drop)
  }

  clear(): void {
    this.slices = []
  }
}
