/**
 * The node process's event-loop delay, measured from the start of the process (so a stall while
 * the node starts, restoring its snapshot say, counts too): the `loopDelay` operation reads it.
 * @module
 */
import { closeSync, openSync, readSync } from 'node:fs'
import { monitorEventLoopDelay, PerformanceObserver, performance, type IntervalHistogram } from 'node:perf_hooks'

let loop: IntervalHistogram | undefined

/** Stalls counted apart: longer than this (ms). */
export const LONG_STALL_MS = 100

/** A stall, and what the main thread did meanwhile (Linux only: else undefined). */
export interface Stall {
  ms: number
  /** The main thread's time on a core within it (ms). */
  runMs: number | undefined
  /** Its time ready to run but waiting for a core (ms): the machine's doing, not the code's. */
  waitMs: number | undefined
  /**
   * The collector's pauses of the main thread within it (ms), whether the thread ran, waited for a
   * core or waited for the collector's own threads meanwhile. Added as the collector reports them,
   * just after the stall (so 0 in what a {@link logStalls} line says).
   */
  gcMs: number
}

/**
 * The last stalls, and the last collections, with when each began and ended (`performance.now()`):
 * a collection is reported a little before or after the stall it falls in is seen, so whichever of
 * the two comes second adds their overlap to the stall.
 */
const recent: Array<{ from: number; to: number; st: Stall }> = []
const recentGc: Array<{ from: number; to: number }> = []
const overlap = (a: { from: number; to: number }, b: { from: number; to: number }): number => Math.max(0, Math.min(a.to, b.to) - Math.max(a.from, b.from))
const keepLast = <T>(list: T[], item: T): void => {
  list.push(item)
  if (list.length > 32) list.shift()
}

/** Stalls over {@link LONG_STALL_MS} since the last take: how many, their total, the longest (ms). */
let long = { count: 0, ms: 0, runMs: 0, waitMs: 0, gcMs: 0, longest: undefined as Stall | undefined }
/** The main thread's collection pauses since the last take (ms). */
let gcMs = 0
/** The process's CPU time (every thread) and the main thread's time on a core at the last take. */
let cpuAt = process.cpuUsage()
let mainAt: [number, number] | undefined
let readSched: () => [number, number] | undefined = () => undefined

/**
 * The main thread's time on a core and waiting for one, in ns, from
 * `/proc/self/task/<pid>/schedstat` (the main thread's id is the process's); undefined where there
 * is no such file.
 */
function mainThreadSched(): () => [number, number] | undefined {
  let fd: number
  try {
    fd = openSync(`/proc/self/task/${process.pid}/schedstat`, 'r')
  } catch {
    return () => undefined
  }
  const buf = Buffer.alloc(96)
  let open = true
  return () => {
    if (!open) return undefined
    try {
      const n = readSync(fd, buf, 0, buf.length, 0)
      const [run, wait] = buf.toString('latin1', 0, n).split(' ')
      return [Number(run), Number(wait)]
    } catch {
      // (unreadable once: no more figures, and the file closed once)
      open = false
      try {
        closeSync(fd)
      } catch {
        // already gone
      }
      return undefined
    }
  }
}

/** Start measuring (idempotent). */
export function startLoopDelay(): void {
  if (loop) return
  loop = monitorEventLoopDelay({ resolution: 5 })
  loop.enable()
  // the longest stall alone swings between runs of one version: their number and total say more,
  // and so does what the main thread did in them (ran, or waited for a core)
  const sched = mainThreadSched()
  readSched = sched
  cpuAt = process.cpuUsage()
  mainAt = sched()
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcMs += e.duration
      const gc = { from: e.startTime, to: e.startTime + e.duration }
      keepLast(recentGc, gc)
      for (const r of recent) {
        const ms = overlap(gc, r)
        r.st.gcMs += ms
        long.gcMs += ms
      }
    }
  }).observe({ entryTypes: ['gc'] })
  watchStalls(sched, LONG_STALL_MS, (st, from, to) => {
    long.count++
    long.ms += st.ms
    long.runMs += st.runMs ?? 0
    long.waitMs += st.waitMs ?? 0
    if (!long.longest || st.ms > long.longest.ms) long.longest = st
    const r = { from, to, st }
    for (const gc of recentGc) st.gcMs += overlap(gc, r)
    long.gcMs += st.gcMs
    keepLast(recent, r)
  })
}

/**
 * Call `onStall` for every stall of the event loop over `overMs`, with what the main thread did
 * in it (from `sched`, see {@link mainThreadSched}): a 10 ms timer that notices when it fires late.
 */
function watchStalls(sched: () => [number, number] | undefined, overMs: number, onStall: (st: Stall, from: number, to: number) => void): void {
  const tickMs = 10
  let last = performance.now()
  let lastSched = sched()
  setInterval(() => {
    const now = performance.now()
    const ms = now - last - tickMs
    const s = sched()
    if (ms > overMs) {
      const both = s && lastSched
      onStall({ ms, runMs: both ? (s[0] - lastSched![0]) / 1e6 : undefined, waitMs: both ? (s[1] - lastSched![1]) / 1e6 : undefined, gcMs: 0 }, last, now)
    }
    last = now
    lastSched = s
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
  /** ... of which the main thread ran (ms; 0 where unknown). */
  longRunMs: number
  /** ... and waited for a core (ms; 0 where unknown). */
  longWaitMs: number
  /** ... and the collector's pauses in them (ms). */
  longGcMs: number
  /** The longest of them, and what the main thread did in it. */
  longest: Stall | undefined
  /** CPU time of the process, every thread (collector helpers, LevelDB, I/O) (ms). */
  cpuMs: number
  /** ... of which the main thread's (ms; undefined where unknown). */
  mainCpuMs: number | undefined
  /** The main thread's collection pauses (ms). */
  gcMs: number
}

/** The delays since the previous call, or since the start. */
export function takeLoopDelay(): LoopDelay {
  if (!loop) {
    startLoopDelay()
    return { maxMs: 0, p99Ms: 0, longCount: 0, longMs: 0, longRunMs: 0, longWaitMs: 0, longGcMs: 0, longest: undefined, cpuMs: 0, mainCpuMs: undefined, gcMs: 0 }
  }
  const out = loop.count > 0 ? { maxMs: loop.max / 1e6, p99Ms: loop.percentile(99) / 1e6 } : { maxMs: 0, p99Ms: 0 }
  loop.reset()
  const l = long
  long = { count: 0, ms: 0, runMs: 0, waitMs: 0, gcMs: 0, longest: undefined }
  const cpu = process.cpuUsage(cpuAt)
  cpuAt = process.cpuUsage()
  const main = readSched()
  const mainCpuMs = main && mainAt ? (main[0] - mainAt[0]) / 1e6 : undefined
  mainAt = main
  const gc = gcMs
  gcMs = 0
  return { ...out, longCount: l.count, longMs: l.ms, longRunMs: l.runMs, longWaitMs: l.waitMs, longGcMs: l.gcMs, longest: l.longest, cpuMs: (cpu.user + cpu.system) / 1000, mainCpuMs, gcMs: gc }
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
  watchStalls(mainThreadSched(), limit, (st) => {
    const did = st.runMs === undefined ? '' : `; the main thread ran ${Math.round(st.runMs)} ms, waited for a core ${Math.round(st.waitMs ?? 0)} ms`
    process.stderr.write(`[stall ${tag}] ${Math.round(st.ms)} ms ending at ${new Date().toISOString()} (monotonic clock ${process.hrtime.bigint() / 1000n} µs, as in CPU profiles)${did}\n`)
  })
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.duration > limit / 2) process.stderr.write(`[gc ${tag}] ${Math.round(e.duration)} ms kind ${(e as unknown as { detail?: { kind?: number } }).detail?.kind ?? "?"} flags ${(e as unknown as { detail?: { flags?: number } }).detail?.flags ?? "?"} at ${new Date().toISOString()}\n`)
  })
  obs.observe({ entryTypes: ['gc'] })
}
