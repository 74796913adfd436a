/**
 * Messages to a worker that is starting: a ref fixed at its supervised name's placement
 * (`registerName(name, spec, { wait: 'placed' })`, a negative id) whose node has not reported the
 * worker running yet. Such a message waits on the sending node, in its ref's turn, so that the
 * messages to a starting worker reach it in the order they were sent: until the log shows the
 * start, the worker runs on this node, or the name moved on or went (then it goes, and meets what
 * any message to a worker that ended meets). Each gives up at its own deadline and is then never
 * sent. Casts to such a ref are held, as casts by name are: `castHoldMs` each, `castBufferSize`
 * per ref at most, the oldest dropped first.
 * @module
 */
import { TimeoutError } from '../errors.js'
import type { Clock } from '../raft/types.js'
import type { RegistryState } from '../registry/state.js'
import { refKey, type WorkerRef } from '../registry/types.js'
import type { LocalWorkers } from '../supervisor/local-workers.js'

/** What holding messages for starting workers needs of its node (a part of `MessagingHost`). */
export interface StartingRefsHost {
  readonly state: RegistryState
  readonly workers: LocalWorkers
  readonly clock: Clock
  /** Whether `ref` is a worker of this node incarnation. */
  isLocal(ref: WorkerRef): boolean
  /** Throws once the sworm is stopped. */
  guard(): void
  /** Casts held per ref at most (see SwormOptions.castBufferSize). */
  readonly castBufferSize: number
  /** How long a cast is held at most (callTimeoutMs). */
  readonly castHoldMs: number
  /** Counters: casts dropped. */
  readonly count: { castDropped(n: number): void }
}

/** What it needs of messaging itself. */
export interface StartingRefsIo {
  /** Cast `msg` to `ref` now. @throws NoWorkerError if `ref` is a worker of this node that ended */
  castNow(ref: WorkerRef, msg: unknown): void
  /** A linearizable read, ended at `deadline` with `late()`. */
  readBefore(deadline: number, late: () => Error): Promise<void>
  /** Resolve on the next change of `name` (or of any node or connection), at a recheck, or at `deadline`. */
  change(name: string, deadline: number): Promise<void>
}

/** Casts to a starting worker that share one turn (see `StartingRefs.holdCast`). */
interface CastBatch {
  /** Each cast, and until when it is held. */
  msgs: Array<{ msg: unknown; until: number }>
  /** Until when its newest cast is held: the batch gives up then. */
  until: number
}

/** Messages to refs whose worker is starting, held on the sending node (one per sworm, inside its messaging). */
export class StartingRefs {
  constructor(
    private readonly host: StartingRefsHost,
    private readonly io: StartingRefsIo,
  ) {}

  /** Messages to refs that wait for their worker's start (see {@link StartingRefs.inTurn}), by ref key: the last one's turn. */
  private readonly refTurns = new Map<string, Promise<void>>()
  /** The last turn of each ref in `refTurns` (a cast batch joins it while it has not gone). */
  private readonly refTail = new Map<string, object>()
  /** Casts held for refs whose worker is starting, by ref key: their batches, oldest first, and how many (see {@link StartingRefs.holdCast}). */
  private readonly refCasts = new Map<string, { batches: CastBatch[]; count: number }>()

  /**
   * Whether a message to `ref` must wait (see {@link StartingRefs.untilStarted}): a ref fixed at its
   * supervised name's placement whose worker is not known to run yet, or one a message sent
   * before this one still waits for.
   */
  mustWait(ref: WorkerRef): boolean {
    if (!(ref.id < 0)) return false // (only a fixed ref has a negative id)
    if (this.refTurns.has(refKey(ref))) return true
    const { host } = this
    if (host.isLocal(ref) && host.workers.has(ref.id)) return false
    if (host.state.startingName(ref) !== undefined) return true
    return !host.state.isRegistered(ref) && host.state.appliedIndex < -ref.id
  }

  /**
   * Hold a cast to `ref`, whose worker is starting (see `Messaging.send`). Casts sent one
   * after another share one turn (a batch, handed over together, in order) and one timer; each is
   * held `castHoldMs` from when it was sent (an older one is dropped when its turn comes, the
   * batch gives up once its newest one's time is over), and the casts held for a ref are
   * `castBufferSize` at most: past that the oldest goes, its message with it.
   */
  holdCast(ref: WorkerRef, msg: unknown): void {
    const { host } = this
    const key = refKey(ref)
    let held = this.refCasts.get(key)
    if (!held) this.refCasts.set(key, (held = { batches: [], count: 0 }))
    const h = held
    const until = host.clock.now() + host.castHoldMs
    let batch = h.batches[h.batches.length - 1]
    if (!batch || this.refTail.get(key) !== batch) {
      // a new turn (the last one was a call's, or went)
      const b: CastBatch = { msgs: [], until }
      batch = b
      h.batches.push(b)
      const within = host.castHoldMs
      const late = (): Error => new TimeoutError(`the worker did not start within ${within} ms`)
      const leave = (): Array<{ msg: unknown; until: number }> => {
        const i = h.batches.indexOf(b)
        if (i >= 0) h.batches.splice(i, 1)
        h.count -= b.msgs.length
        if (h.batches.length === 0 && this.refCasts.get(key) === h) this.refCasts.delete(key)
        const msgs = b.msgs
        b.msgs = []
        return msgs
      }
      const go = (): void => {
        const msgs = leave()
        const now = host.clock.now()
        let sent = 0
        try {
          for (; sent < msgs.length; sent++) {
            const m = msgs[sent]!
            if (m.until > now) this.io.castNow(ref, m.msg)
            else host.count.castDropped(1) // (held castHoldMs already)
          }
        } catch {
          host.count.castDropped(msgs.length - sent) // (a worker of this node that ended)
        }
      }
      void this.inTurn(ref, () => b.until, late, go, b).catch(() => {
        const dropped = leave().length
        if (dropped > 0) host.count.castDropped(dropped)
      })
    }
    batch.msgs.push({ msg, until })
    batch.until = until
    h.count++
    if (h.count > Math.max(1, Math.floor(host.castBufferSize))) {
      const oldest = h.batches.find((b) => b.msgs.length > 0)!
      oldest.msgs.shift()
      h.count--
      host.count.castDropped(1)
    }
  }

  /**
   * Hand a message to `ref`'s worker (`go`, which does it at once: a cast sent, a call's request
   * sent or queued) in `ref`'s turn: once every message sent to `ref` before it went (or gave
   * up), and its worker runs (see {@link StartingRefs.untilStarted}). So messages to a worker that
   * is starting reach it in the order they were sent (found by review: one waiting for the start
   * was overtaken by a later one sent once the worker ran). Each gives up at its deadline
   * (`deadlineOf`: a time, or a function for one that may move on, a cast batch's), whatever the
   * ones before it wait for, and is then never sent. `tail`: what stands for this turn in
   * `refTail` while it is the last one (a cast batch, which later casts join).
   * @throws what `late()` makes, if it could not go by its deadline
   */
  inTurn<T>(ref: WorkerRef, deadlineOf: number | (() => number), late: () => Error, go: () => T, tail: object = {}): Promise<Awaited<T>> {
    const { host } = this
    const deadline = typeof deadlineOf === 'number' ? () => deadlineOf : deadlineOf
    const key = refKey(ref)
    const before = this.refTurns.get(key) ?? Promise.resolve()
    let out: T
    let gaveUp = false
    let sent = false
    const mine = before.then(async () => {
      if (gaveUp) return
      await this.untilStarted(ref, deadline, late)
      if (gaveUp) return
      sent = true
      if (this.refTail.get(key) === tail) this.refTail.delete(key) // (nothing joins a turn that went)
      out = go()
    })
    const turn = mine.then(
      () => {},
      () => {},
    )
    this.refTurns.set(key, turn)
    this.refTail.set(key, tail)
    void turn.then(() => {
      if (this.refTurns.get(key) === turn) this.refTurns.delete(key)
      if (this.refTail.get(key) === tail) this.refTail.delete(key)
    })
    return new Promise<Awaited<T>>((resolve, reject) => {
      // (a deadline that moved on meanwhile, a cast batch's: armed again for what is left)
      let timer: unknown
      const arm = (): void => {
        timer = host.clock.setTimeout(
          () => {
            if (sent) return
            if (deadline() > host.clock.now()) return arm()
            gaveUp = true
            reject(late())
          },
          Math.max(1, deadline() - host.clock.now()),
        )
      }
      arm()
      mine.then(
        () => {
          host.clock.clearTimeout(timer)
          if (gaveUp) return
          resolve(out as Awaited<T>)
        },
        (err: unknown) => {
          host.clock.clearTimeout(timer)
          if (!gaveUp) reject(err)
        },
      )
    })
  }

  /**
   * Wait until a message to `ref`, a ref fixed at its supervised name's placement
   * (`registerName(..., { wait: 'placed' })`, a negative id), can go: its node reported the
   * worker running (or the worker runs on this node), or the name moved on or went (then it goes,
   * and meets the end any message to a worker that ended meets). A ref this node's registry does
   * not hold, from an entry it has not applied yet, waits for one read barrier first.
   * @throws what `late()` makes, at `deadline()`; ShuttingDownError once this node stops
   */
  private async untilStarted(ref: WorkerRef, deadline: () => number, late: () => Error): Promise<void> {
    const { host } = this
    let read = false
    for (;;) {
      host.guard()
      if (host.isLocal(ref) && host.workers.has(ref.id)) return
      const name = host.state.startingName(ref)
      if (name === undefined) {
        if (read || host.state.isRegistered(ref) || host.state.appliedIndex >= -ref.id) return
        const until = deadline()
        try {
          await this.io.readBefore(until, late)
        } catch (err) {
          // a cast batch whose deadline moved on meanwhile (a cast joined it: found by review):
          // read again, to the new one
          if (deadline() > until && deadline() > host.clock.now()) continue
          throw err
        }
        read = true
        continue
      }
      if (host.clock.now() >= deadline()) throw late()
      await this.io.change(name, deadline())
    }
  }
}
