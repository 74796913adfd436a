/**
 * The node process's event-loop delay, measured from the start of the process (so a stall while
 * the node starts, restoring its snapshot say, counts too): the `loopDelay` operation reads it.
 * @module
 */
import { monitorEventLoopDelay, PerformanceObserver, performance, type IntervalHistogram } from 'node:perf_hooks'

let loop: IntervalHistogram | undefined

/** Stalls counted apart: longer than this (ms). */
export const LONG_STALL_MS = 100
/** Stalls over {@link LONG_STALL_MS} since the last take: how many, and their total (ms). */
let long = { count: 0, ms: 0 }

/** Start measuring (idempotent). */
export function startLoopDelay(): void {
  if (loop) return
  loop = monitorEventLoopDelay({ resolution: 5 })
  loop.enable()
  // the longest stall alone swings between runs of one version: their number and total say more
  const tickMs = 10
  let last = performance.now()
  setInterval(() => {
    const now = performance.now()
    const stall = now - last - tickMs
    if (stall > LONG_STALL_MS) {
      long.count++
      long.ms += stall
    }
    last = now
  }, tickMs).unref()
}

/** What {@link takeLoopDelay} returns. */
export interface LoopDelay {
  /** The longest delay (ms). */
  maxMs: number
  /** The 99th-percentile delay (ms). */
  p99Ms: number
  /** Stalls over {@link LONG_STALL_MS}: how many. */
  longCount: number
  /** ... and their total (ms). */
  longMs: number
}

/** The delays since the previous call, or since the start. */
export function takeLoopDelay(): LoopDelay {
  if (!loop) {
    startLoopDelay()
    return { maxMs: 0, p99Ms: 0, longCount: 0, longMs: 0 }
  }
  const out = loop.count > 0 ? { maxMs: loop.max / 1e6, p99Ms: loop.percentile(99) / 1e6 } : { maxMs: 0, p99Ms: 0 }
  loop.reset()
  const l = long
  long = { count: 0, ms: 0 }
  return { ...out, longCount: l.count, longMs: l.ms }
}

/**
 * With `SWORM_STALL_LOG` set, write every stall over 100 ms (or over the number of ms it is set
 * to, if more than 1) and every GC pause over half that to stderr (to find what stalls a node:
 * `SWORM_STALL_LOG=1 SWORM_CLUSTER_LOG=1 npm run bench:scale`).
 */
export function logStalls(tag: string): void {
  if (!process.env.SWORM_STALL_LOG) return
  const set = Number(process.env.SWORM_STALL_LOG)
  const limit = set > 1 ? set : 100
  let last = performance.now()
  const t = setInterval(() => {
    const now = performance.now()
    if (now - last > limit + 10) process.stderr.write(`[stall ${tag}] ${Math.round(now - last - 10)} ms ending at ${new Date().toISOString()} (monotonic clock ${process.hrtime.bigint() / 1000n} µs, as in CPU profiles)\n`)
    last = now
  }, 10)
  t.unref()
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.duration > limit / 2) process.stderr.write(`[gc ${tag}] ${Math.round(e.duration)} ms kind ${(e as unknown as { detail?: { kind?: number } }).detail?.kind ?? "?"} flags ${(e as unknown as { detail?: { flags?: number } }).detail?.flags ?? "?"} at ${new Date().toISOString()}\n`)
  })
  obs.observe({ entryTypes: ['gc'] })
}
