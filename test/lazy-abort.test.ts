/**
 * LazyAbort (src/supervisor/local-workers.ts): a spawned worker's context signal, made only when
 * asked for, behaves as an AbortController's whether it is asked for before or after the stop.
 */
import t from 'tap'
import { LazyAbort } from '../src/supervisor/local-workers.js'

t.test('asked for before the stop: aborted by it, with its reason', async (t) => {
  const a = new LazyAbort()
  const s = a.signal
  t.equal(s.aborted, false)
  let heard: unknown
  s.addEventListener('abort', () => (heard = s.reason))
  a.abort('normal')
  t.equal(s.aborted, true)
  t.equal(heard, 'normal', 'listeners run')
  t.equal(a.signal, s, 'the same signal each time')
})

t.test('asked for only after the stop: aborted already, with the first reason', async (t) => {
  const a = new LazyAbort()
  a.abort('lease')
  a.abort('normal')
  t.equal(a.signal.aborted, true)
  t.equal(a.signal.reason, 'lease')
})

t.test('never asked for: nothing is made', async (t) => {
  const a = new LazyAbort()
  a.abort('crash')
  t.equal((a as unknown as { ctl: unknown }).ctl, undefined)
})
