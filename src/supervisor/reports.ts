/**
 * A node's reports to the log, batched: its supervised starts (`startedMany`) and the ends of its
 * workers (`stoppedMany`: a crash to restart, a normal exit, a worker fenced while the lease ran
 * out and to start again). A report made while earlier ones are in flight waits for them, and
 * goes into the log with every other report made meanwhile, in one entry. Alone, a report is
 * proposed at once (no timer); under load, a node's reports cost a fraction of a log entry each:
 * a supervised registration costs about one replicated decision (its `supervise`), like a static
 * one, and a node whose lease came back after a gap starts its tens of thousands of fenced
 * workers again in a few dozen entries, not one entry each (which, at 200k workers on 2 cores,
 * loaded every replica until the leases ran out again).
 * @module
 */
import type { RegistryCommand, RegistryResult } from '../registry/types.js'

/** What the report batches need: who reports, and how a command reaches the log. */
export interface ReportsHost {
  readonly sworm: string
  readonly nodeId: string
  readonly inc: string
  /** Propose `cmd`, retrying as the supervisor does; undefined when it never went through. */
  propose(cmd: RegistryCommand): Promise<RegistryResult | undefined>
}

/** Bounds of the batches of one kind of report. */
export interface BatchBounds {
  /** Reports per entry at most. */
  maxBatch: number
  /** Bytes of names per entry at most (names may be long: an entry stays far below the frame limit); a batch takes at least one report. */
  maxBatchBytes: number
  /** Batches proposed and not yet answered at once. */
  maxInFlight: number
}

/** The default bounds: 1,024 reports or 256 KiB of names an entry, 8 entries in flight. */
export const DEFAULT_BATCH_BOUNDS: BatchBounds = { maxBatch: 1024, maxBatchBytes: 256 * 1024, maxInFlight: 8 }

interface Pending<T> {
  item: T
  done: (ok: boolean | undefined) => void
}

/**
 * Reports of one kind, batched; see the module doc. Each report resolves true when the log took
 * it, false when the log refused it, undefined when its batch never went through (its outcome is
 * unknown). `send` proposes one batch, whose result is one boolean per report, in order.
 */
export class ReportBatches<T> {
  private queue: Pending<T>[] = []
  private inFlight = 0
  private scheduled = false

  /**
   * @param send - proposes one batch; its result, one boolean per report (anything else refuses them all)
   * @param nameOf - the name a report is about (for the byte bound)
   * @param bounds - the bounds of a batch
   */
  constructor(
    private readonly send: (items: T[]) => Promise<RegistryResult | undefined>,
    private readonly nameOf: (item: T) => string,
    private readonly bounds: BatchBounds = DEFAULT_BATCH_BOUNDS,
  ) {}

  /** Report `item`; resolves with its own outcome (see the class doc). */
  add(item: T): Promise<boolean | undefined> {
    return new Promise((done) => {
      this.queue.push({ item, done })
      this.schedule()
    })
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.bounds.maxInFlight || this.queue.length === 0) return
    this.scheduled = true
    // after the reports made in this turn (one applied batch places many names at once)
    queueMicrotask(() => {
      this.scheduled = false
      this.flush()
    })
  }

  private flush(): void {
    const { maxBatch, maxBatchBytes, maxInFlight } = this.bounds
    while (this.inFlight < maxInFlight && this.queue.length > 0) {
      let n = 0
      let bytes = 0
      while (n < this.queue.length && n < maxBatch) {
        bytes += Buffer.byteLength(this.nameOf(this.queue[n]!.item)) + 16
        if (n > 0 && bytes > maxBatchBytes) break
        n++
      }
      const batch = this.queue.slice(0, n)
      this.queue = this.queue.slice(n)
      this.inFlight++
      void this.propose(batch).finally(() => {
        this.inFlight--
        this.schedule()
      })
    }
  }

  private async propose(batch: Pending<T>[]): Promise<void> {
    let res: RegistryResult | undefined
    try {
      res = await this.send(batch.map((p) => p.item))
    } catch {
      res = undefined
    }
    for (let i = 0; i < batch.length; i++) batch[i]!.done(res === undefined ? undefined : Array.isArray(res) ? res[i] === true : false)
  }
}

/** The `started` reports of one node incarnation, batched into `startedMany` entries. */
export class StartReports {
  private readonly batches: ReportBatches<[name: string, epoch: number, id: number]>

  /**
   * @param host - the reporting node and its way to the log
   * @param maxBatch - starts per entry at most
   * @param maxBatchBytes - bytes of names per entry at most
   * @param maxInFlight - reports proposed and not yet answered at once
   */
  constructor(host: ReportsHost, maxBatch = DEFAULT_BATCH_BOUNDS.maxBatch, maxBatchBytes = DEFAULT_BATCH_BOUNDS.maxBatchBytes, maxInFlight = DEFAULT_BATCH_BOUNDS.maxInFlight) {
    this.batches = new ReportBatches(
      (starts) => host.propose({ c: 'startedMany', sworm: host.sworm, node: host.nodeId, inc: host.inc, starts }),
      (s) => s[0],
      { maxBatch, maxBatchBytes, maxInFlight },
    )
  }

  /**
   * Report that local worker `id` runs `name` for `epoch`. Resolves true when the log took it,
   * false when the log refused it (the name moved, or was removed, meanwhile), undefined when
   * the report never went through (its outcome is unknown).
   */
  report(name: string, epoch: number, id: number): Promise<boolean | undefined> {
    return this.batches.add([name, epoch, id])
  }
}

/**
 * The `stopped` reports of one node incarnation, batched into `stoppedMany` entries: each asks
 * for what a `stopped` of its own would (`restart`: a new incarnation on this node, under a new
 * epoch; else the name goes).
 */
export class StopReports {
  private readonly batches: ReportBatches<[name: string, epoch: number, restart: 0 | 1]>

  /**
   * @param host - the reporting node and its way to the log
   * @param bounds - the bounds of a batch
   */
  constructor(host: ReportsHost, bounds: BatchBounds = DEFAULT_BATCH_BOUNDS) {
    this.batches = new ReportBatches((stops) => host.propose({ c: 'stoppedMany', stops }), (s) => s[0], bounds)
  }

  /**
   * Report that the worker of `name` for `epoch` ended here. Resolves true when the log took it,
   * false when the log refused it (the name moved, was removed or restarted meanwhile), undefined
   * when the report never went through.
   */
  report(name: string, epoch: number, restart: boolean): Promise<boolean | undefined> {
    return this.batches.add([name, epoch, restart ? 1 : 0])
  }
}
