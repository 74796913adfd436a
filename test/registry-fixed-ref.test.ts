/**
 * A supervised registration whose worker's ref is fixed when its `supervise` entry places it
 * (`fx`, `registerName(..., { wait: 'placed' })`): what the state machine makes of it, on every
 * replica alike, and in a snapshot.
 */
import t from 'tap'
import { RegistryState, type RegistryChange } from '../src/registry/state.js'
import type { StartSpec, SuperviseResult } from '../src/registry/types.js'

const spec: StartSpec = { module: 'm', fn: 'f', args: [] }

function placed(res: unknown): Extract<SuperviseResult, { placed: true }> {
  if (typeof res !== 'object' || res === null || !(res as SuperviseResult).placed) throw new Error(`not placed: ${JSON.stringify(res)}`)
  return res as Extract<SuperviseResult, { placed: true }>
}

function world() {
  const changes: RegistryChange[] = []
  const st = new RegistryState((ch) => changes.push(ch))
  let i = 0
  const apply = (cmd: Parameters<RegistryState['apply']>[0]) => st.apply(cmd, ++i)
  apply({ c: 'nodeUp', node: 'n1', inc: 'i1', prev: '' })
  return { st, apply, changes, index: () => i }
}

t.test('the ref is fixed by the supervise entry: the entry index negated, on the node it places the name on', async (t) => {
  const { st, apply, index } = world()
  const res = placed(apply({ c: 'supervise', name: 'w', spec, ue: 1, fx: 's' }))
  t.same(res.ref, { sworm: 's', node: 'n1', inc: 'i1', id: -index() })
  t.equal(res.epoch, index(), 'its epoch is the entry index')
  t.same(st.whereis('w'), res.ref, 'whereis shows it at once')
  t.equal(st.registration('w')?.fx, 1, 'not reported running yet')
  t.equal(st.startingName(res.ref!), 'w', 'a ref whose worker starts')
  t.ok(st.isRegistered(res.ref!), 'its ref holds the name')
  const plain = placed(apply({ c: 'supervise', name: 'v', spec, ue: 1 }))
  t.equal(plain.ref, undefined, 'without fx: no ref until a node reports the start, as before')
  const old = placed(apply({ c: 'supervise', name: 'u', spec, fx: 's' }))
  t.equal(old.ref, undefined, 'fx needs unique epochs (ue): ignored without')
})

t.test("the node's report of the start confirms the fixed ref (and only it)", async (t) => {
  const { st, apply, changes } = world()
  const res = placed(apply({ c: 'supervise', name: 'w', spec, ue: 1, fx: 's' }))
  const ref = res.ref!
  t.same(apply({ c: 'startedMany', sworm: 's', node: 'n1', inc: 'i1', starts: [['w', res.epoch, 7]] }), [false], 'another id: refused')
  t.equal(st.registration('w')?.fx, 1)
  changes.length = 0
  t.same(apply({ c: 'startedMany', sworm: 's', node: 'n1', inc: 'i1', starts: [['w', res.epoch, ref.id]] }), [true], 'its own id: taken')
  t.equal(st.registration('w')?.fx, undefined, 'reported running')
  t.same(st.whereis('w'), ref, 'the same ref')
  t.equal(st.startingName(ref), undefined)
  t.same(changes.map((c) => c.type), ['started'], "a 'started' change, as for any start")
  t.equal(apply({ c: 'started', name: 'w', epoch: res.epoch, ref }), true, 'the same report again: taken (it took effect)')
  t.equal(apply({ c: 'startFailed', name: 'w', epoch: res.epoch, error: 'late' }), false, 'a start failure after it ran: refused')
})

t.test('a fixed ref whose start fails goes with its name', async (t) => {
  const { st, apply, changes } = world()
  const res = placed(apply({ c: 'supervise', name: 'w', spec, ue: 1, fx: 's' }))
  changes.length = 0
  t.equal(apply({ c: 'startFailed', name: 'w', epoch: res.epoch, error: 'boom' }), true)
  t.equal(st.registration('w'), undefined, 'removed')
  t.notOk(st.isRegistered(res.ref!), 'its ref holds nothing')
  t.ok(changes.some((c) => c.type === 'startFailed'), 'startFailed told')
})

t.test('a later placement forgets the fixed ref: the next start is reported, as always', async (t) => {
  const { st, apply, changes } = world()
  apply({ c: 'nodeUp', node: 'n2', inc: 'j1', prev: '' })
  const res = placed(apply({ c: 'supervise', name: 'w', spec, ue: 1, fx: 's' }))
  const on = res.node
  const other = on === 'n1' ? 'n2' : 'n1'
  changes.length = 0
  t.equal(apply({ c: 'nodeDown', node: on, inc: on === 'n1' ? 'i1' : 'j1', term: 1, ord: 1 } as never), true)
  const r = st.registration('w')!
  t.equal(r.node, other, 'moved')
  t.equal(r.ref, undefined, 'no ref until its new node reports the start')
  t.equal(r.fx, undefined, 'not fixed any more')
  t.notOk(st.isRegistered(res.ref!), 'the old ref holds nothing')
  t.ok(changes.some((c) => c.type === 'stopWorker' && c.ref.id === res.ref!.id), 'its worker, if it ran, is told to stop')
  // a start failure for the old epoch cannot remove the name
  t.equal(apply({ c: 'startFailed', name: 'w', epoch: res.epoch, error: 'late' }), false)
})

t.test('a handoff forgets the fixed ref too', async (t) => {
  const { st, apply } = world()
  const res = placed(apply({ c: 'supervise', name: 'w', spec, ue: 1, fx: 's' }))
  apply({ c: 'nodeUp', node: 'n2', inc: 'j1', prev: '' })
  apply({ c: 'drain', node: res.node, on: true })
  t.equal(st.registration('w')?.handoffTo, 'n2', 'moving with handoff')
  t.equal(apply({ c: 'handedOff', name: 'w', epoch: res.epoch, state: 3 }), true)
  const r = st.registration('w')!
  t.same([r.node, r.ref, r.fx, r.handoffState], ['n2', undefined, undefined, 3])
})

t.test('a snapshot keeps a fixed ref and whether its start was reported', async (t) => {
  const { st, apply } = world()
  const a = placed(apply({ c: 'supervise', name: 'a', spec, ue: 1, fx: 's' }))
  const b = placed(apply({ c: 'supervise', name: 'b', spec, ue: 1, fx: 's' }))
  apply({ c: 'startedMany', sworm: 's', node: 'n1', inc: 'i1', starts: [['b', b.epoch, b.ref!.id]] })
  const copy = new RegistryState()
  copy.restore(st.snapshot())
  t.same(copy.whereis('a'), a.ref)
  t.equal(copy.startingName(a.ref!), 'a', 'a: still starting')
  t.same(copy.whereis('b'), b.ref)
  t.equal(copy.startingName(b.ref!), undefined, 'b: running')
  // and the copy goes on alike: the report of a's start confirms it there too
  t.same(copy.apply({ c: 'startedMany', sworm: 's', node: 'n1', inc: 'i1', starts: [['a', a.epoch, a.ref!.id]] }, 100), [true])
  t.equal(copy.startingName(a.ref!), undefined)
})
