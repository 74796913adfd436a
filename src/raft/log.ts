/**
 * The Raft log as the core holds it in memory: the latest snapshot (its index, term and data)
 * and the entries after it, `snapIndex + 1 .. lastIndex`. Pure: what reaches the disk is the
 * node's business (the core reports what changed in its Ready).
 * @module
 */
import type { ClusterConfig, Entry, Snapshot } from './types.js'

/** A copy of `c` (configurations are handed out and kept; never shared). */
export function cloneConfig(c: ClusterConfig): ClusterConfig {
  const out: ClusterConfig = { voters: { ...c.voters }, learners: { ...c.learners } }
  if (c.disks) out.disks = { ...c.disks }
  if (c.cluster !== undefined) out.cluster = c.cluster
  return out
}

/** An empty configuration (no voters, no learners). */
export const emptyConfig = (): ClusterConfig => ({ voters: {}, learners: {} })

/** The in-memory log of one Raft core. */
export class RaftLog {
  private entries: Entry[]
  private snapIdx = 0
  private snapTrm = 0
  private snap: Snapshot | undefined

  constructor(snapshot: Snapshot | undefined, entries: readonly Entry[]) {
    if (snapshot) this.setSnapshot(snapshot)
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

  /** Index of the last entry (or of the snapshot when no entry follows it). */
  lastIndex(): number {
    return this.snapIdx + this.entries.length
  }

  /** Term of the last entry (or of the snapshot). */
  lastTerm(): number {
    return this.entries.length ? this.entries[this.entries.length - 1]!.term : this.snapTrm
  }

  /** Term of the entry at `index`; undefined when unknown (compacted or beyond the end). */
  termAt(index: number): number | undefined {
    if (index === this.snapIdx) return this.snapTrm
    if (index < this.snapIdx || index > this.lastIndex()) return undefined
    return this.entries[index - this.snapIdx - 1]!.term
  }

  /** At most `max` entries from index `from` on (`from` > snapIndex). */
  from(from: number, max: number): Entry[] {
    const start = from - this.snapIdx - 1
    return this.entries.slice(start, start + max)
  }

  /** The entries with index in `(after, upTo]` (`after` >= snapIndex). */
  between(after: number, upTo: number = this.lastIndex()): Entry[] {
    return this.entries.slice(after - this.snapIdx, upTo - this.snapIdx)
  }

  /** Drop the entries from `index` on. */
  truncateFrom(index: number): void {
    this.entries.length = index - this.snapIdx - 1
  }

  /** Add entries at the end (their indexes follow on). */
  append(entries: readonly Entry[]): void {
    for (const e of entries) this.entries.push(e)
  }

  /** The configuration in force at the end of the log: its last `conf` entry, or the snapshot's. */
  latestConfig(): ClusterConfig {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!
      if (e.type === 'conf') return cloneConfig(e.data as ClusterConfig)
    }
    return this.snap ? cloneConfig(this.snap.meta.config) : emptyConfig()
  }

  /** Index of the last configuration entry in the log (0 if the config comes from the snapshot). */
  lastConfigIndex(): number {
    for (let i = this.entries.length - 1; i >= 0; i--) if (this.entries[i]!.type === 'conf') return this.entries[i]!.index
    return 0
  }

  /** Replace the entries up to `snapshot.meta.index` (which the log holds) by the snapshot. */
  compact(snapshot: Snapshot): void {
    const idx = snapshot.meta.index
    const term = this.termAt(idx)!
    this.entries = this.entries.slice(idx - this.snapIdx)
    this.setSnapshot(snapshot)
    this.snapTrm = term
  }

  /** Replace the whole log by `snapshot` (one from the leader). */
  install(snapshot: Snapshot): void {
    this.entries = []
    this.setSnapshot(snapshot)
  }

  private setSnapshot(snapshot: Snapshot): void {
    this.snap = snapshot
    this.snapIdx = snapshot.meta.index
    this.snapTrm = snapshot.meta.term
  }
}
