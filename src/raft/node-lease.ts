/**
 * This node's lease, and what the leader knows of who hears it.
 *
 * A follower's lease is renewed from the time it *sent* a heartbeat answer that a leader holding
 * its own lease has since acknowledged (contact in both directions: a node that hears the leader
 * but is not heard by it does not renew); the leader's lease runs from the heartbeat round a
 * quorum acknowledged. Both are read on this node's clock, so a node that was frozen finds its
 * lease expired when it wakes.
 * @module
 */
import type { Clock, NodeId } from './types.js'

/** How many heartbeat answers' send times are kept (the leader acknowledges recent ones). */
const MAX_ROUNDS = 256

/** The lease of one node. */
export class NodeLease {
  private at: number | undefined
  private lapseCount = 0
  /** When this node answered each heartbeat round ("term|leader|seq" -> its clock). */
  private readonly answeredAt = new Map<string, number>()
  /** On the leader: when each peer last answered a heartbeat or append of this term. */
  private readonly heard = new Map<NodeId, number>()

  /**
   * @param answerTag - the tag this process sends with its heartbeat answers (see
   *   `CoreOptions.answerTag`): an acknowledgement renews the lease only if it echoes it (without
   *   one, as in tests of the lease alone, any acknowledgement of an answer of ours renews)
   */
  constructor(
    private readonly clock: Clock,
    private readonly leaseTimeoutMs: number | undefined,
    private readonly answerTag?: number,
  ) {}

  /** When the lease was last renewed (this clock), if ever. */
  renewedAt(): number | undefined {
    return this.at
  }

  /** How many times the lease started anew (see {@link RaftNode.leaseLapses}). */
  lapses(): number {
    return this.lapseCount
  }

  /**
   * Move the lease to `at` (a later time only), counting a lapse when the lease had run out
   * before this renewal (or never held).
   */
  renew(at: number): void {
    if (this.at !== undefined && at <= this.at) return
    const lapsed = this.at === undefined || (this.leaseTimeoutMs !== undefined && this.clock.now() - this.at >= this.leaseTimeoutMs)
    if (lapsed) this.lapseCount++
    this.at = at
  }

  /**
   * This node sends its answer to heartbeat round `seq` of leader `leader` in `term`, at `now`.
   * Rounds are numbered per leader; the earliest answer to a round is kept: the leader's
   * acknowledgement proves no more than that.
   */
  answering(term: number, leader: NodeId, seq: number, now: number): void {
    const key = `${term}|${leader}|${seq}`
    if (this.answeredAt.has(key)) return
    this.answeredAt.set(key, now)
    if (this.answeredAt.size > MAX_ROUNDS) this.answeredAt.delete(this.answeredAt.keys().next().value!)
  }

  /**
   * Leader `from`, holding its lease in `term`, acknowledged our answer to its round `ack`: renew
   * from when we sent it (if `from` is still the leader we follow in that term, and the answer it
   * acknowledged was this process's: `ackP`, the tag it came with, is ours).
   */
  acknowledged(current: { leader: NodeId | undefined; term: number }, from: NodeId, term: number, ack: number, ackP?: number): void {
    if (current.leader !== from || current.term !== term) return
    if (this.answerTag !== undefined && ackP !== this.answerTag) return
    const sentAt = this.answeredAt.get(`${term}|${from}|${ack}`)
    if (sentAt !== undefined) this.renew(sentAt)
  }

  /** On the leader: `peer` answered a heartbeat or an append of this term, now. */
  heardFrom(peer: NodeId): void {
    this.heard.set(peer, this.clock.now())
  }

  /** See {@link RaftNode.lastHeard}. */
  lastHeard(peer: NodeId): number | undefined {
    return this.heard.get(peer)
  }

  /**
   * The node restarts in place after a storage failure: forget who was heard (as a leader), but
   * keep when the lease was last renewed and when each heartbeat round was answered. Nothing
   * renewed the lease while the node was failed, and the cluster may move this node's workers only
   * once it is over: the fence armed for it must still fire then (forgetting it left the workers
   * running until the supervisor's next tick). The answers were really sent when noted: a later
   * acknowledgement of one renews from then, and only the earliest answer to a round may count
   * (forgetting them let an answer sent again after the restart count from its later time). Counted
   * as a lapse, so the supervisor reads the registry afresh (a read barrier) before it starts
   * anything.
   */
  reset(): void {
    this.lapseCount++
    this.heard.clear()
  }
}
