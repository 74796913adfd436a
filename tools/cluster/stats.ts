/** Small measuring helpers of the node processes, the benches and the demo. @module */
import { performance } from 'node:perf_hooks'

/** The p-th percentile (0..100) of an ascending array; 0 when empty. */
export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return 0
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]!
}

/** Wall-clock time in ms with sub-millisecond precision, comparable across processes of one machine. */
export const nowEpoch = (): number => performance.timeOrigin + performance.now()

/** The names `${prefix}${start}` .. `${prefix}${start + count - 1}`. */
export const numberedNames = (prefix: string, count: number, start = 0): string[] => Array.from({ length: count }, (_, i) => `${prefix}${start + i}`)

/**
 * Run `worker` `concurrency` times at once over the indexes `0..count-1` (each index once, in
 * order), until they are all taken or `stopAt` (a `performance.now()` time) passed.
 */
export async function runConcurrently(count: number, concurrency: number, worker: (i: number) => Promise<void>, stopAt = Infinity): Promise<void> {
  let next = 0
  const loop = async (): Promise<void> => {
    while (next < count && performance.now() < stopAt) await worker(next++)
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.floor(concurrency)) }, loop))
}

/** What a load run measured (see {@link measureLoad}). */
export interface LoadStats {
  /** Operations that failed (any error). */
  errors: number
  /** First few error messages. */
  errorSamples: string[]
  /** Wall time of the whole run. */
  ms: number
  /** Latency percentiles of the operations that succeeded, ms. */
  p50: number
  p99: number
  /** CPU time of this process during the run (process.cpuUsage delta), ms. */
  cpuUserMs: number
  cpuSystemMs: number
}

/**
 * Run operation `op(i)` for `i` in `0..count-1`, `concurrency` at once, until done or `maxMs`
 * passed. `op` resolves with its latency (ms) or throws; the errors are counted and the first five
 * messages kept.
 */
export async function measureLoad(count: number, concurrency: number, maxMs: number | undefined, op: (i: number) => Promise<number>): Promise<LoadStats> {
  const lat: number[] = []
  const errorSamples: string[] = []
  let errors = 0
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const stopAt = maxMs !== undefined ? t0 + maxMs : Infinity
  await runConcurrently(
    Math.max(0, Math.floor(count)),
    concurrency,
    async (i) => {
      try {
        lat.push(await op(i))
      } catch (err) {
        errors++
        if (errorSamples.length < 5) errorSamples.push(err instanceof Error ? err.message : String(err))
      }
    },
    stopAt,
  )
  const ms = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  lat.sort((a, b) => a - b)
  return { errors, errorSamples, ms, p50: percentile(lat, 50), p99: percentile(lat, 99), cpuUserMs: cpu.user / 1000, cpuSystemMs: cpu.system / 1000 }
}
