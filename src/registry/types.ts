/**
 * Values of the registry: worker references, registrations, and the commands that change them.
 * All are plain msgpackr-encodable data: they travel in Raft log entries and between nodes.
 * @module
 */

/**
 * A reference to one worker, usable from any node of the sworm. Small and serializable: pass it
 * around freely. Two refs denote the same worker when all four fields are equal.
 */
export interface WorkerRef {
  /** The sworm the worker belongs to. */
  readonly sworm: string
  /** The node the worker runs on. */
  readonly node: string
  /** The incarnation of that node (changes on each start), so refs of a dead process never match. */
  readonly inc: string
  /** The worker's id on that node incarnation. */
  readonly id: number
}

/** A string key identifying a worker, for maps and sets. */
export function refKey(r: WorkerRef): string {
  return `${r.node}/${r.inc}/${r.id}`
}

/** Whether two refs denote the same worker. */
export function sameRef(a: WorkerRef, b: WorkerRef): boolean {
  return a.id === b.id && a.node === b.node && a.inc === b.inc && a.sworm === b.sworm
}

/** How a name is held. `static`: bound to a worker the app spawned; never moved or restarted. */
export type RegistrationKind = 'static' | 'supervised'

/** One registered name. */
export interface Registration {
  name: string
  ref: WorkerRef
  kind: RegistrationKind
}

/** A node of the sworm as the registry sees it. */
export interface NodeRecord {
  node: string
  inc: string
  up: boolean
}

/** The commands of the registry state machine (one Raft log entry each). */
export type RegistryCommand =
  /** Bind `name` to `ref` if the name is free and the ref's node incarnation is up. */
  | { c: 'register'; name: string; ref: WorkerRef }
  /** Remove `name` (and the worker's group memberships if it has no other name). */
  | { c: 'unregister'; name: string }
  /** Add `ref` to `group` (the ref must hold a name). */
  | { c: 'join'; group: string; ref: WorkerRef }
  /** Remove `ref` from `group`. */
  | { c: 'leave'; group: string; ref: WorkerRef }
  /** A worker ended: drop every name and group membership it held. */
  | { c: 'workerDown'; ref: WorkerRef }
  /** A node incarnation started serving this sworm (older incarnations' workers are gone). */
  | { c: 'nodeUp'; node: string; inc: string }
  /** The leader declared a node gone: drop the names of its static workers. */
  | { c: 'nodeDown'; node: string; inc: string }

/** Results of {@link RegistryCommand}s, by command. */
export type RegistryResult = boolean | 'not-found' | undefined
