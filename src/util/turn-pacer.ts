/**
 * Tasks run a batch per turn of the event loop, so that a burst of them cannot hold the loop.
 *
 * Why: a supervised start runs in microtasks alone when nothing it awaits does I/O (the module is
 * loaded, the factory and `init` are synchronous or resolve at once), and a node's failure places
 * tens of thousands of names on each survivor in one applied entry. Started all at once, 50k
 * starts held a survivor's event loop for 8 to 18 s (3 nodes, 300k workers, 2 cores): no
 * heartbeat was answered, every lease ran out, and the starts that completed were dropped for
 * having outlived the lease. Here the first batch runs at once (a lone task waits for nothing),
 * and the next after a timer of 0 ms, when timers and sockets had their turn; the batch grows
 * while its tasks (until the promises they return settle) take less than `sliceMs`, and shrinks
 * when they take more. Only the batch's own time counts: the loop's other work between two turns
 * (a busy node's Raft I/O) must not shrink it, or starts would run a few per turn under load.
 * @module
 */
import type { Clock } from '../raft/types.js'

/** Bounds of a {@link TurnPacer}. */
export interface TurnPacerOptions {
  /** The time a turn's tasks (with what they run in microtasks) should take, about. Default 10 ms. */
  sliceMs: number
  /** Tasks per turn at least. Default 16. */
  min: number
  /** Tasks per turn at most. Default 4,096. */
  max: number
}

const DEFAULTS: TurnPacerOptions = { sliceMs: 10, min: 16, max: 4096 }

/** Runs tasks in order, a batch per turn of the event loop; see the module doc. */
export class TurnPacer {
  private queue: Array<(() => unknown) | undefined> = []
  private head = 0
  private scheduled = false
  private perTurn: number
  private readonly opts: TurnPacerOptions

  /**
   * @param clock - for the time a turn took, and the timer to the next turn (the simulation's own)
   * @param options - bounds (see {@link TurnPacerOptions})
   */
  constructor(
    private readonly clock: Clock,
    options: Partial<TurnPacerOptions> = {},
  ) {
    this.opts = { ...DEFAULTS, ...options }
    this.perTurn = Math.max(this.opts.min, Math.min(this.opts.max, 256))
  }

  /** Tasks waiting for their turn. */
  get waiting(): number {
    return this.queue.length - this.head
  }

  /**
   * Run `task` in its turn. What it throws is dropped; a promise it returns tells how long it ran
   * (see the module doc).
   */
  run(task: () => unknown): void {
    this.queue.push(task)
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => this.turn())
  }

  private turn(): void {
    const started = this.clock.now()
    const end = Math.min(this.queue.length, this.head + this.perTurn)
    const settled: Array<Promise<unknown>> = []
    while (this.head < end) {
      const task = this.queue[this.head]!
      this.queue[this.head++] = undefined
      try {
        const r = task()
        if (r instanceof Promise) settled.push(r)
      } catch {
        // (a task's own failure is its business)
      }
    }
    // How long the batch held the loop: the time until its tasks settled, if they all did in
    // microtasks of this turn (a task that waits for I/O, or a timer, let the loop run: it says
    // nothing of what the batch cost, and leaves the batch as it is).
    let inTurn = true
    if (settled.length > 0) {
      void Promise.allSettled(settled).then(() => {
        if (!inTurn) return
        const took = this.clock.now() - started
        if (took > 2 * this.opts.sliceMs) this.perTurn = Math.max(this.opts.min, Math.floor(this.perTurn / 2))
        else if (took < this.opts.sliceMs / 2) this.perTurn = Math.min(this.opts.max, this.perTurn * 2)
      })
    }
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
      this.scheduled = false
      // the turn ends with the macrotask all the same: what settles after it is not its cost
      if (settled.length > 0) this.clock.setTimeout(() => (inTurn = false), 0)
      return
    }
    if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    this.clock.setTimeout(() => {
      inTurn = false
      this.turn()
    }, 0)
  }
}
