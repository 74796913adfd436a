import t from 'tap'
import { StorageError } from '../src/errors.js'
import { MemoryStorage } from '../src/raft/storage/memory-storage.js'
import { makeEntries, storageContract } from './fixtures/storage-contract.js'

const config = { voters: { n1: 'a' }, learners: {} }

/** A delay hook whose operations complete when the test says so. */
function manualDelay(): {
  delay: (op: 'write' | 'snapshot') => Promise<void>
  ops: { op: 'write' | 'snapshot'; resolve: () => void; reject: (e: unknown) => void }[]
} {
  const ops: { op: 'write' | 'snapshot'; resolve: () => void; reject: (e: unknown) => void }[] = []
  return {
    ops,
    delay: (op) =>
      new Promise<void>((resolve, reject) => {
        ops.push({ op, resolve, reject })
      }),
  }
}

/** Let every pending microtask and immediate run. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r))

t.test('round trip (MemoryStorage)', async (t) => {
  await storageContract(t, {
    fresh: async () => new MemoryStorage(),
    reopen: async (s) => {
      await s.close()
      return s
    },
  })
})

t.test('round trip (MemoryStorage with an async delay)', async (t) => {
  await storageContract(t, {
    fresh: async () => new MemoryStorage({ delay: () => new Promise((r) => setImmediate(r)) }),
    reopen: async (s) => {
      await s.close()
      return s
    },
  })
})

t.test('a write is applied when its delay resolves, in call order', async (t) => {
  const d = manualDelay()
  const s = new MemoryStorage({ delay: d.delay })
  let aDone = false
  let bDone = false
  const a = s.write({ entries: makeEntries(1, 2, 1) }).then(() => (aDone = true))
  const b = s.write({ entries: makeEntries(3, 1, 1), hardState: { term: 1, vote: 'n1', commit: 3 } }).then(() => (bDone = true))
  t.equal(d.ops.length, 2, 'both delays requested at once')
  t.same((await s.load()).entries, [], 'nothing applied yet')

  d.ops[1]!.resolve() // the later write completes first...
  await settle()
  t.notOk(bDone, '...but waits for the earlier one')
  t.same((await s.load()).entries, [], 'still nothing applied')

  d.ops[0]!.resolve()
  await a
  await b
  t.ok(aDone && bDone)
  const st = await s.load()
  t.same(st.entries, makeEntries(1, 3, 1), 'both applied, in order')
  t.same(st.hardState, { term: 1, vote: 'n1', commit: 3 })
  t.equal(s.appliedWrites, 2)
  t.equal(s.lastIndex, 3)
})

t.test('close drops writes whose delay has not resolved (crash model)', async (t) => {
  const d = manualDelay()
  const s = new MemoryStorage({ delay: d.delay })
  const first = s.write({ entries: makeEntries(1, 2, 1), hardState: { term: 1, vote: undefined, commit: 0 } })
  d.ops[0]!.resolve()
  await first
  const lost = s.write({ entries: makeEntries(3, 5, 1), hardState: { term: 2, vote: 'n2', commit: 2 } })
  const lostSnap = s.saveSnapshot({ meta: { index: 2, term: 1, config }, data: new Uint8Array(1) })
  await s.close()
  await t.rejects(lost, StorageError, 'pending write rejects on close')
  await t.rejects(lostSnap, StorageError, 'pending snapshot rejects on close')
  d.ops[1]!.resolve() // the old process's disk write "completes" after the crash: ignored
  d.ops[2]!.resolve()
  await settle()
  await t.rejects(s.write({ hardState: { term: 9, vote: undefined, commit: 0 } }), StorageError, 'closed storage refuses writes')

  const st = await s.load() // the restarted node
  t.same(st.entries, makeEntries(1, 2, 1), 'only the completed write survived')
  t.same(st.hardState, { term: 1, vote: undefined, commit: 0 })
  t.equal(st.snapshot, undefined)

  const again = s.write({ entries: makeEntries(3, 1, 2) })
  d.ops[3]!.resolve()
  await again
  t.same((await s.load()).entries, [...makeEntries(1, 2, 1), ...makeEntries(3, 1, 2)], 'the reopened storage takes writes')
})

t.test('a rejected delay is a sticky storage failure', async (t) => {
  const d = manualDelay()
  const s = new MemoryStorage({ delay: d.delay })
  const w1 = s.write({ entries: makeEntries(1, 1, 1) })
  d.ops[0]!.resolve()
  await w1
  const w2 = s.write({ entries: makeEntries(2, 1, 1) })
  d.ops[1]!.reject(new Error('EIO'))
  const err = await w2.then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(err instanceof StorageError, 'failed write rejects with StorageError')
  t.match((err as StorageError).cause, { message: 'EIO' }, 'carrying the cause')
  await t.rejects(s.write({ entries: makeEntries(2, 1, 1) }), StorageError, 'later writes refused')
  await t.rejects(s.saveSnapshot({ meta: { index: 1, term: 1, config }, data: new Uint8Array(0) }), StorageError, 'snapshots refused')
  t.same((await s.load()).entries, makeEntries(1, 1, 1), 'the failed write was not applied')

  await s.close()
  await s.load() // a restarted node gets a working storage again
  const w3 = s.write({ entries: makeEntries(2, 1, 1) })
  d.ops[d.ops.length - 1]!.resolve()
  await w3
  t.same((await s.load()).entries, makeEntries(1, 2, 1))
})

t.test('writes queued behind a failing one are refused too', async (t) => {
  const d = manualDelay()
  const s = new MemoryStorage({ delay: d.delay })
  const w1 = s.write({ entries: makeEntries(1, 1, 1) })
  const w2 = s.write({ entries: makeEntries(2, 1, 1) })
  d.ops[1]!.resolve()
  d.ops[0]!.reject(new Error('ENOSPC'))
  await t.rejects(w1, StorageError)
  await t.rejects(w2, StorageError)
  t.same((await s.load()).entries, [], 'neither applied')
})

t.test('snapshot data is copied', async (t) => {
  const s = new MemoryStorage()
  const data = Uint8Array.from([1, 2, 3])
  await s.saveSnapshot({ meta: { index: 3, term: 1, config }, data })
  data[0] = 9
  const st = await s.load()
  t.same(Array.from(st.snapshot!.data), [1, 2, 3])
  st.snapshot!.data[1] = 9
  t.same(Array.from((await s.load()).snapshot!.data), [1, 2, 3])
})
