/**
 * The supervisor alone, on a registry it is handed, a lease and read barriers the test controls,
 * ticked by hand: what the supervisor's unit tests share.
 */
import { silentLogger, systemClock, type Clock } from '../src/raft/types.js'
import { RegistryState } from '../src/registry/state.js'
import type { RegistryCommand, RegistryResult } from '../src/registry/types.js'
import { LocalWorkers } from '../src/supervisor/local-workers.js'
import { Supervisor } from '../src/supervisor/supervisor.js'

/** The lease as the test sets it. */
export interface TestLease {
  ok: boolean
  lapses: number
}

/** A read barrier held back (`readGate.hold`): the test lets it through, or fails it. */
export interface HeldRead {
  ok(): void
  fail(err: Error): void
}

/**
 * A supervisor of node n1 (incarnation i1, up in its registry) whose proposals apply at once
 * (unless `refuse` says no), whose factories are `factories(lease)`, and whose `reconcileSlice` is
 * the one given, on `clock` (the system's by default).
 */
export function supervisorHarness(factories: (lease: TestLease) => Record<string, unknown>, reconcileSlice?: number, clock: Clock = systemClock) {
  const ref: { sup?: Supervisor } = {}
  const state = new RegistryState((ch) => ref.sup?.onChange(ch))
  let index = 0
  const proposed: RegistryCommand[] = []
  let refuse: (cmd: RegistryCommand) => boolean = () => false
  const lease: TestLease = { ok: true, lapses: 1 }
  const reads: HeldRead[] = []
  const readGate = { hold: false }
  const module = factories(lease)
  const sup = (ref.sup = new Supervisor(
    {
      sworm: 's',
      nodeId: 'n1',
      inc: 'i1',
      state,
      workers: new LocalWorkers((id, reason) => void ref.sup?.onExit(id, reason)),
      log: silentLogger,
      moduleBase: process.cwd(),
      maxStateBytes: 1024 * 1024,
      propose: async (cmd): Promise<RegistryResult> => {
        proposed.push(cmd)
        if (refuse(cmd)) throw new Error('no leader')
        return state.apply(cmd, ++index)
      },
      read: () => (readGate.hold ? new Promise<void>((ok, fail) => reads.push({ ok, fail })) : Promise.resolve()),
      leaseOk: () => lease.ok,
      leaseLapses: () => lease.lapses,
      leaseTimeoutMs: 1000,
      stopped: () => false,
      clock,
      loadModule: async () => module,
    },
    reconcileSlice,
  ))
  state.apply({ c: 'nodeUp', node: 'n1', inc: 'i1' }, ++index)
  return {
    state,
    sup,
    proposed,
    lease,
    reads,
    readGate,
    apply: (cmd: RegistryCommand) => state.apply(cmd, ++index),
    refuse: (f: (cmd: RegistryCommand) => boolean) => (refuse = f),
  }
}
