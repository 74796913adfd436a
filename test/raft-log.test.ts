/**
 * The Raft log's frozen segments (`src/raft/log.ts`): applied entries kept as bytes must answer
 * every question exactly as the entries as objects did. A seeded model check: random appends,
 * truncations, freezes, compactions and installs, the log against a plain array after each.
 * Replay a failure with LOG_SEED=<seed>.
 */
import t from 'tap'
import { entryBytes, entryFromBytes } from '../src/raft/entry-codec.js'
import { RaftLog, setFrozenSegment } from '../src/raft/log.js'
import type { ClusterConfig, Entry, EntryType, Snapshot } from '../src/raft/types.js'
import { seededRandom } from '../src/testkit/sim.js'

const codec = { encode: entryBytes, decode: entryFromBytes }
const conf = (k: number): ClusterConfig => ({ voters: { [`v${k}`]: `addr${k}` }, learners: {} })
const snapshotAt = (index: number, term: number, config: ClusterConfig): Snapshot => ({ meta: { index, term, config }, data: Uint8Array.of(index & 255) })

/** The model: a snapshot's index, term and config, and the entries after it. */
interface Model {
  snapIdx: number
  snapTerm: number
  snapConf: ClusterConfig | undefined
  entries: Entry[]
}
const last = (m: Model): number => m.snapIdx + m.entries.length
const termOf = (m: Model, i: number): number | undefined => (i === m.snapIdx ? m.snapTerm : i < m.snapIdx || i > last(m) ? undefined : m.entries[i - m.snapIdx - 1]!.term)

const fromEnv = process.env.LOG_SEED ? Number(process.env.LOG_SEED) : undefined
const base = fromEnv ?? Math.floor(Math.random() * 1e9)
const runs = fromEnv !== undefined ? 1 : 150

t.test(`frozen segments answer as the entries did (${runs} runs from seed ${base})`, async (t) => {
  for (let k = 0; k < runs; k++) {
    const seed = base + k
    const r = seededRandom(seed)
    const int = (n: number): number => Math.floor(r() * n)
    setFrozenSegment(1 + int(8))
    const m: Model = { snapIdx: 0, snapTerm: 0, snapConf: undefined, entries: [] }
    const log = new RaftLog(undefined, [], codec)
    let term = 1
    const fail = (what: string, got: unknown, want: unknown): void => {
      t.fail(`seed ${seed}: ${what} (replay: LOG_SEED=${seed})`, { got, want })
    }
    let ok = true
    for (let step = 0; step < 120 && ok; step++) {
      const x = r()
      if (x < 0.4) {
        if (r() < 0.2) term++
        const n = 1 + int(12)
        const add: Entry[] = []
        for (let j = 0; j < n; j++) {
          const type: EntryType = r() < 0.1 ? 'conf' : r() < 0.1 ? 'noop' : 'cmd'
          add.push({ index: last(m) + j + 1, term, type, data: type === 'conf' ? conf(int(1000)) : type === 'cmd' ? { c: 'register', name: `n${int(1e6)}`, at: step } : null })
        }
        m.entries.push(...add.map((e) => structuredClone(e)))
        log.append(add)
      } else if (x < 0.55 && last(m) > m.snapIdx) {
        const from = m.snapIdx + 1 + int(last(m) - m.snapIdx)
        m.entries.length = from - m.snapIdx - 1
        log.truncateFrom(from)
      } else if (x < 0.8) {
        log.freezeUpTo(m.snapIdx + int(last(m) - m.snapIdx + 1))
      } else if (x < 0.95 && last(m) > m.snapIdx) {
        const idx = m.snapIdx + 1 + int(last(m) - m.snapIdx)
        let c = m.snapConf ?? { voters: {}, learners: {} }
        for (const e of m.entries) if (e.index <= idx && e.type === 'conf') c = e.data as ClusterConfig
        const snapTerm = termOf(m, idx)!
        m.entries = m.entries.slice(idx - m.snapIdx)
        m.snapIdx = idx
        m.snapTerm = snapTerm
        m.snapConf = c
        log.compact(snapshotAt(idx, snapTerm, c))
      } else if (x >= 0.95) {
        const idx = last(m) + int(20)
        const c = conf(int(1000))
        m.entries = []
        m.snapIdx = idx
        m.snapTerm = term
        m.snapConf = c
        log.install(snapshotAt(idx, term, c))
      }
      // every question, against the model
      if (log.lastIndex() !== last(m)) ok = (fail('lastIndex', log.lastIndex(), last(m)), false)
      else if (log.lastTerm() !== (m.entries.length ? m.entries[m.entries.length - 1]!.term : m.snapTerm)) ok = (fail('lastTerm', log.lastTerm(), m.snapTerm), false)
      for (let i = m.snapIdx - 2; ok && i <= last(m) + 2; i++) if (log.termAt(i) !== termOf(m, i)) ok = (fail(`termAt(${i})`, log.termAt(i), termOf(m, i)), false)
      if (!ok) break
      const after = m.snapIdx + int(last(m) - m.snapIdx + 1)
      const upTo = after + int(last(m) - after + 1)
      const want = m.entries.slice(after - m.snapIdx, upTo - m.snapIdx)
      if (JSON.stringify(log.between(after, upTo)) !== JSON.stringify(want)) ok = (fail(`between(${after}, ${upTo})`, log.between(after, upTo), want), false)
      else if (JSON.stringify(log.between(after)) !== JSON.stringify(m.entries.slice(after - m.snapIdx))) ok = (fail(`between(${after})`, log.between(after), undefined), false)
      const from = after + 1
      const max = 1 + int(30)
      const wantFrom = m.entries.slice(from - m.snapIdx - 1, from - m.snapIdx - 1 + max)
      if (ok && JSON.stringify(log.from(from, max)) !== JSON.stringify(wantFrom)) ok = (fail(`from(${from}, ${max})`, log.from(from, max), wantFrom), false)
      // with a byte budget: frozen entries stop at the first that would pass it (one at least)
      const maxBytes = int(400)
      const frozenTo = m.snapIdx + log.frozenCount
      let bytes = 0
      let cut = wantFrom.length
      for (let j = 0; j < wantFrom.length && wantFrom[j]!.index <= frozenTo; j++) {
        const size = entryBytes(wantFrom[j]!).length
        if (j > 0 && bytes + size > maxBytes) {
          cut = j
          break
        }
        bytes += size
      }
      const wantBudget = wantFrom.slice(0, cut)
      if (ok && JSON.stringify(log.from(from, max, maxBytes)) !== JSON.stringify(wantBudget)) ok = (fail(`from(${from}, ${max}, ${maxBytes})`, log.from(from, max, maxBytes), wantBudget), false)
      const confs = m.entries.filter((e) => e.type === 'conf')
      const wantConf = confs.length ? confs[confs.length - 1]!.data : (m.snapConf ?? { voters: {}, learners: {} })
      if (ok && JSON.stringify(log.latestConfig()) !== JSON.stringify(wantConf)) ok = (fail('latestConfig', log.latestConfig(), wantConf), false)
      if (ok && log.lastConfigIndex() !== (confs.length ? confs[confs.length - 1]!.index : 0)) ok = (fail('lastConfigIndex', log.lastConfigIndex(), confs.at(-1)?.index ?? 0), false)
    }
    if (!ok) return
  }
  setFrozenSegment()
  t.pass(`${runs} runs of 120 operations: every answer as the plain log's`)
})

t.test('applied entries go into segments of bytes, whole segments at a time', async (t) => {
  setFrozenSegment(100)
  t.teardown(() => setFrozenSegment())
  const log = new RaftLog(undefined, [], codec)
  const es: Entry[] = Array.from({ length: 350 }, (_, i) => ({ index: i + 1, term: 1, type: 'cmd', data: { i } }))
  log.append(es)
  log.freezeUpTo(99)
  t.equal(log.frozenCount, 0, 'not a whole segment applied: nothing frozen')
  log.freezeUpTo(320)
  t.equal(log.frozenCount, 300, 'three segments frozen, the rest left as objects')
  t.same(log.between(95, 105).map((e) => e.data), Array.from({ length: 10 }, (_, i) => ({ i: 95 + i })), 'read back across the boundary')
  log.compact(snapshotAt(250, 1, conf(1)))
  t.equal(log.segmentCount, 1, 'a compaction drops the segments it covers whole (the one it cuts stays)')
  t.equal(log.termAt(251), 1)
  t.equal(log.termAt(249), undefined)
  log.compact(snapshotAt(320, 1, conf(1)))
  t.equal(log.segmentCount, 0)
  t.same(log.from(321, 5).map((e) => e.index), [321, 322, 323, 324, 325])
  const plain = new RaftLog(undefined, es)
  plain.freezeUpTo(350)
  t.equal(plain.frozenCount, 0, 'without a codec nothing freezes')
})

t.test('a byte budget spares decoding frozen entries that would not be sent', async (t) => {
  setFrozenSegment(64)
  t.teardown(() => setFrozenSegment())
  let decoded = 0
  const counting = { encode: entryBytes, decode: (b: Uint8Array): Entry => (decoded++, entryFromBytes(b)) }
  const log = new RaftLog(undefined, [], counting)
  const big = 'x'.repeat(1000)
  log.append(Array.from({ length: 256 }, (_, i): Entry => ({ index: i + 1, term: 1, type: 'cmd', data: { i, big } })))
  log.freezeUpTo(256)
  t.equal(log.frozenCount, 256)
  const size = entryBytes({ index: 1, term: 1, type: 'cmd', data: { i: 1, big } }).length
  const got = log.from(1, 256, 3 * size + 10)
  t.same(
    got.map((e) => e.index),
    [1, 2, 3],
    'the entries that fit',
  )
  t.ok(decoded <= 3, `decoded ${decoded} entries for 3 taken (without the budget: 256)`)
  decoded = 0
  t.equal(log.from(1, 256, 10).length, 1, 'one entry at least, whatever its size')
  t.equal(log.from(1, 256).length, 256, 'no budget: every entry asked for')
})
