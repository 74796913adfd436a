/**
 * Proposals made on a follower go to the leader: batched into one `fwd` message, appended there,
 * and answered with where they landed (`fwdResp`), so the proposer resolves them from its own log
 * (read-your-writes for free, and a dead leader costs an election, not a timeout). A request the
 * network delivers twice is proposed once. These messages ride the Raft transport.
 * @module
 */
import { InvalidArgumentError, NotLeaderError, ProposalDroppedError, SwormError, TimeoutError } from '../errors.js'
import type { RaftCore } from './core.js'
import { forwardedCommand } from './entry-codec.js'
import { droppedError, rejectOnce, type Pending } from './pending.js'
import type { ReadTracker } from './reads.js'
import type { Clock, Entry, NodeId } from './types.js'
import { RecentMap } from '../util/recent-map.js'
import { backoffDelay } from '../util/retry.js'

/** A batch of proposals forwarded to the leader. */
export type FwdMsg = {
  t: 'fwd'
  from: NodeId
  to: NodeId
  boot: string
  /** Each proposal: its ref, and its command as it is encoded in an entry (protocol 12; decoded by the leader within an entry's budget). */
  reqs: Array<[number, Uint8Array]>
  /** The term the proposer believes the receiver leads: a leader of another term appends nothing. */
  term?: number
  cid?: string
}
/** The leader's answers to forwarded proposals: `[ref, result kind, value, error code, index]`. */
export type FwdRespMsg = { t: 'fwdResp'; from: NodeId; to: NodeId; boot: string; cid?: string; res: Array<[number, 0 | 1 | 2 | 3, unknown, string | undefined, number]> }

const RESULT_OK = 0
const RESULT_ERR = 1
const RESULT_RETRY = 2
/** The leader appended the command at (index, term=value): the proposer can follow it in its own log. */
const RESULT_ACCEPTED = 3

/** Bytes of commands a proposer puts in one forwarding message at most (one command at least). */
const FWD_MESSAGE_BYTES = 4 * 1024 * 1024
/**
 * Commands in one forwarding message at most: the transport's decode check charges each about
 * 200 bytes (its array and binary), more than 16 times a command of a few bytes; 256 of them
 * exceed what their bytes allow by 28 KiB at most, within the check's 64 KiB of slack.
 */
const FWD_MESSAGE_REQS = 256

/** What the forwarder needs of its node. */
export interface ForwarderHost<R> {
  readonly id: NodeId
  /** Random id of this incarnation: forwarded refs are unique per (node, boot). */
  readonly boot: string
  readonly clock: Clock
  readonly timeoutMs: number
  readonly tickMs: number
  /** How long a forwarded proposal may go unacknowledged before it is sent again (the first wait; it doubles). */
  readonly resendMs: number
  readonly reads: ReadTracker
  core(): RaftCore
  applied(): number
  /** The proposal `p` is the entry at (index, term) of this node's log. */
  trackLocal(index: number, term: number, p: Pending<R>): void
  kick(): void
  out(to: NodeId, m: FwdMsg | FwdRespMsg): void
  /** The largest command an entry may carry, encoded (`RaftNodeOptions.maxEntryBytes`). */
  readonly maxEntryBytes: number
  logDrop(from: NodeId, reason: string): void
  observeCommitMs: ((ms: number) => void) | undefined
}

/** A proposal of this node forwarded to the leader. */
interface Outgoing<C, R> {
  p: Pending<R>
  cmd: C
  /** Its encoding, as the leader's entry will carry it: what is sent (see {@link FWD_MESSAGE_BYTES}). */
  enc: Uint8Array
  /** The leader it was sent to, and in which term, when (this clock), and how many times. */
  sentTo: NodeId | undefined
  sentTerm: number
  sentAt: number
  /** When it was first sent: it is sent again only within `timeoutMs` of that (see {@link Forwarder.expire}). */
  firstSentAt: number
  sends: number
  /** How many of those were resends to the same leader (see {@link Forwarder.expire}). */
  resends: number
  /** The leader said where it landed (the answer comes from this node's own log). */
  accepted: boolean
  /**
   * Sent more than once and then refused by a node that no longer leads: the first send may have
   * landed in its log, so it goes to no other node; it waits for its deadline (outcome unknown).
   */
  pinned: boolean
  /** The state machine applies it at most once however often it is appended: it may go to any leader. */
  idempotent: boolean
}

/** A forwarded request appended in this leader's log, to answer once applied. */
interface Forwarded {
  node: NodeId
  boot: string
  ref: number
  term: number
}

/** Forwarding of one node: as a proposer, and as the leader that takes others' proposals. */
export class Forwarder<C, R> {
  private seq = 0
  /** This node's proposals sent (or to send) to the leader. */
  private readonly outgoing = new Map<number, Outgoing<C, R>>()
  private queue: number[] = []
  private flushScheduled = false
  /**
   * As leader: the forwarded requests taken in the last `2 × timeoutMs` or so, by `node:boot:ref`,
   * so that one the network delivers twice is proposed once; with the answer to give a resend:
   * where it landed, then its result once applied (null until it is appended). Forgotten a slice
   * of time at a time: one `Map` used as a queue rehashed 100k keys at once at 10k proposals/s.
   */
  private readonly seen: RecentMap<string, FwdRespMsg['res'][number] | null>
  /** As leader: where each forwarded request landed, by index. */
  private readonly forwarded = new Map<number, Forwarded>()
  /** As leader: results to send back, per (node, boot) of the proposer. */
  private readonly results = new Map<string, { node: NodeId; boot: string; res: FwdRespMsg['res'] }>()

  constructor(private readonly host: ForwarderHost<R>) {
    this.seen = new RecentMap(host.timeoutMs * 2)
  }

  /** Proposals of this node waiting for the leader. */
  get size(): number {
    return this.outgoing.size
  }

  /** Forward `cmd` (encoded `enc`) to the leader (or wait for one until `p`'s deadline). */
  enqueue(p: Pending<R>, cmd: C, enc: Uint8Array, idempotent = false): void {
    const ref = ++this.seq
    this.outgoing.set(ref, { p, cmd, enc, sentTo: undefined, sentTerm: 0, sentAt: 0, firstSentAt: 0, sends: 0, resends: 0, accepted: false, pinned: false, idempotent })
    this.queue.push(ref)
    if (this.flushScheduled) return
    this.flushScheduled = true
    queueMicrotask(() => {
      this.flushScheduled = false
      this.flush()
    })
  }

  /** Send queued proposals to the leader, one message for all; proposals of a leader go to its log. */
  flush(): void {
    if (!this.queue.length) return
    const { host } = this
    const core = host.core()
    const st = core.status()
    if (st.role === 'leader') {
      const refs = this.queue
      this.queue = []
      for (const ref of refs) {
        const f = this.outgoing.get(ref)
        if (!f) continue
        this.outgoing.delete(ref)
        const res = core.propose(f.cmd)
        if (res.ok) host.trackLocal(res.index, res.term, f.p)
        else rejectOnce(f.p, droppedError(f.p, new NotLeaderError(res.leader)))
      }
      host.kick()
      return
    }
    if (st.leader === undefined) return // wait for a leader (expire() rejects at the deadline)
    const reqs: FwdMsg['reqs'] = []
    const now = host.clock.now()
    for (const ref of this.queue) {
      const f = this.outgoing.get(ref)
      if (!f || f.p.settled) continue
      f.sentTo = st.leader
      f.sentTerm = st.term
      if (f.sends === 0) f.firstSentAt = now
      f.sentAt = now
      f.sends++
      reqs.push([ref, f.enc])
    }
    this.queue = []
    this.send(st.leader, st.term, reqs)
  }

  /**
   * Send `reqs` to `to` in messages of at most {@link FWD_MESSAGE_BYTES} of commands and
   * {@link FWD_MESSAGE_REQS} commands (one at least): each command fits a frame alone, not all of
   * them together. Each travels as its encoding, a binary, which the transport's decode check
   * counts as cheap whatever it holds (the leader checks each against an entry's budget): as
   * objects, a message of many small commands of many small objects was too costly for that
   * check, and dropped at every send.
   */
  private send(to: NodeId, term: number, reqs: FwdMsg['reqs']): void {
    let from = 0
    let bytes = 0
    for (let i = 0; i <= reqs.length; i++) {
      if (i === reqs.length || (i > from && (bytes + reqs[i]![1].length > FWD_MESSAGE_BYTES || i - from >= FWD_MESSAGE_REQS))) {
        if (i > from) this.host.out(to, { t: 'fwd', from: this.host.id, to, boot: this.host.boot, reqs: reqs.slice(from, i), term } satisfies FwdMsg)
        from = i
        bytes = 0
      }
      if (i < reqs.length) bytes += reqs[i]![1].length
    }
  }

  /** As leader: proposals forwarded by `from`. */
  onForward(from: NodeId, raw: unknown): void {
    const { host } = this
    const m = raw as Partial<FwdMsg>
    if (m.from !== from || m.to !== host.id || !Array.isArray(m.reqs)) return host.logDrop(from, 'bad fwd')
    if (typeof m.boot !== 'string') return host.logDrop(from, 'bad fwd')
    // The network may deliver a message twice: handle each request once, whatever our role.
    const now = host.clock.now()
    const core = host.core()
    const st = core.status()
    // Sent for another term than ours (a resend after this node restarted, or a stale view), or
    // to a node that does not lead: this node may not know what it appended then, so it appends
    // nothing and says so (and decodes nothing: whether a command fits is the leader's to say).
    const appending = st.role === 'leader' && (typeof m.term !== 'number' || m.term === st.term)
    const again: FwdRespMsg['res'] = []
    const reqs: Array<[number, unknown]> = []
    for (const r of m.reqs as unknown[]) {
      if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0])) continue
      const ref = r[0] as number
      const key = `${from}:${m.boot}:${ref}`
      if (this.seen.has(key)) {
        // sent again (our answer was lost, or is late): say again where it landed
        const answer = this.seen.get(key)
        if (answer) again.push(answer)
        continue
      }
      if (!appending) {
        reqs.push([ref, undefined])
        continue
      }
      // its command, within what an entry every follower takes may be (the proposer checked it;
      // a node configured or built otherwise, or a hostile one, may not have): refused, it is
      // never appended
      const cmd = forwardedCommand(r[1], host.maxEntryBytes)
      if ('problem' in cmd) {
        const answer: FwdRespMsg['res'][number] = [ref, RESULT_ERR, cmd.problem, 'INVALID_ARGUMENT', 0]
        this.seen.set(key, answer, now)
        again.push(answer)
        continue
      }
      this.seen.set(key, null, now)
      reqs.push([ref, cmd.cmd])
    }
    this.seen.prune(now)
    if (again.length) host.out(from, { t: 'fwdResp', from: host.id, to: from, boot: m.boot, res: again } satisfies FwdRespMsg)
    if (!reqs.length) return
    const res = appending ? core.proposeBatch(reqs.map((r) => r[1])) : ({ ok: false, leader: st.leader } as const)
    if (!res.ok) {
      // nothing was appended: the proposer may send these again (review F3)
      for (const r of reqs) this.seen.delete(`${from}:${m.boot}:${r[0]}`)
      const out: FwdRespMsg['res'] = reqs.map((r) => [r[0], RESULT_RETRY, res.leader, undefined, 0])
      host.out(from, { t: 'fwdResp', from: host.id, to: from, boot: m.boot, res: out } satisfies FwdRespMsg)
      return
    }
    const boot = m.boot
    reqs.forEach((r, i) => {
      this.forwarded.set(res.index + i, { node: from, boot, ref: r[0], term: res.term })
      this.seen.set(`${from}:${boot}:${r[0]}`, [r[0], RESULT_ACCEPTED, res.term, undefined, res.index + i], now)
    })
    // Tell the proposer where its commands landed: it resolves them when it applies them itself,
    // or learns they were dropped when another entry takes that index (no waiting for a timeout
    // when this leader dies).
    const accepted: FwdRespMsg['res'] = reqs.map((r, i) => [r[0], RESULT_ACCEPTED, res.term, undefined, res.index + i])
    host.out(from, { t: 'fwdResp', from: host.id, to: from, boot, res: accepted } satisfies FwdRespMsg)
    // the proposer answers its caller once it applies them: a learner gets them at once, not at its pace
    core.expedite(from, res.index + reqs.length - 1)
    host.kick()
  }

  /** As proposer: the leader's answers. */
  onForwardResp(from: NodeId, raw: unknown): void {
    const { host } = this
    const m = raw as Partial<FwdRespMsg>
    if (m.from !== from || m.to !== host.id || !Array.isArray(m.res)) return host.logDrop(from, 'bad fwdResp')
    if (m.boot !== host.boot) return // an answer to an earlier incarnation of this node
    let retry = false
    for (const r of m.res) {
      if (!Array.isArray(r)) continue
      const [ref, kind, value, code, index] = r
      const f = this.outgoing.get(ref)
      if (!f || f.p.settled) continue
      if (kind === RESULT_ACCEPTED) {
        if (f.accepted) continue
        f.accepted = true
        if (typeof index === 'number' && typeof value === 'number' && index > host.applied()) host.trackLocal(index, value, f.p)
        continue
      }
      if (kind === RESULT_RETRY) {
        // an answer to an earlier send (to another node, or already placed): not about this copy
        if (f.accepted || from !== f.sentTo) continue
        if (f.resends > 0 && !f.idempotent) {
          // this send was not appended, but an earlier one may have been (by this node while it led)
          f.pinned = true
          continue
        }
        // the node we forwarded to was not leader and did not append: safe to send elsewhere
        f.sentTo = undefined
        this.queue.push(ref)
        retry = true
        continue
      }
      // An idempotent copy moved to the next leader: that an earlier copy was dropped by the old
      // one says nothing about the copy in flight (found by review: it failed the request while
      // its resend could still take effect).
      if (kind !== RESULT_OK && code === 'PROPOSAL_DROPPED' && f.p.uncertain === true && from !== f.sentTo) continue
      this.outgoing.delete(ref)
      f.p.settled = true
      if (kind === RESULT_OK) {
        const done = (): void => {
          host.observeCommitMs?.(host.clock.now() - f.p.start)
          f.p.resolve(value as R)
        }
        // Read your writes: answer once this node has applied the entry too.
        if (typeof index === 'number' && index > host.applied()) host.reads.whenApplied(index, done, f.p.deadline)
        else done()
      } else if (code === 'PROPOSAL_DROPPED') f.p.reject(droppedError(f.p, new ProposalDroppedError()))
      else if (code === 'INVALID_ARGUMENT') f.p.reject(new InvalidArgumentError(String(value)))
      else f.p.reject(new SwormError('APPLY_FAILED', String(value)))
    }
    if (retry) host.clock.setTimeout(() => this.flush(), host.tickMs)
  }

  /** As leader: entry `e` was applied (with `result`, or failed): note the answer for its proposer. */
  applied(e: Entry, ok: boolean, result: unknown): void {
    const f = this.forwarded.get(e.index)
    if (!f) return
    this.forwarded.delete(e.index)
    const key = `${f.node}:${f.boot}`
    let out = this.results.get(key)
    if (!out) this.results.set(key, (out = { node: f.node, boot: f.boot, res: [] }))
    const answer: FwdRespMsg['res'][number] =
      f.term !== e.term
        ? [f.ref, RESULT_ERR, undefined, 'PROPOSAL_DROPPED', e.index]
        : ok
          ? [f.ref, RESULT_OK, result, undefined, e.index]
          : [f.ref, RESULT_ERR, result instanceof Error ? result.message : String(result), 'APPLY', e.index]
    out.res.push(answer)
    this.seen.replace(`${key}:${f.ref}`, answer)
  }

  /** As leader: send the answers noted since the last call. */
  sendResults(): void {
    if (!this.results.size) return
    for (const { node, boot, res } of this.results.values()) {
      this.host.out(node, { t: 'fwdResp', from: this.host.id, to: node, boot, res } satisfies FwdRespMsg)
    }
    this.results.clear()
  }

  /** A snapshot replaced the log up to `index`: forwarded entries there cannot be matched any more. */
  forgetUpTo(index: number): void {
    for (const [i] of this.forwarded) if (i <= index) this.forwarded.delete(i)
  }

  /**
   * Give up on this node's forwarded proposals past their deadline at `now`; send again those the
   * leader has not acknowledged for a while (a message may be dropped: a full queue, a reconnect).
   * Only to the same leader in the same term, which recognizes a resend and does not append it
   * twice (it remembers what it took for twice its `requestTimeoutMs`, and a resend goes out only
   * within this node's `requestTimeoutMs` of the first send: so nodes must not differ in it by more
   * than a factor of two); a new leader never saw it, and the proposal then waits for its deadline.
   */
  expire(now: number, leader: NodeId | undefined): void {
    // the core's view, not the last Ready's: a resend must never reach another node, or this one
    const st = this.host.core().status()
    const resend: FwdMsg['reqs'] = []
    for (const [ref, f] of this.outgoing) {
      if (f.p.settled) {
        this.outgoing.delete(ref)
      } else if (this.due(f, now, st)) {
        f.sentAt = now
        f.sends++
        f.resends++
        resend.push([ref, f.enc])
      } else if (this.moved(f, now, st)) {
        // an idempotent proposal whose leader is gone: to the new leader (or this node's log)
        f.sentTo = undefined
        f.p.uncertain = true
        this.queue.push(ref)
      } else if (f.p.deadline <= now) {
        this.outgoing.delete(ref)
        rejectOnce(
          f.p,
          f.sentTo === undefined
            ? droppedError(f.p, new NotLeaderError(leader, 'no leader was reachable before the deadline; the command was not sent'))
            : new TimeoutError(`forwarded proposal not answered within ${this.host.timeoutMs} ms; it may still take effect`),
        )
      }
    }
    if (resend.length && st.leader !== undefined) this.send(st.leader, st.term, resend)
    if (this.queue.length) this.flush()
  }

  /** Whether `f` is due to be sent again now, to the leader it went to (see {@link Forwarder.expire}). */
  private due(f: Outgoing<C, R>, now: number, st: { role: string; leader: NodeId | undefined; term: number }): boolean {
    if (f.accepted || f.pinned || f.sentTo === undefined || f.p.deadline <= now) return false
    if (st.role === 'leader' || st.leader !== f.sentTo || st.term !== f.sentTerm) return false
    if (now - f.firstSentAt >= this.host.timeoutMs) return false
    return now - f.sentAt >= backoffDelay({ minMs: this.host.resendMs, maxMs: this.host.timeoutMs }, f.sends)
  }

  /**
   * Whether `f` is idempotent, unanswered, and its leader is gone (another leads, or this term
   * has none for an election's length): the state machine applies it once, so it may go anywhere.
   */
  private moved(f: Outgoing<C, R>, now: number, st: { role: string; leader: NodeId | undefined; term: number }): boolean {
    if (!f.idempotent || f.accepted || f.sentTo === undefined || f.p.deadline <= now) return false
    if (st.leader === undefined) return false // wait for one (flush sends it when one is known)
    return st.leader !== f.sentTo || st.term !== f.sentTerm
  }

  /** Fail this node's forwarded proposals with `err`. */
  failAll(err: Error): void {
    for (const f of this.outgoing.values()) rejectOnce(f.p, err)
    this.outgoing.clear()
    this.queue = []
  }

  /** Forget what this node took as leader (its storage failed; the answers will not come). */
  dropLeaderState(): void {
    this.forwarded.clear()
    this.results.clear()
    this.seen.clear()
  }
}
