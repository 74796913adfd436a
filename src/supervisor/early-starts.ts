/**
 * Early word of supervised starts. A supervised registration takes two replicated decisions: its
 * `supervise` entry places the name, then the hosting node starts the worker and reports it in a
 * `startedMany` entry, which gives every replica the worker's ref. The node that registered the
 * name need not wait for the second one: the `supervise` entry names it (its client session), so
 * the hosting node tells it directly (`startedAt`) as soon as the worker runs, and the caller
 * resolves with that ref. A host's notices to one node go out together, one message for the
 * starts that completed in the same microtask checkpoint (the starts of one applied batch).
 *
 * So that the caller's next `whereisName` and calls by name see the worker at once (read your
 * writes), the caller keeps the ref as a hint for its name until its own registry shows the
 * start (or shows the name placed again, or gone). A hint is used only while the local
 * registration still places the name on the node that sent it, under its epoch, and is not being
 * moved or unregistered; a notice is taken only for a name this node is registering (so a peer
 * cannot fill the table); other nodes learn the ref from the log, as before.
 *
 * Nothing here decides anything: where a worker runs, and that it runs once, is still the log's
 * and the lease's business (see supervisor.ts). A notice that never comes (the host is cut off,
 * older, or its start failed) leaves the caller waiting for the log, as it did before.
 * @module
 */
import type { NodeId } from '../raft/types.js'
import type { RegistryChange, RegistryState } from '../registry/state.js'
import { refKey, runningRef, type WorkerRef } from '../registry/types.js'
import type { WireRouter } from '../rpc/router.js'
import { WaiterLists } from '../util/waiters.js'

/** What early starts need of their node. */
export interface EarlyStartsHost {
  readonly sworm: string
  readonly nodeId: NodeId
  /** This node's incarnation (the one its notices speak for). */
  readonly inc: string
  readonly state: RegistryState
  readonly router: WireRouter
  /** Names longer than this (in UTF-8) are refused, as everywhere. */
  readonly maxNameBytes: number
  /** A hint for `name` arrived: wake what waits for its worker (calls and casts by name). */
  woken(name: string): void
}

/**
 * Hints kept at most (a hint is taken only for a name this node is registering, so this bounds
 * nothing in practice): beyond, a new one takes the place of the oldest, whose name is then seen
 * once the log has its start.
 */
export const MAX_HINTS = 100_000

/** Starts per `startedAt` message at most (a larger batch goes out in several; a larger one that arrives is dropped). */
export const MAX_PER_NOTICE = 4096
/** Bytes of names per `startedAt` message at most (far below the frame limit, whatever `maxNameBytes`). */
const MAX_NOTICE_NAME_BYTES = 256 * 1024

interface Hint {
  epoch: number
  ref: WorkerRef
}

/** Early word of supervised starts, both sides; see the module documentation. */
export class EarlyStarts {
  /** name -> the ref its host said runs, for the epoch it was placed under. */
  private readonly hints = new Map<string, Hint>()
  /** refKey of a hinted ref -> its name. */
  private readonly byRef = new Map<string, string>()
  /** Names this node is registering (supervise proposed, start not yet known), with how many callers. */
  private readonly expecting = new Map<string, number>()
  private closed = false
  /** name -> callers waiting to hear its worker of one epoch runs. */
  private readonly waiting = new WaiterLists<string, { epoch: number; done: (ref: WorkerRef) => void }>()
  /** Notices to send, by node: `[name, epoch, id]` of workers that run here. */
  private outbox = new Map<NodeId, Array<[string, number, number]>>()
  private flushing = false

  constructor(private readonly host: EarlyStartsHost) {
    host.router.on('startedAt', (from, m) => {
      if (typeof m.inc !== 'string' || !Array.isArray(m.starts) || m.starts.length > MAX_PER_NOTICE) {
        host.router.drop(from, 'startedAt with bad fields')
        return
      }
      // the incarnation this node knows the sender by (its string, not the peer's copy); a notice
      // from another one (restarted, or not applied here yet) is left to the log
      const rec = host.state.nodeRecord(from)
      if (!rec || !rec.up || rec.inc !== m.inc || this.expecting.size === 0) return
      const inc = rec.inc
      for (const s of m.starts as unknown[]) {
        if (!Array.isArray(s) || typeof s[0] !== 'string' || !Number.isSafeInteger(s[1]) || !Number.isSafeInteger(s[2])) continue
        const name = s[0]
        if (name.length * 3 > host.maxNameBytes && Buffer.byteLength(name) > host.maxNameBytes) continue
        if (this.expecting.has(name)) this.heard(name, s[1] as number, { sworm: host.sworm, node: rec.node, inc, id: s[2] as number })
      }
    })
  }

  /**
   * Host side: the worker `ref` of supervised `name` for `epoch` runs on this node, and node `by`
   * (which registered it) waits to hear it. Sent with the other starts of this microtask checkpoint.
   */
  running(name: string, epoch: number, ref: WorkerRef, by: NodeId): void {
    if (this.closed) return
    if (by === this.host.nodeId) {
      if (this.expecting.has(name)) this.heard(name, epoch, ref)
      return
    }
    let list = this.outbox.get(by)
    if (!list) this.outbox.set(by, (list = []))
    list.push([name, epoch, ref.id])
    if (this.flushing) return
    this.flushing = true
    queueMicrotask(() => this.flush())
  }

  private flush(): void {
    this.flushing = false
    const out = this.outbox
    this.outbox = new Map()
    for (const [to, starts] of out) {
      let from = 0
      while (from < starts.length) {
        let end = from
        let bytes = 0
        while (end < starts.length && end - from < MAX_PER_NOTICE) {
          bytes += Buffer.byteLength(starts[end]![0]) + 16
          if (end > from && bytes > MAX_NOTICE_NAME_BYTES) break
          end++
        }
        this.host.router.send(to, { t: 'startedAt', inc: this.host.inc, starts: starts.slice(from, end) })
        from = end
      }
    }
  }

  /**
   * Caller side: this node is about to propose the supervised registration of `name`: notices
   * about it are taken from now until `done()` (call it once its caller stopped waiting).
   */
  expect(name: string): { done(): void } {
    this.expecting.set(name, (this.expecting.get(name) ?? 0) + 1)
    let ended = false
    return {
      done: () => {
        if (ended) return
        ended = true
        const n = (this.expecting.get(name) ?? 1) - 1
        if (n > 0) return void this.expecting.set(name, n)
        this.expecting.delete(name)
        // a hint that does not match the placement now (a notice about an epoch the name never
        // reached here: a bad peer's, or one the log moved past) would wait for an epoch that may
        // never come; the last caller is done with it
        const h = this.hints.get(name)
        if (h && !this.valid(name, h)) this.forget(name)
      },
    }
  }

  /**
   * Caller side: the ref of the worker of supervised `name` for `epoch`, once its host says it
   * runs; never settles otherwise (race it with the log and a deadline, then `cancel()`).
   */
  wait(name: string, epoch: number): { ref: Promise<WorkerRef>; cancel(): void } {
    const h = this.hints.get(name)
    if (h && h.epoch === epoch && this.valid(name, h)) return { ref: Promise.resolve(h.ref), cancel: () => {} }
    let cancel = (): void => {}
    const ref = new Promise<WorkerRef>((done) => (cancel = this.waiting.add(name, { epoch, done })))
    return { ref, cancel }
  }

  /** A host said the worker `ref` of `name` runs for `epoch` (maybe before this node applied its placement). */
  private heard(name: string, epoch: number, ref: WorkerRef): void {
    if (this.closed) return
    const r = this.host.state.peek(name)
    // a notice about an epoch this node has applied past, or a start its log shows already, is stale
    if (r !== undefined && (r.kind !== 'supervised' || (r.epoch ?? 0) > epoch || (r.epoch === epoch && r.ref !== undefined))) return
    // the placement it speaks of, applied here, is on another node: not its host
    if (r !== undefined && r.epoch === epoch && r.node !== ref.node) return
    const had = this.hints.get(name)
    if (had !== undefined && had.epoch > epoch) return // never an older epoch in place of a newer one
    const h = { epoch, ref }
    if (had === undefined && this.hints.size >= MAX_HINTS) this.forget(this.hints.keys().next().value as string)
    this.set(name, h)
    if (!this.valid(name, h)) return // (until this node applies the placement it speaks of)
    this.host.woken(name)
    for (const w of this.waiting.list(name)) if (w.epoch === epoch) w.done(ref)
  }

  private set(name: string, h: Hint): void {
    this.forget(name)
    this.hints.set(name, h)
    this.byRef.set(refKey(h.ref), name)
  }

  private forget(name: string): void {
    const h = this.hints.get(name)
    if (!h) return
    this.hints.delete(name)
    const k = refKey(h.ref)
    if (this.byRef.get(k) === name) this.byRef.delete(k)
  }

  /**
   * The name whose worker `ref` is, if this node knows it runs from a hint only (the log does not
   * have its start yet): a registration, or a group change, with that ref must wait for the log,
   * or the registry would not know it as that name's worker.
   */
  pendingName(ref: WorkerRef): string | undefined {
    if (this.byRef.size === 0) return undefined
    const name = this.byRef.get(refKey(ref))
    return name !== undefined && this.whereis(name) !== undefined ? name : undefined
  }

  /**
   * The ref its host said runs for `name`, if the local registry does not show it yet and still
   * places the name there under the same epoch (else the hint is dropped).
   */
  whereis(name: string): WorkerRef | undefined {
    const h = this.hints.get(name)
    if (!h) return undefined
    if (this.valid(name, h)) return h.ref
    // (kept while this node has not applied the placement it speaks of yet)
    const r = this.host.state.peek(name)
    if (r !== undefined && (r.epoch ?? 0) >= h.epoch) this.forget(name)
    return undefined
  }

  private valid(name: string, h: Hint): boolean {
    const r = this.host.state.peek(name)
    return (
      r !== undefined &&
      r.kind === 'supervised' &&
      r.epoch === h.epoch &&
      r.node === h.ref.node &&
      runningRef(r) === undefined &&
      r.handoffTo === undefined &&
      r.retiring !== true &&
      this.host.state.isUp(h.ref.node, h.ref.inc)
    )
  }

  /** A registry change: a hint the registry makes useless (the start is in the log, or the name moved on) goes. */
  onChange(ch: RegistryChange): void {
    if (this.hints.size === 0 || !('name' in ch)) return
    const h = this.hints.get(ch.name)
    if (!h) return
    // an event about an earlier epoch of the name (applied before the placement the hint is
    // about), or its own placement applied after the notice came, keeps it
    if ('epoch' in ch && ch.epoch < h.epoch) return
    if (ch.type === 'placed' && ch.epoch === h.epoch && ch.node === h.ref.node) return
    if (ch.type === 'placed' || ch.type === 'started' || ch.type === 'unregistered' || ch.type === 'startFailed' || ch.type === 'handoff' || ch.type === 'retire' || ch.type === 'unplaced') {
      this.forget(ch.name)
    }
  }

  /** Forget every hint and notice (on stop). */
  close(): void {
    this.closed = true
    this.hints.clear()
    this.byRef.clear()
    this.outbox.clear()
    this.expecting.clear()
  }
}
