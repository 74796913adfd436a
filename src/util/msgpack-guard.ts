/**
 * A pre-scan of MessagePack bytes that bounds what decoding them with msgpackr would cost, without
 * decoding: an empty map is one byte on the wire but about 60 bytes of heap once decoded, so a
 * frame of a few MiB can otherwise take gigabytes. {@link msgpackCost} walks the bytes (no
 * allocation) and adds up an upper bound of the heap each value takes once decoded; the transport
 * refuses a frame whose bound is above its budget, before decoding it.
 *
 * The costs are upper bounds measured on Node 20 (64-bit V8, msgpackr 2, `mapsAsObjects`), in
 * bytes: an array 48 plus 8 per element; a map 64 plus 48 per entry, plus 160 + 2 x length the
 * first time a key is seen in the frame (a new string and hidden class; a key seen before costs
 * nothing more); a string 32 + 2 x its length in bytes (the empty string: 0); a bin 128 (a view on
 * the frame); a float, or an integer beyond 16 bits, 16; a 64-bit integer (a BigInt) 32; a
 * timestamp (a `Date`) 128; nil, booleans, small integers and `undefined` 0.
 *
 * Only what the transport's own encoder produces is accepted: standard MessagePack plus
 * msgpackr's `undefined` (extension 0) and timestamps (extension -1). Every other extension is
 * refused, in particular msgpackr's record definitions (extension 0x72), which would let one byte
 * stand for an object of many properties, and its bundled strings and structured-clone
 * references. Nesting is limited to {@link MAX_MSGPACK_DEPTH} levels.
 * @module
 */

/** The deepest nesting of arrays and maps accepted (msgpackr itself fails a few thousand deep). */
export const MAX_MSGPACK_DEPTH = 1000

const ARRAY = 48
const SLOT = 8
const MAP = 64
const MAP_ENTRY = 48
const NEW_KEY = 160
const STRING = 32
const BIN = 128
const BOXED = 16
const BIGINT = 32
const DATE = 128

/**
 * The most {@link msgpackCost} charges per byte of input, so `bytes.length * MAX_COST_PER_BYTE`
 * bounds its result: the worst is a map entry whose key is an empty map and whose value is another
 * (2 bytes: 48 for the entry, 160 + 64 for the key as a new key, 64 for the value).
 */
export const MAX_COST_PER_BYTE = 168

const KEY_SLOTS = 1024
/** Per slot: the offset and length of the last key that hashed there, valid for `keyGen[slot]`. */
const keyAt = new Int32Array(KEY_SLOTS * 2)
const keyGen = new Uint32Array(KEY_SLOTS)
/** Per slot: the bytes that key is in (the values of one scan may be in several buffers). */
const keyBuf: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(KEY_SLOTS)
/** Whether `keyBuf` holds references to drop at the end of a scan. */
let keptBuffers = false
let generation = 0

/** Per nesting level: items left to read; for maps, twice the entries (key, value, key, ...). */
const left = new Float64Array(MAX_MSGPACK_DEPTH + 1)
/** Per nesting level: 0 in an array; in a map, 1 when a key comes next, 2 when a value does. */
const mapState = new Uint8Array(MAX_MSGPACK_DEPTH + 1)

/** Why {@link msgpackCost} refused some bytes. */
export type MsgpackRefusal = 'over budget' | 'too deep' | 'truncated' | 'trailing bytes' | 'unsupported type'

/** Whether the key at `at` (`len` bytes) was seen before in this scan; remembers it if not. */
function seenKey(b: Uint8Array, at: number, len: number): boolean {
  // Two keys with the same slot evict each other: they are then charged as new (never less).
  let h = len
  if (len <= 16) {
    for (let i = 0; i < len; i++) h = (Math.imul(h, 31) + b[at + i]!) | 0
  } else {
    for (let i = 0; i < 8; i++) h = (Math.imul(h, 31) + b[at + i]!) | 0
    for (let i = len - 8; i < len; i++) h = (Math.imul(h, 31) + b[at + i]!) | 0
  }
  const slot = (h ^ (h >>> 10) ^ (h >>> 20)) & (KEY_SLOTS - 1)
  if (keyGen[slot] === generation && keyAt[2 * slot + 1] === len) {
    const other = keyAt[2 * slot]!
    const ob = keyBuf[slot]!
    let same = true
    for (let i = 0; i < len; i++) {
      if (b[at + i] !== ob[other + i]) {
        same = false
        break
      }
    }
    if (same) return true
  }
  keyGen[slot] = generation
  keyBuf[slot] = b
  keptBuffers = true
  keyAt[2 * slot] = at
  keyAt[2 * slot + 1] = len
  return false
}

/**
 * An upper bound of the heap bytes that decoding `bytes` (one MessagePack value) with the
 * transport's msgpackr decoder takes, or why the bytes are refused. Stops as soon as the bound
 * exceeds `budget` (then `'over budget'`). Never throws; allocates nothing.
 * @param bytes - the encoded value
 * @param budget - the most decoding may cost, in bytes
 * @returns the cost bound (at most `budget`), or the reason for refusing the bytes
 */
export function msgpackCost(bytes: Uint8Array, budget: number): number | MsgpackRefusal {
  newScan()
  const cost = scan(bytes, budget)
  endScan()
  return cost
}

/**
 * {@link msgpackCost} of several values decoded one by one, within one budget: a map key seen in
 * one of them counts as seen in the others (as it is in one value), so many small values that
 * share their keys are not each charged for them.
 * @param values - each one encoded value
 * @param budget - the most decoding all of them may cost, in bytes
 * @returns the cost bound of them all (at most `budget`), or the reason for refusing the first one
 *   refused
 */
export function msgpackCostOfEach(values: readonly Uint8Array[], budget: number): number | MsgpackRefusal {
  newScan()
  let total = 0
  for (const v of values) {
    const cost = scan(v, budget - total)
    if (typeof cost !== 'number') {
      endScan()
      return cost
    }
    total += cost
  }
  endScan()
  return total
}

/**
 * How many of the first `values` (each one encoded value, decoded one by one, keys shared as in
 * {@link msgpackCostOfEach}) fit their budget: the longest prefix of `k` values whose cost bound is
 * at most `budgetOf(k, bytes)`, `bytes` the sum of their lengths. Stops at the first value that
 * does not fit, or is refused for another reason.
 * @returns the prefix's length (0 when the first value alone does not fit), and the reason the
 *   value after it was refused, if one was
 */
export function msgpackFittingPrefix(values: readonly Uint8Array[], budgetOf: (count: number, bytes: number) => number): { count: number; refused?: MsgpackRefusal } {
  newScan()
  let total = 0
  let bytes = 0
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!
    bytes += v.length
    const cost = scan(v, budgetOf(i + 1, bytes) - total)
    if (typeof cost !== 'number') {
      endScan()
      return { count: i, refused: cost }
    }
    total += cost
  }
  endScan()
  return { count: values.length }
}

function newScan(): void {
  generation = (generation + 1) >>> 0
  if (generation === 0) {
    keyGen.fill(0)
    generation = 1
  }
}

/** Drop the references to the scanned bytes (a frame may be large). */
function endScan(): void {
  if (keptBuffers) keyBuf.fill(undefined)
  keptBuffers = false
}

function scan(bytes: Uint8Array, budget: number): number | MsgpackRefusal {
  const b = bytes
  const end = b.length
  let pos = 0
  let cost = 0
  let depth = 0
  left[0] = 1
  mapState[0] = 0
  for (;;) {
    while (left[depth] === 0) {
      if (depth === 0) return pos === end ? cost : 'trailing bytes'
      depth--
    }
    left[depth]!--
    const state = mapState[depth]!
    const key = state === 1
    if (state !== 0) mapState[depth] = 3 - state
    if (pos >= end) return 'truncated'
    const t = b[pos++]!
    let n = -1 // a container's item count
    let map = false
    let skip = 0 // payload bytes to skip
    if (t < 0x80 || t >= 0xe0) {
      // positive / negative fixint
    } else if (t < 0x90) {
      n = t - 0x80
      map = true
    } else if (t < 0xa0) {
      n = t - 0x90
    } else if (t < 0xc0) {
      skip = t - 0xa0
      if (key) {
        if (!seenKey(b, pos, skip)) cost += NEW_KEY + 2 * skip
      } else if (skip > 0) cost += STRING + 2 * skip
    } else {
      switch (t) {
        case 0xc0: // nil
        case 0xc2: // false
        case 0xc3: // true
        case 0xcc: // uint 8
        case 0xd0: // int 8
          skip = t === 0xcc || t === 0xd0 ? 1 : 0
          break
        case 0xcd: // uint 16
        case 0xd1: // int 16
          skip = 2
          break
        case 0xca: // float 32
        case 0xce: // uint 32
        case 0xd2: // int 32
          skip = 4
          cost += BOXED
          break
        case 0xcb: // float 64
          skip = 8
          cost += BOXED
          break
        case 0xcf: // uint 64
        case 0xd3: // int 64
          skip = 8
          cost += BIGINT
          break
        case 0xc4: // bin 8
        case 0xc5: // bin 16
        case 0xc6: // bin 32
        case 0xd9: // str 8
        case 0xda: // str 16
        case 0xdb: {
          // str 32
          const w = t === 0xc4 || t === 0xd9 ? 1 : t === 0xc5 || t === 0xda ? 2 : 4
          if (pos + w > end) return 'truncated'
          skip = w === 1 ? b[pos]! : w === 2 ? (b[pos]! << 8) | b[pos + 1]! : b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!)
          pos += w
          if (t <= 0xc6) cost += BIN
          else if (key) {
            if (pos + skip > end) return 'truncated'
            if (!seenKey(b, pos, skip)) cost += NEW_KEY + 2 * skip
          } else if (skip > 0) cost += STRING + 2 * skip
          break
        }
        case 0xd4: // fixext 1
        case 0xd5: // fixext 2
        case 0xd6: // fixext 4
        case 0xd7: // fixext 8
        case 0xd8: // fixext 16
        case 0xc7: // ext 8
        case 0xc8: // ext 16
        case 0xc9: {
          // ext 32
          let len: number
          if (t >= 0xd4) len = 1 << (t - 0xd4)
          else {
            const w = t === 0xc7 ? 1 : t === 0xc8 ? 2 : 4
            if (pos + w > end) return 'truncated'
            len = w === 1 ? b[pos]! : w === 2 ? (b[pos]! << 8) | b[pos + 1]! : b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!)
            pos += w
          }
          if (pos >= end) return 'truncated'
          const type = b[pos++]!
          if (type === 0xff) cost += DATE // timestamp
          else if (type !== 0) return 'unsupported type' // 0: undefined
          skip = len
          break
        }
        case 0xdc: // array 16
        case 0xde: // map 16
          if (pos + 2 > end) return 'truncated'
          n = (b[pos]! << 8) | b[pos + 1]!
          pos += 2
          map = t === 0xde
          break
        case 0xdd: // array 32
        case 0xdf: // map 32
          if (pos + 4 > end) return 'truncated'
          n = b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!)
          pos += 4
          map = t === 0xdf
          break
        default: // 0xc1 (never used)
          return 'unsupported type'
      }
    }
    if (key && (t < 0xa0 || t > 0xbf) && t !== 0xd9 && t !== 0xda && t !== 0xdb) cost += NEW_KEY // a key that is not a string
    if (skip > 0) {
      if (pos + skip > end) return 'truncated'
      pos += skip
    }
    if (n >= 0) {
      // each item takes at least one byte, each entry two
      if ((map ? 2 * n : n) > end - pos) return 'truncated'
      cost += map ? MAP + MAP_ENTRY * n : ARRAY + SLOT * n
      if (n > 0) {
        if (depth === MAX_MSGPACK_DEPTH) return 'too deep'
        depth++
        left[depth] = map ? 2 * n : n
        mapState[depth] = map ? 1 : 0
      }
    }
    if (cost > budget) return 'over budget'
  }
}
