/**
 * Log entries encoded once (src/raft/entry-codec.ts): the leader's storage and every follower's
 * AppendEntries share one encoding per entry, and a follower stores the bytes it received.
 */
import t from 'tap'
import { CACHED_ENTRIES, commandCopy, decodeEntries, entryBytes, unpackEntry } from '../src/raft/entry-codec.js'
import type { Entry } from '../src/raft/types.js'

const entry = (index: number, data: unknown = { c: 'register', name: `n${index}` }): Entry => ({ index, term: 3, type: 'cmd', data })

t.test('an entry is encoded once, as the tuple the storage keeps', async (t) => {
  const e = entry(10)
  const b = entryBytes(e)
  t.equal(entryBytes(e), b, 'the same bytes the second time (not encoded again)')
  t.same(unpackEntry(b), [10, 3, 'cmd', { c: 'register', name: 'n10' }])
  const other = entry(10)
  t.not(entryBytes(other), b, 'another entry at the same index gets its own bytes (a truncated log)')
  t.same(entryBytes(e), b, 'and the first still encodes alike')
})

t.test("a command proposed here is encoded once: its entry's bytes are made from the command's, alike", async (t) => {
  const commands: unknown[] = [
    { c: 'register', name: 'n', ref: { sworm: 's', node: 'n1', inc: 'i', id: 7 } },
    { c: 'supervise', name: 'é'.repeat(40) + '🙂', spec: { module: './m.js', fn: 'f', args: [1, -2.5, 'x'.repeat(300), [null, true], { a: new Date(9) }] }, ue: 1 },
    { c: 'handedOff', name: 'h', epoch: 2 ** 40, state: new Uint8Array([1, 2, 3]), none: undefined },
    { big: 'y'.repeat(70_000), n: 2 ** 53 - 1 },
  ]
  let index = 1000
  for (const cmd of commands) {
    const copy = commandCopy(cmd)
    t.same(copy, cmd, 'the copy decodes as the command')
    t.not(copy, cmd, 'a copy, not the caller object')
    const e: Entry = { index: ++index, term: 2 ** 33, type: 'cmd', data: copy }
    const b = entryBytes(e)
    const whole: Entry = { index: e.index, term: e.term, type: 'cmd', data: structuredClone(copy) }
    t.same(Buffer.from(b), Buffer.from(entryBytes(whole)), 'the same bytes as the whole tuple encoded at once')
    t.same(unpackEntry(b), [e.index, e.term, 'cmd', cmd])
  }
})

t.test('received bytes decode to entries and are kept as their encoding', async (t) => {
  const sent = [entry(21), entry(22, { c: 'nodeDown', node: 'n2', inc: 'x', at: new Date(5) })]
  const ents = sent.map((e) => new Uint8Array(entryBytes(e)))
  const got = decodeEntries(ents)
  if (typeof got === 'string') throw new Error(got)
  t.same(got, sent, 'the same entries')
  t.same(entryBytes(got[0]!), ents[0], "the follower's storage writes the received bytes (a copy)")
  t.equal(entryBytes(got[0]!), entryBytes(got[0]!), 'kept: not encoded again')
  t.same(entryBytes(got[1]!), ents[1])
})

t.test('received bytes are copied: a cached entry does not keep its frame in memory', async (t) => {
  const frame = new Uint8Array(1 << 20)
  const bytes = entryBytes(entry(31))
  frame.set(bytes, 100)
  const got = decodeEntries([frame.subarray(100, 100 + bytes.length)])
  if (typeof got === 'string') throw new Error(got)
  const kept = entryBytes(got[0]!)
  t.not(kept.buffer, frame.buffer, 'not a view into the frame (failed on 2ca1e00)')
  t.ok(kept.buffer.byteLength < 4096, `a small buffer of its own (${kept.buffer.byteLength} B)`)
  frame.fill(0)
  t.same(unpackEntry(kept), [31, 3, 'cmd', { c: 'register', name: 'n31' }], 'and unaffected by what happens to the frame')
})

t.test('the entries of a message share one buffer of their own size; a binary in their data keeps none of it', async (t) => {
  // (a buffer per entry cost a follower of a node holding 300k workers 3 s of its event loop,
  // session 16: an ArrayBuffer each. Only the encoding cache holds these buffers, and it holds
  // the last 8,192 entries, so it keeps the messages they came in and no more.)
  const small = entry(41, { c: 'x', bin: new Uint8Array(16).fill(7) })
  const big = entry(42, { c: 'y', pad: 'p'.repeat(1 << 20) })
  const frame = new Uint8Array(4 << 20)
  const a = entryBytes(small)
  const b = entryBytes(big)
  frame.set(a, 10)
  frame.set(b, 10 + a.length)
  const got = decodeEntries([frame.subarray(10, 10 + a.length), frame.subarray(10 + a.length, 10 + a.length + b.length)])
  if (typeof got === 'string') throw new Error(got)
  const kept = entryBytes(got[0]!)
  t.equal(kept.buffer, entryBytes(got[1]!).buffer, 'one buffer for the message')
  t.equal(kept.buffer.byteLength, a.length + b.length, 'of the size of its entries, not of the frame')
  const bin = (got[0]!.data as { bin: Uint8Array }).bin
  t.ok(bin.buffer.byteLength < 4096, `a binary in its data keeps only its own bytes (${bin.buffer.byteLength} B)`)
  t.same([...bin], new Array(16).fill(7))
})

t.test('what cannot be an entry is refused, never thrown', async (t) => {
  t.equal(decodeEntries('x'), 'bad ents')
  t.equal(decodeEntries([1]), 'bad ents')
  t.match(decodeEntries([new Uint8Array([0xc1])]), /undecodable/)
  t.match(decodeEntries([new Uint8Array([0x92, 0x01])]), /undecodable/, 'truncated')
  t.equal(decodeEntries([entryBytes(entry(1)).subarray(0, 3)]), 'undecodable entry in app: truncated')
  t.equal(decodeEntries([new Uint8Array([0x93, 1, 2, 3])]), 'bad entry in app', 'a tuple of three')
  t.same(decodeEntries([]), [])
})

t.test('the cache is bounded: an entry evicted is encoded again, alike', async (t) => {
  const e = entry(5)
  const b = entryBytes(e)
  entryBytes(entry(5 + CACHED_ENTRIES)) // takes its slot
  const again = entryBytes(e)
  t.not(again, b)
  t.same(again, b)
})

t.test('entries costlier together than one append allows: the longest prefix that fits is taken (session 29)', async (t) => {
  // each about 140 bytes of 130 empty objects: within an entry's budget alone, not 40 in one append
  const ents = Array.from({ length: 40 }, (_, i) => entryBytes(entry(5000 + i, Array.from({ length: 130 }, () => ({})))))
  const got = decodeEntries(ents)
  if (typeof got === 'string') return void t.fail(`refused: ${got}`)
  const k = got.length
  t.ok(k >= 1 && k < ents.length, `a prefix: ${k} of ${ents.length}`)
  t.same(
    got.map((e) => e.index),
    Array.from({ length: k }, (_, i) => 5000 + i),
    'the first entries, in order',
  )
  const more = decodeEntries(ents.slice(0, k + 1))
  t.equal(typeof more !== 'string' && more.length, k, `${k + 1} do not fit together: ${k} again`)
  const all = decodeEntries(ents.slice(0, k))
  t.equal(typeof all !== 'string' && all.length, k, `the ${k} alone are taken whole`)
  // one entry that does not fit alone: the message is refused
  const alone = decodeEntries([entryBytes(entry(6000, Array.from({ length: 300_000 }, () => ({}))))])
  t.match(alone, /undecodable entry in app/, 'an entry over its own budget is refused')
})
