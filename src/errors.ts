/**
 * Typed errors of the Raft engine. Every error has a stable `code` so callers can branch on it
 * without `instanceof` across package copies.
 * @module
 */

/** Base class of every error Sworm throws or rejects with. */
export class SwormError extends Error {
  /** Stable machine-readable code, e.g. `'NOT_LEADER'`. */
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** The node is not the leader and could not forward the request. `leader` is a hint, maybe stale. */
export class NotLeaderError extends SwormError {
  readonly leader: string | undefined
  constructor(leader: string | undefined, message?: string) {
    super('NOT_LEADER', message ?? (leader ? `not the leader; try ${leader}` : 'not the leader; no leader known'))
    this.leader = leader
  }
}

/** An operation did not complete in time. It may still take effect later. */
export class TimeoutError extends SwormError {
  constructor(message: string) {
    super('TIMEOUT', message)
  }
}

/** The node is stopping or stopped; the operation was not (or may not have been) done. */
export class ShuttingDownError extends SwormError {
  constructor(message = 'the node is shutting down') {
    super('SHUTTING_DOWN', message)
  }
}

/**
 * A proposal was accepted by a leader that lost its leadership before committing it; the entry
 * was replaced by another leader's and did not take effect.
 */
export class ProposalDroppedError extends SwormError {
  constructor(message = 'the proposal was overwritten by a new leader and did not take effect') {
    super('PROPOSAL_DROPPED', message)
  }
}

/** A membership change was refused (another one is pending, unknown node, ...). */
export class ConfigChangeError extends SwormError {
  constructor(message: string) {
    super('CONFIG_CHANGE', message)
  }
}

/** Stable storage holds a record that fails its checksum or cannot be decoded. */
export class CorruptStorageError extends SwormError {
  /** The storage key (or description) of the bad record. */
  readonly record: string
  constructor(record: string, message: string) {
    super('CORRUPT_STORAGE', `corrupt record ${record}: ${message}`)
    this.record = record
  }
}

/**
 * Stable storage failed to write (full disk, fsync error). The node stops serving until its disk
 * works again. An operation under way when the disk failed has an unknown outcome, as with
 * {@link TimeoutError}: its entry may already be on other nodes and commit there (the leader sends
 * its appends before it writes them itself). One asked of the node while it is failed did not
 * take effect.
 */
export class StorageError extends SwormError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STORAGE', message, options)
  }
}

/** An argument or option is invalid (wrong type, too large, unknown ref). Nothing was changed. */
export class InvalidArgumentError extends SwormError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message)
  }
}

/** The ref is not registered in this sworm (for `join` / `leave`). */
export class NotFoundError extends SwormError {
  constructor(message: string) {
    super('NOT_FOUND', message)
  }
}

/** No worker answers to that name or ref (unknown name, worker ended, node gone). */
export class NoWorkerError extends SwormError {
  constructor(message: string) {
    super('NO_WORKER', message)
  }
}

/**
 * A call reached a node (it was sent over a working connection) and that node died, or the
 * connection was lost, before the reply came: the worker may or may not have handled it. Sworm
 * never sends a call twice (at most once), so the caller decides whether to try again.
 */
export class OutcomeUnknownError extends SwormError {
  constructor(message: string) {
    super('OUTCOME_UNKNOWN', message)
  }
}

/**
 * The caller's `AbortSignal` was aborted before the operation ended (Node's convention: name
 * `AbortError`, `cause` the signal's reason). Like a timeout, the operation may still take effect:
 * a registration that reached the leader is not undone, and a call that was sent may be handled.
 */
export class AbortError extends SwormError {
  constructor(message = 'the operation was aborted', options?: { cause?: unknown }) {
    super('ABORT_ERR', message, options)
  }
}

/** The worker crashed (threw or rejected) while handling the message. */
export class WorkerCrashedError extends SwormError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('WORKER_CRASHED', message, options)
  }
}

/** The name is already registered; `ref` is the worker answering to it (if running). */
export class AlreadyRegisteredError extends SwormError {
  readonly ref: unknown
  constructor(name: string, ref: unknown) {
    super('ALREADY_REGISTERED', `${JSON.stringify(name)} is already registered`)
    this.ref = ref
  }
}

/** A supervised worker could not be started (import, missing export, factory threw or returned no worker). */
export class StartError extends SwormError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('START_FAILED', message, options)
  }
}

/** No node can take a supervised worker (none up, or all draining). */
export class NoNodeError extends SwormError {
  constructor(message = 'no node can run the worker (none is up, or all are draining)') {
    super('NO_NODE', message)
  }
}

/**
 * This node's data directory is empty (or new), but the cluster already knows this node id with
 * another data directory: the node lost what it promised as a voter (its votes and its log), and
 * Raft is only safe if no voter ever forgets them. It refuses to start. Remove the old id from the
 * cluster (`removeNode`) and start the machine under a new id with `join`.
 */
export class NodeDataLostError extends SwormError {
  /** The node id concerned. */
  readonly node: string
  constructor(node: string, message: string) {
    super('DATA_LOST', message)
    this.name = 'NodeDataLostError'
    this.node = node
  }
}

/**
 * A new node was started with `peers`, but those peers already run a cluster that does not list
 * this node: a node joins an existing cluster with `join`.
 */
export class ClusterExistsError extends SwormError {
  constructor(message: string) {
    super('CLUSTER_EXISTS', message)
    this.name = 'ClusterExistsError'
  }
}
