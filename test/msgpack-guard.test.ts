/**
 * The pre-scan that bounds what decoding a frame costs (src/util/msgpack-guard.ts): it accepts
 * everything the transport's encoder produces, and refuses what msgpackr would blow up.
 */
import fc from 'fast-check'
import { Packr } from 'msgpackr'
import t from 'tap'
import { MAX_COST_PER_BYTE, MAX_MSGPACK_DEPTH, msgpackCost, msgpackCostOfEach } from '../src/util/msgpack-guard.js'

const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : Date.now() % 1e9
t.comment(`fast-check seed ${seed} (replay: FC_SEED=${seed})`)

/** The transport's codec. */
const packr = new Packr({ useRecords: false })

t.test('accepts whatever the transport encodes', async (t) => {
  const value = fc.anything({
    withDate: true,
    withMap: true,
    withSet: true,
    withTypedArray: true,
    withNullPrototype: true,
    withSparseArray: true,
    withBoxedValues: true,
    maxDepth: 6,
  })
  let checked = 0
  fc.assert(
    fc.property(value, (v) => {
      let bytes: Buffer
      try {
        bytes = packr.pack(v)
      } catch {
        return true // not encodable: never sent
      }
      checked++
      const cost = msgpackCost(bytes, Infinity)
      return typeof cost === 'number' && cost >= 0
    }),
    { seed, numRuns: 2000 },
  )
  t.ok(checked > 1000, `${checked} encodable values`)
  // the shapes of real traffic cost a few times their size
  const heartbeats = packr.pack({
    v: 2,
    b: Array.from({ length: 1000 }, (_, i) => ['raft:s', { t: 'app', from: 'n1', to: 'n2', term: 7, prevIndex: 1000 + i, prevTerm: 7, entries: [], commit: 999 + i }]),
  })
  const cost = msgpackCost(heartbeats, Infinity) as number
  t.ok(cost < 12 * heartbeats.length, `1,000 heartbeats: ${(cost / heartbeats.length).toFixed(1)} x their size`)
})

t.test('bounds and refusals', async (t) => {
  const maps = Buffer.alloc(5 + 1_000_000, 0x80) // an array32 of a million empty maps
  maps[0] = 0xdd
  maps.writeUInt32BE(1_000_000, 1)
  t.equal(msgpackCost(maps, 16 * maps.length), 'over budget', 'a million empty maps: over 16 x')
  t.ok((msgpackCost(maps, Infinity) as number) >= 64 * 1_000_000, 'each costs at least 64 bytes')
  t.equal(msgpackCost(maps.subarray(0, 1000), Infinity), 'truncated', 'fewer items than announced')
  t.equal(msgpackCost(Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), Infinity), 'truncated', 'a huge count without the bytes')
  t.equal(msgpackCost(Buffer.from([0xc0, 0xc0]), Infinity), 'trailing bytes')
  t.equal(msgpackCost(Buffer.from([0xc1]), Infinity), 'unsupported type')
  const records = new Packr({ useRecords: true }).pack([{ a: 1, b: 2 }, { a: 3, b: 4 }])
  t.equal(msgpackCost(records, Infinity), 'unsupported type', 'msgpackr record definitions')
  t.equal(msgpackCost(Buffer.from([0xd4, 0x73, 0x00, 0x90]), Infinity), 'unsupported type', "msgpackr's Set extension")
  t.equal(msgpackCost(Buffer.from([0xd4, 0x62, 0x00, 0x90]), Infinity), 'unsupported type', 'bundled strings')
  const deep = (n: number): Buffer => Buffer.concat([Buffer.alloc(n, 0x91), Buffer.from([0xc0])])
  t.type(msgpackCost(deep(MAX_MSGPACK_DEPTH), Infinity), 'number', `${MAX_MSGPACK_DEPTH} levels`)
  t.equal(msgpackCost(deep(MAX_MSGPACK_DEPTH + 1), Infinity), 'too deep')
  // a key seen before costs less than a new one
  const same = msgpackCost(packr.pack([{ term: 1 }, { term: 1 }]), Infinity) as number
  const fresh = msgpackCost(packr.pack([{ term: 1 }, { mert: 1 }]), Infinity) as number
  t.ok(same < fresh, `repeated key ${same} < new key ${fresh}`)
  t.type(msgpackCost(packr.pack({ at: new Date(), u: undefined, n: 2 ** 40, f: 0.5, big: 2n ** 60n, bin: new Uint8Array(3) }), Infinity), 'number')
})

t.test('no input costs more than MAX_COST_PER_BYTE per byte', async (t) => {
  // the costliest tokens, as keys, values and array elements, nested
  const costly = [[0x80], [0x90], [0xc4, 0x00], [0xc0], [0xa1, 0x61], [0xd6, 0xff, 0, 0, 0, 1], [0xd3, 1, 2, 3, 4, 5, 6, 7, 8], [0xcb, 1, 2, 3, 4, 5, 6, 7, 8]]
  const item = fc.letrec<{ v: number[] }>((tie) => ({
    v: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.constantFrom(...costly),
      fc.array(tie('v'), { maxLength: 5 }).map((xs) => [0x90 + xs.length, ...xs.flat()]),
      fc.array(fc.tuple(tie('v'), tie('v')), { maxLength: 5 }).map((es) => [0x80 + es.length, ...es.flat(2)]),
    ),
  })).v
  fc.assert(
    fc.property(item, (bytes) => {
      const cost = msgpackCost(Buffer.from(bytes), Infinity)
      return typeof cost !== 'number' || cost <= MAX_COST_PER_BYTE * bytes.length
    }),
    { seed, numRuns: 3000 },
  )
  const worst = Buffer.from([0x81, 0x80, 0x80])
  t.ok((msgpackCost(worst, Infinity) as number) > 100 * worst.length, 'the worst case is near the bound')
})

t.test('values decoded one by one share one budget and their keys', async (t) => {
  const a = packr.pack({ term: 1, name: 'x' })
  const b = packr.pack({ term: 2, name: 'y' })
  const alone = (msgpackCost(a, Infinity) as number) + (msgpackCost(b, Infinity) as number)
  const both = msgpackCostOfEach([a, b], Infinity) as number
  t.ok(both < alone, `keys seen in the first value are not charged again in the second (${both} < ${alone})`)
  t.equal(msgpackCostOfEach([a, b], both), both, 'within a budget of exactly their cost')
  t.equal(msgpackCostOfEach([a, b], both - 1), 'over budget', 'the budget is shared, not per value')
  t.equal(msgpackCostOfEach([a, Buffer.from([0xc1]), b], Infinity), 'unsupported type', 'the first refusal is the answer')
  t.equal(msgpackCostOfEach([Buffer.concat([a, b])], Infinity), 'trailing bytes', 'each binary holds exactly one value')
  t.equal(msgpackCostOfEach([], 0), 0)
  // keys seen in an earlier scan do not count as seen in a later one
  msgpackCostOfEach([a], Infinity)
  t.equal(msgpackCostOfEach([b], Infinity), msgpackCost(b, Infinity))
})
