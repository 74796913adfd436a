/**
 * LocalWorkers (src/supervisor/local-workers.ts): a worker's mailbox. An idle worker holds no
 * queue (it is made when a message must wait, dropped when the last one is taken); messages are
 * still handled one at a time, in order, and those waiting when the worker stops fail.
 */
import t from 'tap'
import { NoWorkerError, WorkerCrashedError } from '../src/errors.js'
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

t.test('a worker casting to itself gets the message after the current one, in order (review)', async (t) => {
  const lw = new LocalWorkers(() => {})
  const seen: number[] = []
  let id = 0
  id = lw.add({
    handleCast: (m: unknown) => {
      seen.push(m as number)
      if ((m as number) < 3) t.ok(lw.cast(id, (m as number) + 1))
    },
  })
  lw.cast(id, 0)
  await tick()
  t.same(seen, [0, 1, 2, 3])
  t.equal(lw.queued(), 0)
})

t.test('messages sent while an async init runs wait for it, in order (review)', async (t) => {
  const lw = new LocalWorkers(() => {})
  const seen: string[] = []
  let ready: (() => void) | undefined
  const id = lw.add(
    {
      init: () => new Promise<void>((r) => (ready = r)).then(() => void seen.push('init')),
      handleCall: (m: unknown) => (seen.push(m as string), m),
    },
    undefined,
    { name: undefined, fencingToken: undefined, signal: new AbortController().signal },
  )
  const a = lw.call(id, 'a')
  const b = lw.call(id, 'b')
  t.equal(lw.queued(), 2)
  ready!()
  t.same(await Promise.all([a, b]), ['a', 'b'])
  t.same(seen, ['init', 'a', 'b'])
})

t.test('a crash fails the message that crashed it with WorkerCrashedError and those waiting with NoWorkerError (review)', async (t) => {
  const exits: string[] = []
  const lw = new LocalWorkers((_id, reason) => exits.push(reason.kind))
  let fail: ((e: Error) => void) | undefined
  const id = lw.add({ handleCall: () => new Promise((_r, rej) => (fail = rej)) })
  const first = lw.call(id, 1)
  const waiting = [lw.call(id, 2), lw.call(id, 3)]
  fail!(new Error('boom'))
  await t.rejects(first, WorkerCrashedError)
  for (const w of waiting) await t.rejects(w, NoWorkerError)
  t.equal(lw.queued(), 0)
  t.same(exits, ['crash'])
})

t.test('a message sent while the worker stops (from its abort listener) is refused, not dropped silently (review)', async (t) => {
  const ctl = new AbortController()
  const lw = new LocalWorkers(() => {})
  let cast: boolean | undefined
  let call: Promise<unknown> | undefined
  const id = lw.add({ handleCall: (m: unknown) => m }, ctl)
  ctl.signal.addEventListener('abort', () => {
    cast = lw.cast(id, 'late')
    call = lw.call(id, 'late')
  })
  await lw.stop(id)
  t.equal(cast, false, 'the cast says no worker took it')
  await t.rejects(call!, NoWorkerError)
})

t.test('a handoff lets the current message finish and refuses those waiting and those sent during it (review)', async (t) => {
  const lw = new LocalWorkers(() => {})
  let release: (() => void) | undefined
  const id = lw.add({
    handleCall: (m: unknown) => (m === 'slow' ? new Promise<string>((r) => (release = () => r('done'))) : m),
    beginHandoff: () => 'state',
  })
  const slow = lw.call(id, 'slow')
  const waiting = lw.call(id, 'waiting')
  const handoff = lw.handoff(id)
  await t.rejects(waiting, NoWorkerError)
  await t.rejects(lw.call(id, 'during'), NoWorkerError)
  release!()
  t.equal(await slow, 'done', 'the current message finishes')
  t.equal(await handoff, 'state')
})
