/**
 * Fault injection for tests, outside the transport: {@link PeerFaults} wraps any
 * {@link Transport} and drops what it would send to, or deliver from, a blocked peer. One
 * `PeerFaults` can wrap several channels, so that one {@link PeerFaults.block} cuts a peer off in
 * all of them (a partition, while the connections themselves stay up). {@link PeerFaults.degrade}
 * makes the link to a peer lossy, and makes it flip bits in the Raft snapshot chunks it carries.
 * @module
 */

import type { NodeId, Transport } from '../raft/types.js'

/** How {@link PeerFaults.degrade} spoils the link to one peer. */
export interface LinkFaults {
  /** Probability that a message is lost. */
  loss: number
  /** Probability that a snapshot chunk arrives with one bit of its data flipped. */
  corruptChunks: number
  /** How late each snapshot chunk leaves (default 0). */
  chunkDelayMs?: number
}

/** Whether `msg` is a Raft snapshot chunk carrying data. */
function isChunk(msg: unknown): msg is { t: 'snap'; data: Uint8Array } {
  const m = msg as { t?: unknown; data?: unknown } | null
  return typeof m === 'object' && m !== null && m.t === 'snap' && m.data instanceof Uint8Array
}

/** Blocked peers, shared by every transport it wraps; see the module doc. */
export class PeerFaults {
  private readonly blocked = new Set<NodeId>()
  private readonly degraded = new Map<NodeId, LinkFaults>()
  private droppedCount = 0
  private corruptedCount = 0

  /**
   * @param random - the random source of {@link PeerFaults.degrade} (default `Math.random`)
   */
  constructor(private readonly random: () => number = Math.random) {}

  /**
   * Make what this node sends to `peer` unreliable: each message is lost with probability `loss`,
   * and each Raft snapshot chunk arrives with one bit of its data flipped with probability
   * `corruptChunks` (as a faulty link or buffer would deliver it), and each snapshot chunk leaves
   * `chunkDelayMs` late (a slow link: a transfer then lasts long enough to be cut, or its sender
   * killed, in the middle). Zeroes restore the link.
   */
  degrade(peer: NodeId, faults: LinkFaults): void {
    if (faults.loss > 0 || faults.corruptChunks > 0 || (faults.chunkDelayMs ?? 0) > 0) this.degraded.set(peer, { ...faults })
    else this.degraded.delete(peer)
  }

  /** Snapshot chunks sent corrupted so far (see {@link PeerFaults.degrade}). */
  get corrupted(): number {
    return this.corruptedCount
  }

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
    let closed = false
    return {
      self: t.self,
      send: (to, msg) => {
        const d = this.degraded.get(to)
        if (d?.chunkDelayMs && isChunk(msg)) setTimeout(() => closed || this.deliver(t, to, msg, this.degraded.get(to)), d.chunkDelayMs).unref()
        else this.deliver(t, to, msg, d)
      },
      onMessage: (handler) =>
        t.onMessage((from, msg) => {
          if (this.blocked.has(from)) this.droppedCount++
          else handler(from, msg)
        }),
      setPeers: (peers) => t.setPeers(peers),
      close: () => {
        closed = true
        return t.close()
      },
      onConnection: (handler) => t.onConnection?.(handler),
      flush: () => t.flush?.(),
    }
  }

  /** Send `msg` to `to` over `t` unless `to` is blocked or the link `d` loses it. */
  private deliver(t: Transport, to: NodeId, msg: unknown, d: LinkFaults | undefined): void {
    if (this.blocked.has(to) || (d && this.random() < d.loss)) {
      this.droppedCount++
      return
    }
    t.send(to, d && d.corruptChunks > 0 ? this.maybeCorrupt(msg, d.corruptChunks) : msg)
  }

  /** `msg`, or a copy of it with one bit of its data flipped if it is a snapshot chunk and the dice say so. */
  private maybeCorrupt(msg: unknown, p: number): unknown {
    if (!isChunk(msg) || msg.data.length === 0 || this.random() >= p) return msg
    const data = Uint8Array.from(msg.data)
    data[Math.floor(this.random() * data.length)]! ^= 1 << Math.floor(this.random() * 8)
    this.corruptedCount++
    return { ...msg, data }
  }
}
