/**
 * Durable Raft storage in LevelDB (the `level` package).
 *
 * Key layout (binary keys, so LevelDB's byte order is the order below):
 *
 * | key                                  | value                                   |
 * | ------------------------------------ | --------------------------------------- |
 * | `0x68` (`'h'`)                       | the {@link HardState}                   |
 * | `0x69` (`'i'`)                       | a copy of the hard state                |
 * | `0x73` (`'s'`)                       | the latest {@link Snapshot}'s metadata  |
 * | `0x74` (`'t'`) + gen, part as u32 BE | its data, in parts of 1 MiB             |
 * | `0x6d` (`'m'`)                       | the snapshot's index and term           |
 * | `0x72` (`'r'`)                       | the {@link StorageRecovery} marker      |
 * | `0x65` (`'e'`) + index as u64 BE     | one {@link Entry}                       |
 *
 * The entry index is stored big-endian in 8 bytes, so key order is index order and the log is
 * one contiguous key range. A snapshot's data is stored in parts, each checksummed and encoded
 * between turns of the event loop, so a snapshot of any size never stalls it for long; the parts,
 * the metadata and the entries it replaces change in one batch. (Snapshots written by older
 * versions hold their data in the `'s'` record itself; they still load.)
 *
 * Every value is a record: a 4-byte big-endian CRC-32C of the payload, then the payload, a
 * msgpackr-encoded value (an entry is encoded as the tuple `[index, term, type, data]`). `load()`
 * checks every record and never returns anything from a bad one.
 *
 * Repair at load (the default; `repair: false` rejects with {@link CorruptStorageError} instead):
 * - a torn or corrupt entry, a gap, or a stray key: that entry and every later one are deleted;
 * - a corrupt snapshot: the snapshot and the whole log are deleted (the entries after it cannot be
 *   applied without it); its index survives in the small `'m'` record;
 * - a corrupt hard state: its copy is used (both are written in every batch). If both are bad the
 *   term and vote are lost, which cannot be repaired safely: load rejects.
 * A repair is one synced batch that also stores a {@link StorageRecovery} marker with the highest
 * index the log held. The node then neither votes nor campaigns until a leader has brought it past
 * that index, which keeps every entry it may have acknowledged (see `RaftCore`).
 *
 * Every write is one LevelDB batch with `sync: true` (LevelDB appends the batch to its write-ahead
 * log and fsyncs it before the promise resolves), so a write is atomic and durable. Writes are
 * serialized in call order. A failed write makes the storage refuse every later write (sticky
 * failure): the caller cannot know what reached the disk. `reopen()` closes and reopens LevelDB
 * (which also refuses writes after an I/O error until reopened) and proves a synced write works.
 * @module
 */
import { mkdir } from 'node:fs/promises'
import { Level } from 'level'
import { Packr } from 'msgpackr'
import { CorruptStorageError, StorageError } from '../../errors.js'
import type { ClusterConfig, Entry, EntryType, HardState, Logger, PersistedState, RaftStorage, Snapshot, StorageRecovery, StorageWrite } from '../types.js'
import { silentLogger } from '../types.js'
import { crc32c } from '../../util/crc32c.js'
import { entryBytes } from '../entry-codec.js'

export { crc32c }

// ---------------------------------------------------------------------------------- records

/** The msgpackr codec of stored payloads: plain MessagePack maps, no shared record structures. */
const packr = new Packr({ useRecords: false, mapsAsObjects: true })

/**
 * Encode `value` as a storage record: 4-byte big-endian CRC-32C of the payload, then the
 * msgpackr payload.
 * @param value - any msgpackr-encodable value
 */
export function encodeRecord(value: unknown): Uint8Array {
  const payload = packr.pack(value)
  const rec = new Uint8Array(4 + payload.length)
  rec.set(payload, 4)
  putCrc(rec, 0, crc32c(payload))
  return rec
}

function putCrc(buf: Uint8Array, at: number, crc: number): void {
  buf[at] = crc >>> 24
  buf[at + 1] = (crc >>> 16) & 0xff
  buf[at + 2] = (crc >>> 8) & 0xff
  buf[at + 3] = crc & 0xff
}

/**
 * Encode many entries as records (see {@link encodeRecord}) sharing one allocation: the hot
 * path of a group commit.
 */
function encodeEntryRecords(entries: readonly Entry[]): Uint8Array[] {
  const payloads: Uint8Array[] = new Array(entries.length)
  let total = 0
  for (let j = 0; j < entries.length; j++) {
    const e = entries[j]!
    // (encoded once: the same bytes go to the followers; see entry-codec.ts)
    const p = entryBytes(e)
    payloads[j] = p
    total += 4 + p.length
  }
  const buf = new Uint8Array(total)
  const out: Uint8Array[] = new Array(entries.length)
  let at = 0
  for (let j = 0; j < payloads.length; j++) {
    const p = payloads[j]!
    putCrc(buf, at, crc32c(p))
    buf.set(p, at + 4)
    out[j] = buf.subarray(at, at + 4 + p.length)
    at += 4 + p.length
  }
  return out
}

/**
 * Check and decode a storage record written by {@link encodeRecord}.
 * @param record - the stored bytes
 * @param what - description of the record, for the error
 * @throws CorruptStorageError on a short (torn) record, a checksum mismatch, or an undecodable
 * payload
 */
export function decodeRecord(record: Uint8Array, what: string): unknown {
  if (record.length < 5) throw new CorruptStorageError(what, `torn record: only ${record.length} bytes`)
  const stored = new DataView(record.buffer, record.byteOffset, 4).getUint32(0)
  const payload = record.subarray(4)
  const actual = crc32c(payload)
  if (stored !== actual) {
    throw new CorruptStorageError(
      what,
      `checksum mismatch (stored ${stored.toString(16).padStart(8, '0')}, computed ${actual.toString(16).padStart(8, '0')})`,
    )
  }
  try {
    return packr.unpack(payload)
  } catch (err) {
    throw new CorruptStorageError(what, `undecodable payload: ${(err as Error).message}`)
  }
}

// ------------------------------------------------------------------------------------- keys

const HARD_STATE_KEY = Uint8Array.of(0x68)
const HARD_STATE_COPY_KEY = Uint8Array.of(0x69)
const SNAPSHOT_KEY = Uint8Array.of(0x73)
const SNAPSHOT_META_KEY = Uint8Array.of(0x6d)
const RECOVERY_KEY = Uint8Array.of(0x72)
const PROBE_KEY = Uint8Array.of(0x70)
const IDENTITY_KEY = Uint8Array.of(0x64)
const ENTRY_PREFIX = 0x65
/** Just past the last possible entry key. */
const ENTRY_END = Uint8Array.of(ENTRY_PREFIX + 1)
const PART_PREFIX = 0x74
const PART_END = Uint8Array.of(PART_PREFIX + 1)
/** Bytes of snapshot data per part record. */
const PART_BYTES = 1024 * 1024

/** Key of part `part` of the snapshot data of generation `gen` (each snapshot a new one). */
function partKey(gen: number, part: number): Uint8Array {
  const k = Buffer.allocUnsafe(9)
  k[0] = PART_PREFIX
  putUint32(k, 1, gen)
  putUint32(k, 5, part)
  return k
}

/**
 * Write `v` big-endian at `at`. (Keys are made from the shared pool of `Buffer.allocUnsafe`,
 * written byte by byte: a `DataView` over a new 9-byte array gave each key an `ArrayBuffer` of
 * its own, about 0.7 µs a key alone and 2-6 µs in a node holding 300k workers, where the keys of
 * a backlog of writes held its event loop for up to 0.7 s.)
 */
function putUint32(k: Uint8Array, at: number, v: number): void {
  k[at] = v >>> 24
  k[at + 1] = (v >>> 16) & 0xff
  k[at + 2] = (v >>> 8) & 0xff
  k[at + 3] = v & 0xff
}

/** Let the event loop run (between the parts of a snapshot). */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** The key of the entry at `index`: `'e'` then the index as an 8-byte big-endian integer. */
function entryKey(index: number): Uint8Array {
  const k = Buffer.allocUnsafe(9)
  k[0] = ENTRY_PREFIX
  putUint32(k, 1, Math.floor(index / 0x1_0000_0000))
  putUint32(k, 5, index >>> 0)
  return k
}

/** The index in an entry key, or undefined if `key` is not a well-formed entry key. */
function entryKeyIndex(key: Uint8Array): number | undefined {
  if (key.length !== 9 || key[0] !== ENTRY_PREFIX) return undefined
  const dv = new DataView(key.buffer, key.byteOffset, key.byteLength)
  return dv.getUint32(1) * 0x1_0000_0000 + dv.getUint32(5)
}

/**
 * The binary keys of the layout, for tools and tests that inspect the database directly.
 * Descriptions of records in errors are `'hardState'`, `'snapshot'` and `'entry <index>'`.
 */
export const levelStorageKeys = {
  /** Key of the hard state record. */
  hardState: (): Uint8Array => HARD_STATE_KEY.slice(),
  /** Key of the hard state's copy. */
  hardStateCopy: (): Uint8Array => HARD_STATE_COPY_KEY.slice(),
  /** Key of the snapshot record. */
  snapshot: (): Uint8Array => SNAPSHOT_KEY.slice(),
  /** Key of the snapshot's index/term record. */
  snapshotMeta: (): Uint8Array => SNAPSHOT_META_KEY.slice(),
  /** Key of a part of the snapshot's data (the first snapshot a directory holds is generation 1). */
  snapshotPart: (part: number, gen = 1): Uint8Array => partKey(gen, part),
  /** The range of every part key: `[from, to)`. */
  snapshotParts: (): { from: Uint8Array; to: Uint8Array } => ({ from: Uint8Array.of(PART_PREFIX), to: PART_END.slice() }),
  /** Key of the recovery marker. */
  recovery: (): Uint8Array => RECOVERY_KEY.slice(),
  /** Key of the data directory's identity. */
  identity: (): Uint8Array => IDENTITY_KEY.slice(),
  /** Key of the entry record at `index`. */
  entry: entryKey,
} as const

// ------------------------------------------------------------------------- payload checking

const ENTRY_TYPES: ReadonlySet<string> = new Set<EntryType>(['cmd', 'noop', 'conf'])

function isNat(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0
}

function isRecordObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array)
}

function toHardState(v: unknown, what: string): HardState {
  if (!isRecordObject(v) || !isNat(v.term) || !isNat(v.commit)) throw new CorruptStorageError(what, 'malformed hard state')
  const vote = v.vote
  if (vote !== undefined && vote !== null && typeof vote !== 'string') throw new CorruptStorageError(what, 'malformed vote')
  return { term: v.term, vote: vote ?? undefined, commit: v.commit }
}

/** A snapshot record: its metadata, and its data or how it is split in parts. */
interface SnapshotRecord {
  meta: Snapshot['meta']
  data: Uint8Array | undefined
  parts: number
  total: number
  /** The generation of its parts' keys (0 for the older format). */
  gen: number
}

function toSnapshot(v: unknown, what: string): SnapshotRecord {
  const inParts = isRecordObject(v) && v.data === undefined
  if (!isRecordObject(v) || !isRecordObject(v.meta) || (inParts ? !isNat(v.parts) || !isNat(v.total) || !isNat(v.gen) : !(v.data instanceof Uint8Array))) {
    throw new CorruptStorageError(what, 'malformed snapshot')
  }
  const m = v.meta
  const c = m.config
  if (!isNat(m.index) || !isNat(m.term) || !isRecordObject(c) || !isRecordObject(c.voters) || !isRecordObject(c.learners)) {
    throw new CorruptStorageError(what, 'malformed snapshot metadata')
  }
  if ((c.disks !== undefined && !isRecordObject(c.disks)) || (c.cluster !== undefined && typeof c.cluster !== 'string')) {
    throw new CorruptStorageError(what, 'malformed snapshot metadata')
  }
  if (c.removed !== undefined && !(Array.isArray(c.removed) && c.removed.every((x) => typeof x === 'string'))) {
    throw new CorruptStorageError(what, 'malformed snapshot metadata')
  }
  const config: ClusterConfig = { voters: c.voters as Record<string, string>, learners: c.learners as Record<string, string> }
  if (c.disks !== undefined) config.disks = c.disks as Record<string, string>
  if (c.cluster !== undefined) config.cluster = c.cluster
  if (c.removed !== undefined) config.removed = c.removed as string[]
  return {
    meta: { index: m.index, term: m.term, config },
    // a plain Uint8Array of its own, not a view into the record
    data: inParts ? undefined : new Uint8Array(v.data as Uint8Array),
    parts: inParts ? (v.parts as number) : 0,
    total: inParts ? (v.total as number) : (v.data as Uint8Array).length,
    gen: inParts ? (v.gen as number) : 0,
  }
}

function toRecovery(v: unknown, what: string): StorageRecovery {
  if (!isRecordObject(v) || !isNat(v.lostUpTo) || typeof v.reason !== 'string') throw new CorruptStorageError(what, 'malformed recovery marker')
  return { lostUpTo: v.lostUpTo, reason: v.reason }
}

function toSnapshotIndex(v: unknown, what: string): number {
  if (!isRecordObject(v) || !isNat(v.index) || !isNat(v.term)) throw new CorruptStorageError(what, 'malformed snapshot index')
  return v.index
}

function toEntry(v: unknown, what: string): Entry {
  if (!Array.isArray(v) || v.length !== 4) throw new CorruptStorageError(what, 'malformed entry')
  const [index, term, type, data] = v as [unknown, unknown, unknown, unknown]
  if (!isNat(index) || index < 1 || !isNat(term) || typeof type !== 'string' || !ENTRY_TYPES.has(type)) {
    throw new CorruptStorageError(what, 'malformed entry')
  }
  return { index, term, type: type as EntryType, data }
}

// ---------------------------------------------------------------------------------- storage

async function openDb(dir: string): Promise<Level<Uint8Array, Uint8Array>> {
  await mkdir(dir, { recursive: true })
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' })
  await db.open()
  return db
}

type Db = Level<Uint8Array, Uint8Array>
type Op = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array }

/** Where the log is: entries `snapIndex + 1 ..= lastIndex` are stored (none when equal). */
interface Bounds {
  snapIndex: number
  lastIndex: number
  /** The generation of the stored snapshot's parts. */
  snapGen: number
}

/** Options of {@link LevelStorage.open}. */
export interface LevelStorageOptions {
  /** Where corrupt records and write failures are reported. Defaults to a silent logger. */
  logger?: Logger
  /**
   * Repair corrupt records at load (see the module documentation) instead of rejecting with
   * {@link CorruptStorageError}. Default true.
   */
  repair?: boolean
}

/**
 * {@link RaftStorage} in a LevelDB directory. See the module documentation for the layout.
 *
 * Operations run one at a time, in call order. The storage caches where the log starts and
 * ends (read at the first write, or by `load()`), so truncation needs no disk read.
 */
export class LevelStorage implements RaftStorage {
  private db: Db
  private readonly dir: string
  private readonly log: Logger
  private readonly repair: boolean
  private bounds: Bounds | undefined
  /** Settles when every operation issued so far has finished. Never rejects. */
  private tail: Promise<void> = Promise.resolve()
  private failure: StorageError | undefined
  private closing: Promise<void> | undefined

  private constructor(dir: string, db: Db, log: Logger, repair: boolean) {
    this.dir = dir
    this.db = db
    this.log = log
    this.repair = repair
  }

  /**
   * Open (creating it if needed, with missing parent directories) the storage in `dir`.
   * @param dir - the LevelDB directory
   * @param opts - logger
   * @throws StorageError if LevelDB cannot open the directory (for example, another process
   * holds its lock)
   */
  static async open(dir: string, opts: LevelStorageOptions = {}): Promise<LevelStorage> {
    const log = opts.logger ?? silentLogger
    let db: Db
    try {
      db = await openDb(dir)
    } catch (err) {
      log.error('cannot open raft storage', { dir, err: String(err) })
      throw new StorageError(`cannot open LevelDB storage in ${dir}: ${String(err)}`, { cause: err })
    }
    return new LevelStorage(dir, db, log, opts.repair ?? true)
  }

  /**
   * After a failed write: close LevelDB, open it again, and prove with a synced write that the
   * disk takes writes. On success the storage serves again (call `load()` to see what reached the
   * disk); while the fault lasts it rejects with {@link StorageError} and stays failed.
   */
  reopen(): Promise<void> {
    if (this.closing) return Promise.reject(new StorageError('storage is closed'))
    return this.run(async () => {
      await this.db.close().catch(() => {})
      let db: Db
      try {
        db = await openDb(this.dir)
      } catch (err) {
        throw new StorageError(`cannot reopen LevelDB storage in ${this.dir}: ${String(err)}`, { cause: err })
      }
      this.db = db
      try {
        await db.put(PROBE_KEY, encodeRecord(Date.now()), { sync: true })
      } catch (err) {
        throw new StorageError(`LevelDB in ${this.dir} still refuses writes: ${String(err)}`, { cause: err })
      }
      this.bounds = undefined
      this.failure = undefined
    })
  }

  /**
   * Read and check everything: the hard state (zeroes if none was written), the snapshot, and
   * the entries after it.
   * @throws CorruptStorageError naming the first bad record: bad checksum, torn or undecodable
   * record, an entry whose index differs from its key, a gap in the log, or a log that does not
   * start right after the snapshot (or at index 1 without a snapshot)
   * @throws StorageError if the storage is closed or LevelDB fails to read
   */
  load(): Promise<PersistedState> {
    if (this.closing) return Promise.reject(new StorageError('storage is closed'))
    return this.run(async () => {
      try {
        const st = await this.readAll()
        if (this.failure) throw this.failure
        this.bounds = undefined // read again, from what the load left (repairs included), at the next write
        return st
      } catch (err) {
        if (err instanceof CorruptStorageError) {
          this.log.error('corrupt raft storage record', { dir: this.dir, record: err.record, err: err.message })
          throw err
        }
        throw new StorageError(`cannot read LevelDB storage in ${this.dir}: ${String(err)}`, { cause: err })
      }
    })
  }

  /**
   * Durably apply `w` in one synced LevelDB batch: delete entries with index >= `truncateFrom`
   * (those inside the snapshot are gone already), append `entries`, store `hardState`. An
   * empty write resolves at once.
   * @throws RangeError, changing nothing, if `entries` are not contiguous or do not start right
   * after the log's (truncated) end
   * @throws StorageError if the storage is closed, failed before, or this write fails (the
   * storage then refuses every later write)
   */
  write(w: StorageWrite): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    const entries = w.entries ?? []
    if (!w.hardState && !entries.length && w.truncateFrom === undefined && !w.recovered) return Promise.resolve()
    // Encode now: the caller may mutate its objects before the write runs.
    const first = entries.length ? entries[0]!.index : 0
    let records: Uint8Array[]
    let hard: Uint8Array | undefined
    try {
      for (let j = 0; j < entries.length; j++) {
        if (entries[j]!.index !== first + j) throw new RangeError(`entries are not contiguous at index ${entries[j]!.index}`)
      }
      records = encodeEntryRecords(entries)
      const h = w.hardState
      if (h) hard = encodeRecord({ term: h.term, vote: h.vote ?? null, commit: h.commit })
    } catch (err) {
      return Promise.reject(err)
    }
    const truncateFrom = w.truncateFrom
    const recovered = w.recovered === true
    return this.run(async () => {
      const refusedNow = this.refusal()
      if (refusedNow) throw refusedNow
      const b = this.bounds ?? (await this.readBounds())
      const ops: Op[] = []
      let last = b.lastIndex
      if (truncateFrom !== undefined && truncateFrom <= last) {
        const from = Math.max(truncateFrom, b.snapIndex + 1)
        for (let i = from; i <= last; i++) ops.push({ type: 'del', key: entryKey(i) })
        last = from - 1
      }
      if (records.length && first !== last + 1) {
        throw new RangeError(`entry index ${first} does not follow the log's last index ${last} (no gaps allowed)`)
      }
      for (let j = 0; j < records.length; j++) ops.push({ type: 'put', key: entryKey(first + j), value: records[j]! })
      if (records.length) last = first + records.length - 1
      if (hard) {
        ops.push({ type: 'put', key: HARD_STATE_KEY, value: hard })
        ops.push({ type: 'put', key: HARD_STATE_COPY_KEY, value: hard })
      }
      if (recovered) ops.push({ type: 'del', key: RECOVERY_KEY })
      await this.commit(ops)
      b.lastIndex = last
    })
  }

  /**
   * Durably store `snapshot` and delete every entry with index <= `snapshot.meta.index`, in one
   * synced batch. Entries after the snapshot stay.
   * @throws RangeError, changing nothing, if the snapshot is older than the stored one
   * @throws StorageError if the storage is closed, failed before, or this write fails (sticky)
   */
  saveSnapshot(snapshot: Snapshot): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    // Encoded part by part between turns of the event loop, then written after whatever was
    // written meanwhile (nothing written meanwhile can touch the entries a snapshot replaces).
    return this.encodeSnapshot(snapshot).then(({ records, metaRecord, record }) =>
      this.run(async () => {
        const refusedNow = this.refusal()
        if (refusedNow) throw refusedNow
        const idx = snapshot.meta.index
        const b = this.bounds ?? (await this.readBounds())
        if (idx < b.snapIndex) throw new RangeError(`snapshot at ${idx} is older than the stored one at ${b.snapIndex}`)
        // The parts go under a new generation, a batch each (one batch of them all held the event
        // loop for 170 ms at 20 MiB); the stored snapshot keeps its own until the synced batch of
        // the new metadata switches to them, which makes them durable too (one LevelDB log).
        const gen = (b.snapGen + 1) >>> 0
        for (let k = 0; k < records.length; k++) await this.commit([{ type: 'put', key: partKey(gen, k), value: records[k]! }], false)
        await this.commit([
          { type: 'put', key: SNAPSHOT_KEY, value: record(gen) },
          { type: 'put', key: SNAPSHOT_META_KEY, value: metaRecord },
        ])
        const from = b.snapIndex + 1
        const upTo = Math.min(idx, b.lastIndex)
        b.snapIndex = idx
        b.lastIndex = Math.max(b.lastIndex, idx)
        b.snapGen = gen
        // What the new snapshot replaces goes in range deletions, which LevelDB runs off the event
        // loop (a batch of 100,000 entry deletions held it for 200 ms). A crash before they are
        // done leaves parts of another generation (ignored, deleted by the next snapshot) and
        // entries the snapshot covers (deleted by load(), as expected leftovers).
        await this.clearRange(Uint8Array.of(PART_PREFIX), partKey(gen, 0))
        await this.clearRange(partKey(gen + 1, 0), PART_END)
        if (upTo >= from) await this.clearRange(entryKey(from), entryKey(upTo + 1))
      }),
    )
  }

  /** Delete the keys in `[from, to)` (not synced: what a crash leaves is harmless, see above). */
  private async clearRange(from: Uint8Array, to: Uint8Array): Promise<void> {
    try {
      await this.db.clear({ gte: from, lt: to })
    } catch (err) {
      this.failure = new StorageError(`LevelDB write failed in ${this.dir}: ${String(err)}`, { cause: err })
      throw this.failure
    }
  }

  private async encodeSnapshot(snapshot: Snapshot): Promise<{ records: Uint8Array[]; metaRecord: Uint8Array; record: (gen: number) => Uint8Array }> {
    const { meta, data } = snapshot
    const records: Uint8Array[] = []
    for (let at = 0; at < data.length; at += PART_BYTES) {
      if (at > 0) await nextTurn()
      records.push(encodeRecord(data.subarray(at, Math.min(data.length, at + PART_BYTES))))
    }
    return {
      records,
      metaRecord: encodeRecord({ index: meta.index, term: meta.term }),
      record: (gen) => encodeRecord({ meta: { index: meta.index, term: meta.term, config: meta.config }, parts: records.length, total: data.length, gen }),
    }
  }

  /** The snapshot a record describes, its parts read and checked. */
  private async readSnapshot(rec: SnapshotRecord): Promise<Snapshot> {
    if (rec.data) return { meta: rec.meta, data: rec.data }
    const data = new Uint8Array(rec.total)
    let at = 0
    for (let k = 0; k < rec.parts; k++) {
      const what = `snapshot part ${k}`
      const raw = await this.db.get(partKey(rec.gen, k))
      if (raw === undefined) throw new CorruptStorageError(what, 'missing')
      const part = decodeRecord(raw, what)
      if (!(part instanceof Uint8Array) || at + part.length > rec.total) throw new CorruptStorageError(what, 'malformed snapshot part')
      data.set(part, at)
      at += part.length
    }
    if (at !== rec.total) throw new CorruptStorageError('snapshot', `its parts hold ${at} bytes, not ${rec.total}`)
    return { meta: rec.meta, data }
  }

  /** The identity of this data directory, if one was stored (see {@link RaftStorage.identity}). */
  identity(): Promise<string | undefined> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    return this.run(async () => {
      const raw = await this.db.get(IDENTITY_KEY)
      if (raw === undefined) return undefined
      const v = decodeRecord(raw, 'identity')
      if (typeof v !== 'string' || v.length === 0) throw new CorruptStorageError('identity', 'malformed identity')
      return v
    })
  }

  /** Durably store this data directory's identity. */
  saveIdentity(id: string): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    return this.run(() => this.commit([{ type: 'put', key: IDENTITY_KEY, value: encodeRecord(id) }]))
  }

  /**
   * Wait for the operations under way, then close the database. Later calls reject with
   * {@link StorageError}. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = this.tail.then(() =>
        this.db.close().catch((err: unknown) => {
          this.log.warn('error closing raft storage', { dir: this.dir, err: String(err) })
        }),
      )
    }
    return this.closing
  }

  // ------------------------------------------------------------------------------- private

  /** Queue `job` after every operation issued before it. */
  private run<T>(job: () => Promise<T>): Promise<T> {
    const p = this.tail.then(job)
    this.tail = p.then(
      () => {},
      () => {},
    )
    return p
  }

  /** Why a write must be refused now, if it must. */
  private refusal(): StorageError | undefined {
    if (this.failure) return new StorageError(`storage failed earlier and refuses writes: ${this.failure.message}`, { cause: this.failure })
    if (this.closing) return new StorageError('storage is closed')
    return undefined
  }

  /**
   * Apply `ops` in one synced batch; a failure is sticky. Uses a chained batch: for large
   * batches it costs a fraction of the array form (no per-operation object handling).
   */
  private async commit(ops: Op[], sync = true): Promise<void> {
    if (!ops.length) return
    let batch: ReturnType<Db['batch']> | undefined
    try {
      batch = this.db.batch()
      for (const op of ops) {
        if (op.type === 'put') batch.put(op.key, op.value)
        else batch.del(op.key)
      }
      await batch.write({ sync })
    } catch (err) {
      await batch?.close().catch(() => {})
      this.failure = new StorageError(`LevelDB write failed in ${this.dir}: ${String(err)}`, { cause: err })
      this.log.error('raft storage write failed; refusing further writes', { dir: this.dir, err: String(err) })
      throw this.failure
    }
  }

  /** Find where the log is without reading it all: the snapshot's index and the last entry key. */
  private async readBounds(): Promise<Bounds> {
    try {
      return await this.scanBounds()
    } catch (err) {
      if (err instanceof CorruptStorageError) {
        this.log.error('corrupt raft storage record', { dir: this.dir, record: err.record, err: err.message })
        throw err
      }
      throw new StorageError(`cannot read LevelDB storage in ${this.dir}: ${String(err)}`, { cause: err })
    }
  }

  private async scanBounds(): Promise<Bounds> {
    let snapIndex = 0
    let snapGen = 0
    const raw = await this.db.get(SNAPSHOT_KEY)
    if (raw !== undefined) {
      const rec = toSnapshot(decodeRecord(raw, 'snapshot'), 'snapshot') // small unless written by an older version
      snapIndex = rec.meta.index
      snapGen = rec.gen
    }
    let lastIndex = snapIndex
    const keys = await this.db.keys({ gte: entryKey(0), lt: ENTRY_END, reverse: true, limit: 1 }).all()
    if (keys.length) {
      const i = entryKeyIndex(keys[0]!)
      if (i !== undefined && i > lastIndex) lastIndex = i
    }
    this.bounds = { snapIndex, lastIndex, snapGen }
    return this.bounds
  }

  /**
   * Read everything, checking every record. With `repair`, what cannot be trusted is deleted in
   * one synced batch (see the module documentation) and reported in one log line.
   */
  private async readAll(): Promise<PersistedState> {
    const repair = this.repair
    const ops: Op[] = []
    const problems: string[] = []
    const corrupt = (err: unknown): CorruptStorageError => {
      if (!(err instanceof CorruptStorageError) || !repair) throw err
      return err
    }

    // hard state: the record, or its copy
    let hardState: HardState = { term: 0, vote: undefined, commit: 0 }
    const rawHard = await this.db.get(HARD_STATE_KEY)
    const rawCopy = await this.db.get(HARD_STATE_COPY_KEY)
    const readHard = (raw: Uint8Array | undefined, what: string): HardState | CorruptStorageError | undefined => {
      if (raw === undefined) return undefined
      try {
        return toHardState(decodeRecord(raw, what), what)
      } catch (err) {
        return corrupt(err)
      }
    }
    const hard = repair ? readHard(rawHard, 'hardState') : rawHard === undefined ? undefined : toHardState(decodeRecord(rawHard, 'hardState'), 'hardState')
    const copy = repair ? readHard(rawCopy, 'hardStateCopy') : undefined
    if (hard !== undefined && !(hard instanceof CorruptStorageError)) {
      hardState = hard
      if (rawCopy !== undefined && !(copy !== undefined && !(copy instanceof CorruptStorageError))) {
        problems.push(`hard state copy: ${copy instanceof CorruptStorageError ? copy.message : 'unreadable'}; rewritten`)
        ops.push({ type: 'put', key: HARD_STATE_COPY_KEY, value: rawHard! })
      }
    } else if (copy !== undefined && !(copy instanceof CorruptStorageError)) {
      hardState = copy
      problems.push(`${hard instanceof CorruptStorageError ? hard.message : 'hard state record missing'}; restored from its copy`)
      ops.push({ type: 'put', key: HARD_STATE_KEY, value: rawCopy! })
    } else if (hard instanceof CorruptStorageError) {
      throw new CorruptStorageError(
        'hardState',
        `${hard.message}, and its copy is ${copy instanceof CorruptStorageError ? 'corrupt too' : 'missing'}: the term and vote are lost, which cannot be repaired safely (move the data directory away and add this node back as a new one)`,
      )
    }

    // snapshot; if it is bad, its index from the small meta record
    let snapshot: Snapshot | undefined
    let lostUpTo = 0
    let snapBad = false
    const rawSnap = await this.db.get(SNAPSHOT_KEY)
    if (rawSnap !== undefined) {
      try {
        snapshot = await this.readSnapshot(toSnapshot(decodeRecord(rawSnap, 'snapshot'), 'snapshot'))
      } catch (err) {
        const e = corrupt(err)
        snapBad = true
        const rawMeta = await this.db.get(SNAPSHOT_META_KEY)
        let idx: number | undefined
        try {
          if (rawMeta !== undefined) idx = toSnapshotIndex(decodeRecord(rawMeta, 'snapshotMeta'), 'snapshotMeta')
        } catch (err2) {
          corrupt(err2)
        }
        if (idx === undefined) {
          throw new CorruptStorageError('snapshot', `${e.message.replace(/^corrupt record snapshot: /, '')}, and its index is unreadable, so what this node held cannot be known`)
        }
        lostUpTo = idx
        problems.push(`${e.message}; dropped it and the log after it (index ${idx})`)
        ops.push({ type: 'del', key: SNAPSHOT_KEY }, { type: 'del', key: SNAPSHOT_META_KEY })
        for (const key of await this.db.keys({ gte: Uint8Array.of(PART_PREFIX), lt: PART_END }).all()) ops.push({ type: 'del', key })
      }
    }
    const snapIndex = snapshot?.meta.index ?? 0

    // entries: keep the good prefix
    const entries: Entry[] = []
    let expect = snapIndex + 1
    let dropping = snapBad
    let firstDropped: number | undefined
    let maxKey = 0
    const it = this.db.iterator({ gte: Uint8Array.of(ENTRY_PREFIX), lt: ENTRY_END })
    try {
      for (;;) {
        const batch = await it.nextv(4096)
        if (!batch.length) break
        for (const [key, value] of batch) {
          const idx = entryKeyIndex(key)
          try {
            if (idx === undefined) throw new CorruptStorageError(`key ${Buffer.from(key).toString('hex')}`, 'malformed entry key')
            if (idx > maxKey) maxKey = idx
            if (dropping) {
              ops.push({ type: 'del', key })
              continue
            }
            const what = `entry ${idx}`
            if (snapshot && idx <= snapIndex) {
              // left by a compaction a crash interrupted (see saveSnapshot): not a fault
              if (repair) ops.push({ type: 'del', key })
              continue
            }
            if (idx !== expect) {
              throw new CorruptStorageError(
                what,
                idx < expect
                  ? `entry is covered by the snapshot at ${snapIndex}`
                  : entries.length
                    ? `gap in the log: expected entry ${expect} after entry ${expect - 1}`
                    : snapshot
                      ? `log does not follow the snapshot at ${snapIndex}: expected entry ${expect}`
                      : `log does not start at index 1`,
              )
            }
            const e = toEntry(decodeRecord(value, what), what)
            if (e.index !== idx) throw new CorruptStorageError(what, `record holds entry ${e.index}, not ${idx}`)
            entries.push(e)
            expect++
          } catch (err) {
            const e = corrupt(err)
            ops.push({ type: 'del', key })
            if (idx !== undefined && idx < expect) {
              problems.push(`${e.message}; deleted (nothing lost)`)
              continue
            }
            problems.push(e.message)
            dropping = true
            firstDropped = idx ?? expect
          }
        }
      }
    } finally {
      await it.close()
    }
    if (firstDropped !== undefined) {
      lostUpTo = Math.max(lostUpTo, maxKey)
      problems[problems.length - 1] += `; dropped entries ${firstDropped}..${maxKey}`
    }
    if (snapBad) lostUpTo = Math.max(lostUpTo, maxKey)

    // the marker of an earlier repair the node has not caught up from yet
    let recovery: StorageRecovery | undefined
    const rawRec = await this.db.get(RECOVERY_KEY)
    if (rawRec !== undefined) {
      try {
        recovery = toRecovery(decodeRecord(rawRec, 'recovery'), 'recovery')
      } catch (err) {
        const e = corrupt(err)
        throw new CorruptStorageError('recovery', `${e.message.replace(/^corrupt record recovery: /, '')}: how far this node must catch up before voting is unknown`)
      }
    }
    if (lostUpTo > 0) {
      recovery = {
        lostUpTo: Math.max(lostUpTo, recovery?.lostUpTo ?? 0),
        reason: problems.join('; '),
      }
      ops.push({ type: 'put', key: RECOVERY_KEY, value: encodeRecord(recovery) })
    }
    if (ops.length) {
      await this.commit(ops)
      if (lostUpTo > 0) {
        this.log.error('repaired corrupt raft storage; this node will neither vote nor campaign until the leader has brought it past what was lost', {
          dir: this.dir,
          lostUpTo: recovery!.lostUpTo,
          problems: problems.join('; '),
        })
      } else if (problems.length) {
        this.log.warn('repaired raft storage; nothing was lost', { dir: this.dir, problems: problems.join('; ') })
      }
    }
    return recovery ? { hardState, snapshot, entries, recovery } : { hardState, snapshot, entries }
  }
}
