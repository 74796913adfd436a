/**
 * Messages that reach this node for a worker that is about to start here, held here until it
 * runs. A supervised worker's ref may be fixed before the worker runs: by its `supervise` entry
 * (`registerName(..., { wait: 'placed' })`) or by the move that placed it here when its node was
 * declared gone (`nodeDown` and `moveOff` with `fm`). Calls and casts by name then go to this
 * node as soon as the sender's registry shows the ref, without waiting there for the start's
 * report to be applied (a round of the log on every moved name's path: 150-370 ms in a 10k
 * failover, session 26). Here they wait, in the order they arrived, until:
 * - the worker runs: each is handed to it, in order (a call is answered as any other);
 * - the name no longer waits for that worker here (it moved on, its start failed, it went): each
 *   call is answered NO_WORKER (the worker never saw it: the sender may try the next one) and
 *   each cast is dropped, counted;
 * - its own deadline passes: the same.
 *
 * A message may arrive before this node applied the entry that fixed its ref: the sender says how
 * far its log was applied (`ai`), and the message waits until this node applied as far, then
 * looks again. Everything held is bounded: {@link MAX_ARRIVALS_HELD} messages over all refs, and
 * `castBufferSize` casts per ref (the oldest dropped first), each held `castHoldMs` at most (a
 * call: its caller's time left, as far as that).
 * @module
 */
import type { Clock } from '../raft/types.js'
import type { RegistryState } from '../registry/state.js'
import type { WorkerRef } from '../registry/types.js'
import type { LocalWorkers } from '../supervisor/local-workers.js'

/** Messages held for starting workers on one node at most (past that, a call is answered NO_WORKER at once and a cast dropped). */
export const MAX_ARRIVALS_HELD = 65_536

/** What holding arrivals needs of its node (a part of `MessagingHost`). */
export interface ArrivalsHost {
  readonly state: RegistryState
  readonly workers: LocalWorkers
  readonly clock: Clock
  /** Casts held per ref at most (see SwormOptions.castBufferSize). */
  readonly castBufferSize: number
  /** How long a message is held at most (callTimeoutMs). */
  readonly castHoldMs: number
  /** Counters: casts dropped. */
  readonly count: { castDropped(n: number): void }
}

/** One message held: `go` hands it to its worker (which runs now); `fail` says it never will (a call's NO_WORKER answer). */
export interface Arrival {
  /** A cast (dropped and counted when it cannot go), or a call. */
  readonly cast: boolean
  /** When it is given up. */
  readonly until: number
  go(): void
  fail(): void
}

/** The messages held for one ref. */
interface Waiting {
  readonly ref: WorkerRef
  /** The supervised name this node's registry shows the ref starting for, once it does. */
  name: string | undefined
  /** Held at least until this node applied this far (what the senders had applied). */
  ai: number
  items: Arrival[]
  casts: number
}

/** Messages held for this node's starting workers (one per sworm, inside its messaging). */
export class Arrivals {
  private readonly byId = new Map<number, Waiting>()
  private readonly byName = new Map<string, Waiting>()
  private total = 0

  constructor(private readonly host: ArrivalsHost) {}

  /** Messages held now, over all refs. */
  get size(): number {
    return this.total
  }

  /**
   * Hold `item`, a message to `ref` (a ref of this node incarnation), if it must wait here: its
   * worker does not run yet, and this node's registry shows it starting here, or has not applied
   * as far as the sender had (`ai`). Returns false if it must not wait (then the caller hands it
   * over, or answers that there is no such worker, as for any other message).
   */
  hold(ref: WorkerRef, ai: number, item: Arrival): boolean {
    if (!(ref.id < 0)) return false // (only a fixed ref has a negative id)
    let w = this.byId.get(ref.id)
    let name: string | undefined
    if (!w) {
      if (this.host.workers.has(ref.id)) return false
      name = this.startingHere(ref)
      if (name === undefined && !(this.host.state.appliedIndex < ai)) return false
    }
    if (this.total >= MAX_ARRIVALS_HELD) {
      this.give(item)
      return true
    }
    if (!w) {
      w = { ref, name, ai, items: [], casts: 0 }
      this.byId.set(ref.id, w)
      if (name !== undefined) this.byName.set(name, w)
    } else if (ai > w.ai) w.ai = ai
    w.items.push(item)
    this.total++
    if (item.cast && ++w.casts > Math.max(1, Math.floor(this.host.castBufferSize))) {
      const i = w.items.findIndex((it) => it.cast)
      this.drop(w, i)
    }
    return true
  }

  /** Worker `id` of this node started: hand it what waits for it, in order. */
  added(id: number): void {
    const w = this.byId.get(id)
    if (w) this.flush(w, true)
  }

  /**
   * The registry changed `name` (or placed it here: `placedHere`): look again at what waits for
   * its worker. A name placed here with a fixed ref takes over messages that arrived before it
   * was applied.
   */
  changed(name: string, placedHere: boolean): void {
    const w = this.byName.get(name)
    if (w) this.settle(w)
    if (placedHere && this.byId.size > 0) {
      const ref = this.host.state.peek(name)?.ref
      const v = ref && ref.id < 0 ? this.byId.get(ref.id) : undefined
      if (v && v !== w && v.ref.node === ref!.node && v.ref.inc === ref!.inc) this.settle(v)
    }
  }

  /**
   * Look again at everything held: what is past its deadline goes, what waited for entries now
   * applied is settled. Called often (the sworm's supervisor tick), and after a restored snapshot
   * (`all`: which tells no change).
   */
  recheck(all = false): void {
    if (this.byId.size === 0) return
    const now = this.host.clock.now()
    const applied = this.host.state.appliedIndex
    for (const w of [...this.byId.values()]) {
      // (held in arrival order, but a call's deadline may come before a cast's: each is looked at)
      if (w.items.some((it) => it.until <= now)) this.expire(w, now)
      if (this.byId.get(w.ref.id) !== w) continue
      if (all || (w.name === undefined && applied >= w.ai)) this.settle(w)
    }
  }

  /** Give up everything held (the sworm stops): calls are answered NO_WORKER, casts dropped. */
  close(): void {
    for (const w of [...this.byId.values()]) this.flush(w, false)
  }

  // ------------------------------------------------------------ inside

  /** Hand over what waits for `w` if its worker runs, keep it while it may still start here, else give it up. */
  private settle(w: Waiting): void {
    const { host } = this
    if (host.workers.has(w.ref.id)) return this.flush(w, true)
    const name = this.startingHere(w.ref)
    if (name !== undefined) {
      if (w.name !== name) {
        if (w.name !== undefined && this.byName.get(w.name) === w) this.byName.delete(w.name)
        w.name = name
        this.byName.set(name, w)
      }
      return
    }
    if (w.name === undefined && host.state.appliedIndex < w.ai) return
    this.flush(w, false)
  }

  /** Hand everything held for `w` to its worker (`go`), or give it all up. */
  private flush(w: Waiting, go: boolean): void {
    this.forget(w)
    const items = w.items
    w.items = []
    this.total -= items.length
    for (const it of items) {
      if (go) it.go()
      else this.give(it)
    }
  }

  /** Drop the items of `w` past their deadline. */
  private expire(w: Waiting, now: number): void {
    const keep: Arrival[] = []
    for (const it of w.items) {
      if (it.until > now) keep.push(it)
      else {
        this.total--
        if (it.cast) w.casts--
        this.give(it)
      }
    }
    w.items = keep
    if (keep.length === 0) this.forget(w)
  }

  /** Drop item `i` of `w` (the oldest cast, past the buffer). */
  private drop(w: Waiting, i: number): void {
    const [it] = w.items.splice(i, 1)
    this.total--
    w.casts--
    this.give(it!)
  }

  /** An item that will never reach its worker: a call is answered, a cast counted. */
  private give(it: Arrival): void {
    if (it.cast) this.host.count.castDropped(1)
    it.fail()
  }

  /** The name `ref` (of this node) was fixed for, while its worker may still start here (not while the name goes). */
  private startingHere(ref: WorkerRef): string | undefined {
    const { state } = this.host
    const name = state.startingName(ref)
    return name !== undefined && state.peek(name)?.retiring !== true ? name : undefined
  }

  private forget(w: Waiting): void {
    if (this.byId.get(w.ref.id) === w) this.byId.delete(w.ref.id)
    if (w.name !== undefined && this.byName.get(w.name) === w) this.byName.delete(w.name)
  }
}
