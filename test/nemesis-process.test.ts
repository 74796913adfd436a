/**
 * The short real-process nemesis of every CI run: two seeded runs of `test/real/nemesis.ts`
 * (5 node processes, SIGKILL / stop / SIGSTOP (the leader right after a partition among them) /
 * partitions / wiped disks / hostile connections / worker crashes / drains under client load, a
 * large state in 1 run of 10, then the checks). The seed is printed; `NEMESIS_SEED=S` reruns from
 * it, and `npm run nemesis -- --real --runs N` runs more.
 */
import t from 'tap'
import { overlapsOf, runRealNemesis } from './real/nemesis.js'

const seed0 = process.env.NEMESIS_SEED ? Number(process.env.NEMESIS_SEED) : Math.floor(Math.random() * 1e9)
const runs = Number(process.env.NEMESIS_RUNS ?? 2)
t.comment(`real nemesis seed ${seed0} (replay: NEMESIS_SEED=${seed0})`)

for (let i = 0; i < runs; i++) {
  const seed = seed0 + i
  t.test(`real nemesis run, seed ${seed}`, { timeout: 240_000 }, async (t) => {
    const lines: string[] = []
    const res = await runRealNemesis({ seed, steps: 6, log: (l) => lines.push(l) })
    t.comment(`faults: ${JSON.stringify(res.faults)}; ${res.ops} client ops; settled ${res.settledAfterMs.toFixed(0)} ms after heal`)
    if (!res.ok) t.comment(lines.join('\n'))
    t.same(res.problems, [], `no invariant broken (seed ${seed})`)
  })
}

t.test('the overlap check: what counts as two incarnations at once', async (t) => {
  const inc = (name: string, inc: string, proc: string, start: number, stop: number | undefined, acts: number[] = []) => ({ name, inc, proc, node: proc.split('.')[0]!, start, stop, acts })
  const none = new Map<string, Array<[number, number]>>()
  t.same(overlapsOf([inc('a', '1', 'n1.1', 0, 10, [5]), inc('a', '2', 'n2.1', 10, undefined, [11])], none), { violations: [], lateStops: [] }, 'one after the other')
  t.equal(overlapsOf([inc('a', '1', 'n1.1', 0, 10, [9.5]), inc('a', '2', 'n2.1', 9, undefined)], none).violations.length, 1, 'the old one acted after the new one started')
  t.equal(overlapsOf([inc('a', '1', 'n1.1', 0, 10), inc('a', '2', 'n2.1', 9, undefined, [9.5])], none).violations.length, 1, 'the new one acted while the old one was live')
  t.same(overlapsOf([inc('a', '1', 'n1.1', 0, 10, [2]), inc('a', '2', 'n2.1', 9, undefined, [12])], none), { violations: [], lateStops: [1] }, 'live at once, neither acting: a late stop')
  t.equal(overlapsOf([inc('a', '1', 'n1.1', 0, undefined), inc('a', '2', 'n2.1', 50, undefined, [60])], none).violations.length, 1, 'both running, one acting')
  const paused = new Map<string, Array<[number, number]>>([['n1.1', [[5, 100]]]])
  t.same(overlapsOf([inc('a', '1', 'n1.1', 0, 101), inc('a', '2', 'n2.1', 50, undefined, [60, 100.5])], paused), { violations: [], lateStops: [] }, 'frozen, then fenced at thaw before acting')
  t.equal(overlapsOf([inc('a', '1', 'n1.1', 0, 101, [100.5]), inc('a', '2', 'n2.1', 50, undefined)], paused).violations.length, 1, 'frozen, but acted after the thaw while the other ran')
  t.equal(overlapsOf([inc('a', '1', 'n1.1', 0, 101), inc('a', '2', 'n2.1', 3, undefined, [4])], paused).violations.length, 1, 'started before the pause began, and acted')
})
