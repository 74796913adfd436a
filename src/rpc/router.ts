/**
 * Receives the `msg:<name>` channel and hands each message to the handler of its type. A message
 * that is not an object, has an unknown type, or makes its handler throw is dropped with a
 * rate-limited warning: nothing a peer sends can break the node.
 * @module
 */
import { isObj } from '../args.js'
import { clip, type RateLimitedLog } from '../observability/rate-limited-log.js'
import type { NodeId, Transport } from '../raft/types.js'
import type { Incoming, WireMsg, WireType } from './wire.js'

/** A handler of one message type; `from` is the authenticated sender. */
export type WireHandler<T extends WireType> = (from: NodeId, msg: Incoming<T>) => void

/** One handler per message type, on one transport. */
export class WireRouter {
  private readonly handlers = new Map<string, (from: NodeId, msg: Record<string, unknown>) => void>()

  constructor(
    private readonly transport: Transport,
    private readonly peerLog: RateLimitedLog,
  ) {
    transport.onMessage((from, raw) => this.dispatch(from, raw))
  }

  /** Handle messages of type `t` with `fn` (one handler per type). */
  on<T extends WireType>(t: T, fn: WireHandler<T>): void {
    if (this.handlers.has(t)) throw new Error(`a handler for ${t} is set already`)
    this.handlers.set(t, fn as (from: NodeId, msg: Record<string, unknown>) => void)
  }

  /** Send `msg` to node `to` (dropped if the peer is unknown or its queue is full). */
  send(to: NodeId, msg: WireMsg): void {
    this.transport.send(to, msg)
  }

  /** Log (rate-limited) that a message from `from` was dropped, and why. */
  drop(from: NodeId, reason: string, extra: Record<string, unknown> = {}): void {
    this.peerLog.warn(`wire:${from}`, 'dropped a bad worker message', { from, reason, ...extra })
  }

  private dispatch(from: NodeId, raw: unknown): void {
    if (!isObj(raw)) {
      this.drop(from, 'not an object')
      return
    }
    const fn = typeof raw.t === 'string' ? this.handlers.get(raw.t) : undefined
    if (!fn) {
      this.drop(from, 'unknown type', { type: clip(String(raw.t)) })
      return
    }
    try {
      fn(from, raw)
    } catch (err) {
      this.drop(from, 'its handler failed', { err: clip(String(err), 200) })
    }
  }
}
