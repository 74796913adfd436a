/**
 * The test hooks of a sworm, kept off its public class: the sworm registers them here when it is
 * made, and tests, tools and the simulation reach them through `src/internal.ts`.
 * @module
 * @internal
 */
import type { RaftNode } from './raft/node.js'
import type { PeerFaults } from './net/faults.js'
import type { WsHub } from './net/hub.js'
import type { RegistryState } from './registry/state.js'
import type { RegistryCommand, RegistryResult } from './registry/types.js'
import type { Worker } from './supervisor/local-workers.js'

/**
 * What tests and tools may reach inside a sworm.
 * @internal
 */
export interface SwormInternals {
  /** The Raft node behind the sworm (membership changes, status, leadership transfer). */
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  /** The WebSocket hub of the node (shared by the sworms listening on its address), if it has one. */
  readonly hub: WsHub | undefined
  /** The fault injector around the node's transports (`block(peer, true)` cuts a link), if it has one. */
  readonly faults: PeerFaults | undefined
  /**
   * Model a crash: stop every activity at once, without terminate callbacks, proposals or
   * leadership transfer. Returns the worker objects that were alive.
   */
  crash(): Worker[]
  /** The registry as this node applied it (read only: the simulation's checks look at what `registered()` leaves out). */
  readonly state: RegistryState
  /** Whether a worker with local id `id` lives on this node (the simulation checks each registered ref has one). */
  hasWorker(id: number): boolean
  /** Requests waiting for another node's answer (calls, admin requests), and messages in local mailboxes. */
  queues(): { requestsOut: number; mailboxQueued: number }
}

const hooks = new WeakMap<object, SwormInternals>()

/** Register the internals of `sworm`. @internal */
export function setInternals(sworm: object, internals: SwormInternals): void {
  hooks.set(sworm, internals)
}

/** The internals of `sworm`. @internal */
export function getInternals(sworm: object): SwormInternals {
  const h = hooks.get(sworm)
  if (!h) throw new TypeError('not a sworm')
  return h
}
