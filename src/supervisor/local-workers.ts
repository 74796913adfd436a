/**
 * The workers living on this node: each has a mailbox whose messages are handled one at a time,
 * in order. A handler that throws or rejects crashes the worker: its `terminate` runs, queued
 * calls fail, and the owner is told (to unregister its names, or to restart it).
 * @module
 */
import { NoWorkerError, WorkerCrashedError } from '../raft/errors.js'

/**
 * A worker: an object with optional message handlers. Handlers may be async; the next message
 * waits until the current one is handled.
 */
export interface Worker<Call = unknown, Reply = unknown, Cast = unknown> {
  /** Handle a `call`; the return value (or its promise) is the reply. */
  handleCall?(msg: Call): Reply | Promise<Reply>
  /** Handle a `send` (no reply). */
  handleCast?(msg: Cast): void | Promise<void>
  /** Clean up when the worker stops (`reason` says why). Errors here are logged, not thrown. */
  terminate?(reason: string): void | Promise<void>
}

/** Why a worker ended. `crash` carries the error. */
export type ExitReason = { kind: 'normal' | 'shutdown' } | { kind: 'crash'; error: unknown }

interface Envelope {
  kind: 'call' | 'cast'
  msg: unknown
  resolve?: (v: unknown) => void
  reject?: (e: Error) => void
}

interface Slot {
  id: number
  worker: Worker
  queue: Envelope[]
  busy: boolean
  ended: boolean
}

/** The mailboxes of this node's workers. */
export class LocalWorkers {
  private readonly slots = new Map<number, Slot>()
  private nextId = 1

  /** @param onExit - called once when a worker ends, for any reason */
  constructor(private readonly onExit: (id: number, reason: ExitReason) => void) {}

  /** Start hosting `worker`; returns its local id. */
  add(worker: Worker): number {
    const id = this.nextId++
    this.slots.set(id, { id, worker, queue: [], busy: false, ended: false })
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

  /** Ids of live workers. */
  ids(): number[] {
    return [...this.slots.keys()]
  }

  /** Queue a call; resolves with the reply. */
  call(id: number, msg: unknown): Promise<unknown> {
    const s = this.slots.get(id)
    if (!s) return Promise.reject(new NoWorkerError(`no worker ${id} on this node`))
    return new Promise((resolve, reject) => {
      s.queue.push({ kind: 'call', msg, resolve, reject })
      this.pump(s)
    })
  }

  /** Queue a cast. Returns false when there is no such worker. */
  cast(id: number, msg: unknown): boolean {
    const s = this.slots.get(id)
    if (!s) return false
    s.queue.push({ kind: 'cast', msg })
    this.pump(s)
    return true
  }

  /** Stop worker `id`: pending calls fail, `terminate(reason)` runs. */
  async stop(id: number, reason: 'normal' | 'shutdown' = 'normal'): Promise<void> {
    const s = this.slots.get(id)
    if (!s) return
    await this.end(s, { kind: reason })
  }

  /** Stop every worker. */
  async stopAll(reason: 'normal' | 'shutdown' = 'shutdown'): Promise<void> {
    await Promise.all([...this.slots.values()].map((s) => this.end(s, { kind: reason })))
  }

  private pump(s: Slot): void {
    if (s.busy || s.ended) return
    const env = s.queue.shift()
    if (!env) return
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
    if (s.queue.length) this.pump(s)
  }

  private crash(s: Slot, env: Envelope, err: unknown): void {
    s.busy = false
    env.reject?.(new WorkerCrashedError(`worker crashed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }))
    void this.end(s, { kind: 'crash', error: err })
  }

  private async end(s: Slot, reason: ExitReason): Promise<void> {
    if (s.ended) return
    s.ended = true
    this.slots.delete(s.id)
    const pending = s.queue
    s.queue = []
    for (const env of pending) env.reject?.(new NoWorkerError('the worker stopped before handling the message'))
    try {
      await s.worker.terminate?.(reason.kind === 'crash' ? 'crash' : reason.kind)
    } catch {
      // a failing terminate must not take the node down
    }
    this.onExit(s.id, reason)
  }
}
