/**
 * The registry's client sessions (Raft thesis §6.3): a command proposed again with the same
 * session and sequence number is applied once, and its retry gets the first result (issue #10.4).
 */
import t from 'tap'
import { RegistryState } from '../src/registry/state.js'
import type { RegistryCommand, WorkerRef } from '../src/registry/types.js'

const ref = (id: number, inc = 'i1'): WorkerRef => ({ sworm: 's', node: 'n1', inc, id })

t.test('a retried command is applied once and answered with its first result', async (t) => {
  // Failed on fdfa2c3 (no sessions): the retry of a register that had taken effect answered
  // false ("taken"), and a retried unregister after a new register removed the new one.
  const st = new RegistryState()
  let i = 0
  st.apply({ c: 'nodeUp', node: 'n1', inc: 'i1' }, ++i)
  const s = (seq: number, low = seq) => ({ node: 'n1', inc: 'i1', seq, low })
  const reg: RegistryCommand = { c: 'register', name: 'a', ref: ref(1), s: s(1) }
  t.equal(st.apply(reg, ++i), true, 'first: registered')
  t.equal(st.apply(reg, ++i), true, 'the retry gets the first answer, not "taken"')
  t.equal(st.apply({ c: 'unregister', name: 'a', s: s(2) }, ++i), true, 'unregistered')
  t.equal(st.apply({ c: 'register', name: 'a', ref: ref(2), s: s(3, 2) }, ++i), true, 'registered again, to another worker')
  t.equal(st.apply({ c: 'unregister', name: 'a', s: s(2) }, ++i), true, 'a late duplicate of the unregister is answered from the cache')
  t.equal(st.whereis('a')?.id, 2, 'and did not remove the new registration')
  t.equal(st.apply({ c: 'unregister', name: 'a', s: s(2, 4) }, ++i), 'session-expired', 'a duplicate of a seq below low is refused')
  t.equal(st.whereis('a')?.id, 2, 'still there')
})

t.test('sessions belong to a node incarnation and survive a snapshot', async (t) => {
  const st = new RegistryState()
  let i = 0
  st.apply({ c: 'nodeUp', node: 'n1', inc: 'i1' }, ++i)
  const reg: RegistryCommand = { c: 'register', name: 'b', ref: ref(1), s: { node: 'n1', inc: 'i1', seq: 7, low: 7 } }
  t.equal(st.apply(reg, ++i), true)
  const copy = new RegistryState()
  copy.restore(st.snapshot())
  t.equal(copy.apply(reg, ++i), true, 'the restored replica answers the retry from the session too')
  t.equal(copy.apply({ c: 'register', name: 'c', ref: ref(1), s: { node: 'n1', inc: 'i0', seq: 1, low: 1 } }, ++i), 'session-expired', 'an older incarnation is refused')
  copy.apply({ c: 'nodeUp', node: 'n1', inc: 'i2' }, ++i)
  t.equal(copy.apply(reg, ++i), 'session-expired', 'once a new incarnation is up, the old session is gone')
})

t.test("a supervisor's retried 'started' for the same worker is answered true, not 'already started'", async (t) => {
  // Failed on 6be4757: the supervisor proposes `started` again after a timeout whose outcome was
  // unknown; the first had taken effect, so the retry answered false and the supervisor stopped a
  // worker whose ref the registry held and its callers had got. Under load (the 20,000-call test
  // of supervisor-process.test.ts) the factory then ran twice per name and callers saw two refs.
  const st = new RegistryState()
  let i = 0
  st.apply({ c: 'nodeUp', node: 'n1', inc: 'i1' }, ++i)
  const res = st.apply({ c: 'supervise', name: 'w', spec: { module: 'm', fn: 'f', args: [] } }, ++i)
  if (typeof res !== 'object' || Array.isArray(res) || !res.placed) throw new Error('not placed')
  const started: RegistryCommand = { c: 'started', name: 'w', epoch: res.epoch, ref: ref(5) }
  t.equal(st.apply(started, ++i), true, 'started')
  t.equal(st.apply(started, ++i), true, 'the same start reported again: still true')
  t.equal(st.apply({ c: 'started', name: 'w', epoch: res.epoch, ref: ref(6) }, ++i), false, 'another worker for the same epoch: refused')
  t.equal(st.whereis('w')?.id, 5, 'the registry holds the first worker')
})
