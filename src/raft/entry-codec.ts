/**
 * Log entries as bytes, encoded once. An entry's encoding (MessagePack of
 * `[index, term, type, data]`) is what the log storage keeps, and the leader sends those same
 * bytes to every follower: AppendEntries carry `ents`, one binary per entry, instead of the
 * entries themselves, so a leader with many followers encodes each entry once rather than once
 * per follower, and a follower stores the bytes it received without encoding them again.
 *
 * The encodings of the last {@link CACHED_ENTRIES} entries seen (encoded here, or received) are
 * kept, keyed by the entry object itself: a different entry at the same index (after a
 * truncation) never gets another's bytes. Entries are immutable once in the log.
 *
 * Received bytes are checked before they are decoded, as the transport checks frames: they may
 * cost at most {@link ENTRY_DECODE_RATIO} times their size plus {@link ENTRY_DECODE_SLACK} bytes
 * of heap once decoded (see `util/msgpack-guard.ts`), and each must decode to an entry tuple.
 * @module
 */
import { Packr } from 'msgpackr'
import { MAX_COST_PER_BYTE, msgpackCost, msgpackCostOfEach, msgpackFittingPrefix } from '../util/msgpack-guard.js'
import type { Entry, EntryType } from './types.js'

/** Entries whose encoding is kept (a power of two). */
export const CACHED_ENTRIES = 8192
/** Received entries of one message may cost this many times their size once decoded... */
export const ENTRY_DECODE_RATIO = 16
/** ... plus this many bytes. */
export const ENTRY_DECODE_SLACK = 64 * 1024

/** What a decoded entry's object and array slot take, charged on top of its data. */
const ENTRY_OBJECT_BYTES = 96

/** What an entry's tuple (`[index, term, type, data]`) may cost decoded besides its data, at most. */
const ENTRY_TUPLE_COST = 256

/** What `count` entries of `bytes` bytes in all may cost once decoded (see {@link decodeEntries}). */
function entriesBudget(count: number, bytes: number): number {
  return ENTRY_DECODE_RATIO * bytes + ENTRY_DECODE_SLACK - ENTRY_OBJECT_BYTES * count
}

/**
 * Commands of at most this many bytes encoded always fit an entry's decode budget (no value costs
 * more than `MAX_COST_PER_BYTE` a byte): they need no scan.
 */
const ALWAYS_DECODABLE_BYTES = Math.floor((ENTRY_DECODE_SLACK - ENTRY_OBJECT_BYTES - ENTRY_TUPLE_COST) / (MAX_COST_PER_BYTE - ENTRY_DECODE_RATIO))

/**
 * The codec of entries: the log storage's (plain MessagePack maps, no shared record structures).
 * Binaries in an entry decode as copies of their own (`copyBuffers`), never as views into the
 * bytes they came in: the state machine may keep one (a handoff state) long after the entry.
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, copyBuffers: true })

const cachedEntry: Array<Entry | undefined> = new Array<Entry | undefined>(CACHED_ENTRIES)
const cachedBytes: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(CACHED_ENTRIES)

function slot(index: number): number {
  return index % CACHED_ENTRIES
}

/**
 * The encoding of `e` (`[index, term, type, data]`), made once and kept while it is among the
 * last {@link CACHED_ENTRIES} entries seen. The bytes must not be modified.
 * @throws whatever msgpackr throws for data it cannot encode
 */
export function entryBytes(e: Entry): Uint8Array {
  const s = slot(e.index)
  if (cachedEntry[s] === e) return cachedBytes[s]!
  const data = typeof e.data === 'object' && e.data !== null ? commandBytes.get(e.data) : undefined
  let b: Uint8Array
  if (data !== undefined) {
    // a command this node proposed, encoded already (see commandCopy): the tuple's head, then it
    commandBytes.delete(e.data as object)
    const head = packr.pack([e.index, e.term, e.type])
    b = new Uint8Array(head.length + data.length)
    b.set(head)
    b[0] = FIXARRAY_4 // (the head is a fixarray of 3: now of 4, the command its last item)
    b.set(data, head.length)
  } else {
    // consecutive pack() results never overlap: each can be kept as it is
    b = packr.pack([e.index, e.term, e.type, e.data])
  }
  cachedEntry[s] = e
  cachedBytes[s] = b
  return b
}

/** MessagePack's header of an array of 4 items (one of 3: one less). */
const FIXARRAY_4 = 0x94

/** Encodings of commands proposed here, until the entry that carries each is encoded (see {@link commandCopy}). */
const commandBytes = new WeakMap<object, Uint8Array>()

/**
 * A copy of `command` as every replica decodes it (a leader must apply what its followers
 * decode, never the caller's object): decoded from its encoding, which is kept for the entry
 * that will carry the copy, so that {@link entryBytes} does not encode the command a second time
 * (about 5 µs of the leader's CPU per registration). The encoding is used once, and goes with
 * the copy if no entry ever carries it.
 * @throws whatever msgpackr throws for a command it cannot encode
 */
export function commandCopy(command: unknown): unknown {
  return copyOf(packr.pack(command))
}

function copyOf(bytes: Uint8Array): unknown {
  const copy = packr.unpack(bytes) as unknown
  if (typeof copy === 'object' && copy !== null) commandBytes.set(copy, bytes)
  return copy
}

/**
 * {@link commandCopy} of a command to propose, once its encoding is known to fit one log entry
 * that every follower takes: at most `maxBytes`, and no costlier to decode than a follower lets an
 * entry alone be (see {@link decodeEntries}). Checked before the copy is decoded, so a refused
 * command costs its encoding only.
 * @returns the copy and the encoding's size, or why the command does not fit
 * @throws whatever msgpackr throws for a command it cannot encode
 */
export function proposalCopy(command: unknown, maxBytes: number): { copy: unknown; enc: Uint8Array } | { problem: string } {
  const bytes = packr.pack(command)
  const problem = encodedProblem(bytes, maxBytes, true)
  if (problem !== undefined) return { problem }
  return { copy: copyOf(bytes), enc: bytes }
}

/**
 * Why a command encoded as `bytes` does not fit one log entry that every follower takes (see
 * {@link proposalCopy}). `ours`: bytes this process's packr made, which hold only what a
 * follower's check takes, so that small ones need no scan; bytes from another node are scanned
 * whatever their size (a few bytes may hold a msgpackr extension, which a follower refuses).
 */
function encodedProblem(bytes: Uint8Array, maxBytes: number, ours: boolean): string | undefined {
  if (bytes.length > maxBytes) return `the command is ${bytes.length} bytes encoded, more than the ${maxBytes} a log entry may take`
  if (ours && bytes.length <= ALWAYS_DECODABLE_BYTES) return undefined
  const budget = entriesBudget(1, bytes.length) - ENTRY_TUPLE_COST
  const cost = msgpackCost(bytes, budget)
  if (typeof cost === 'number') return undefined
  return `the command (${bytes.length} bytes encoded) would take more than ${budget} bytes of memory decoded on a follower, which refuses it (${cost}): fewer, larger parts (a string or binary for many small objects)`
}

/** The wire protocol version since which a follower forwards commands as their encodings. */
const FORWARD_PROTOCOL = 12

/** A command's encoding, as an entry carries it and a follower forwards it (tests inject forwarded commands with it). */
export function encodeCommand(command: unknown): Uint8Array {
  return packr.pack(command)
}

/**
 * On the leader: the command a follower forwarded, as its encoding (`enc`, a binary of the
 * message it came in), decoded if it fits one log entry that every follower takes; the encoding
 * is kept for the entry (copied out of the message), so that the leader does not encode it again.
 * @returns the command, or why it is refused (also for a value that is no encoded command)
 */
export function forwardedCommand(enc: unknown, maxBytes: number): { cmd: unknown } | { problem: string } {
  if (!(enc instanceof Uint8Array)) return { problem: `a forwarded command must be its encoding (protocol ${FORWARD_PROTOCOL})` }
  const problem = encodedProblem(enc, maxBytes, false)
  if (problem !== undefined) return { problem }
  try {
    // (a copy: a Buffer's slice() is a view, and would keep the whole message it came in)
    return { cmd: copyOf(Uint8Array.prototype.slice.call(enc)) }
  } catch (err) {
    return { problem: `the forwarded command cannot be decoded: ${String(err)}` }
  }
}

/**
 * The entry `bytes` encode (bytes this process encoded: the log's own, kept as bytes once
 * applied), with a copy of them kept as its encoding, so that sending it again encodes nothing.
 * @throws when the bytes do not hold an entry tuple
 */
export function entryFromBytes(bytes: Uint8Array): Entry {
  const v = packr.unpack(bytes) as unknown
  if (!Array.isArray(v) || v.length !== 4 || !Number.isSafeInteger(v[0])) throw new Error('not an encoded log entry')
  const e: Entry = { index: v[0] as number, term: v[1] as number, type: v[2] as EntryType, data: v[3] }
  const s = slot(e.index)
  cachedEntry[s] = e
  cachedBytes[s] = bytes.slice() // (a view would keep the whole segment it came from)
  return e
}

/** Decode stored or received entry bytes; no check of their cost (see {@link decodeEntries}). */
export function unpackEntry(bytes: Uint8Array): unknown {
  return packr.unpack(bytes)
}

/**
 * Decode the `ents` of an AppendEntries: each a binary holding one entry tuple. The bytes are
 * kept as the entries' encoding (the follower stores them as they are).
 * @returns the entries (to be validated like any others), or why the message must be dropped
 */
export function decodeEntries(ents: unknown): Entry[] | string {
  if (!Array.isArray(ents)) return 'bad ents'
  let total = 0
  for (const b of ents) {
    if (!(b instanceof Uint8Array)) return 'bad ents'
    total += b.length
  }
  // (each decoded entry also takes an object and a slot of the array)
  const budget = ENTRY_DECODE_RATIO * total + ENTRY_DECODE_SLACK - ENTRY_OBJECT_BYTES * ents.length
  const whole = budget < 0 ? 'over budget' : msgpackCostOfEach(ents as Uint8Array[], budget)
  if (typeof whole !== 'number') {
    // Too costly together, each perhaps not (many small entries of many small objects: the slack
    // counts once a message). The longest prefix that fits is taken, one entry at least if it fits
    // alone, which every proposal does (see `proposalCopy`, `forwardedCommand`): the follower
    // answers that it holds that much, and the leader sends the rest in its next append. Dropping
    // the whole message instead stopped replication for good: the leader sent the same append
    // again and again.
    const fit = msgpackFittingPrefix(ents as Uint8Array[], entriesBudget)
    if (fit.count === 0) return `undecodable entry in app: ${fit.refused ?? whole}`
    return decodeEntries(ents.slice(0, fit.count))
  }
  const out: Entry[] = new Array<Entry>(ents.length)
  // The entries are copied out of the frame they came in (a view would keep the whole frame, up
  // to 64 MiB, in memory for as long as the encoding cache keeps one 100-byte entry), all of this
  // message's into one new buffer: a copy each, an ArrayBuffer each, cost a follower of a node
  // holding 300k workers 3 s of its event loop over the 300k starts (turns of up to 1 s). What
  // the state machine keeps from an entry never points into that buffer (binaries decode as
  // copies, see `packr`); the encoding cache holds at most the messages its entries came in.
  const all = new Uint8Array(total)
  let at = 0
  for (let i = 0; i < ents.length; i++) {
    const src = ents[i] as Uint8Array
    all.set(src, at)
    const b = all.subarray(at, at + src.length)
    at += src.length
    let v: unknown
    try {
      v = packr.unpack(b)
    } catch {
      return 'undecodable entry in app'
    }
    if (!Array.isArray(v) || v.length !== 4) return 'bad entry in app'
    const e: Entry = { index: v[0] as number, term: v[1] as number, type: v[2] as EntryType, data: v[3] }
    out[i] = e
    const s = slot(typeof e.index === 'number' && Number.isSafeInteger(e.index) && e.index >= 0 ? e.index : 0)
    cachedEntry[s] = e
    cachedBytes[s] = b
  }
  return out
}
