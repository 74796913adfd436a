/**
 * The supervisor alone, on a registry it is handed and a lease the test controls: the rules that
 * tie starting a worker to the lease (issue #10.4).
 */
import t from 'tap'
import { silentLogger, systemClock } from '../src/raft/types.js'
import { RegistryState } from '../src/registry/state.js'
import type { RegistryCommand, RegistryResult } from '../src/registry/types.js'
import { LocalWorkers, type Worker } from '../src/supervisor/local-workers.js'
import { Supervisor } from '../src/supervisor/supervisor.js'
import { waitFor } from './helpers.js'

function harness() {
  const ref: { sup?: Supervisor } = {}
  const state = new RegistryState((ch) => ref.sup?.onChange(ch))
  let index = 0
  const proposed: RegistryCommand[] = []
  const lease = { ok: true, lapses: 1 }
  const factory: { release?: () => void; runs: number; terminated: number } = { runs: 0, terminated: 0 }
  const slow = async (): Promise<Worker> => {
    factory.runs++
    await new Promise<void>((r) => (factory.release = r))
    return { handleCall: () => 'ok', terminate: () => void factory.terminated++ }
  }
  const sup = (ref.sup = new Supervisor({
    sworm: 's',
    nodeId: 'n1',
    inc: 'i1',
    state,
    workers: new LocalWorkers(() => {}),
    log: silentLogger,
    moduleBase: process.cwd(),
    propose: async (cmd): Promise<RegistryResult> => {
      proposed.push(cmd)
      return state.apply(cmd, ++index)
    },
    read: async () => {},
    leaseOk: () => lease.ok,
    leaseLapses: () => lease.lapses,
    leaseTimeoutMs: 1000,
    stopped: () => false,
    clock: systemClock,
    loadModule: async () => ({ slow }),
  }))
  state.apply({ c: 'nodeUp', node: 'n1', inc: 'i1' }, ++index)
  return { state, sup, proposed, lease, factory, apply: (cmd: RegistryCommand) => state.apply(cmd, ++index) }
}

t.test('an async factory that outlives the lease: its worker is dropped when it resolves (#10.4)', async (t) => {
  // Failed on fdfa2c3: after the factory resolved, the supervisor checked only that the lease
  // held *then* and that its (possibly stale) registry still placed the name here, so a worker
  // whose factory spanned a lease gap (during which the name may have moved) was kept.
  const h = harness()
  h.apply({ c: 'supervise', name: 'x', spec: { module: 'm', fn: 'slow', args: [] } })
  await waitFor(() => h.factory.release !== undefined, 5000, 'the factory runs')
  // meanwhile the lease runs out and is renewed (a gap), while the local registry shows nothing new
  h.lease.ok = false
  await h.sup.tick()
  h.lease.ok = true
  h.lease.lapses++
  h.factory.release!()
  await waitFor(() => h.factory.terminated === 1, 5000, 'the worker is terminated')
  t.notOk(
    h.proposed.some((c) => c.c === 'startedMany'),
    'no start is reported for it',
  )
  t.equal(h.sup.size, 0, 'nothing runs')
})

t.test('an async factory that outlives the lease without the supervisor noticing in between (#10.4)', async (t) => {
  const h = harness()
  h.apply({ c: 'supervise', name: 'y', spec: { module: 'm', fn: 'slow', args: [] } })
  await waitFor(() => h.factory.release !== undefined, 5000, 'the factory runs')
  h.lease.lapses++ // ran out and came back between two looks
  h.factory.release!()
  await waitFor(() => h.factory.terminated === 1, 5000, 'the worker is terminated')
  t.equal(h.sup.size, 0, 'nothing runs')
})

t.test('no factory runs without the lease (#10.4)', async (t) => {
  const h = harness()
  h.lease.ok = false
  h.apply({ c: 'supervise', name: 'z', spec: { module: 'm', fn: 'slow', args: [] } })
  await new Promise((r) => setImmediate(r))
  await h.sup.tick()
  t.equal(h.factory.runs, 0, 'the factory did not run')
})

t.test('a factory within one lease keeps its worker', async (t) => {
  const h = harness()
  h.apply({ c: 'supervise', name: 'w', spec: { module: 'm', fn: 'slow', args: [] } })
  await waitFor(() => h.factory.release !== undefined, 5000, 'the factory runs')
  h.factory.release!()
  await waitFor(() => h.proposed.some((c) => c.c === 'startedMany'), 5000, 'its start is reported')
  t.equal(h.sup.size, 1, 'it runs')
  t.equal(h.factory.terminated, 0)
})
