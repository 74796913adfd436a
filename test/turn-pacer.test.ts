/**
 * TurnPacer: tasks in order, a batch per turn of the event loop, the batch sized by the time a
 * turn's tasks took (a fake clock here: each task "takes" what the test says).
 */
import t from 'tap'
import type { Clock } from '../src/raft/types.js'
import { TurnPacer } from '../src/util/turn-pacer.js'

function fakeClock(): Clock & { t: number; timers: number } {
  const c = {
    t: 0,
    timers: 0,
    now: () => c.t,
    setTimeout: (fn: () => void, _ms: number) => {
      c.timers++
      return setImmediate(fn)
    },
    clearTimeout: (h: unknown) => clearImmediate(h as NodeJS.Immediate),
  }
  return c
}

const drained = (p: TurnPacer): Promise<void> =>
  new Promise((resolve) => {
    const look = (): void => (p.waiting === 0 ? resolve() : void setImmediate(look))
    look()
  })

t.test('a lone task runs at once, in a microtask', async (t) => {
  const p = new TurnPacer(fakeClock())
  let ran = false
  p.run(() => (ran = true))
  await Promise.resolve()
  t.ok(ran, 'before any timer')
})

t.test('tasks run in order, a batch per turn; the batch shrinks while a turn takes too long, and grows while it takes little', async (t) => {
  const clock = fakeClock()
  const p = new TurnPacer(clock, { sliceMs: 10, min: 4, max: 64 })
  const order: number[] = []
  const turns: number[] = [] // tasks run per turn (a turn ends where a timer fires)
  let cost = 1 // fake ms per task
  let inTurn = 0
  const n = 400
  for (let i = 0; i < n; i++) {
    p.run(() => {
      order.push(i)
      clock.t += cost
      inTurn++
      if (inTurn === 1) setImmediate(() => (turns.push(inTurn), (inTurn = 0)))
      if (i === 200) cost = 0.01
      return Promise.resolve() // settled in this turn: its time counts
    })
  }
  await drained(p)
  await new Promise((r) => setImmediate(r))
  t.same(order, Array.from({ length: n }, (_, i) => i), 'every task once, in order')
  t.equal(turns[0], 64, 'the first batch: the most allowed')
  t.ok(turns.slice(1, 5).every((x, i) => x <= turns[i]!), `then smaller while each turn took more than twice the slice (${turns.join(', ')})`)
  t.equal(turns[2], 16, 'down to a batch whose turn takes about the slice (16 tasks of 1 ms: within twice 10 ms)')
  t.ok(Math.max(...turns.slice(3)) > 16, 'and larger again once tasks were cheap')
})

t.test('a task that throws does not stop the others', async (t) => {
  const p = new TurnPacer(fakeClock())
  const ran: number[] = []
  p.run(() => ran.push(1))
  p.run(() => {
    throw new Error('boom')
  })
  p.run(() => ran.push(3))
  await drained(p)
  t.same(ran, [1, 3])
})

t.test("the loop's other work between two turns, and tasks that wait for I/O, leave the batch as it is", async (t) => {
  for (const io of [false, true]) {
    const clock = fakeClock()
    const p = new TurnPacer(clock, { sliceMs: 10, min: 4, max: 64 })
    const turns: number[] = []
    let inTurn = 0
    for (let i = 0; i < 300; i++) {
      p.run(() => {
        inTurn++
        if (inTurn === 1) {
          setImmediate(() => {
            turns.push(inTurn)
            inTurn = 0
            clock.t += 50 // a busy event loop between two turns
          })
        }
        // with io, every other task waits for a timer: settled after its turn
        return io && i % 2 === 1 ? new Promise((r) => setTimeout(r, 1)) : Promise.resolve()
      })
    }
    await drained(p)
    await new Promise((r) => setTimeout(r, 5))
    t.ok(turns.every((x, i) => i === turns.length - 1 || x === 64), `${io ? 'tasks waiting for I/O' : 'a busy loop'}: the most allowed in every turn (${turns.join(', ')})`)
  }
})
