/**
 * The reports of a node's supervised starts, batched: a start that completes while earlier
 * reports are in flight waits for them, and goes into the log with every other start that
 * completed meanwhile, in one `startedMany` entry. Alone, a start is reported at once (no
 * timer); under load, a node's starts cost a fraction of a log entry each, so a supervised
 * registration costs about one replicated decision (its `supervise`), like a static one.
 * @module
 */
import type { RegistryCommand, RegistryResult } from '../registry/types.js'

/** What {@link StartReports} needs: who reports, and how a command reaches the log. */
export interface StartReportsHost {
  readonly sworm: string
  readonly nodeId: string
  readonly inc: string
  /** Propose `cmd`, retrying as the supervisor does; undefined when it never went through. */
  propose(cmd: RegistryCommand): Promise<RegistryResult | undefined>
}

interface Pending {
  name: string
  epoch: number
  id: number
  done: (ok: boolean | undefined) => void
}

/** Batches the `started` reports of one node incarnation; see the module doc. */
export class StartReports {
  private queue: Pending[] = []
  private inFlight = 0
  private scheduled = false

  /**
   * @param host - the reporting node and its way to the log
   * @param maxBatch - starts per entry at most
   * @param maxBatchBytes - bytes of names per entry at most (names may be long: an entry stays
   *   far below the frame limit); a batch takes at least one start
   * @param maxInFlight - reports proposed and not yet answered at once
   */
  constructor(
    private readonly host: StartReportsHost,
    private readonly maxBatch = 1024,
    private readonly maxBatchBytes = 256 * 1024,
    private readonly maxInFlight = 8,
  ) {}

  /**
   * Report that local worker `id` runs `name` for `epoch`. Resolves true when the log took it,
   * false when the log refused it (the name moved, or was removed, meanwhile), undefined when
   * the report never went through (its outcome is unknown).
   */
  report(name: string, epoch: number, id: number): Promise<boolean | undefined> {
    return new Promise((done) => {
      this.queue.push({ name, epoch, id, done })
      this.schedule()
    })
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.queue.length === 0) return
    this.scheduled = true
    // after the starts completing in this turn (one applied batch places many names at once)
    queueMicrotask(() => {
      this.scheduled = false
      this.flush()
    })
  }

  private flush(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      let n = 0
      let bytes = 0
      while (n < this.queue.length && n < this.maxBatch) {
        bytes += Buffer.byteLength(this.queue[n]!.name) + 16
        if (n > 0 && bytes > this.maxBatchBytes) break
        n++
      }
      const batch = this.queue.slice(0, n)
      this.queue = this.queue.slice(n)
      this.inFlight++
      void this.send(batch).finally(() => {
        this.inFlight--
        this.schedule()
      })
    }
  }

  private async send(batch: Pending[]): Promise<void> {
    const { sworm, nodeId: node, inc } = this.host
    const starts = batch.map((p): [string, number, number] => [p.name, p.epoch, p.id])
    let res: RegistryResult | undefined
    try {
      res = await this.host.propose({ c: 'startedMany', sworm, node, inc, starts })
    } catch {
      res = undefined
    }
    for (let i = 0; i < batch.length; i++) batch[i]!.done(res === undefined ? undefined : Array.isArray(res) ? res[i] === true : false)
  }
}
