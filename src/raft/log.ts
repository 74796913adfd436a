/**
 * The Raft log as the core holds it in memory: the latest snapshot (its index, term and data)
 * and the entries after it, `snapIndex + 1 .. lastIndex`. Pure: what reaches the disk is the
 * node's business (the core reports what changed in its Ready).
 *
 * **Applied entries are kept as bytes.** An entry the state machine has applied (and the disk
 * holds) is needed again only to be sent to a follower that lags, or for its term. Given an
 * {@link EntryCodec}, the log moves such entries, {@link FROZEN_SEGMENT} at a time, out of their
 * objects into a segment: their encodings end to end in one buffer, their terms and types in typed
 * arrays. A decoded registration entry is four or five heap objects (about 120 bytes of heap,
 * measured); frozen, it is its encoding (about 150 bytes, outside the heap) and 13 bytes of
 * arrays, and no object the collector marks or moves: the log of 100,000-300,000 entries a large
 * registry keeps between snapshots was half a million to 1.5 million objects for every full
 * collection to mark. Not less memory: fewer objects. An entry asked for again is decoded from its
 * bytes.
 * @module
 */
import type { ClusterConfig, Entry, EntryType, Snapshot } from './types.js'

/** A copy of `c` (configurations are handed out and kept; never shared). */
export function cloneConfig(c: ClusterConfig): ClusterConfig {
  const out: ClusterConfig = { voters: { ...c.voters }, learners: { ...c.learners } }
  if (c.disks) out.disks = { ...c.disks }
  if (c.cluster !== undefined) out.cluster = c.cluster
  if (c.removed !== undefined) out.removed = [...c.removed]
  return out
}

/** An empty configuration (no voters, no learners). */
export const emptyConfig = (): ClusterConfig => ({ voters: {}, learners: {} })

/** How the log turns entries into bytes and back (see the module documentation). */
export interface EntryCodec {
  /** The entry's encoding (the same bytes every time; the caller does not modify them). */
  encode(e: Entry): Uint8Array
  /** The entry `bytes` encode (bytes the caller may reuse: keep a copy). */
  decode(bytes: Uint8Array): Entry
}

/** Entries per frozen segment. */
export const FROZEN_SEGMENT = 1024
let segmentSize = FROZEN_SEGMENT

/**
 * Entries per frozen segment of the logs made from now on in this process: the simulations use
 * small segments, so that their short logs freeze, thaw, compact and truncate segments.
 * @internal
 */
export function setFrozenSegment(n: number = FROZEN_SEGMENT): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`frozen segment of ${n} entries`)
  segmentSize = n
}

const TYPES: readonly EntryType[] = ['cmd', 'noop', 'conf']
const typeCode = (t: EntryType): number => {
  const c = TYPES.indexOf(t)
  if (c < 0) throw new TypeError(`raft log: unknown entry type ${String(t)}`)
  return c
}

/** Consecutive applied entries as bytes (see the module documentation). */
interface Segment {
  /** Index of its first entry. */
  first: number
  /** How many entries it holds (fewer than its arrays after a truncation). */
  count: number
  terms: Float64Array
  types: Uint8Array
  /** Where each entry's bytes end in `bytes` (each starts where the one before ends). */
  ends: Uint32Array
  bytes: Uint8Array
}

/** The in-memory log of one Raft core. */
export class RaftLog {
  /** The entries after `frozenTo`, as objects: `entries[head..]` (the ones before are frozen). */
  private entries: Entry[]
  private head = 0
  private snapIdx = 0
  private snapTrm = 0
  private snap: Snapshot | undefined
  /** Frozen entries, `snapIdx + 1 .. frozenTo` (the first segment may begin before, compacted). */
  private segs: Segment[] = []
  /** The last frozen entry's index (`snapIdx` when none is). */
  private frozenTo = 0
  /** The last configuration entry among the frozen ones. */
  private frozenConf: { index: number; config: ClusterConfig } | undefined
  /** Entries per segment. */
  private readonly segment = segmentSize

  /**
   * @param codec - without one, entries stay objects ({@link freezeUpTo} does nothing)
   */
  constructor(
    snapshot: Snapshot | undefined,
    entries: readonly Entry[],
    private readonly codec?: EntryCodec,
  ) {
    if (snapshot) this.setSnapshot(snapshot)
    this.frozenTo = this.snapIdx
    this.entries = entries.slice()
  }

  /** Index of the latest snapshot (0 without one). */
  get snapIndex(): number {
    return this.snapIdx
  }

  /** The latest snapshot, if any. */
  get snapshot(): Snapshot | undefined {
    return this.snap
  }

  /** How many entries are frozen into bytes (see {@link freezeUpTo}). */
  get frozenCount(): number {
    return this.frozenTo - this.snapIdx
  }

  /** How many segments of frozen entries the log holds (compactions drop them whole). */
  get segmentCount(): number {
    return this.segs.length
  }

  /** Index of the last entry (or of the snapshot when no entry follows it). */
  lastIndex(): number {
    return this.frozenTo + this.entries.length - this.head
  }

  /** Term of the last entry (or of the snapshot). */
  lastTerm(): number {
    if (this.entries.length > this.head) return this.entries[this.entries.length - 1]!.term
    return this.frozenTo > this.snapIdx ? this.termAt(this.frozenTo)! : this.snapTrm
  }

  /** Term of the entry at `index`; undefined when unknown (compacted or beyond the end). */
  termAt(index: number): number | undefined {
    if (index === this.snapIdx) return this.snapTrm
    if (index < this.snapIdx || index > this.lastIndex()) return undefined
    if (index > this.frozenTo) return this.entries[this.head + index - this.frozenTo - 1]!.term
    const s = this.segmentOf(index)
    return s.terms[index - s.first]!
  }

  /**
   * At most `max` entries from index `from` on (`from` > snapIndex). `maxBytes`: frozen entries are
   * decoded only while the encodings of those taken so far stay within it (one at least); the
   * caller still trims what it sends by size, this only spares it decoding entries it would drop
   * (a lagging follower's append of 256 large entries against an 8 MiB bound). Entries kept as
   * objects are not counted: they cost nothing to hand out.
   */
  from(from: number, max: number, maxBytes = Infinity): Entry[] {
    if (from > this.frozenTo) {
      const start = this.head + from - this.frozenTo - 1
      return this.entries.slice(start, start + max)
    }
    const out: Entry[] = []
    let bytes = 0
    for (let i = from; i <= this.frozenTo && out.length < max; i++) {
      const size = this.frozenSize(i)
      if (out.length > 0 && bytes + size > maxBytes) return out
      bytes += size
      out.push(this.thaw(i))
    }
    return out.length < max ? out.concat(this.entries.slice(this.head, this.head + max - out.length)) : out
  }

  /** The entries with index in `(after, upTo]` (`after` >= snapIndex). */
  between(after: number, upTo: number = this.lastIndex()): Entry[] {
    const h = this.head
    if (after >= this.frozenTo) return this.entries.slice(h + after - this.frozenTo, h + upTo - this.frozenTo)
    const out: Entry[] = []
    for (let i = after + 1; i <= Math.min(upTo, this.frozenTo); i++) out.push(this.thaw(i))
    return upTo > this.frozenTo ? out.concat(this.entries.slice(h, h + upTo - this.frozenTo)) : out
  }

  /** Drop the entries from `index` on. */
  truncateFrom(index: number): void {
    if (index > this.frozenTo) {
      this.entries.length = this.head + index - this.frozenTo - 1
      return
    }
    // (Raft never truncates what is applied, which is all that is frozen; done right all the same)
    this.entries = []
    this.head = 0
    while (this.segs.length && this.segs[this.segs.length - 1]!.first >= index) this.segs.pop()
    const last = this.segs[this.segs.length - 1]
    if (last) last.count = Math.min(last.count, index - last.first)
    this.frozenTo = Math.max(this.snapIdx, index - 1)
    if (this.frozenConf && this.frozenConf.index >= index) this.frozenConf = this.lastFrozenConf()
  }

  /** Add entries at the end (their indexes follow on). */
  append(entries: readonly Entry[]): void {
    for (const e of entries) this.entries.push(e)
  }

  /**
   * Keep the entries up to `index` (which the state machine has applied and the disk holds: Raft
   * never truncates them) as bytes, whole segments ({@link FROZEN_SEGMENT} entries) at a time.
   * Does nothing without a codec.
   */
  freezeUpTo(index: number): void {
    if (!this.codec) return
    const size = this.segment
    const n = Math.floor(Math.min(index - this.frozenTo, this.entries.length - this.head) / size)
    if (n <= 0) return
    for (let k = 0; k < n; k++) this.segs.push(this.freeze(this.head + k * size, this.frozenTo + k * size + 1, size))
    this.head += n * size
    this.frozenTo += n * size
    // the frozen entries' objects go once they are half the array (a copy of the rest each time
    // would cost a restart that replays 300,000 entries a quadratic number of copies)
    if (this.head * 2 >= this.entries.length) {
      this.entries = this.entries.slice(this.head)
      this.head = 0
    }
  }

  /** The configuration in force at the end of the log: its last `conf` entry, or the snapshot's. */
  latestConfig(): ClusterConfig {
    for (let i = this.entries.length - 1; i >= this.head; i--) {
      const e = this.entries[i]!
      if (e.type === 'conf') return cloneConfig(e.data as ClusterConfig)
    }
    if (this.frozenConf) return cloneConfig(this.frozenConf.config)
    return this.snap ? cloneConfig(this.snap.meta.config) : emptyConfig()
  }

  /** Index of the last configuration entry in the log (0 if the config comes from the snapshot). */
  lastConfigIndex(): number {
    for (let i = this.entries.length - 1; i >= this.head; i--) if (this.entries[i]!.type === 'conf') return this.entries[i]!.index
    return this.frozenConf?.index ?? 0
  }

  /** Replace the entries up to `snapshot.meta.index` (which the log holds) by the snapshot. */
  compact(snapshot: Snapshot): void {
    const idx = snapshot.meta.index
    const term = this.termAt(idx)!
    if (idx >= this.frozenTo) {
      this.entries = this.entries.slice(this.head + idx - this.frozenTo)
      this.head = 0
      this.segs = []
      this.frozenTo = idx
    } else {
      let drop = 0
      while (drop < this.segs.length && this.segs[drop]!.first + this.segs[drop]!.count - 1 <= idx) drop++
      this.segs = this.segs.slice(drop)
    }
    if (this.frozenConf && this.frozenConf.index <= idx) this.frozenConf = undefined
    this.setSnapshot(snapshot)
    this.snapTrm = term
  }

  /** Replace the whole log by `snapshot` (one from the leader). */
  install(snapshot: Snapshot): void {
    this.entries = []
    this.head = 0
    this.segs = []
    this.frozenConf = undefined
    this.setSnapshot(snapshot)
    this.frozenTo = this.snapIdx
  }

  private setSnapshot(snapshot: Snapshot): void {
    this.snap = snapshot
    this.snapIdx = snapshot.meta.index
    this.snapTrm = snapshot.meta.term
  }

  /** A segment of the `n` entries from `entries[at]` on, the first of which is entry `first`. */
  private freeze(at: number, first: number, n: number): Segment {
    const codec = this.codec!
    const terms = new Float64Array(n)
    const types = new Uint8Array(n)
    const ends = new Uint32Array(n)
    const parts = new Array<Uint8Array>(n)
    let size = 0
    for (let k = 0; k < n; k++) {
      const e = this.entries[at + k]!
      if (e.index !== first + k) throw new Error(`raft log: entry ${e.index} where ${first + k} belongs`)
      const b = codec.encode(e)
      parts[k] = b
      size += b.length
      ends[k] = size
      terms[k] = e.term
      types[k] = typeCode(e.type)
      if (e.type === 'conf') this.frozenConf = { index: e.index, config: cloneConfig(e.data as ClusterConfig) }
    }
    const bytes = new Uint8Array(size)
    for (let k = 0; k < n; k++) bytes.set(parts[k]!, k ? ends[k - 1]! : 0)
    return { first, count: n, terms, types, ends, bytes }
  }

  /** The segment holding frozen entry `index` (`snapIdx` < index <= `frozenTo`). */
  private segmentOf(index: number): Segment {
    let lo = 0
    let hi = this.segs.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.segs[mid]!.first <= index) lo = mid
      else hi = mid - 1
    }
    return this.segs[lo]!
  }

  /** The size of frozen entry `index`'s encoding. */
  private frozenSize(index: number): number {
    const s = this.segmentOf(index)
    const k = index - s.first
    return s.ends[k]! - (k ? s.ends[k - 1]! : 0)
  }

  /** Frozen entry `index`, decoded. */
  private thaw(index: number): Entry {
    const s = this.segmentOf(index)
    const k = index - s.first
    const e = this.codec!.decode(s.bytes.subarray(k ? s.ends[k - 1]! : 0, s.ends[k]!))
    if (e.index !== index || e.term !== s.terms[k]) throw new Error(`raft log: frozen entry ${index} decodes as entry ${e.index} of term ${e.term}`)
    return e
  }

  /** The last configuration entry among the frozen ones, found again (after a truncation). */
  private lastFrozenConf(): { index: number; config: ClusterConfig } | undefined {
    for (let j = this.segs.length - 1; j >= 0; j--) {
      const s = this.segs[j]!
      for (let k = s.count - 1; k >= 0; k--) {
        if (s.first + k <= this.snapIdx) return undefined
        if (TYPES[s.types[k]!] === 'conf') return { index: s.first + k, config: cloneConfig(this.thaw(s.first + k).data as ClusterConfig) }
      }
    }
    return undefined
  }
}
