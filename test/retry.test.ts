import t from 'tap'
import { SimScheduler } from '../src/testkit/sim.js'
import { backoffDelay, retry } from '../src/util/retry.js'

t.test('backoffDelay: grows by the factor up to the cap; constant without a cap; jitter in [d/2, d]', async (t) => {
  const p = { minMs: 50, maxMs: 2000 }
  t.same([1, 2, 3, 4, 5, 6, 7, 100].map((n) => backoffDelay(p, n)), [50, 100, 200, 400, 800, 1600, 2000, 2000])
  t.same([1, 5, 50].map((n) => backoffDelay({ minMs: 200 }, n)), [200, 200, 200])
  t.equal(backoffDelay({ minMs: 100, maxMs: 1000, jitter: true }, 4, () => 0), 400)
  t.equal(backoffDelay({ minMs: 100, maxMs: 1000, jitter: true }, 4, () => 0.999999), 799.9996)
  t.equal(backoffDelay({ minMs: 10, maxMs: 200, factor: 1.5 }, 3), 22.5)
})

t.test('retry: waits by the policy on the injected clock, then succeeds', async (t) => {
  const sched = new SimScheduler(1)
  const clock = sched.clock()
  const at: number[] = []
  const seen: number[] = []
  const p = retry(clock, { minMs: 100, maxMs: 400, onRetry: (_e, n) => seen.push(n) }, async (n) => {
    at.push(clock.now())
    if (n < 5) throw new Error(`fail ${n}`)
    return n
  })
  await sched.runUntil(10_000)
  t.equal(await p, 5)
  t.same(at, [0, 100, 300, 700, 1100])
  t.same(seen, [1, 2, 3, 4])
})

t.test('retry: gives up with the last error at the deadline, on a non-retryable error, or when stopped', async (t) => {
  const sched = new SimScheduler(2)
  const clock = sched.clock()
  const lefts: number[] = []
  const late = retry(clock, { minMs: 100, deadlineMs: 350 }, async (n, left) => {
    lefts.push(left)
    throw new Error(`late ${n}`)
  })
  late.catch(() => {})
  let stop = false
  const stopped = retry(clock, { minMs: 100, stopped: () => stop }, async (n) => {
    if (n === 2) stop = true
    throw new Error(`stopped ${n}`)
  })
  stopped.catch(() => {})
  let calls = 0
  const fatal = retry(clock, { minMs: 100, retryable: (e) => !(e instanceof TypeError) }, async () => {
    calls++
    throw new TypeError('fatal')
  })
  fatal.catch(() => {})
  await sched.runUntil(10_000)
  await t.rejects(late, { message: 'late 4' })
  t.same(lefts, [350, 250, 150, 50])
  await t.rejects(stopped, { message: 'stopped 2' })
  await t.rejects(fatal, TypeError)
  t.equal(calls, 1)
})

t.test('retry: gives up after maxAttempts', async (t) => {
  const sched = new SimScheduler(3)
  let calls = 0
  const p = retry(sched.clock(), { minMs: 10, maxAttempts: 3 }, async () => {
    calls++
    throw new Error(`attempt ${calls}`)
  })
  p.catch(() => {})
  await sched.runUntil(1000)
  await t.rejects(p, { message: 'attempt 3' })
  t.equal(calls, 3)
})
