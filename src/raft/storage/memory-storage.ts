/**
 * Raft storage in memory, for tests and the deterministic simulation. Same semantics as
 * `LevelStorage`: writes apply atomically and in call order, truncation drops a suffix,
 * a snapshot compacts the entries it covers, a failed write is sticky.
 *
 * Everything is kept msgpackr-encoded (as on disk), so callers mutating objects after a call
 * cannot alter the stored state, and a value LevelDB could not store fails here too.
 *
 * A `delay` hook decides when each write completes. A crash is modelled by `close()` (which
 * drops every write whose delay has not resolved) followed by `load()` on the same object,
 * which reopens it for a new node.
 * @module
 */
import { Packr } from 'msgpackr'
import { StorageError } from '../../errors.js'
import type { Entry, EntryType, HardState, PersistedState, RaftStorage, Snapshot, StorageRecovery, StorageWrite } from '../types.js'
import { entryBytes } from '../entry-codec.js'

/** Same codec as the LevelDB storage: plain MessagePack maps. */
const packr = new Packr({ useRecords: false, mapsAsObjects: true })

/** Options of {@link MemoryStorage}. */
export interface MemoryStorageOptions {
  /**
   * Called when a write or a snapshot is issued; the operation is applied once the returned
   * promise resolves (and every earlier operation was applied). A rejection is a disk failure:
   * the operation is not applied and the storage refuses later writes.
   */
  delay?: (op: 'write' | 'snapshot') => Promise<void>
}

interface Pending {
  reject: (err: unknown) => void
}

/**
 * {@link RaftStorage} in memory. See the module documentation.
 */
export class MemoryStorage implements RaftStorage {
  private readonly delay: MemoryStorageOptions['delay']
  private hardState: Uint8Array | undefined
  private snapshot: Uint8Array | undefined
  private snapIndex = 0
  /** Encoded entries; `entries[i]` has index `snapIndex + 1 + i`. */
  private entries: Uint8Array[] = []
  private tail: Promise<void> = Promise.resolve()
  private readonly pending = new Set<Pending>()
  private failure: StorageError | undefined
  private closed = false
  private disk: string | undefined
  private writes = 0
  private recovery: StorageRecovery | undefined

  /** @param opts - the `delay` hook (default: apply at once, in a microtask) */
  constructor(opts: MemoryStorageOptions = {}) {
    this.delay = opts.delay
  }

  /** Number of operations (writes and snapshots) applied so far. */
  get appliedWrites(): number {
    return this.writes
  }

  /** Index of the last stored entry (or of the snapshot when the log is empty). */
  get lastIndex(): number {
    return this.snapIndex + this.entries.length
  }

  /**
   * Return (deep copies of) what is stored. On a closed storage, this reopens it: the model of a
   * restarted node reading its disk. Writes still waiting on their delay are not included.
   */
  load(): Promise<PersistedState> {
    if (this.closed) {
      this.closed = false
      this.failure = undefined
    }
    const hardState: HardState = this.hardState
      ? (() => {
          const h = packr.unpack(this.hardState) as { term: number; vote: string | null; commit: number }
          return { term: h.term, vote: h.vote ?? undefined, commit: h.commit }
        })()
      : { term: 0, vote: undefined, commit: 0 }
    let snapshot: Snapshot | undefined
    if (this.snapshot) {
      const s = packr.unpack(this.snapshot) as Snapshot
      snapshot = { meta: s.meta, data: new Uint8Array(s.data) }
    }
    const entries = this.entries.map((b): Entry => {
      const [index, term, type, data] = packr.unpack(b) as [number, number, EntryType, unknown]
      return { index, term, type, data }
    })
    const recovery = this.recovery ? { ...this.recovery } : undefined
    return Promise.resolve(recovery ? { hardState, snapshot, entries, recovery } : { hardState, snapshot, entries })
  }

  /**
   * Model what `LevelStorage` does at load when it finds entry `from` corrupt: drop it and every
   * later entry, and set the recovery marker to the last index held. For the simulation.
   */
  dropCorruptFrom(from: number, reason = 'simulated corruption'): void {
    const last = this.lastIndex
    if (from > last) return
    const keep = Math.max(0, from - this.snapIndex - 1)
    this.entries.length = Math.min(this.entries.length, keep)
    this.recovery = { lostUpTo: Math.max(last, this.recovery?.lostUpTo ?? 0), reason }
  }

  /**
   * Model what `LevelStorage` does at load when it finds the snapshot corrupt: drop it and the
   * whole log, and set the recovery marker to the last index held. For the simulation.
   */
  dropCorruptSnapshot(reason = 'simulated snapshot corruption'): void {
    const last = this.lastIndex
    this.snapshot = undefined
    this.snapIndex = 0
    this.entries = []
    this.recovery = { lostUpTo: Math.max(last, this.recovery?.lostUpTo ?? 0), reason }
  }

  /** The recovery marker, if a repair set one that no write has cleared yet. */
  get recoveryMarker(): StorageRecovery | undefined {
    return this.recovery ? { ...this.recovery } : undefined
  }

  /** After a failed write: serve again (the simulated fault is over once `delay` resolves). */
  reopen(): Promise<void> {
    if (this.closed) return Promise.reject(new StorageError('storage is closed'))
    this.failure = undefined
    // the probe write goes through the delay hook, like any write: a lasting fault fails it again
    return this.enqueue('write', () => {})
  }

  /**
   * Apply `w` (truncate, append, hard state) atomically once its delay resolves. An empty write
   * resolves at once.
   * @throws RangeError, changing nothing, if `entries` are not contiguous or do not start right
   * after the log's (truncated) end
   * @throws StorageError if the storage is closed (also when closed before the delay resolved),
   * or failed before, or the delay rejected
   */
  write(w: StorageWrite): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    const src = w.entries ?? []
    if (!w.hardState && !src.length && w.truncateFrom === undefined && !w.recovered) return Promise.resolve()
    // copy now: the caller may mutate its objects before the write completes
    const first = src.length ? src[0]!.index : 0
    const encoded: Uint8Array[] = new Array(src.length)
    let hard: Uint8Array | undefined
    try {
      for (let j = 0; j < src.length; j++) {
        const e = src[j]!
        if (e.index !== first + j) throw new RangeError(`entries are not contiguous at index ${e.index}`)
        encoded[j] = entryBytes(e)
      }
      const h = w.hardState
      if (h) hard = packr.pack({ term: h.term, vote: h.vote ?? null, commit: h.commit })
    } catch (err) {
      return Promise.reject(err)
    }
    const truncateFrom = w.truncateFrom
    return this.enqueue('write', () => {
      let keep = this.entries.length
      if (truncateFrom !== undefined) keep = Math.max(0, Math.min(keep, truncateFrom - this.snapIndex - 1))
      const last = this.snapIndex + keep
      if (encoded.length && first !== last + 1) {
        throw new RangeError(`entry index ${first} does not follow the log's last index ${last} (no gaps allowed)`)
      }
      this.entries.length = keep
      for (const b of encoded) this.entries.push(b)
      if (hard) this.hardState = hard
      if (w.recovered) this.recovery = undefined
    })
  }

  /**
   * Store `snapshot` and drop every entry with index <= `snapshot.meta.index`, atomically once
   * its delay resolves.
   * @throws RangeError, changing nothing, if the snapshot is older than the stored one
   * @throws StorageError as {@link MemoryStorage.write}
   */
  saveSnapshot(snapshot: Snapshot): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    const { meta } = snapshot
    const idx = meta.index
    let encoded: Uint8Array
    try {
      encoded = packr.pack({
        meta: { index: idx, term: meta.term, config: meta.config },
        data: snapshot.data,
      })
    } catch (err) {
      return Promise.reject(err)
    }
    return this.enqueue('snapshot', () => {
      if (idx < this.snapIndex) throw new RangeError(`snapshot at ${idx} is older than the stored one at ${this.snapIndex}`)
      this.entries = this.entries.slice(Math.min(this.entries.length, idx - this.snapIndex))
      this.snapIndex = idx
      this.snapshot = encoded
    })
  }

  /** The identity stored with {@link MemoryStorage.saveIdentity}, if any. */
  identity(): Promise<string | undefined> {
    return Promise.resolve(this.disk)
  }

  /** Store this storage's identity (kept across close and load, like the rest of what is durable). */
  saveIdentity(id: string): Promise<void> {
    return this.enqueue('write', () => {
      this.disk = id
    })
  }

  /**
   * Close: every operation not applied yet is dropped and rejects with {@link StorageError};
   * later writes reject until `load()` reopens the storage.
   */
  close(): Promise<void> {
    this.closed = true
    const err = new StorageError('storage closed before the write was applied')
    for (const p of this.pending) p.reject(err)
    this.pending.clear()
    this.tail = Promise.resolve()
    return Promise.resolve()
  }

  private refusal(): StorageError | undefined {
    if (this.closed) return new StorageError('storage is closed')
    if (this.failure) return new StorageError(`storage failed earlier and refuses writes: ${this.failure.message}`, { cause: this.failure })
    return undefined
  }

  /** Run `apply` after the operation's delay and after every earlier operation, unless closed first. */
  private enqueue(op: 'write' | 'snapshot', apply: () => void): Promise<void> {
    let delayed: Promise<{ err: unknown } | undefined>
    try {
      delayed = (this.delay ? this.delay(op) : Promise.resolve()).then(
        () => undefined,
        (err: unknown) => ({ err }),
      )
    } catch (err) {
      delayed = Promise.resolve({ err })
    }
    return new Promise<void>((resolve, reject) => {
      const me: Pending = { reject }
      this.pending.add(me)
      const prev = this.tail
      this.tail = (async () => {
        await prev
        const d = await delayed
        if (!this.pending.delete(me)) return // dropped by close()
        if (this.failure) {
          reject(new StorageError(`storage failed earlier and refuses writes: ${this.failure.message}`, { cause: this.failure }))
          return
        }
        if (d) {
          this.failure = new StorageError(`simulated storage failure: ${String(d.err)}`, { cause: d.err })
          reject(this.failure)
          return
        }
        try {
          apply()
          this.writes++
          resolve()
        } catch (err) {
          reject(err)
        }
      })()
    })
  }
}
