/**
 * Messages to workers: `send` (a cast) and `call` (a request and its reply), to a worker on this
 * node or on another, by name or by ref; and the other side, delivering what other nodes send to
 * this node's workers. A supervised worker handles nothing unless this node's lease holds.
 * @module
 */
import { NoWorkerError, SwormError, TimeoutError, WorkerCrashedError } from '../errors.js'
import { isObj } from '../args.js'
import { isMember } from '../cluster/config.js'
import { clip } from '../observability/rate-limited-log.js'
import type { RaftNode } from '../raft/node.js'
import type { Clock } from '../raft/types.js'
import type { RegistryState } from '../registry/state.js'
import type { RegistryCommand, RegistryResult, WorkerRef } from '../registry/types.js'
import type { LocalWorkers } from '../supervisor/local-workers.js'
import type { PendingRequests } from './pending.js'
import type { WireRouter } from './router.js'

/** What messaging needs of its node. */
export interface MessagingHost {
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly state: RegistryState
  readonly workers: LocalWorkers
  readonly router: WireRouter
  readonly requests: PendingRequests
  readonly clock: Clock
  /** Whether `ref` is a worker of this node incarnation. */
  isLocal(ref: WorkerRef): boolean
  /** Whether worker `id` may handle a message now (see supervisor/fencing.ts). */
  gate(id: number): boolean
  /** Throws once the sworm is stopped. */
  guard(): void
}

/** Worker messaging of one node. */
export class Messaging {
  constructor(private readonly host: MessagingHost) {
    const { router, workers } = host
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
        (value) => router.send(from, { t: 'reply', id, ok: true, value }),
        (err: unknown) => {
          const e = err instanceof SwormError ? err : new WorkerCrashedError(String(err))
          router.send(from, { t: 'reply', id, ok: false, code: e.code, message: e.message })
        },
      )
    })
    router.on('reply', (from, m) => {
      const error = m.ok ? undefined : m.code === 'NO_WORKER' ? new NoWorkerError(String(m.message)) : new WorkerCrashedError(String(m.message))
      const got = host.requests.settle(from, m.id, error ? { ok: false, error } : { ok: true, value: m.value })
      // 'late': the call timed out
      if (got === 'stranger') router.drop(from, 'reply from a node the call did not go to')
    })
  }

  /** See {@link Sworm.send}; `target` and `msg` are checked by the caller. */
  async send(target: string | WorkerRef, msg: unknown): Promise<void> {
    const { host } = this
    const ref = await this.resolveTarget(target)
    host.guard() // stop() may have begun while the name was looked up (its pending calls are already failed)
    if (host.isLocal(ref)) {
      if (!host.gate(ref.id) || !host.workers.cast(ref.id, msg)) throw new NoWorkerError('the worker has ended')
      return
    }
    host.router.send(ref.node, { t: 'cast', to: ref, msg })
  }

  /** See {@link Sworm.call}; `target`, `msg` and `timeout` are checked by the caller. */
  async call<R>(target: string | WorkerRef, msg: unknown, timeout: number): Promise<R> {
    const { host } = this
    const ref = await this.resolveTarget(target)
    host.guard() // stop() may have begun while the name was looked up (its pending calls are already failed)
    const timedOut = (): TimeoutError => new TimeoutError(`call not answered within ${timeout} ms`)
    if (host.isLocal(ref)) {
      if (!host.gate(ref.id)) throw new NoWorkerError('the worker has stopped (this node lost its lease)')
      let timer: unknown
      try {
        return (await Promise.race([
          host.workers.call(ref.id, msg),
          new Promise<never>((_, rej) => {
            timer = host.clock.setTimeout(() => rej(timedOut()), timeout)
          }),
        ])) as R
      } finally {
        host.clock.clearTimeout(timer)
      }
    }
    return host.requests.request<R>(ref.node, timeout, timedOut, (id) => host.router.send(ref.node, { t: 'call', id, to: ref, msg }))
  }

  /** The worker id `to` names if it is a ref of this node incarnation. */
  private localId(to: unknown): number | undefined {
    if (!isObj(to) || typeof to.id !== 'number' || typeof to.node !== 'string' || typeof to.inc !== 'string') return undefined
    return this.host.isLocal(to as unknown as WorkerRef) ? to.id : undefined
  }

  /**
   * The ref for a name from the local copy; on a miss, one linearizable read before giving up, so a
   * name registered on another node a moment ago is found (the local copy may lag).
   */
  private async resolveTarget(target: string | WorkerRef): Promise<WorkerRef> {
    const { host } = this
    if (typeof target !== 'string') {
      if (!host.isLocal(target) && !this.knowsNode(target.node)) throw new NoWorkerError(`no node ${JSON.stringify(clip(target.node))} in this sworm`)
      return target
    }
    let ref = host.state.whereis(target)
    if (!ref) {
      await host.raft.read().catch(() => {})
      host.guard()
      ref = host.state.whereis(target)
    }
    if (!ref) throw new NoWorkerError(`no worker is registered as ${JSON.stringify(target)}`)
    return ref
  }

  /** Whether `node` is, or was, a node of this sworm (a ref of any other node cannot be reached). */
  private knowsNode(node: string): boolean {
    return this.host.state.nodeRecord(node) !== undefined || isMember(this.host.raft.status().config, node)
  }
}
