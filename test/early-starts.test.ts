/**
 * Early word of supervised starts (src/supervisor/early-starts.ts): the caller of a supervised
 * registration resolves as soon as the node hosting the worker says it runs, without waiting for
 * the `startedMany` report to be committed and applied. Here every `startedMany` is held back
 * until the registrations resolved: without the early word (before this test's commit) each of
 * them waits for the report and fails with "the worker did not start within 5000 ms".
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { RaftNode } from '../src/raft/node.js'
import type { WorkerRef } from '../src/index.js'
import { startSworms, waitFor } from './helpers.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))

t.test('a supervised registration resolves once its host says the worker runs, before the log has the start', async (t) => {
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  let held = 0
  const original = RaftNode.prototype.propose
  RaftNode.prototype.propose = function (this: RaftNode, cmd: unknown, opts?: { idempotent?: boolean }) {
    if ((cmd as { c?: unknown } | null)?.c === 'startedMany') {
      held++
      return released.then(() => original.call(this, cmd, opts)) as never
    }
    return original.call(this, cmd, opts) as never
  } as typeof original
  t.teardown(() => {
    RaftNode.prototype.propose = original
    release()
  })
  const c = await startSworms(3, 'early', { startTimeoutMs: 5000 })
  t.teardown(() => c.stop())
  const [a, b, d] = c.nodes as [(typeof c.nodes)[0], (typeof c.nodes)[0], (typeof c.nodes)[0]]
  await Promise.all(c.nodes.map((s) => s.ready()))
  // every node up in the caller's registry, so that placement spreads the names
  const nodesUp = (): number => (a as unknown as { state: { nodeRecords(): Array<{ up: boolean }> } }).state.nodeRecords().filter((n) => n.up).length
  await waitFor(() => nodesUp() === 3, 10_000, 'the caller to see every node up')
  // enough names that some land on the caller's node and some on the others
  const names = Array.from({ length: 12 }, (_, i) => `early-${i}`)
  const refs = await Promise.all(names.map((n) => a.registerName(n, { module: WORKERS, fn: 'counter', args: [`early/${n}`] })))
  t.ok(held > 0, `the starts' reports were held back (${held})`)
  t.ok(new Set(refs.map((r) => r.node)).size >= 2, `the workers run on several nodes: ${refs.map((r) => r.node).join(',')}`)
  for (const [i, n] of names.entries()) {
    const ref = refs[i]!
    t.same(a.whereisName(n), ref, `${n}: the caller sees its worker at once`)
    t.equal(await a.call(n, 'inc'), 1, `${n}: a call by name from the caller reaches it`)
    t.equal(await a.call(ref, 'inc'), 2, `${n}: and a call by ref`)
  }
  // the other nodes (hosts included) learn a ref from the log only
  for (const n of names) {
    t.equal(b.whereisName(n), undefined, `${n}: ${b.nodeId} does not see it before the log has its start`)
    t.equal(d.whereisName(n), undefined, `${n}: nor does ${d.nodeId}`)
  }
  release()
  await waitFor(() => c.nodes.every((s) => names.every((n, i) => sameRef(s.whereisName(n), refs[i]!))), 10_000, 'every node to see every start')
  t.pass('every node sees every worker once the reports go through')
})

t.test('a caller that hears nothing from the host learns the start from the log', async (t) => {
  const c = await startSworms(2, 'early-fallback', { startTimeoutMs: 10_000 })
  t.teardown(() => c.stop())
  const [a] = c.nodes
  await Promise.all(c.nodes.map((s) => s.ready()))
  await waitFor(() => (a as unknown as { state: { nodeRecords(): Array<{ up: boolean }> } }).state.nodeRecords().filter((n) => n.up).length === 2, 10_000, 'both nodes up')
  // no host says anything: every start reaches its caller through the log only
  for (const s of c.nodes) (s as unknown as { early: { running: () => void } }).early.running = () => {}
  const refs: WorkerRef[] = []
  for (let i = 0; i < 6; i++) refs.push(await a!.registerName(`fb-${i}`, { module: WORKERS, fn: 'counter', args: [`fb/${i}`] }))
  t.ok(new Set(refs.map((r) => r.node)).size === 2, 'on both nodes')
  for (const [i, ref] of refs.entries()) {
    t.same(a!.whereisName(`fb-${i}`), ref, `fb-${i}: the registry has it`)
    t.equal(await a!.call(ref, 'get'), 0, `fb-${i} runs on ${ref.node}`)
  }
})

t.test('a notice from a node the name is not placed on, or about another epoch, is not taken', async (t) => {
  const c = await startSworms(3, 'early-stale', { startTimeoutMs: 10_000 })
  t.teardown(() => c.stop())
  const [a] = c.nodes
  await a!.ready()
  const ref = await a!.registerName('st', { module: WORKERS, fn: 'counter', args: ['st'] })
  await waitFor(() => c.nodes.every((s) => s.whereisName('st') !== undefined), 10_000, 'the start in every registry')
  const early = (a as unknown as { early: { heard(name: string, epoch: number, ref: WorkerRef): void; whereis(name: string): WorkerRef | undefined } }).early
  const other = c.nodes.find((s) => s.nodeId !== ref.node)!
  const reg = (a as unknown as { state: { peek(n: string): { epoch?: number } | undefined } }).state.peek('st')!
  early.heard('st', reg.epoch!, { ...ref, node: other.nodeId, inc: other.incarnation, id: 999 })
  t.same(a!.whereisName('st'), ref, 'the registry\'s ref wins over a notice')
  t.equal(early.whereis('st'), undefined, 'a notice about a start the registry shows is dropped')
  early.heard('st', reg.epoch! + 1000, { ...ref, node: other.nodeId, inc: other.incarnation, id: 999 })
  t.equal(early.whereis('st'), undefined, 'a notice from a node the name is not placed on is not used')
})

function sameRef(x: WorkerRef | undefined, y: WorkerRef): boolean {
  return x !== undefined && x.node === y.node && x.inc === y.inc && x.id === y.id && x.sworm === y.sworm
}
