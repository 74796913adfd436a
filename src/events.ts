/**
 * The events a sworm emits: their types, a safe emit (a listener that throws is logged, never
 * breaks the node), and the translation of applied registry changes into events.
 * @module
 */
import type { EventEmitter } from 'node:events'
import type { SwormMetrics } from './observability/metrics.js'
import type { Logger } from './raft/types.js'
import type { RegistryChange } from './registry/state.js'
import type { WorkerRef } from './registry/types.js'
import type { ExitReason } from './supervisor/local-workers.js'

/** Why a worker stopped: its exit kind. */
export type WorkerStopReason = ExitReason['kind']

/**
 * Events of a {@link Sworm}. Registry-level events (names, groups, nodes) fire on every node as it
 * applies the change; worker-level events (`workerStarted`, `workerStopped`, `workerMoved`) and
 * lease events fire on the node concerned. A listener that throws is logged and ignored.
 */
export interface SwormEvents {
  /** A name was bound: a static registration, or a supervised worker (re)started (on any node; seen when this node applies it). */
  registered: [{ name: string; ref: WorkerRef }]
  /** A name was removed (`ref` is undefined for a supervised name that was not running). */
  unregistered: [{ name: string; ref: WorkerRef | undefined }]
  /** A worker joined a group. */
  joined: [{ group: string; ref: WorkerRef }]
  /** A worker left a group. */
  left: [{ group: string; ref: WorkerRef }]
  /** A node started serving this sworm. */
  nodeUp: [{ node: string }]
  /** The leader declared a node gone. */
  nodeDown: [{ node: string }]
  /** A leader was elected (as seen by this node): once per term with a known leader. */
  leaderChanged: [{ leader: string; term: number }]
  /** A supervised worker started on this node. */
  workerStarted: [{ name: string; ref: WorkerRef; node: string }]
  /** A supervised worker of this node stopped. */
  workerStopped: [{ name: string; ref: WorkerRef; reason: WorkerStopReason }]
  /** A supervised worker moved to this node (`to`) from node `from` (handoff, drain, or its node was declared gone). */
  workerMoved: [{ name: string; from: string; to: string }]
  /** This node's lease ran out: its supervised workers (`workers` of them) are stopped (fencing). */
  leaseLost: [{ node: string; workers: number }]
  /** This node's lease holds again after `leaseLost`. */
  leaseRenewed: [{ node: string }]
  /**
   * This node, as leader, changed the Raft configuration on its own (see the `voters` option):
   * promoted a learner to voter, demoted a voter to learner, or removed a node gone for longer
   * than `deadNodeTimeoutMs`.
   */
  autopilot: [{ action: 'promote' | 'demote' | 'remove'; node: string; reason: string }]
}

/**
 * Emit `event` to each listener of `emitter` in turn; a listener that throws (or rejects) is
 * logged and the others still run. Nothing a listener does can break the node (emits happen
 * during apply).
 */
export function emitSafely<K extends keyof SwormEvents>(emitter: EventEmitter<SwormEvents>, log: Logger, event: K, ...args: SwormEvents[K]): void {
  if (emitter.listenerCount(event) === 0) return
  const list = emitter.rawListeners(event) as Array<(...a: unknown[]) => unknown>
  for (const fn of list) {
    try {
      const r = fn.apply(emitter, args)
      if (r && typeof (r as Promise<unknown>).then === 'function') {
        ;(r as Promise<unknown>).then(undefined, (err: unknown) => log.error('an event listener rejected', { event, err: String(err) }))
      }
    } catch (err) {
      log.error('an event listener threw', { event, err: String(err) })
    }
  }
}

/** What {@link RegistryEvents} needs of its node. */
export interface RegistryEventsHost {
  readonly nodeId: string
  readonly incarnation: string
  readonly log: Logger
  readonly metrics: SwormMetrics
  /** Whether `ref` is a worker of this node incarnation. */
  isLocal(ref: WorkerRef): boolean
  /** Whether the registry holds `node` as draining (it was leaving gracefully). */
  draining(node: string): boolean
  fire<K extends keyof SwormEvents>(event: K, ...args: SwormEvents[K]): void
}

/** Turns the registry changes this node applies into {@link SwormEvents}, log lines and metrics. */
export class RegistryEvents {
  /** Supervised names placed on this node by a move, until they start: name -> previous node. */
  private readonly movedFrom = new Map<string, string>()

  constructor(private readonly host: RegistryEventsHost) {}

  /** React to one applied change. */
  onChange(ch: RegistryChange): void {
    const { host } = this
    switch (ch.type) {
      case 'registered':
        host.fire('registered', { name: ch.name, ref: ch.ref })
        return
      case 'started':
        host.fire('registered', { name: ch.name, ref: ch.ref })
        if (host.isLocal(ch.ref)) {
          host.fire('workerStarted', { name: ch.name, ref: ch.ref, node: host.nodeId })
          const from = this.movedFrom.get(ch.name)
          if (from !== undefined) {
            this.movedFrom.delete(ch.name)
            host.fire('workerMoved', { name: ch.name, from, to: host.nodeId })
          }
        }
        return
      case 'placed':
        if (ch.node === host.nodeId && ch.moved && ch.from !== undefined && ch.from !== host.nodeId) this.movedFrom.set(ch.name, ch.from)
        else if (this.movedFrom.size) this.movedFrom.delete(ch.name)
        return
      case 'unregistered':
        if (this.movedFrom.size) this.movedFrom.delete(ch.name)
        host.fire('unregistered', { name: ch.name, ref: ch.ref })
        return
      case 'joined':
        host.fire('joined', { group: ch.group, ref: ch.ref })
        return
      case 'left':
        host.fire('left', { group: ch.group, ref: ch.ref })
        return
      case 'nodeUp':
        host.metrics.nodeEvents.inc({ event: 'up' })
        host.log.info('node up', { peer: ch.node })
        host.fire('nodeUp', { node: ch.node })
        return
      case 'nodeDown':
        host.metrics.nodeEvents.inc({ event: 'down' })
        // an earlier incarnation of this very node (seen again as a restarted node replays its log)
        if (ch.node === host.nodeId && ch.inc !== host.incarnation) host.log.debug('an earlier incarnation of this node was declared gone', { inc: ch.inc })
        // a node that drained first was stopped on purpose (stop() drains): not an alarm
        else if (host.draining(ch.node)) host.log.info('node gone after it drained (a graceful stop)', { peer: ch.node })
        else host.log.warn('node declared gone', { peer: ch.node })
        host.fire('nodeDown', { node: ch.node })
        return
      default:
        return
    }
  }
}
