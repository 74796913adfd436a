/**
 * The node process's event-loop delay, measured from the start of the process (so a stall while
 * the node starts, restoring its snapshot say, counts too): the `loopDelay` operation reads it.
 * @module
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'

let loop: IntervalHistogram | undefined

/** Start measuring (idempotent). */
export function startLoopDelay(): void {
  if (loop) return
  loop = monitorEventLoopDelay({ resolution: 5 })
  loop.enable()
}

/** The longest and the 99th-percentile delay (ms) since the previous call, or since the start. */
export function takeLoopDelay(): { maxMs: number; p99Ms: number } {
  if (!loop) {
    startLoopDelay()
    return { maxMs: 0, p99Ms: 0 }
  }
  const out = loop.count > 0 ? { maxMs: loop.max / 1e6, p99Ms: loop.percentile(99) / 1e6 } : { maxMs: 0, p99Ms: 0 }
  loop.reset()
  return out
}
