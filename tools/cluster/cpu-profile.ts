/**
 * CPU profiles of node processes: with `SWORM_CPU_PROF=<dir>` set, a node process profiles
 * itself from its start to its graceful stop and writes `<dir>/<nodeId>.<pid>.cpuprofile`
 * (open it in Chrome's DevTools, or summarize it with `node dist/tools/cpu-top.js <file>`).
 * `node --cpu-prof` would write nothing: a node stopped by a signal re-raises it and ends without
 * the exit hooks that write the profile. `kill -USR2 <pid>` writes the profile so far and starts
 * a new one (`<nodeId>.<pid>.<n>.cpuprofile`).
 * @module
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Session } from 'node:inspector'

/** Start profiling if `SWORM_CPU_PROF` is set; the returned function stops and writes the profile. */
export function startCpuProfile(nodeId: string): () => Promise<void> {
  const dir = process.env.SWORM_CPU_PROF
  if (!dir) return () => Promise.resolve()
  const session = new Session()
  session.connect()
  const post = (method: string, params?: object): Promise<unknown> =>
    new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))))
  let started = post('Profiler.enable').then(() => post('Profiler.setSamplingInterval', { interval: 200 })).then(() => post('Profiler.start'))
  const write = async (suffix: string): Promise<void> => {
    await started
    const res = (await post('Profiler.stop')) as { profile: unknown }
    writeFileSync(join(dir, `${nodeId}.${process.pid}${suffix}.cpuprofile`), JSON.stringify(res.profile))
  }
  // SIGUSR2: write the profile so far (`<nodeId>.<pid>.<n>.cpuprofile`) and profile anew, e.g.
  // once before a fault and once after it, for a profile of what the fault cost
  let parts = 0
  let stopping = false
  const warn = (err: unknown): void => void process.stderr.write(`[cpu-profile ${nodeId}] ${String(err)}\n`)
  process.on('SIGUSR2', () => {
    if (stopping) return
    const suffix = `.${++parts}`
    // (a part that failed does not fail the next, nor the profile written at stop)
    started = write(suffix)
      .then(() => post('Profiler.start'))
      .catch(warn)
  })
  return async () => {
    stopping = true
    await write('').catch(warn)
    session.disconnect()
  }
}
