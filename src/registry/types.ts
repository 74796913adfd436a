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

/**
 * The ref of registration `r` once its worker was reported running: undefined while a supervised
 * worker starts (no ref yet, or a ref fixed at its placement whose start no node reported yet:
 * {@link Registration.fx}).
 */
export function runningRef(r: Readonly<Registration>): WorkerRef | undefined {
  return r.fx === 1 ? undefined : r.ref
}

/**
 * How a name is held.
 * - `static`: bound to a worker the app spawned; never moved or restarted.
 * - `supervised`: started from a {@link StartSpec} on a node the registry placed it on;
 *   restarted when it crashes, moved when its node is gone or drains.
 * - `alias`: an extra name of a supervised worker; follows it across restarts and moves.
 */
export type RegistrationKind = 'static' | 'supervised' | 'alias'

/** Restart policy of a supervised worker (as in OTP). */
export type RestartPolicy = 'permanent' | 'transient' | 'temporary'

/** How to start a supervised worker: `(await import(module))[fn](...args)` on the chosen node. */
export interface StartSpec {
  /** Module specifier, resolved on the node that runs the worker (same code on every node). */
  module: string
  /** Name of the exported factory; it returns a worker object or a promise of one. */
  fn: string
  /** Arguments of the factory (msgpackr-encodable). */
  args: unknown[]
  /** `'transient'` (default): restart after a crash, not after a normal exit. */
  restart?: RestartPolicy
  /** Give up on the name after this many restarts within `maxSeconds`. Default 3. */
  maxRestarts?: number
  /** Default 5. */
  maxSeconds?: number
}

/** One registered name. */
export interface Registration {
  name: string
  kind: RegistrationKind
  /** The worker now answering to the name; undefined while a supervised worker is (re)starting. */
  ref: WorkerRef | undefined
  /** supervised: how to start it */
  spec?: StartSpec
  /** supervised: the node it is placed on (undefined when no node can take it) */
  node?: string
  /** supervised: bumped on every placement or restart; a start must name the current epoch */
  epoch?: number
  /**
   * supervised: epochs are unique across registrations of this name: each placement takes the
   * index of the entry that made it (at least the previous epoch + 1), so a late report about an
   * earlier registration of the same name cannot match this one. Absent for registrations made by
   * entries written before it existed, which replay with the old rule (epochs counted from 1).
   */
  ue?: 1
  /**
   * supervised: its `ref` was fixed when its `supervise` entry placed it (the worker's id is that
   * entry's index, negated: unique, and never one a node gives its own workers), and its node has
   * not reported the worker running yet. Messages to the ref wait for that report, or for word
   * from the node. Cleared by the report, or by the next placement (which leaves no ref until a
   * node reports a start, as placements always did).
   */
  fx?: 1
  /** supervised: a move with state handoff in progress, to this node */
  handoffTo?: string
  /** supervised: state handed over by the previous incarnation, for the next one's endHandoff() */
  handoffState?: unknown
  /** alias: the supervised name it stands for */
  target?: string
  /**
   * supervised: unregistered while placed on a live node; the name stays reserved until that
   * node confirms its worker stopped (so a new registration cannot overlap the old worker)
   */
  retiring?: boolean
}

/** A node of the sworm as the registry sees it. */
export interface NodeRecord {
  node: string
  inc: string
  up: boolean
  draining: boolean
  /** The zone the node announced (its `zone` option), if any. */
  zone?: string
}

/**
 * The client session a command was proposed in (Raft thesis §6.3): the proposing node's
 * incarnation and a sequence number unique in it. The state machine applies each (session, seq)
 * at most once and answers a retry with the first result, so a proposer may retry after a
 * timeout or a leader change. `low`: every seq below it is answered (its result may be dropped).
 */
export interface SessionTag {
  node: string
  inc: string
  seq: number
  low: number
}

/** The commands of the registry state machine (one Raft log entry each), maybe in a session. */
export type RegistryCommand = RegistryOp & { s?: SessionTag }

/** The operations of the registry state machine. */
export type RegistryOp =
  /** Bind `name` to `ref` if the name is free and the ref's node incarnation is up. */
  | { c: 'register'; name: string; ref: WorkerRef }
  /** Remove `name` (stops a supervised worker; aliases and group memberships go with it). */
  | { c: 'unregister'; name: string }
  /** Add `ref` to `group` (the ref must hold a name). */
  | { c: 'join'; group: string; ref: WorkerRef }
  /** Remove `ref` from `group`. */
  | { c: 'leave'; group: string; ref: WorkerRef }
  /** A static worker ended: drop every name and group membership it held. */
  | { c: 'workerDown'; ref: WorkerRef }
  /**
   * Every static worker of one node incarnation ended (its graceful stop): drop every name and
   * group membership they held, as a `workerDown` of each would, in one entry. Its supervised
   * names are left to the drain before it and to the failure detector. Since version 7.
   */
  | { c: 'workersDown'; node: string; inc: string }
  /**
   * A node incarnation started serving this sworm (older incarnations' workers are gone).
   * `prev`: the incarnation of the node that the proposer read (linearizably) before proposing,
   * `''` when there was none. Then the command takes effect only if the node's record still holds
   * `prev` (or `inc` itself): a late copy from a process that was replaced since is refused, rather
   * than undo the newer incarnation. Absent in entries written before it existed (no check).
   * `zone`: the node's `zone` option, which autopilot spreads the voters over. `ord: 1` (set by
   * every proposer since version 5): the names it places are taken in name order (see nodeDown).
   */
  | { c: 'nodeUp'; node: string; inc: string; prev?: string; zone?: string; ord?: 1 }
  /**
   * The leader declared a node gone: drop its static names, move its supervised workers. `term`:
   * the term of the leader that decided it; the command takes effect only in an entry that leader
   * appended (a decision is never forwarded to, or made on behalf of, another leader). `ord: 1`
   * (set by every proposer since version 5): the supervised names it moves are placed in name
   * order, found through an index; without it, in the order of the name table, found by a scan of
   * every name, as version 4 did: a log written by version 4 replays as it applied, whichever
   * snapshot a replica starts from.
   */
  | { c: 'nodeDown'; node: string; inc: string; term?: number; ord?: 1; max?: number }
  /**
   * Move on: the supervised names still placed on a node declared gone (incarnation `inc`, down),
   * at most `max` of them, the first in name order, as `nodeDown` moves them. A `nodeDown` with
   * `max` (set by every proposer since version 8) moves that many at most, and the leader moves
   * the rest in entries of this kind, one after another: a node's failure then holds each
   * replica's event loop for one slice at a time, not for all its names at once (100k names: 1.3
   * to 2 s, longer than a lease). `term` as in `nodeDown`. Since version 8.
   */
  | { c: 'moveOff'; node: string; inc: string; term: number; max: number }
  /**
   * Register a supervised name; the state machine places it on a node. `ue: 1` (set by every
   * proposer since it existed): the registration's epochs are log indexes, never reused by a later
   * registration of the same name (see `Registration.ue`).
   */
  | {
      c: 'supervise'
      name: string
      spec: StartSpec
      ue?: 1
      /**
       * The worker's ref is fixed by this entry (`registerName(..., { wait: 'placed' })`): the
       * registration holds `{ sworm: fx, node, inc, id: -epoch }` from its placement on (see
       * `Registration.fx`), and the result carries it. Set only with `ue`. Since version 9.
       */
      fx?: string
    }
  /** A node started the worker of `name` for `epoch`. */
  | { c: 'started'; name: string; epoch: number; ref: WorkerRef }
  /**
   * Workers one node incarnation started, reported together (a node's supervisor batches the
   * starts that complete while its previous report is in flight): each `[name, epoch, id]` has the
   * effect of a `started` of ref `{ sworm, node, inc, id }`. Its result is one boolean per start,
   * in order. Since version 6.
   */
  | { c: 'startedMany'; sworm: string; node: string; inc: string; starts: [name: string, epoch: number, id: number][] }
  /** The factory failed: the name is removed and the caller gets a StartError. */
  | { c: 'startFailed'; name: string; epoch: number; error: string }
  /** The worker of `name` ended; `restart` asks for a new incarnation on the same node. */
  | { c: 'stopped'; name: string; epoch: number; restart: boolean }
  /**
   * Workers of supervised names that ended, reported together (a node's supervisor batches the
   * ends it reports while its previous report is in flight): each `[name, epoch, restart]` has the
   * effect of a `stopped` (`restart`: 1 or 0). Its result is one boolean per stop, in order.
   * Since version 8.
   */
  | { c: 'stoppedMany'; stops: [name: string, epoch: number, restart: 0 | 1][] }
  /** Start or stop draining a node: its supervised workers move elsewhere with handoff. */
  /**
   * `pu: 1` (set by every proposer since version 9) with `on: false`: the names that had nowhere to
   * go (every node that could take them draining) are placed, as a node's coming up places them;
   * without it, as version 8 applied it (they waited for a node to come up).
   */
  | { c: 'drain'; node: string; on: boolean; pu?: 1 }
  /** The old incarnation handed over its state; the worker moves to the handoff target. */
  | { c: 'handedOff'; name: string; epoch: number; state: unknown }
  /** Even out supervised workers over the nodes that can take them (moves with handoff). */
  | { c: 'rebalance' }

/** Result of a `supervise` command. */
export type SuperviseResult =
  | { placed: true; epoch: number; node: string; /** with `fx`: the worker's ref, fixed */ ref?: WorkerRef }
  | { placed: false; exists: true; kind: RegistrationKind; ref: WorkerRef | undefined }
  | { placed: false; exists: false; noNode: true }

/** Results of {@link RegistryCommand}s, by command. */
export type RegistryResult = boolean | boolean[] | 'not-found' | 'node-down' | 'session-expired' | SuperviseResult | undefined
