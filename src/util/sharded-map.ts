/**
 * A map split over many small `Map`s. A `Map` that grows past its capacity rehashes every entry
 * at once: at a million entries that stalls the event loop for 100–200 ms, once per doubling.
 * Split 64 ways, each rehash moves a 64th of it.
 *
 * Numeric keys (worker ids, mostly sequential) go to shards of unequal sizes, so that the shards
 * do not all grow at once: shard `i` takes `64 + i` of every {@link PARTS} consecutive ids, the
 * largest twice the smallest, so as the map doubles each shard doubles once, at its own point of
 * that octave (about one shard every 1-2% of growth). Split into equal shards, a map of
 * sequential ids rehashed all 64 within 64 insertions (1.4 s for the 2,000 insertions around 2M
 * ids, measured): one stall, as unsplit. String keys keep equal shards and their old hash: the
 * registry's name table iterates in that order, and `drain` places names in it, so a new order
 * would need every replica to change at once (a new protocol version); names rehash in a few
 * hundred insertions (0.3 s for the 2,000 around 2M names).
 *
 * Iteration goes shard by shard, each in insertion order: the same sequence of writes gives the
 * same order on every replica (and a snapshot restored in that order gives it again), which is
 * what deterministic state machines need.
 * @module
 */

const SHARDS = 64

/** Parts of the id space: shard `i` takes `SHARDS + i` consecutive ones (see the module documentation). */
const PARTS = (SHARDS * (3 * SHARDS - 1)) / 2

/** The shard of each part. */
const SHARD_OF_PART: Uint8Array = (() => {
  const t = new Uint8Array(PARTS)
  let at = 0
  for (let i = 0; i < SHARDS; i++) for (let k = 0; k < SHARDS + i; k++) t[at++] = i
  return t
})()

/** The shard of a key: a few characters of a string (cheap, no full hash), or a number's part. */
function shardOf(key: string | number): number {
  if (typeof key === 'number') return SHARD_OF_PART[(key >>> 0) % PARTS]! // NaN and fractions land somewhere, deterministically
  const n = key.length
  if (n === 0) return 0
  const h = n * 31 + key.charCodeAt(n - 1) * 7 + (n > 1 ? key.charCodeAt(n - 2) * 13 : 0) + (n > 2 ? key.charCodeAt(n - 3) * 3 : 0) + key.charCodeAt(0)
  return h & (SHARDS - 1)
}

/** A `Map` of many shards (see the module documentation). */
export class ShardedMap<K extends string | number, V> implements Iterable<[K, V]> {
  private readonly shards: Array<Map<K, V>> = Array.from({ length: SHARDS }, () => new Map<K, V>())
  private count = 0

  get size(): number {
    return this.count
  }

  /** Entries in the shard `key` belongs to (to see how the shards grow). */
  shardSizeOf(key: K): number {
    return this.shards[shardOf(key)]!.size
  }

  get(key: K): V | undefined {
    return this.shards[shardOf(key)]!.get(key)
  }

  has(key: K): boolean {
    return this.shards[shardOf(key)]!.has(key)
  }

  set(key: K, value: V): this {
    const m = this.shards[shardOf(key)]!
    const before = m.size
    m.set(key, value)
    this.count += m.size - before
    return this
  }

  delete(key: K): boolean {
    const ok = this.shards[shardOf(key)]!.delete(key)
    if (ok) this.count--
    return ok
  }

  clear(): void {
    for (const m of this.shards) m.clear()
    this.count = 0
  }

  keys(): IterableIterator<K> {
    return this.walk((m) => m.keys())
  }

  values(): IterableIterator<V> {
    return this.walk((m) => m.values())
  }

  entries(): IterableIterator<[K, V]> {
    return this.walk((m) => m.entries())
  }

  /** How many shards there are: iteration goes through shards `0 .. shardCount - 1` in turn. */
  get shardCount(): number {
    return this.shards.length
  }

  /** The shard `key` belongs to (see {@link shardKeys}). */
  shardIndexOf(key: K): number {
    return shardOf(key)
  }

  /**
   * The keys of shard `i`, in iteration order: iterating the map is iterating shard 0's keys,
   * then shard 1's, and so on. A 64th of {@link keyArray}, so that a caller who needs the order of
   * every key at one instant can take each shard's just before that shard first changes.
   */
  shardKeys(i: number): K[] {
    const m = this.shards[i]
    if (!m) return []
    const out = new Array<K>(m.size)
    let j = 0
    for (const k of m.keys()) out[j++] = k
    return out
  }

  /** Every key, in iteration order (faster than spreading {@link keys}). */
  keyArray(): K[] {
    const out = new Array<K>(this.count)
    let i = 0
    for (const m of this.shards) for (const k of m.keys()) out[i++] = k
    return out
  }

  /** One iterator over the shards' iterators (a generator would cost several times more per step). */
  private walk<T>(of: (m: Map<K, V>) => IterableIterator<T>): IterableIterator<T> {
    const shards = this.shards
    let s = 0
    let it = of(shards[0]!)
    const self: IterableIterator<T> = {
      next(): IteratorResult<T> {
        for (;;) {
          const r = it.next()
          if (!r.done) return r
          if (++s >= shards.length) return r
          it = of(shards[s]!)
        }
      },
      [Symbol.iterator]: () => self,
    }
    return self
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries()
  }
}
