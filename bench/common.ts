/** What every bench script shares: progress lines, percentiles, cleanup guards, the main wrapper. */
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'
import { performance } from 'node:perf_hooks'

import type { SwormCluster } from '../tools/cluster/sworm-cluster.js'

export { percentile } from '../tools/cluster/stats.js'

const benchStart = performance.now()

/** A progress logger writing `[tag 12.3s] msg` to stderr (the table goes to stdout). */
export function benchLogger(tag: string): (msg: string) => void {
  return (msg) => process.stderr.write(`[${tag} ${((performance.now() - benchStart) / 1000).toFixed(1)}s] ${msg}\n`)
}

/**
 * Run `cleanupSync` on exit, exit 130 on SIGINT/SIGTERM (which runs it too), and abort with exit 3
 * if the bench still runs after `watchdogMs`.
 */
export function installBenchGuards(cleanupSync: () => void, watchdogMs: number): void {
  process.on('exit', cleanupSync)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      process.stderr.write(`bench interrupted (${sig}); cleaning up\n`)
      process.exit(130)
    })
  }
  setTimeout(() => {
    process.stderr.write(`bench watchdog: still running after ${watchdogMs / 1000} s; aborting\n`)
    process.exit(3)
  }, watchdogMs).unref()
}

/** Run the bench's main function; exit with its exit code, or 1 with the error. */
export function runMain(main: () => Promise<void>): void {
  main().then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
      process.exit(1)
    },
  )
}

/** Path of the executable `name` in a directory of PATH, or of `alsoIn` (for sbin programs), if any. */
export function findExecutable(name: string, alsoIn: string[] = []): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...alsoIn]) {
    if (!dir) continue
    const p = join(dir, name)
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      // not here
    }
  }
  return undefined
}

/** CPU time (user + system) used so far by each running node process of `c`, ms, by node id. */
export async function nodesCpuMs(c: SwormCluster): Promise<Map<string, number>> {
  const ids = c.alive()
  const cs = await Promise.all(ids.map((id) => c.request<{ userMs: number; systemMs: number }>(id, { op: 'cpu' })))
  return new Map(ids.map((id, i) => [id, cs[i]!.userMs + cs[i]!.systemMs]))
}

/** CPU time used so far by every running node process of `c`, ms. */
export async function clusterCpuMs(c: SwormCluster): Promise<number> {
  let sum = 0
  for (const ms of (await nodesCpuMs(c)).values()) sum += ms
  return sum
}

/**
 * The CPU each node used between two {@link nodesCpuMs} readings, ms: only nodes in both (a node
 * that died or restarted in between counts from neither, rather than wrongly).
 */
export function cpuBetween(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [id, ms] of after) {
    const b = before.get(id)
    if (b !== undefined && ms >= b) out.set(id, ms - b)
  }
  return out
}
