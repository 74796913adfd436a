/**
 * A node's start reports, batched (issue #15): each start gets its own outcome from its batch's
 * result, starts that complete while batches are in flight share the next one, and a batch stays
 * within its bounds in starts and in bytes of names.
 */
import t from 'tap'
import type { RegistryCommand, RegistryResult } from '../src/registry/types.js'
import { StartReports } from '../src/supervisor/reports.js'

type Many = Extract<RegistryCommand, { c: 'startedMany' }>

function harness(answer: (cmd: Many) => RegistryResult | undefined | Promise<RegistryResult | undefined>, maxBatch?: number, maxBatchBytes?: number, maxInFlight?: number) {
  const proposed: Many[] = []
  const held: Array<() => void> = []
  let hold = false
  const reports = new StartReports(
    {
      sworm: 's',
      nodeId: 'n1',
      inc: 'i1',
      propose: async (cmd) => {
        if (cmd.c !== 'startedMany') throw new Error(`unexpected ${cmd.c}`)
        proposed.push(cmd)
        if (hold) await new Promise<void>((r) => held.push(r))
        return answer(cmd)
      },
    },
    maxBatch,
    maxBatchBytes,
    maxInFlight,
  )
  return {
    reports,
    proposed,
    hold: (on: boolean) => (hold = on),
    release: () => held.splice(0).forEach((r) => r()),
  }
}

t.test('each start gets the outcome of its own item, in order', async (t) => {
  // odd ids refused
  const h = harness((cmd) => cmd.starts.map(([, , id]) => id % 2 === 0))
  const outcomes = await Promise.all([1, 2, 3, 4].map((id) => h.reports.report(`w${id}`, 10 + id, id)))
  t.same(outcomes, [false, true, false, true])
  t.same(
    h.proposed.flatMap((c) => c.starts),
    [
      ['w1', 11, 1],
      ['w2', 12, 2],
      ['w3', 13, 3],
      ['w4', 14, 4],
    ],
    'every start reported once, with its epoch and worker id',
  )
  t.ok(h.proposed.every((c) => c.sworm === 's' && c.node === 'n1' && c.inc === 'i1'), 'as this node incarnation')
})

t.test('a report that never went through, or an answer that is not a list, tells each start so', async (t) => {
  const lost = harness(() => undefined)
  t.same(await Promise.all([lost.reports.report('a', 1, 1), lost.reports.report('b', 2, 2)]), [undefined, undefined], 'unknown outcome')
  const odd = harness(() => 'session-expired')
  t.same(await Promise.all([odd.reports.report('a', 1, 1)]), [false], 'refused')
  const thrown = harness(() => Promise.reject(new Error('stopped')))
  t.same(await thrown.reports.report('a', 1, 1), undefined, 'a proposal that failed: unknown outcome')
})

t.test('starts that complete while batches are in flight share the next batch', async (t) => {
  const h = harness((cmd) => cmd.starts.map(() => true), 1024, 256 * 1024, 2)
  h.hold(true)
  const first = [h.reports.report('a', 1, 1)]
  await Promise.resolve()
  first.push(h.reports.report('b', 2, 2))
  await new Promise((r) => setImmediate(r))
  t.equal(h.proposed.length, 2, 'two batches in flight, one start each')
  const rest = Array.from({ length: 50 }, (_, i) => h.reports.report(`c${i}`, 10 + i, 10 + i))
  await new Promise((r) => setImmediate(r))
  t.equal(h.proposed.length, 2, 'no third batch while two are in flight')
  h.hold(false)
  h.release()
  t.same(await Promise.all([...first, ...rest]), Array(52).fill(true))
  t.equal(h.proposed.length, 3, 'the 50 starts that waited went in one batch')
  t.equal(h.proposed[2]!.starts.length, 50)
})

t.test('a batch is bounded in starts and in bytes of names', async (t) => {
  const h = harness((cmd) => cmd.starts.map(() => true), 3, 1000, 1)
  const long = 'x'.repeat(600)
  const all = await Promise.all([
    ...['a', 'b', 'c', 'd', 'e'].map((n, i) => h.reports.report(n, i, i)),
    h.reports.report(`${long}1`, 10, 10),
    h.reports.report(`${long}2`, 11, 11),
    h.reports.report('x'.repeat(5000), 12, 12),
  ])
  t.same(all, Array(8).fill(true))
  t.same(
    h.proposed.map((c) => c.starts.length),
    [3, 3, 1, 1],
    'at most 3 starts (a b c, then d e and a 601-byte name), at most 1000 bytes of names (the next 601-byte name alone), unless one name alone is longer (5000 bytes)',
  )
})
