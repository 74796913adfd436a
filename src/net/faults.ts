/**
 * Fault injection for tests, outside the transport: {@link PeerFaults} wraps any
 * {@link Transport} and drops what it would send to, or deliver from, a blocked peer. One
 * `PeerFaults` can wrap several channels, so that one {@link PeerFaults.block} cuts a peer off in
 * all of them (a partition, while the connections themselves stay up).
 * @module
 */

import type { NodeId, Transport } from '../raft/types.js'

/** Blocked peers, shared by every transport it wraps; see the module doc. */
export class PeerFaults {
  private readonly blocked = new Set<NodeId>()
  private droppedCount = 0

  /**
   * Block or unblock a peer: while blocked, every message to or from it, on every wrapped
   * transport, is dropped.
   * @param peer - the peer's node id
   * @param blocked - true to block, false to unblock
   */
  block(peer: NodeId, blocked: boolean): void {
    if (blocked) this.blocked.add(peer)
    else this.blocked.delete(peer)
  }

  /** Whether `peer` is blocked. */
  isBlocked(peer: NodeId): boolean {
    return this.blocked.has(peer)
  }

  /** Messages dropped so far, both ways, over every wrapped transport. */
  get dropped(): number {
    return this.droppedCount
  }

  /**
   * A transport that behaves like `t`, except that messages to or from a blocked peer are dropped
   * (counted in {@link PeerFaults.dropped}). Closing it closes `t`.
   */
  wrap(t: Transport): Transport {
    return {
      self: t.self,
      send: (to, msg) => {
        if (this.blocked.has(to)) this.droppedCount++
        else t.send(to, msg)
      },
      onMessage: (handler) =>
        t.onMessage((from, msg) => {
          if (this.blocked.has(from)) this.droppedCount++
          else handler(from, msg)
        }),
      setPeers: (peers) => t.setPeers(peers),
      close: () => t.close(),
    }
  }
}
