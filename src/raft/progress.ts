/**
 * What the leader knows of each follower's log, and the flow control of appends to it (as in the
 * Raft thesis §10.2 and etcd's raft): a follower is probed one append at a time until its match
 * is found, then replicated to with up to `maxInflight` appends in flight, or sent a snapshot when
 * the entries it needs are compacted. Pure data and its state changes.
 * @module
 */
import type { Snapshot } from './types.js'

/** The leader's view of one follower. */
export interface Progress {
  match: number
  next: number
  state: 'probe' | 'replicate' | 'snapshot'
  /** Last index of each append message in flight (replicate state). */
  inflight: number[]
  /** Bytes of entries of each append in {@link Progress.inflight}, in the same order. */
  inflightBytes: number[]
  /** Their sum: the bytes of entries sent to this follower and not yet acknowledged. */
  bytesInFlight: number
  /** In probe state: an append is out and unanswered. */
  paused: boolean
  /** Heard from since the last check-quorum round. */
  active: boolean
  /** Highest ReadIndex round acknowledged. */
  ackSeq: number
  /** The answering process's tag (`hbResp.p`) of that acknowledgement, if it had one. */
  ackP: number | undefined
  /**
   * The answers (`hbResp`) received since the last one confirmed, oldest first: round, the
   * answering process's tag, and when (the leader's clock) it was received. See
   * `RaftCore.renewalAck`.
   */
  answers: Array<{ seq: number; p: number | undefined; at: number }>
  /** The latest answer a quorum round sent after its receipt confirmed (see `RaftCore.renewalAck`). */
  confirmed: { seq: number; p: number | undefined } | undefined
  /** Ticks since the snapshot transfer last made progress (snapshot state). */
  snapTicks: number
  /** Highest commit index sent to this follower. */
  sentCommit: number
  /** Index of the snapshot last sent (snapshot state). */
  snapIndexSent: number
  /**
   * The snapshot being sent (snapshot state): held until the transfer ends, even if the leader
   * compacts again meanwhile, so every chunk comes from the same bytes.
   */
  snap: Snapshot | undefined
  /** Bytes of `snap` the follower acknowledged holding, in order. */
  snapAcked: number
  /** Where the next chunk to send starts. */
  snapNext: number
  /** The offset of the latest resend the follower asked for (one resend per gap). */
  snapRewound: number
  /** Match index at the previous heartbeat answer, and how many answers saw no progress. */
  matchAtHb: number
  stalls: number
}

/** Nothing in flight any more (the follower is probed, or streamed to anew from its match). */
function clearInflight(pr: Progress): void {
  pr.inflight = []
  pr.inflightBytes = []
  pr.bytesInFlight = 0
}

/** An append of entries up to `last`, `bytes` of them, is on its way (replicate state). */
export function sent(pr: Progress, last: number, bytes: number): void {
  pr.inflight.push(last)
  pr.inflightBytes.push(bytes)
  pr.bytesInFlight += bytes
}

/** A follower the leader knows nothing of yet: probe it from `next`. */
export function newProgress(next: number): Progress {
  return { match: 0, next, state: 'probe', inflight: [], inflightBytes: [], bytesInFlight: 0, paused: false, active: true, ackSeq: 0, ackP: undefined, answers: [], confirmed: undefined, snapTicks: 0, sentCommit: 0, matchAtHb: 0, stalls: 0, snapIndexSent: 0, snap: undefined, snapAcked: 0, snapNext: 0, snapRewound: -1 }
}

/** Probe the follower again, one append at a time, from `next`. */
export function toProbe(pr: Progress, next: number): void {
  pr.snap = undefined
  pr.state = 'probe'
  clearInflight(pr)
  pr.paused = false
  pr.next = next
}

/** The follower's match is known: stream appends to it from there. */
export function toReplicate(pr: Progress): void {
  pr.snap = undefined
  pr.state = 'replicate'
  clearInflight(pr)
  pr.next = pr.match + 1
}

/** The follower needs `snap`: send it in chunks, from the start, and nothing else until it has it. */
export function toSnapshot(pr: Progress, snap: Snapshot): void {
  pr.state = 'snapshot'
  pr.snapTicks = 0
  pr.snapIndexSent = snap.meta.index
  pr.snap = snap
  pr.snapAcked = 0
  pr.snapNext = 0
  pr.snapRewound = -1
}

/** The follower acknowledged everything up to `index` (a successful append answer). */
export function acknowledge(pr: Progress, index: number): void {
  if (index <= pr.match) return
  pr.match = index
  if (pr.next <= index) pr.next = index + 1
  while (pr.inflight.length && pr.inflight[0]! <= index) {
    pr.inflight.shift()
    pr.bytesInFlight -= pr.inflightBytes.shift() ?? 0
  }
  if (pr.state === 'probe' || (pr.state === 'snapshot' && pr.match >= pr.snapIndexSent)) toReplicate(pr)
}
