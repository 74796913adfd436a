/**
 * Location transparency (issue #14), in one process with real sockets: a call by name waits for
 * the next incarnation of a restarting worker; casts by name are held meanwhile and delivered in
 * order, within a bounded buffer whose drops are counted; a call that went to a node whose
 * connection is then lost rejects at once with OUTCOME_UNKNOWN. The real-process version (drain,
 * rebalance, SIGKILL under a continuous client) is calls-move-process.test.ts.
 */
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { OutcomeUnknownError, type Sworm } from '../src/index.js'
import { internals } from '../src/internal.js'
import { startSworms, waitFor } from './helpers.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))
const g = globalThis as unknown as { __swormGates?: Map<string, Promise<void>>; __swormCasts?: Map<string, unknown[]> }

/** Hold the next start of `name` until the returned function is called. */
function closeGate(name: string): () => void {
  let open!: () => void
  ;(g.__swormGates ??= new Map()).set(
    name,
    new Promise<void>((r) => {
      open = r
    }),
  )
  return () => {
    g.__swormGates!.delete(name)
    open()
  }
}

const casts = (name: string): unknown[] => g.__swormCasts?.get(name) ?? []

async function metric(s: Sworm, name: string): Promise<number> {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(await s.metrics())
  return m ? Number(m[1]) : NaN
}

/** Register the recorder `name` from `s`, then crash it and hold its restart: resolves once `s` sees it restarting. */
async function restarting(t: Test, s: Sworm, name: string): Promise<() => void> {
  await s.registerName(name, { module: WORKERS, fn: 'recorder', args: [name] })
  const open = closeGate(name)
  await t.rejects(s.call(name, 'crash'), { code: 'WORKER_CRASHED' }, 'the worker crashes')
  await waitFor(() => s.whereisName(name) === undefined, 10_000, `${name} restarting, seen from the caller's node`)
  return open
}

t.test('a call and casts by name wait for a restarting worker, and the casts arrive in order', async (t) => {
  const c = await startSworms(3, 'lt-hold')
  t.teardown(() => c.stop())
  const s = c.nodes[0]!
  await s.ready() // a leader, and this node up
  const open = await restarting(t, s, 'rec')
  for (let i = 1; i <= 50; i++) await s.send('rec', i)
  const call = s.call('rec', 'after', { timeout: 20_000 })
  t.same(casts('rec'), [], 'nothing delivered while the worker is not running')
  open()
  t.same(await call, { echo: 'after' }, 'the call waited for the next incarnation and was answered there')
  await waitFor(() => casts('rec').length === 50, 10_000, 'every held cast delivered')
  t.same(casts('rec'), Array.from({ length: 50 }, (_, i) => i + 1), 'in the order they were sent')
  t.equal(await metric(s, 'sworm_casts_dropped_total'), 0, 'none dropped')
})

t.test('the cast buffer is bounded: the oldest go first, and are counted', async (t) => {
  const c = await startSworms(3, 'lt-bound', { castBufferSize: 10 })
  t.teardown(() => c.stop())
  const s = c.nodes[1]!
  const open = await restarting(t, s, 'small')
  for (let i = 1; i <= 25; i++) await s.send('small', i)
  open()
  await waitFor(() => casts('small').length === 10, 10_000, 'the buffer delivered')
  t.same(casts('small'), [16, 17, 18, 19, 20, 21, 22, 23, 24, 25], 'the last 10, in order')
  t.equal(await metric(s, 'sworm_casts_dropped_total'), 15, 'the 15 oldest dropped and counted')
})

t.test('casts held for a name that is unregistered are dropped and counted', async (t) => {
  const c = await startSworms(3, 'lt-gone')
  t.teardown(() => c.stop())
  const s = c.nodes[2]!
  const open = await restarting(t, s, 'gone')
  for (let i = 1; i <= 5; i++) await s.send('gone', i)
  t.equal(await s.unregisterName('gone'), true)
  await waitFor(async () => (await metric(s, 'sworm_casts_dropped_total')) === 5, 10_000, 'the 5 held casts dropped')
  await t.rejects(s.send('gone', 6), { code: 'NO_WORKER' }, 'a cast to the name now fails at once')
  t.same(casts('gone'), [])
  open()
})

t.test('a call whose node is declared gone before it answers rejects then with OUTCOME_UNKNOWN', async (t) => {
  const c = await startSworms(3, 'lt-lost')
  t.teardown(() => c.stop())
  const [a, b, d] = c.nodes as [Sworm, Sworm, Sworm]
  let handled = false
  const ref = b.spawn({
    handleCall: () => {
      handled = true
      return new Promise(() => {}) // never answers
    },
  })
  t.equal(await b.registerName('hang', ref), true)
  await waitFor(() => a.whereisName('hang') !== undefined, 10_000, 'n1 sees the name')
  const t0 = Date.now()
  const call = a.call('hang', 'x', { timeout: 120_000 }).then(
    () => undefined,
    (e: unknown) => e,
  )
  await waitFor(() => handled, 10_000, 'the worker got the call')
  // cut n2 off (its connections stay open, so only the registry can tell): it is declared gone
  for (const [x, peers] of [[a, ['n2']], [d, ['n2']], [b, ['n1', 'n3']]] as const) for (const p of peers) internals(x).faults!.block(p, true)
  t.teardown(() => {
    for (const [x, peers] of [[a, ['n2']], [d, ['n2']], [b, ['n1', 'n3']]] as const) for (const p of peers) internals(x).faults!.block(p, false)
  })
  const err = await call
  t.ok(err instanceof OutcomeUnknownError, `rejected with OutcomeUnknownError (${String(err)})`)
  t.equal(a.whereisName('hang'), undefined, 'when n2 was declared gone (its names went with it)')
  t.ok(Date.now() - t0 < 60_000, 'long before its timeout')
  t.equal(await metric(a, 'sworm_calls_outcome_unknown_total'), 1, 'counted')
})

t.test('a node that loses a registration race to a worker still starting learns the winner (#14, "a lost race hides the winner")', async (t) => {
  // Before (failed on cc4e7b9): the loser got AlreadyRegisteredError without a ref, and
  // whereisName right after returned undefined, as the winner was still starting.
  const c = await startSworms(3, 'lt-race')
  t.teardown(() => c.stop())
  const [a, b] = c.nodes as [Sworm, Sworm]
  const open = closeGate('race')
  const before = b.status().names
  const spec = { module: WORKERS, fn: 'recorder', args: ['race'] }
  const winner = a.registerName('race', spec)
  await waitFor(() => b.status().names === before + 1, 10_000, 'the winning registration applied on b (its worker held at start)')
  const loser = b.registerName('race', spec).then(
    () => undefined,
    (e: unknown) => e as { code?: string; ref?: unknown },
  )
  open()
  const ref = await winner
  const err = await loser
  t.equal(err?.code, 'ALREADY_REGISTERED', 'the loser is told the name is taken')
  t.same(err?.ref, ref, "with the winner's ref")
  t.same(b.whereisName('race'), ref, 'and whereisName right after shows the winner')
})
