/**
 * A map split over many small `Map`s. A `Map` that grows past its capacity rehashes every entry
 * at once: at a million entries that stalls the event loop for 100–200 ms, once per doubling.
 * Split 64 ways, each rehash moves a 64th of it.
 *
 * Iteration goes shard by shard, each in insertion order: the same sequence of writes gives the
 * same order on every replica (and a snapshot restored in that order gives it again), which is
 * what deterministic state machines need.
 * @module
 */

const SHARDS = 64

/** The shard of a key: a few characters of a string (cheap, no full hash), or a number's low bits. */
function shardOf(key: string | number): number {
  if (typeof key === 'number') return (key >>> 0) & (SHARDS - 1) // NaN and fractions land somewhere, deterministically
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
