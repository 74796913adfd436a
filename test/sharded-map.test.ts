import t from 'tap'
import { ShardedMap } from '../src/util/sharded-map.js'

t.test('a map: get, set, delete, size, and the same order for the same writes', async (t) => {
  const build = (): ShardedMap<string, number> => {
    const m = new ShardedMap<string, number>()
    for (let i = 0; i < 5000; i++) m.set(`k${i}`, i)
    for (let i = 0; i < 5000; i += 3) m.delete(`k${i}`)
    m.set('k1', -1) // an update keeps its place
    return m
  }
  const a = build()
  const b = build()
  t.equal(a.size, 5000 - 1667)
  t.equal(a.get('k1'), -1)
  t.notOk(a.has('k0'))
  t.same(a.keyArray(), [...b.keys()], 'same writes, same order (and keyArray agrees with keys())')
  t.same([...a.values()].length, a.size)
  const n = new ShardedMap<number, string>()
  for (const k of [0, -1, 1.5, Number.NaN, 2 ** 40, 7]) n.set(k, String(k))
  t.equal(n.size, 6, 'odd numbers are keys too')
  t.equal(n.get(1.5), '1.5')
  t.ok(Number.isNaN(Number(n.get(Number.NaN))), 'NaN found again')
  n.clear()
  t.equal(n.size, 0)
})

t.test('the shards of ids grow at different times: no moment when most of them rehash at once', async (t) => {
  // A Map doubles its capacity when its size reaches a power of two, rehashing every entry. Were
  // the shards equal, all would reach it within a few insertions (the 1.4 s stall this avoids).
  // Worker ids are such keys: the registry's index of refs and every node's table of its workers.
  const m = new ShardedMap<number, number>()
  const from = 200_000
  const to = 1_100_000
  const window = 2_000
  const grownAt: number[] = []
  for (let i = 0; i < to; i++) {
    m.set(i, i)
    const size = m.shardSizeOf(i)
    if (i >= from && size >= 1024 && (size & (size - 1)) === 0) grownAt.push(i)
  }
  let most = 0
  for (let a = 0, b = 0; b < grownAt.length; b++) {
    while (grownAt[b]! - grownAt[a]! >= window) a++
    most = Math.max(most, b - a + 1)
  }
  t.ok(grownAt.length >= 64, `${grownAt.length} shards doubled between ${from} and ${to} ids`)
  t.ok(most <= 4, `at most ${most} shards doubled within any ${window} insertions (64 did, with equal shards)`)
})
