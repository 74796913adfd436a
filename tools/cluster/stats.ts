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
