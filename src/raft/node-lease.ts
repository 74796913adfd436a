/**
 * This node's lease, and what the leader knows of who hears it.
 *
 * A follower's lease is renewed from the time it *sent* a heartbeat answer that the leader has
 * since acknowledged as renewing (holding its own lease, or after a quorum acknowledged a round it
 * sent once it had the answer: `RaftCore.renewalAck`), contact in both directions: a node that
 * hears the leader but is not heard by it does not renew; the leader's lease runs from the
 * heartbeat round a quorum acknowledged. Both are read on this node's clock, so a node that was
 * frozen finds its lease expired when it wakes.
 * @module
 */
import type { Clock, NodeId } from './types.js'

/**
 * How many heartbeat answers' send times are kept (with reads, a round can start every
 * millisecond, and the answer a leader confirms once a later round came back is a round trip old;
 * a round forgotten is never noted again: see `answering`).
 */
const MAX_ROUNDS = 4096

/** The lease of one node. */
export class NodeLease {
  private at: number | undefined
  private lapseCount = 0
  /** When this node answered each heartbeat round ("term|leader|seq" -> its clock). */
  private readonly answeredAt = new Map<string, number>()
  /** The highest round of the latest leader whose answer `answeredAt` no longer holds. */
  private forgotten: { term: number; leader: NodeId; seq: number } | undefined
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
    // A round at or below one forgotten may have been answered before: its first answer's time is
    // gone, and a later one must not stand for it (found by review, session 26: a late copy of an
    // old round, answered again after the node forgot it, renewed the lease from long after the
    // leader last heard the node).
    const f = this.forgotten
    if (f && f.term === term && f.leader === leader && seq <= f.seq) return
    this.answeredAt.set(key, now)
    if (this.answeredAt.size > MAX_ROUNDS) {
      const [oldest] = this.answeredAt
      const k = oldest![0]
      this.answeredAt.delete(k)
      // (term and seq are digits; the leader's id, between them, may hold '|': found by review)
      const ft = Number(k.slice(0, k.indexOf('|')))
      const l = k.slice(k.indexOf('|') + 1, k.lastIndexOf('|'))
      const fq = Number(k.slice(k.lastIndexOf('|') + 1))
      // (the latest term's leader only: rounds of an earlier one are acknowledged by nobody now)
      if (!f || ft > f.term || (ft === f.term && l !== f.leader)) this.forgotten = { term: ft, leader: l, seq: fq }
      else if (l === f.leader && ft === f.term && fq > f.seq) f.seq = fq
    }
  }

  /**
   * Leader `from` acknowledged, as renewing (`hb.lease`), our answer to its round `ack` in `term`: renew
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
