/**
 * Snapshot transfer in chunks, on the pure core: a follower behind a compacted log receives the
 * leader's snapshot chunk by chunk, within a window, and gets it whole and intact through lost
 * chunks, a corrupt chunk, a cut link, a leader change, and restarts in the middle of the
 * transfer and of the install. Randomized cases print their seed.
 */
import t from 'tap'
import type { MsgSnapshot, NodeId, RaftMessage, Snapshot } from '../src/raft/types.js'
import { CoreHarness, coreConfig } from './sim/core-harness.js'
import { seededRandom } from '../src/testkit/sim.js'

const CHUNK = 1024
const WINDOW = 3

/** A cluster of a, b, c where `a` leads and `c` fell behind a log `a` compacted into `data`. */
function behind(data: Uint8Array, seed = 7): { h: CoreHarness; snap: Snapshot } {
  const h = new CoreHarness(['a', 'b', 'c'], coreConfig(['a', 'b', 'c']), { seed, snapshotChunkBytes: CHUNK, snapshotWindow: WINDOW })
  h.elect('a')
  h.isolate('c')
  for (let i = 0; i < 20; i++) h.core('a').propose(i)
  h.settle()
  const st = h.core('a').status()
  const snap: Snapshot = { meta: { index: st.applied, term: st.term, config: st.config }, data }
  h.core('a').compact(snap)
  return { h, snap }
}

/** Bytes 0..n-1 of a recognizable pattern. */
function pattern(n: number, salt = 0): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt) & 0xff
  return b
}

const chunks = (m: RaftMessage): m is MsgSnapshot => m.t === 'snap'

/**
 * Cut `who` off from everyone when the chunk at `offset` (from `from`, if given) is about to be
 * delivered, once (that chunk is lost); then heal and tick once. Returns whether it happened.
 */
function cutAtChunk(h: CoreHarness, offset: number, who: NodeId, seen?: (m: MsgSnapshot) => void, from?: NodeId): boolean {
  let cut = false
  h.deliver = (m) => {
    if (!chunks(m)) return m
    seen?.(m)
    if (m.offset !== offset || cut || (from !== undefined && m.from !== from)) return m
    cut = true
    h.isolate(who)
    return undefined
  }
  h.heal()
  h.tickAll(1)
  return cut
}

/** Tick every member until `c` holds the snapshot at `index`, or fail after `max` ticks. */
function untilInstalled(h: CoreHarness, index: number, max = 400): void {
  h.tickUntil(['a', 'b', 'c'], () => h.core('c').status().snapshotIndex >= index, max)
}

t.test('a snapshot travels in chunks within the window and arrives whole', async (t) => {
  const data = pattern(10 * CHUNK + 17)
  const { h, snap } = behind(data)
  const offsets: number[] = []
  let maxAhead = 0
  h.deliver = (m) => {
    if (chunks(m)) {
      offsets.push(m.offset)
      t.ok(m.data.length <= CHUNK, 'no chunk is bigger than the chunk size')
      const pr = h.core('a').progressOf('c')!.snapshot
      if (pr) maxAhead = Math.max(maxAhead, m.offset + m.data.length - pr.acked)
    }
    return m
  }
  h.heal()
  untilInstalled(h, snap.meta.index)
  t.same(offsets, Array.from({ length: 11 }, (_, i) => i * CHUNK), 'each chunk sent once, in order')
  t.ok(maxAhead <= WINDOW * CHUNK, `at most the window unacknowledged (${maxAhead} bytes)`)
  t.same(h.disks.get('c')!.snapshot!.data, data, 'the installed snapshot is the leader’s, byte for byte')
  t.equal(h.core('c').status().commit, h.core('a').status().commit)
  t.equal(h.core('a').progressOf('c')!.snapshot, undefined, 'the leader replicates to c again')
  t.equal(h.core('c').status().receiving, undefined, 'nothing left half-received')
})

t.test('an empty snapshot travels as one empty chunk', async (t) => {
  const { h, snap } = behind(new Uint8Array(0))
  h.heal()
  untilInstalled(h, snap.meta.index)
  t.equal(h.disks.get('c')!.snapshot!.data.length, 0)
})

t.test('lost chunks and lost answers: the transfer resumes until the snapshot is whole', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const data = pattern(20 * CHUNK + 5, seed)
    const { h, snap } = behind(data, seed)
    const r = seededRandom(seed)
    let lost = 0
    h.deliver = (m) => {
      if ((m.t === 'snap' || m.t === 'snapResp') && r() < 0.3) {
        lost++
        return undefined
      }
      return m
    }
    h.heal()
    untilInstalled(h, snap.meta.index, 2000)
    t.same(h.disks.get('c')!.snapshot!.data, data, `seed ${seed}: whole after ${lost} lost messages`)
    t.ok(lost > 0, `seed ${seed}: messages were lost`)
  }
})

t.test('a corrupt chunk is refused and sent again', async (t) => {
  const data = pattern(6 * CHUNK)
  const { h, snap } = behind(data)
  let corrupted = 0
  let refused = 0
  h.deliver = (m) => {
    if (chunks(m) && m.offset === 2 * CHUNK && corrupted === 0) {
      corrupted++
      const bad = new Uint8Array(m.data)
      bad[100] ^= 0x40
      return { ...m, data: bad }
    }
    if (m.t === 'snapResp' && m.retry) refused++
    return m
  }
  h.heal()
  untilInstalled(h, snap.meta.index)
  t.equal(corrupted, 1)
  t.ok(refused >= 1, 'the follower asked for the chunk again')
  t.same(h.disks.get('c')!.snapshot!.data, data, 'the installed snapshot has no corrupt byte')
})

t.test('a link cut in the middle of a transfer: it resumes where the follower is, not from the start', async (t) => {
  const data = pattern(12 * CHUNK)
  const { h, snap } = behind(data)
  const offsets: number[] = []
  t.ok(cutAtChunk(h, 5 * CHUNK, 'c', (m) => offsets.push(m.offset)), 'the link was cut mid-transfer')
  const held = h.core('c').status().receiving
  t.ok(held && held.received >= 4 * CHUNK && held.received < data.length, `c holds part of it (${held?.received} bytes)`)
  h.tickSome(['a', 'b'], 30) // the leader keeps going with b alone
  h.heal()
  untilInstalled(h, snap.meta.index)
  t.equal(offsets.filter((o) => o === 0).length, 1, 'the first chunk was sent only once')
  t.same(h.disks.get('c')!.snapshot!.data, data)
})

t.test('a leader change in the middle of a transfer: the new leader sends its own snapshot', async (t) => {
  const data = pattern(12 * CHUNK, 1)
  const { h } = behind(data)
  // b compacts too, into other bytes at a later index
  for (let i = 0; i < 5; i++) h.core('a').propose(`more${i}`)
  h.settle()
  const bst = h.core('b').status()
  const bData = pattern(9 * CHUNK + 3, 2)
  h.core('b').compact({ meta: { index: bst.applied, term: bst.term, config: bst.config }, data: bData })
  t.ok(cutAtChunk(h, 4 * CHUNK, 'a', undefined, 'a'), 'a lost its links mid-transfer')
  t.ok(h.core('c').status().receiving, 'c holds part of a’s snapshot')
  h.tickUntil(['b', 'c'], () => h.core('b').status().role === 'leader', 400)
  untilInstalledBy(h, ['b', 'c'], bst.applied)
  t.same(h.disks.get('c')!.snapshot!.data, bData, 'c installed b’s snapshot, not a mix')
  h.heal()
  h.tickAll(30)
  t.equal(h.core('a').status().leader, 'b')
  t.equal(h.core('c').status().commit, h.core('b').status().commit)
})

function untilInstalledBy(h: CoreHarness, ids: NodeId[], index: number): void {
  h.tickUntil(ids, () => h.core('c').status().snapshotIndex >= index, 600)
}

t.test('a follower restarted in the middle of a transfer asks for the start again', async (t) => {
  const data = pattern(10 * CHUNK, 3)
  const { h, snap } = behind(data)
  let restarted = false
  h.deliver = (m) => {
    if (chunks(m) && m.offset === 6 * CHUNK && !restarted) {
      restarted = true
      h.boot('c') // its partial copy was in memory only
      return m
    }
    return m
  }
  h.heal()
  untilInstalled(h, snap.meta.index)
  t.ok(restarted)
  t.same(h.disks.get('c')!.snapshot!.data, data)
})

t.test('a follower that crashes while installing (before its write) gets the snapshot again', async (t) => {
  const data = pattern(5 * CHUNK, 4)
  const { h, snap } = behind(data)
  let crashed = false
  h.deliver = (m) => {
    if (chunks(m) && m.offset + m.data.length === m.total && !crashed) {
      crashed = true
      // the last chunk arrives, and the node dies before it persists the install
      h.core('c').step(m)
      h.boot('c')
      return undefined
    }
    return m
  }
  h.heal()
  untilInstalled(h, snap.meta.index)
  t.ok(crashed)
  t.same(h.disks.get('c')!.snapshot!.data, data)
  t.equal(h.core('c').status().commit, h.core('a').status().commit)
})

t.test('a transfer the leader gave up on is not kept forever', async (t) => {
  const data = pattern(8 * CHUNK, 5)
  const { h } = behind(data)
  t.ok(cutAtChunk(h, 3 * CHUNK, 'c'))
  t.ok(h.core('c').status().receiving, 'c holds part of a snapshot')
  h.tickSome(['c'], 30) // 3 election timeouts without a chunk: still kept (a reconnect resumes it)
  t.ok(h.core('c').status().receiving, 'kept across a short cut')
  h.tickSome(['c'], 20)
  t.equal(h.core('c').status().receiving, undefined, 'dropped after four election timeouts without a chunk')
})
