/**
 * The registry state machine seen through the KV interface of the linearizability checker:
 * putIfAbsent = registerName, delete = unregisterName, get = whereisName, put = unregister then
 * register (one command, applied atomically). Lets the Raft simulation check that registry
 * operations are linearizable under faults.
 */
import type { StateMachine } from '../../src/raft/node.js'
import { RegistryState } from '../../src/registry/state.js'
import type { WorkerRef } from '../../src/registry/types.js'
import type { KvInput, KvOutput } from '../../src/testkit/linearizability.js'

const ref = (value: string): WorkerRef => ({ sworm: 'sim', node: 'sim', inc: '1', id: Number(value.slice(1)) })
const value = (r: WorkerRef | undefined): string | undefined => (r ? `v${r.id}` : undefined)

export class RegistryKvStateMachine implements StateMachine<KvInput, KvOutput> {
  readonly registry = new RegistryState()

  constructor(private readonly onApply?: (index: number, cmd: KvInput) => void) {
    this.registry.apply({ c: 'nodeUp', node: 'sim', inc: '1' }, 0)
  }

  /** name -> value, for convergence checks. */
  get data(): Map<string, string> {
    return new Map(this.registry.registered().map(([n, r]) => [n, value(r)!]))
  }

  apply(cmd: KvInput, index: number): KvOutput {
    this.onApply?.(index, cmd)
    const reg = this.registry
    switch (cmd.op) {
      case 'get':
        return { value: value(reg.whereis(cmd.key)) }
      case 'putIfAbsent':
        return { ok: reg.apply({ c: 'register', name: cmd.key, ref: ref(cmd.value) }, index) === true }
      case 'delete':
        return { ok: reg.apply({ c: 'unregister', name: cmd.key }, index) === true }
      case 'put':
        reg.apply({ c: 'unregister', name: cmd.key }, index)
        reg.apply({ c: 'register', name: cmd.key, ref: ref(cmd.value) }, index)
        return { ok: true }
    }
  }

  snapshot(): Uint8Array {
    return this.registry.snapshot()
  }

  restore(data: Uint8Array): void {
    this.registry.restore(data)
  }
}
