/**
 * Messages to workers: `send` (a cast) and `call` (a request and its reply), to a worker on this
 * node or on another, by name or by ref; and the other side, delivering what other nodes send to
 * this node's workers. A supervised worker handles nothing unless this node's lease holds.
 *
 * Location transparency (by name): a name whose worker is moving, restarting, or on a node that
 * is down or unreachable is not an error. A call waits for the registry to show the next running
 * incarnation, then goes there, all within its own timeout; a call that reaches a node where the
 * worker is gone (answered NO_WORKER: the worker never saw it) goes on to the next incarnation.
 * Casts wait in a bounded buffer per name and go out in order. A call is sent at most once to a
 * worker: once it went out on a working connection, the death of that node, or the loss of that
 * connection, rejects it at once with OUTCOME_UNKNOWN (it is never sent again). A ref pins one
 * incarnation: calls and casts to a ref never follow a move. Messages to a ref fixed before its
 * worker ran (`registerName(..., { wait: 'placed' })`) wait for it here: see starting-refs.ts.
 * @module
 */
import { NoWorkerError, OutcomeUnknownError, SwormError, TimeoutError, WorkerCrashedError } from '../errors.js'
import { encodingProblem } from '../util/encodable.js'
import { withDeadline } from '../util/retry.js'
import { isObj } from '../args.js'
import { isMember } from '../cluster/config.js'
import { clip } from '../observability/rate-limited-log.js'
import type { RaftNode } from '../raft/node.js'
import type { Clock } from '../raft/types.js'
import type { RegistryChange, RegistryState } from '../registry/state.js'
import { sameRef, type RegistryCommand, type RegistryResult, type WorkerRef } from '../registry/types.js'
import type { LocalWorkers } from '../supervisor/local-workers.js'
import { PendingRequests } from './pending.js'
import { StartingRefs } from './starting-refs.js'
import type { WireRouter } from './router.js'

/** What messaging needs of its node. */
export interface MessagingHost {
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly state: RegistryState
  /** The ref answering to a name here (the registry's, or one its host just said runs). */
  whereis(name: string): WorkerRef | undefined
  readonly workers: LocalWorkers
  readonly router: WireRouter
  readonly clock: Clock
  /** Whether `ref` is a worker of this node incarnation. */
  isLocal(ref: WorkerRef): boolean
  /** Whether worker `id` may handle a message now (see supervisor/fencing.ts). */
  gate(id: number): boolean
  /** Throws once the sworm is stopped. */
  guard(): void
  /** The largest message, in bytes: a reply with more values than that is refused unwalked. */
  readonly maxMessageBytes: number
  /** Casts held per name at most (see SwormOptions.castBufferSize). */
  readonly castBufferSize: number
  /** How long a cast is held at most (callTimeoutMs). */
  readonly castHoldMs: number
  /** Counters: casts dropped, calls redirected, calls rejected with OUTCOME_UNKNOWN. */
  readonly count: { castDropped(n: number): void; callRedirected(): void; callOutcomeUnknown(n: number): void }
}

/** Casts to one name, held until its worker runs again, each until its own deadline. */
interface Held {
  msgs: Array<{ msg: unknown; until: number }>
}

/** Why a worker's reply could not cross the wire unchanged, if so (see util/encodable.ts). */
function replyProblem(value: unknown, maxValues: number): string | undefined {
  const problem = encodingProblem(value, "the worker's reply", maxValues)
  return problem && `${problem}: it cannot be sent back unchanged (see "Values" in the README)`
}

/**
 * How often a waiting call or held cast looks again without a change: a safety net only (every
 * change that can give it a worker wakes it, and so does a restored snapshot, which emits none:
 * see `Messaging.recheck`). It was 250 ms: with 10,000 calls waiting on one node through a
 * failover, their looks cost that node about 400 ms of CPU over the lease's wait (session 23).
 */
export const RECHECK_MS = 1000

/** Worker messaging of one node. */
export class Messaging {
  private readonly calls: PendingRequests
  /**
   * What waits on a change of a name (or of any node or connection), by name: each waiter, and
   * whether it waits for a ref it can reach by name (a call or held casts by name: woken only by
   * the changes that can give one, see `onChange`) or for any change of the name (a message to a
   * starting worker's fixed ref, which also goes once the name moved on: see starting-refs.ts).
   */
  private readonly waiting = new Map<string, Map<() => void, boolean>>()
  private readonly held = new Map<string, Held>()
  /** Nodes whose connection was lost and has not opened again (their workers cannot be reached). */
  private readonly lost = new Set<string>()
  /** The registry's count of restored snapshots when `recheck` last looked. */
  private restoresSeen = 0
  /** Times a waiting message looked again (woken by a change, or by its timer): for tests. @internal */
  looks = 0
  /** Messages to refs whose worker is starting (`registerName(..., { wait: 'placed' })`), held here until it runs. */
  private readonly starting: StartingRefs

  constructor(private readonly host: MessagingHost) {
    const { router, workers } = host
    this.calls = new PendingRequests(host.clock)
    this.starting = new StartingRefs(host, {
      castNow: (ref, msg) => this.castNow(ref, msg),
      readBefore: (deadline, late) => this.readBefore(deadline, late),
      change: (name, deadline) => this.change(name, deadline, false),
    })
    router.on('cast', (_from, m) => {
      const local = this.localId(m.to)
      if (local !== undefined && host.gate(local)) workers.cast(local, m.msg)
    })
    router.on('call', (from, m) => {
      if (typeof m.id !== 'number') {
        router.drop(from, 'call without id')
        return
      }
      const id = m.id
      const local = this.localId(m.to)
      if (local === undefined || !host.gate(local) || !workers.has(local)) {
        router.send(from, { t: 'reply', id, ok: false, code: 'NO_WORKER', message: 'no such worker on that node' })
        return
      }
      workers.call(local, m.msg).then(
        (value) => {
          const problem = replyProblem(value, host.maxMessageBytes)
          if (problem) router.send(from, { t: 'reply', id, ok: false, code: 'WORKER_CRASHED', message: problem })
          else router.send(from, { t: 'reply', id, ok: true, value })
        },
        (err: unknown) => {
          const e = err instanceof SwormError ? err : new WorkerCrashedError(String(err))
          router.send(from, { t: 'reply', id, ok: false, code: e.code, message: e.message })
        },
      )
    })
    router.on('reply', (from, m) => {
      const error = m.ok ? undefined : m.code === 'NO_WORKER' ? new NoWorkerError(String(m.message)) : new WorkerCrashedError(String(m.message))
      const got = this.calls.settle(from, m.id, error ? { ok: false, error } : { ok: true, value: m.value })
      // 'late': the call timed out, or was rejected when its node was lost
      if (got === 'stranger') router.drop(from, 'reply from a node the call did not go to')
    })
  }

  /** Calls waiting for a reply from another node. */
  get size(): number {
    return this.calls.size
  }

  /** See {@link Sworm.send}; `target` and `msg` are checked by the caller. */
  async send(target: string | WorkerRef, msg: unknown): Promise<void> {
    const { host } = this
    if (typeof target !== 'string') {
      const ref = this.checkRef(target)
      if (this.starting.mustWait(ref)) {
        // a worker whose ref was fixed before it ran: held, as casts by name are, until it runs
        // (for castHoldMs at most, castBufferSize of them at most: the oldest goes), behind what
        // was sent to it before
        this.starting.holdCast(ref, msg)
        return
      }
      this.castNow(ref, msg)
      return
    }
    const name = target
    const queue = this.held.get(name)
    if (queue) {
      this.hold(queue, msg) // behind the casts already held: in order
      return
    }
    if (!host.state.hasName(name)) {
      // the local copy may lag: one linearizable read before saying the name is unknown
      const within = host.castHoldMs
      await this.readBefore(host.clock.now() + within, () => new TimeoutError(`could not learn from the leader within ${within} ms whether ${JSON.stringify(name)} is registered`))
      if (!host.state.hasName(name)) throw new NoWorkerError(`no worker is registered as ${JSON.stringify(name)}`)
    }
    const later = this.held.get(name) // casts held while this one waited for the read go first
    if (later) return this.hold(later, msg)
    const ref = this.live(name)
    if (ref && this.castTo(ref, msg)) return
    const q: Held = { msgs: [] }
    this.held.set(name, q)
    this.hold(q, msg)
    void this.release(name, q)
  }

  /** See {@link Sworm.call}; `target`, `msg` and `timeout` are checked by the caller. */
  async call<R>(target: string | WorkerRef, msg: unknown, timeout: number): Promise<R> {
    const { host } = this
    const deadline = host.clock.now() + timeout
    if (typeof target !== 'string') {
      const ref = this.checkRef(target)
      if (!this.starting.mustWait(ref)) return this.deliver<R>(ref, msg, timeout, timeout)
      const late = (): Error => new TimeoutError(`call not answered within ${timeout} ms: the worker has not started`)
      return this.starting.inTurn(ref, deadline, late, () => this.deliver<R>(ref, msg, Math.max(1, deadline - host.clock.now()), timeout))
    }
    let tried: WorkerRef | undefined
    for (;;) {
      const ref = await this.nextRef(target, deadline, timeout, tried)
      host.guard() // stop() may have begun while the name was looked up (its pending calls are already failed)
      // casts to the name held until now go first (a call never overtakes casts sent before it)
      const q = this.held.get(target)
      if (q) this.sendHeld(q, ref)
      try {
        return await this.deliver<R>(ref, msg, Math.max(1, deadline - host.clock.now()), timeout)
      } catch (err) {
        // NO_WORKER: the worker never saw the call (it ended, moved, or its node lost its lease):
        // it may go to the next incarnation
        if (!(err instanceof NoWorkerError)) throw err
        tried = ref
        host.count.callRedirected()
      }
    }
  }

  /**
   * A change applied to the registry: wake what waits on it, and only that (a node declared gone
   * loses its calls). What waits for a name waits for a ref it can reach (or for the name to go):
   * a change that cannot give one does not wake it. Only four can: a name bound (`registered`),
   * a supervised worker running (`started`), a name gone (`unregistered`), or going (`retire`:
   * callers no longer see it; its `unregistered` waits for its host to stop the worker, which a
   * host cut off never confirms: found by review, a call waited 900 ms for its safety net); a
   * name placed on another node (`placed`: moved, restarting, its ref cleared or fixed but not
   * running yet), a failed start, a handoff begun, a name left without a node cannot, and wake
   * only what waits on any change of the name (messages to a starting worker's fixed ref, which go
   * once the name moved on). A node declared gone wakes nothing by itself (its refs become
   * unreachable, none reachable; each of its names that moves or goes has a change of its own),
   * nor does a worker told to stop (`stopWorker`: its name's `placed` or `unregistered` comes
   * with it). A node up under a new incarnation wakes everything (refs of that incarnation become
   * reachable). Found by failovers' profiles: with 10,000 calls waiting on the leader, the
   * `nodeDown` woke them all (session 23), and each moved name woke its call twice, at its move
   * and at its start, where only the start can give it a worker (session 25).
   */
  onChange(ch: RegistryChange): void {
    if (ch.type === 'nodeDown' || ch.type === 'nodeUp') {
      // declared gone, or replaced by a new incarnation (it restarted): calls to that process end
      const gone = ch.type === 'nodeDown' ? (tag: string | undefined) => tag === ch.inc : (tag: string | undefined) => tag !== ch.inc
      const how = ch.type === 'nodeDown' ? 'was declared gone' : 'restarted'
      const n = this.calls.failNode(ch.node, gone, () => new OutcomeUnknownError(`node ${ch.node} ${how} before it answered the call; the worker may or may not have handled it`))
      if (n > 0) this.host.count.callOutcomeUnknown(n)
      if (ch.type === 'nodeUp') this.wakeAll()
    } else if ('name' in ch && ch.type !== 'stopWorker') {
      const givesRef = ch.type === 'registered' || ch.type === 'started' || ch.type === 'unregistered' || ch.type === 'retire'
      this.wake(ch.name, givesRef)
      for (const alias of this.host.state.aliasesOfName(ch.name)) this.wake(alias, givesRef)
    }
  }

  /**
   * Wake everything that waits if the registry was replaced by a snapshot since the last look (a
   * restore emits no change). Called often (the sworm's supervisor tick).
   */
  recheck(): void {
    const restores = this.host.state.restores
    if (restores === this.restoresSeen) return
    this.restoresSeen = restores
    this.wakeAll()
  }

  /** Something new is known about `name` outside the registry (a hint): wake what waits on it. */
  nameChanged(name: string): void {
    this.wake(name)
    for (const alias of this.host.state.aliasesOfName(name)) this.wake(alias)
  }

  /** The connection to `peer` opened or was lost (see Transport.onConnection). */
  onConnection(peer: string, up: boolean): void {
    if (up) this.lost.delete(peer)
    else {
      this.lost.add(peer)
      const n = this.calls.failNode(peer, () => true, () => new OutcomeUnknownError(`the connection to node ${peer} was lost before it answered the call; the worker may or may not have handled it`))
      if (n > 0) this.host.count.callOutcomeUnknown(n)
    }
    this.wakeAll()
  }

  /** Reject every call waiting for a reply, drop every held cast (on stop). */
  close(err: Error): void {
    this.calls.failAll(err)
    for (const [name, q] of this.held) this.dropHeld(name, q)
    this.wakeAll()
  }

  // ------------------------------------------------------------ calls

  /**
   * The ref to send a call for `name` to: a running worker, other than `tried`, that can be
   * reached now. Waits for one until `deadline`.
   * @throws NoWorkerError (the name is not registered), TimeoutError (none within the deadline)
   */
  private async nextRef(name: string, deadline: number, timeout: number, tried: WorkerRef | undefined): Promise<WorkerRef> {
    const { host } = this
    let read = false
    for (;;) {
      const ref = this.live(name)
      if (ref && !(tried && sameRef(ref, tried))) return ref
      if (!ref && !host.state.hasName(name)) {
        if (read || tried) throw new NoWorkerError(`no worker is registered as ${JSON.stringify(name)}`)
        // the local copy may lag: one linearizable read before saying the name is unknown
        await this.readBefore(deadline, () => new TimeoutError(`call not answered within ${timeout} ms: could not learn from the leader whether ${JSON.stringify(name)} is registered`))
        read = true
        continue
      }
      // registered, but moving, restarting, stopping, or on a node that cannot be reached
      if (host.clock.now() >= deadline) {
        throw new TimeoutError(`call not answered within ${timeout} ms: the worker of ${JSON.stringify(name)} is moving, restarting, or its node cannot be reached`)
      }
      await this.change(name, deadline, true)
      host.guard()
    }
  }

  /**
   * A linearizable read (the local copy then holds everything committed before it), ended at
   * `deadline` with `late()`; a read that fails (no leader) rejects with its own error.
   */
  private async readBefore(deadline: number, late: () => Error): Promise<void> {
    const { host } = this
    await withDeadline(host.clock, host.raft.read(), Math.max(1, deadline - host.clock.now()), late)
    host.guard()
  }

  /** Send the call to `ref` and wait for its reply (or its worker's error) for `ms`. */
  private async deliver<R>(ref: WorkerRef, msg: unknown, ms: number, timeout: number): Promise<R> {
    const { host } = this
    const timedOut = (): TimeoutError => new TimeoutError(`call not answered within ${timeout} ms`)
    if (host.isLocal(ref)) {
      if (!host.gate(ref.id)) throw new NoWorkerError('the worker has stopped (this node lost its lease)')
      const value = await withDeadline(host.clock, host.workers.call(ref.id, msg), ms, timedOut)
      // the same answer as from another node, where the reply must cross the wire
      const problem = replyProblem(value, host.maxMessageBytes)
      if (problem) throw new WorkerCrashedError(problem)
      return value as R
    }
    return this.calls.request<R>(ref.node, ms, timedOut, (id) => host.router.send(ref.node, { t: 'call', id, to: ref, msg }), ref.inc)
  }

  // ------------------------------------------------------------ casts

  /** Cast to `ref` if it can take it now. */
  private castTo(ref: WorkerRef, msg: unknown): boolean {
    const { host } = this
    if (host.isLocal(ref)) return host.gate(ref.id) && host.workers.cast(ref.id, msg)
    host.router.send(ref.node, { t: 'cast', to: ref, msg })
    return true
  }

  private hold(q: Held, msg: unknown): void {
    q.msgs.push({ msg, until: this.host.clock.now() + this.host.castHoldMs })
    if (q.msgs.length > Math.max(1, Math.floor(this.host.castBufferSize))) {
      q.msgs.shift()
      this.host.count.castDropped(1)
    }
  }

  /** Deliver the casts held for `name`, in order, once its worker runs; drop them when it is gone, or each when too late. */
  private async release(name: string, q: Held): Promise<void> {
    const { host } = this
    for (;;) {
      if (this.held.get(name) !== q) return // dropped (stop)
      const ref = this.live(name)
      if (ref) this.sendHeld(q, ref)
      else if (!host.state.hasName(name)) {
        this.dropHeld(name, q)
        return
      } else {
        const now = host.clock.now()
        let late = 0
        while (late < q.msgs.length && q.msgs[late]!.until <= now) late++
        if (late > 0) {
          q.msgs.splice(0, late)
          host.count.castDropped(late)
        }
      }
      if (q.msgs.length === 0) {
        this.held.delete(name)
        return
      }
      await this.change(name, q.msgs[0]!.until, true)
    }
  }

  /** Send the casts held in `q` to `ref`, in order, as far as it takes them. */
  private sendHeld(q: Held, ref: WorkerRef): void {
    let sent = 0
    while (sent < q.msgs.length && this.castTo(ref, q.msgs[sent]!.msg)) sent++
    q.msgs.splice(0, sent)
  }

  private dropHeld(name: string, q: Held): void {
    if (this.held.get(name) === q) this.held.delete(name)
    if (q.msgs.length > 0) this.host.count.castDropped(q.msgs.length)
    q.msgs = []
  }

  // ------------------------------------------------------------ waiting

  /**
   * The ref answering to `name` if a message can reach its worker now: a local worker that may
   * handle messages, or a worker of an incarnation that is up, on a node whose connection to this
   * one was not lost (a node not connected yet is dialed when the message is sent).
   */
  private live(name: string): WorkerRef | undefined {
    const { host } = this
    const ref = host.whereis(name)
    if (!ref) return undefined
    if (host.isLocal(ref)) return host.gate(ref.id) && host.workers.has(ref.id) ? ref : undefined
    // (a ref fixed at the name's placement: once its node reported the worker running)
    return host.state.isUp(ref.node, ref.inc) && !this.lost.has(ref.node) && host.state.startingName(ref) === undefined ? ref : undefined
  }

  /** Cast `msg` to `ref` now. @throws NoWorkerError if `ref` is a worker of this node that ended */
  private castNow(ref: WorkerRef, msg: unknown): void {
    const { host } = this
    if (host.isLocal(ref)) {
      if (!host.gate(ref.id) || !host.workers.cast(ref.id, msg)) throw new NoWorkerError('the worker has ended')
      return
    }
    host.router.send(ref.node, { t: 'cast', to: ref, msg })
  }

  /**
   * Resolve on the next change of `name` that may matter (see `onChange`; or of a connection), at
   * `RECHECK_MS`, or at `deadline`. `byName`: what waits is a call or held casts by name, woken only
   * by the changes that can give them a ref (see `waiting`).
   */
  private change(name: string, deadline: number, byName: boolean): Promise<void> {
    const { host } = this
    return new Promise<void>((resolve) => {
      let set = this.waiting.get(name)
      if (!set) this.waiting.set(name, (set = new Map()))
      const waiters = set
      const done = (): void => {
        this.looks++
        host.clock.clearTimeout(timer)
        waiters.delete(done)
        if (waiters.size === 0 && this.waiting.get(name) === waiters) this.waiting.delete(name)
        resolve()
      }
      const timer = host.clock.setTimeout(done, Math.max(1, Math.min(RECHECK_MS, deadline - host.clock.now())))
      waiters.set(done, byName)
    })
  }

  /**
   * Wake what waits on a change of `name`: everything, or (`givesRef` false: a change that cannot
   * give a ref to reach by name) only what waits on any change of it (see `waiting`).
   */
  private wake(name: string, givesRef = true): void {
    const set = this.waiting.get(name)
    if (!set) return
    for (const [done, byName] of [...set]) if (givesRef || !byName) done()
  }

  private wakeAll(): void {
    for (const set of [...this.waiting.values()]) for (const done of [...set.keys()]) done()
  }

  // ------------------------------------------------------------ refs

  /** The worker id `to` names if it is a ref of this node incarnation. */
  private localId(to: unknown): number | undefined {
    if (!isObj(to) || typeof to.id !== 'number' || typeof to.node !== 'string' || typeof to.inc !== 'string') return undefined
    return this.host.isLocal(to as unknown as WorkerRef) ? to.id : undefined
  }

  /** `ref`, if it can be reached at all (a ref of a node that was never in this sworm cannot). */
  private checkRef(ref: WorkerRef): WorkerRef {
    if (!this.host.isLocal(ref) && !this.knowsNode(ref.node)) throw new NoWorkerError(`no node ${JSON.stringify(clip(ref.node))} in this sworm`)
    return ref
  }

  /** Whether `node` is, or was, a node of this sworm (a ref of any other node cannot be reached). */
  private knowsNode(node: string): boolean {
    return this.host.state.nodeRecord(node) !== undefined || isMember(this.host.raft.status().config, node)
  }
}
