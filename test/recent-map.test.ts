import t from 'tap'
import { RecentMap } from '../src/util/recent-map.js'

t.test('an entry is kept keepMs at least, and forgotten within a slice more', async (t) => {
  const m = new RecentMap<string, number>(1000, 4)
  m.set('a', 1, 0)
  m.set('b', 2, 400)
  for (const now of [0, 500, 999]) {
    m.prune(now)
    t.equal(m.get('a'), 1, `a held at ${now}`)
  }
  m.prune(1400)
  t.notOk(m.has('a'), 'a forgotten by keepMs + a slice (1,250 ms)')
  t.equal(m.get('b'), 2, 'b (added at 400) still held at 1,400')
  m.prune(1650)
  t.notOk(m.has('b'), 'b forgotten by 400 + 1,250')
  t.equal(m.size, 0)
})

t.test('set keeps the time of an entry it holds; replace and delete act only on held entries', async (t) => {
  const m = new RecentMap<string, string | null>(100, 2)
  m.set('k', null, 0)
  t.ok(m.has('k'), 'a null value is held')
  t.equal(m.get('k'), null)
  m.set('k', 'answer', 90) // an update, not a new entry at 90
  m.prune(160)
  t.notOk(m.has('k'), 'forgotten as added at 0, not at 90')
  t.notOk(m.replace('k', 'x'), 'replace does not add')
  t.notOk(m.has('k'))
  m.set('j', 'v', 200)
  t.ok(m.replace('j', 'w'))
  t.equal(m.get('j'), 'w')
  t.ok(m.delete('j'))
  t.notOk(m.delete('j'))
  m.set('z', 'v', 300)
  m.clear()
  t.equal(m.size, 0)
})

t.test('a window of many entries is held in maps of a slice each, never in one', async (t) => {
  // 10,000 entries a second over 20 s with a 10 s window: a single Map used as a queue would hold
  // 100,000 entries and rehash them all at once now and then (the stall this structure avoids)
  const m = new RecentMap<number, number>(10_000, 8)
  let largest = 0
  for (let i = 0; i < 200_000; i++) {
    const now = i / 10 // ms
    m.set(i, i, now)
    if (i % 100 === 0) m.prune(now)
    largest = Math.max(largest, m.largestSlice)
  }
  t.ok(m.size >= 100_000 && m.size <= 100_000 + 12_500 + 100, `the window holds ${m.size} entries (10 s at 10k/s, plus up to a slice)`)
  t.ok(largest <= 12_500, `no map held more than a slice's entries (largest: ${largest})`)
  t.ok(m.has(199_999) && m.has(100_000), 'the last 10 s are held')
  t.notOk(m.has(80_000), 'entries past the window and a slice are gone')
})
