/**
 * LocalWorkers (src/supervisor/local-workers.ts): a worker's mailbox. An idle worker holds no
 * queue (it is made when a message must wait, dropped when the last one is taken); messages are
 * still handled one at a time, in order, and those waiting when the worker stops fail.
 */
import t from 'tap'
import { NoWorkerError } from '../src/errors.js'
import { LocalWorkers } from '../src/supervisor/local-workers.js'

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

t.test('messages that wait are handled in order, one at a time, again after the mailbox emptied', async (t) => {
  const exits: string[] = []
  const lw = new LocalWorkers((_id, reason) => exits.push(reason.kind))
  const seen: number[] = []
  let running = 0
  let most = 0
  let release: (() => void) | undefined
  const id = lw.add({
    handleCall: async (m: unknown) => {
      running++
      most = Math.max(most, running)
      if (m === 0) await new Promise<void>((r) => (release = r))
      seen.push(m as number)
      running--
      return (m as number) * 10
    },
    handleCast: (m: unknown) => void seen.push(m as number),
  })
  t.equal(lw.queued(), 0, 'an idle worker: nothing waits')
  const first = lw.call(id, 0)
  const rest = [1, 2, 3].map((m) => lw.call(id, m))
  t.ok(lw.cast(id, 4))
  t.equal(lw.queued(), 4, 'four wait behind the slow one')
  release!()
  t.same(await Promise.all([first, ...rest]), [0, 10, 20, 30])
  await tick()
  t.same(seen, [0, 1, 2, 3, 4], 'in order')
  t.equal(most, 1, 'one at a time')
  t.equal(lw.queued(), 0)
  t.equal(await lw.call(id, 5), 50, 'a message after the mailbox emptied is handled')
  t.same(exits, [])
})

t.test('messages waiting when the worker stops fail; it takes none after', async (t) => {
  const lw = new LocalWorkers(() => {})
  let release: (() => void) | undefined
  const id = lw.add({ handleCall: (m: unknown) => (m === 'slow' ? new Promise<string>((r) => (release = () => r('done'))) : m) })
  const slow = lw.call(id, 'slow')
  const waiting = lw.call(id, 'next')
  const stopped = lw.stop(id)
  await t.rejects(waiting, NoWorkerError)
  release!()
  await slow
  await stopped
  await t.rejects(lw.call(id, 'late'), NoWorkerError)
  t.equal(lw.cast(id, 'late'), false)
  t.equal(lw.queued(), 0)
})
