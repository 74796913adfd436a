/**
 * Calls and casts by name that wait for a moving worker follow it (issue #15: calls that ride
 * through a move): the node they wait on asks the worker's new host to say when it runs
 * (`watch`), or takes its own start, and they go then, without waiting for the log to have the
 * start. Here every `startedMany` (the hosts' start reports) is held back while the workers move:
 * without the follow (a172a16) each call waits for the log and times out.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { RaftNode } from '../src/raft/node.js'
import { EarlyStarts, MAX_WATCHED } from '../src/supervisor/early-starts.js'
import type { WorkerRef } from '../src/index.js'
import { startSworms, waitFor } from './helpers.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))

interface Internals {
  state: { nodeRecords(): Array<{ up: boolean }>; peek(n: string): { node?: string; epoch?: number; ref?: WorkerRef } | undefined }
  early: { watchedNames: number }
}
const inside = (s: unknown): Internals => s as Internals

t.test('calls and casts by name to workers that move go to them as they run, before the log has their start', async (t) => {
  let holding = false
  let held = 0
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  const original = RaftNode.prototype.propose
  RaftNode.prototype.propose = function (this: RaftNode, cmd: unknown, opts?: { idempotent?: boolean }) {
    if (holding && (cmd as { c?: unknown } | null)?.c === 'startedMany') {
      held++
      return released.then(() => original.call(this, cmd, opts)) as never
    }
    return original.call(this, cmd, opts) as never
  } as typeof original
  t.teardown(() => {
    RaftNode.prototype.propose = original
    release()
  })
  const c = await startSworms(3, 'follow', { startTimeoutMs: 10_000, callTimeoutMs: 20_000 })
  t.teardown(() => c.stop())
  await Promise.all(c.nodes.map((s) => s.ready()))
  await waitFor(() => c.nodes.every((s) => inside(s).state.nodeRecords().filter((n) => n.up).length === 3), 10_000, 'every node to see every node up')
  const [a] = c.nodes as [(typeof c.nodes)[0]]
  // counters (calls) and recorders (casts, then a call)
  const names = Array.from({ length: 24 }, (_, i) => `fm-${i}`)
  const recorder = (n: string): boolean => Number(n.slice(3)) % 2 === 1
  const refs = await Promise.all(names.map((n) => a.registerName(n, recorder(n) ? { module: WORKERS, fn: 'recorder', args: [n] } : { module: WORKERS, fn: 'counter', args: [`follow/${n}`] })))
  await waitFor(() => c.nodes.every((s) => names.every((n, i) => s.whereisName(n)?.id === refs[i]!.id)), 10_000, 'every node to see every start')
  // the node to drain: another than the caller, holding some of the workers
  const b = c.nodes.find((s) => s.nodeId !== a.nodeId && refs.some((r) => r.node === s.nodeId))!
  const moving = names.filter((_, i) => refs[i]!.node === b.nodeId)
  t.ok(moving.length > 0, `${moving.length} workers on ${b.nodeId}`)
  t.ok(moving.some(recorder) && !moving.every(recorder), 'counters and recorders among them')
  for (const n of moving) t.same(await a.call(n, 'inc'), recorder(n) ? { echo: 'inc' } : 1, `${n} answers before the move`)
  holding = true
  // (the drain ends once the log shows every worker running elsewhere: after the reports go)
  const drained = b.drain({ timeoutMs: 30_000 })
  // the drain hands each worker's state over to its next host; calls and casts by name sent
  // once the caller's registry places the names there, their starts not in it
  await waitFor(
    () => moving.every((n) => ((r) => r !== undefined && r.node !== undefined && r.node !== b.nodeId && r.ref === undefined)(inside(a).state.peek(n))),
    20_000,
    "the caller's registry to place every moved name elsewhere",
  )
  const casts = moving.filter(recorder).map((n) => a.send(n, 'moved'))
  const calls = moving.map((n) => a.call<unknown>(n, 'get'))
  await Promise.all(casts)
  const got = await Promise.all(calls)
  t.ok(held > 0, `the moved workers' start reports are held (${held})`)
  const places = moving.map((n) => inside(a).state.peek(n))
  t.ok(
    places.every((r) => r?.ref === undefined && r?.node !== undefined && r.node !== b.nodeId),
    "the caller's registry places every moved name elsewhere, no start in it",
  )
  t.ok(new Set(places.map((r) => r!.node)).size === 2 || moving.length === 1, 'on the caller itself and on the third node (both ways followed)')
  t.same(got, moving.map((n) => (recorder(n) ? { echo: 'get' } : 1)), 'every call answered by the moved worker (a counter with its state handed over)')
  const castsSeen = (globalThis as unknown as { __swormCasts: Map<string, unknown[]> }).__swormCasts
  t.same(
    moving.filter(recorder).map((n) => castsSeen.get(n)),
    moving.filter(recorder).map(() => ['moved']),
    'every cast reached the moved worker, once, before the call sent after it was answered',
  )
  for (const s of c.nodes) await waitFor(() => inside(s).early.watchedNames === 0, 10_000, `${s.nodeId}'s watches to end`)
  holding = false
  release()
  await drained
  await waitFor(() => c.nodes.every((s) => moving.every((n) => inside(s).state.peek(n)?.ref !== undefined)), 10_000, 'the starts in every registry')
  t.pass('the held reports go through afterwards')
})

/** An EarlyStarts host (node `b`, incarnation `ib`) on a stub registry: `watch` plays a message from `a`. */
function stubHost() {
  const handlers = new Map<string, (from: string, m: Record<string, unknown>) => void>()
  const sent: Array<{ to: string; m: Record<string, unknown> }> = []
  const dropped: string[] = []
  const router = {
    on: (type: string, fn: (from: string, m: Record<string, unknown>) => void) => void handlers.set(type, fn),
    send: (to: string, m: Record<string, unknown>) => void sent.push({ to, m }),
    drop: (from: string, reason: string) => void dropped.push(`${from}: ${reason}`),
  }
  const regs = new Map<string, { kind: string; epoch: number; node: string; ref?: WorkerRef }>()
  const local = new Map<string, { id: number; epoch: number }>()
  const state = {
    peek: (name: string) => regs.get(name),
    nodeRecord: (node: string) => ({ node, up: true, inc: `i${node}` }),
    isUp: () => true,
  }
  const early = new EarlyStarts({
    sworm: 's',
    nodeId: 'b',
    inc: 'ib',
    state: state as never,
    router: router as never,
    maxNameBytes: 1024,
    woken: () => {},
    localWorker: (name) => local.get(name),
  })
  const watch = (m: Record<string, unknown>, from = 'a'): void => handlers.get('watch')!(from, m)
  /** The starts told to each node so far, `name:epoch:id`. */
  const told = async (): Promise<Record<string, string[]>> => {
    await new Promise((r) => setImmediate(r))
    const out: Record<string, string[]> = {}
    for (const { to, m } of sent) if (m.t === 'startedAt') for (const s of m.starts as Array<[string, number, number]>) (out[to] ??= []).push(s.join(':'))
    return out
  }
  return { early, regs, local, watch, told, dropped, sent }
}

t.test('a host tells a watcher when the worker runs, and keeps no watch it should not (EarlyStarts on a stub registry)', async (t) => {
  const h = stubHost()
  h.regs.set('p', { kind: 'supervised', epoch: 5, node: 'b' }) // placed here, starting
  h.regs.set('q', { kind: 'supervised', epoch: 5, node: 'c' }) // placed elsewhere
  h.regs.set('r', { kind: 'supervised', epoch: 7, node: 'b' }) // running already
  h.local.set('r', { id: 3, epoch: 7 })
  h.regs.set('s', { kind: 'supervised', epoch: 2, node: 'z' }) // this node has not applied its move here yet
  h.regs.set('u', { kind: 'static', epoch: 0, node: 'b' })
  // junk: bad fields, too many names, another incarnation's watch
  h.watch({ inc: 'ib', names: {} })
  h.watch({ inc: 'ib', names: new Array(5000).fill(['p', 5]) })
  t.equal(h.dropped.length, 2, 'bad fields and oversized watches are dropped with a warning')
  h.watch({ inc: 'old', names: [['p', 5]] })
  t.equal(h.early.watchedNames, 0, "an earlier incarnation's watch is not kept")
  h.watch({ inc: 'ib', names: [['p', 5], ['q', 5], ['r', 7], ['s', 3], ['u', 1], ['p', 4], ['nope', 1], [1, 2], 'x', ['p', 1.5]] })
  t.equal(h.early.watchedNames, 2, "kept: the name starting here, and the one whose placement here this node has not applied (not: elsewhere, running, static, an earlier epoch, unknown, malformed)")
  t.same(await h.told(), { a: ['r:7:3'] }, 'a worker that runs already: told at once')
  h.early.startedHere('p', 5, { sworm: 's', node: 'b', inc: 'ib', id: 9 })
  t.same(await h.told(), { a: ['r:7:3', 'p:5:9'] }, 'told as it starts')
  t.equal(h.early.watchedNames, 1, 'and its watch ends')
  // the name not applied yet moves on past the watched epoch: the watch goes
  h.early.onChange({ type: 'placed', name: 's', node: 'c', epoch: 4, moved: true, from: 'z' } as never)
  t.equal(h.early.watchedNames, 0, 'a watch the registry moved past goes')
  // placed here under the watched epoch: kept, then ended by the log's start
  h.regs.set('v', { kind: 'supervised', epoch: 1, node: 'z' })
  h.watch({ inc: 'ib', names: [['v', 2]] })
  h.early.onChange({ type: 'placed', name: 'v', node: 'b', epoch: 2, moved: true, from: 'z' } as never)
  t.equal(h.early.watchedNames, 1, 'its placement here applied after the watch came: kept')
  h.early.onChange({ type: 'started', name: 'v', epoch: 2, ref: { sworm: 's', node: 'b', inc: 'ib', id: 4 } } as never)
  t.equal(h.early.watchedNames, 0, 'the log has the start: the watch ends (the watcher sees it there)')
  // bounded: MAX_WATCHED names at most, the oldest goes
  for (let i = 0; i <= MAX_WATCHED; i += 4096) {
    const names: Array<[string, number]> = []
    for (let j = i; j < Math.min(i + 4096, MAX_WATCHED + 1); j++) {
      h.regs.set(`w${j}`, { kind: 'supervised', epoch: 1, node: 'b' })
      names.push([`w${j}`, 1])
    }
    h.watch({ inc: 'ib', names })
  }
  t.equal(h.early.watchedNames, MAX_WATCHED, `at most ${MAX_WATCHED} names watched`)
  h.early.startedHere('w0', 1, { sworm: 's', node: 'b', inc: 'ib', id: 10 })
  h.early.startedHere(`w${MAX_WATCHED}`, 1, { sworm: 's', node: 'b', inc: 'ib', id: 11 })
  const last = (await h.told()).a!
  t.same(last.slice(-1), [`w${MAX_WATCHED}:1:11`], 'the newest watch is told, the oldest was let go')
})
