/**
 * The workers living on this node: each has a mailbox whose messages are handled one at a time,
 * in order. A handler that throws or rejects crashes the worker: its `terminate` runs, queued
 * calls fail, and the owner is told (to unregister its names, or to restart it).
 * @module
 */
import { ShardedMap } from '../util/sharded-map.js'
import { NoWorkerError, WorkerCrashedError } from '../errors.js'

/** What a worker learns about itself when it starts (see {@link Worker.init}). */
export interface WorkerContext {
  /** The name a supervised worker was started for; undefined for a worker made with `spawn`. */
  readonly name: string | undefined
  /**
   * Supervised workers: a number strictly greater than that of every earlier incarnation of the
   * name, cluster-wide (its epoch: the log index of the entry that placed it). Pass it along with
   * writes to an external system, which then refuses a write carrying a lower token than one it
   * has seen: a worker that was moved away (or fenced) while a write of its was in flight cannot
   * overwrite its successor's. Undefined for spawned workers, and for names registered by an
   * older version of Sworm.
   */
  readonly fencingToken: number | undefined
  /**
   * Aborted when the worker must stop: it moves, its name is unregistered, its node lost its
   * lease or stops, or it crashed. The reason is the stop reason (`'handoff'`, `'normal'`,
   * `'lease'`, ...). Give it to what the worker awaits (fetch, timers) so that work ends at once.
   */
  readonly signal: AbortSignal
}

/** What a worker's stop aborts: an `AbortController`, or a {@link LazyAbort}. */
export interface Abortable {
  abort(reason?: unknown): void
}

/**
 * An abort controller made only once its signal is asked for: most workers never look at their
 * context's signal, and a controller per spawned worker cost a tenth of a registration's CPU.
 * Aborted before anyone asked, the signal it then gives is aborted already, with that reason.
 */
export class LazyAbort implements Abortable {
  private ctl: AbortController | undefined
  private done = false
  private why: unknown

  /** The signal (made now, if this is the first time it is asked for). */
  get signal(): AbortSignal {
    if (!this.ctl) {
      this.ctl = new AbortController()
      if (this.done) this.ctl.abort(this.why)
    }
    return this.ctl.signal
  }

  /** Abort with `reason` (the first reason stays, as with `AbortController`). */
  abort(reason?: unknown): void {
    if (this.done) return
    this.done = true
    this.why = reason
    this.ctl?.abort(reason)
  }
}

/**
 * A worker: an object with optional message handlers. Handlers may be async; the next message
 * waits until the current one is handled.
 */
export interface Worker<Call = unknown, Reply = unknown, Cast = unknown> {
  /**
   * Called once, before anything else (before `endHandoff` and the first message), with what the
   * worker should know about itself. May be async: messages wait until it resolves. Throwing or
   * rejecting counts as a failed start (supervised) or a crash (spawned).
   */
  init?(ctx: WorkerContext): void | Promise<void>
  /** Handle a `call`; the return value (or its promise) is the reply. */
  handleCall?(msg: Call): Reply | Promise<Reply>
  /** Handle a `send` (no reply). */
  handleCast?(msg: Cast): void | Promise<void>
  /**
   * Clean up when the worker stops. `reason`: `'normal'` (exit or unregister), `'shutdown'` (the
   * sworm stops), `'crash'`, `'handoff'` (after beginHandoff), `'moved'`, or `'lease'` (this
   * node lost contact with the cluster). Errors here are swallowed. The worker gets no message
   * once this is called, but its end is reported (and a supervised name restarted or moved) only
   * once it settles: a `terminate` that never settles keeps its name without a worker, and calls
   * to the name wait for one until their timeout. Bound your own cleanup.
   */
  terminate?(reason: string): void | Promise<void>
  /** A supervised worker about to move: return the state its next incarnation should get. */
  beginHandoff?(): unknown
  /** A supervised worker taking over: receives the state, before its first message. */
  endHandoff?(state: unknown): void | Promise<void>
}

/** Why a worker ended. `crash` carries the error. */
export type ExitReason = { kind: 'normal' | 'shutdown' | 'handoff' | 'moved' | 'lease' } | { kind: 'crash'; error: unknown }

/** Reasons a worker can be stopped with. */
export type StopReason = 'normal' | 'shutdown' | 'moved' | 'lease'

interface Envelope {
  kind: 'call' | 'cast'
  msg: unknown
  resolve?: (v: unknown) => void
  reject?: (e: Error) => void
}

interface Slot {
  id: number
  worker: Worker
  /**
   * Messages waiting, oldest first; undefined while none waits (most of a large node's workers are
   * idle: an empty array each was a million objects for the collector to mark).
   */
  queue: Envelope[] | undefined
  busy: boolean
  ended: boolean
  /** Aborted (the worker's context signal) when the worker must stop. */
  abort: Abortable | undefined
  /** Resolves a handoff waiting for the current message to finish. */
  idle?: () => void
}

/** The mailboxes of this node's workers. */
export class LocalWorkers {
  /** (sharded: a million workers in one `Map` rehashed them all at once as it grew, a 150 ms stall) */
  private readonly slots = new ShardedMap<number, Slot>()
  private nextId = 1

  /** @param onExit - called once when a worker ends, for any reason */
  constructor(private readonly onExit: (id: number, reason: ExitReason) => void) {}

  /**
   * Start hosting `worker`; returns its local id. `abort` is aborted when it stops. With `init`,
   * its `init(init)` runs first (messages wait for it; a failure crashes the worker). `fixedId`:
   * the id the registry gave it (negative: a supervised worker whose ref was fixed at its
   * placement); else the next one of this node's own (positive).
   * @throws Error if `fixedId` is not a negative integer, or is taken
   */
  add(worker: Worker, abort?: Abortable, init?: WorkerContext, fixedId?: number): number {
    if (fixedId !== undefined && (!Number.isSafeInteger(fixedId) || fixedId >= 0 || this.slots.has(fixedId))) {
      throw new Error(`worker id ${fixedId} cannot be given: not a negative integer, or taken`)
    }
    const id = fixedId ?? this.nextId++
    const s: Slot = { id, worker, queue: undefined, busy: false, ended: false, abort }
    this.slots.set(id, s)
    if (init && typeof worker.init === 'function') {
      const env: Envelope = { kind: 'cast', msg: undefined }
      s.busy = true
      let result: unknown
      try {
        result = worker.init(init)
      } catch (err) {
        queueMicrotask(() => this.crash(s, env, err))
        return id
      }
      Promise.resolve(result).then(
        () => this.done(s, env, undefined),
        (err: unknown) => this.crash(s, env, err),
      )
    }
    return id
  }

  /** Whether worker `id` is alive here. */
  has(id: number): boolean {
    return this.slots.has(id)
  }

  /** Number of live workers. */
  get size(): number {
    return this.slots.size
  }

  /** Messages waiting in the workers' mailboxes, over all workers. */
  queued(): number {
    let n = 0
    for (const s of this.slots.values()) n += s.queue?.length ?? 0
    return n
  }

  /** The live worker objects (for tests that model a process dying with its workers). */
  objects(): Worker[] {
    return [...this.slots.values()].map((s) => s.worker)
  }

  /** Ids of live workers. */
  ids(): number[] {
    return [...this.slots.keys()]
  }

  /** Queue a call; resolves with the reply. */
  call(id: number, msg: unknown): Promise<unknown> {
    const s = this.slots.get(id)
    // (ended but not yet gone: a message sent from its stop's abort listener)
    if (!s || s.ended) return Promise.reject(new NoWorkerError(`no worker ${id} on this node`))
    return new Promise((resolve, reject) => {
      this.deliver(s, { kind: 'call', msg, resolve, reject })
    })
  }

  /** Queue a cast. Returns false when there is no such worker. */
  cast(id: number, msg: unknown): boolean {
    const s = this.slots.get(id)
    if (!s || s.ended) return false
    this.deliver(s, { kind: 'cast', msg })
    return true
  }

  /** Stop worker `id`: pending calls fail, `terminate(reason)` runs. */
  async stop(id: number, reason: StopReason = 'normal'): Promise<void> {
    const s = this.slots.get(id)
    if (!s) return
    await this.end(s, { kind: reason })
  }

  /** Stop every worker. */
  async stopAll(reason: StopReason = 'shutdown'): Promise<void> {
    await Promise.all([...this.slots.values()].map((s) => this.end(s, { kind: reason })))
  }

  /**
   * Take worker `id` out of service for a move: no new messages, the current one finishes, then
   * `beginHandoff()` gives the state and `terminate('handoff')` runs. Resolves with the state.
   */
  async handoff(id: number): Promise<unknown> {
    const s = this.slots.get(id)
    if (!s || s.ended) throw new NoWorkerError(`no worker ${id} on this node`)
    s.ended = true // refuse new messages from now on
    this.slots.delete(id)
    const pending = s.queue ?? []
    s.queue = undefined
    for (const env of pending) env.reject?.(new NoWorkerError('the worker is moving to another node; try again'))
    while (s.busy) await new Promise<void>((r) => (s.idle = r))
    // after the current message: a handler that honours the signal must not fail a call that the
    // move lets finish
    s.abort?.abort('handoff')
    let state: unknown
    try {
      state = await s.worker.beginHandoff?.()
    } finally {
      try {
        await s.worker.terminate?.('handoff')
      } catch {
        // a failing terminate must not take the node down
      }
      this.onExit(s.id, { kind: 'handoff' })
    }
    return state
  }

  /** Hand `env` to the worker now if it is idle and nothing waits, else queue it. */
  private deliver(s: Slot, env: Envelope): void {
    if (s.busy || s.queue) {
      if (s.queue) s.queue.push(env)
      else s.queue = [env]
      this.pump(s)
      return
    }
    this.handle(s, env)
  }

  /** Hand the oldest waiting message to the worker, if it is idle. */
  private pump(s: Slot): void {
    if (s.busy || s.ended) return
    const env = s.queue?.shift()
    if (!env) return
    if (s.queue!.length === 0) s.queue = undefined
    this.handle(s, env)
  }

  private handle(s: Slot, env: Envelope): void {
    s.busy = true
    let result: unknown
    try {
      const w = s.worker
      if (env.kind === 'call') {
        if (typeof w.handleCall !== 'function') throw new TypeError('worker has no handleCall')
        result = w.handleCall(env.msg)
      } else if (typeof w.handleCast === 'function') {
        result = w.handleCast(env.msg)
      }
    } catch (err) {
      this.crash(s, env, err)
      return
    }
    if (result instanceof Promise) {
      result.then(
        (v) => this.done(s, env, v),
        (err: unknown) => this.crash(s, env, err),
      )
    } else {
      this.done(s, env, result)
    }
  }

  private done(s: Slot, env: Envelope, value: unknown): void {
    s.busy = false
    env.resolve?.(value)
    if (s.idle) {
      const f = s.idle
      s.idle = undefined
      f()
      return
    }
    if (s.queue) this.pump(s)
  }

  private crash(s: Slot, env: Envelope, err: unknown): void {
    s.busy = false
    if (s.idle) {
      // crashed while a handoff waited: the handoff goes on with what beginHandoff can give
      const f = s.idle
      s.idle = undefined
      env.reject?.(new WorkerCrashedError(`worker crashed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }))
      f()
      return
    }
    env.reject?.(new WorkerCrashedError(`worker crashed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }))
    void this.end(s, { kind: 'crash', error: err })
  }

  private async end(s: Slot, reason: ExitReason): Promise<void> {
    if (s.ended) return
    s.ended = true
    s.abort?.abort(reason.kind)
    this.slots.delete(s.id)
    const pending = s.queue ?? []
    s.queue = undefined
    for (const env of pending) env.reject?.(new NoWorkerError('the worker stopped before handling the message'))
    try {
      await s.worker.terminate?.(reason.kind)
    } catch {
      // a failing terminate must not take the node down
    }
    this.onExit(s.id, reason)
  }
}
