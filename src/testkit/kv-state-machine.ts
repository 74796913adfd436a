/**
 * A small key-value state machine for testing the Raft engine (and for the linearizability
 * checker's {@link kvModel}): put, putIfAbsent, delete and get, applied deterministically.
 * @module
 */
import { pack, unpack } from 'msgpackr'
import type { StateMachine } from '../raft/node.js'
import type { KvInput, KvOutput } from './linearizability.js'

/** The test key-value store. `onApply` sees every applied command (for safety checkers). */
export class KvStateMachine implements StateMachine<KvInput, KvOutput> {
  readonly data = new Map<string, string>()
  constructor(private readonly onApply?: (index: number, cmd: KvInput) => void) {}

  apply(cmd: KvInput, index: number): KvOutput {
    this.onApply?.(index, cmd)
    switch (cmd.op) {
      case 'get':
        return { value: this.data.get(cmd.key) }
      case 'put':
        this.data.set(cmd.key, cmd.value)
        return { ok: true }
      case 'putIfAbsent':
        if (this.data.has(cmd.key)) return { ok: false }
        this.data.set(cmd.key, cmd.value)
        return { ok: true }
      case 'delete':
        return { ok: this.data.delete(cmd.key) }
    }
  }

  snapshot(): Uint8Array {
    return pack([...this.data.entries()])
  }

  restore(bytes: Uint8Array): void {
    this.data.clear()
    for (const [k, v] of unpack(bytes) as Array<[string, string]>) this.data.set(k, v)
  }
}
