/**
 * The demo's cluster, shared by the scripted story (`run.ts`) and the dashboard: five Sworm node
 * processes of the tools/cluster harness, and the counter workers registered on them.
 * @module
 */
import type { RegisterSupervisedManyResult, SwormProcessFullStatus } from '../tools/cluster/sworm-protocol.js'
import { startSwormCluster, WORKERS_MODULE, type SwormCluster } from '../tools/cluster/sworm-cluster.js'
import { sleep } from './terminal.js'

/** Node processes of the demo. */
export const NODES = 5
/** Prefix of the supervised workers' names. */
export const PREFIX = 'counter:'
/** The name of worker `i`. */
export const nameOf = (i: number): string => `${PREFIX}${i}`
export { WORKERS_MODULE }

/** Start the demo's {@link NODES} node processes (sworm `demo`). */
export function startDemoCluster(): Promise<SwormCluster> {
  return startSwormCluster({ n: NODES, name: 'demo', startTimeoutMs: 30_000, ipcTimeoutMs: 15_000 })
}

/** The result of {@link registerDemoWorkers}. */
export interface DemoRegistration {
  /** What each node answered. */
  results: RegisterSupervisedManyResult[]
  /** Registrations that succeeded, over all nodes. */
  ok: number
}

/**
 * Register `count` supervised counter workers (`counter:0` ..), an equal share from each node of
 * `ids`, and call `onProgress` with how many run (the nodes' supervised counts) every 100 ms until
 * every node answered.
 */
export async function registerDemoWorkers(
  cl: SwormCluster,
  ids: string[],
  count: number,
  timeoutMs: number,
  onProgress: (running: number) => void,
): Promise<DemoRegistration> {
  const per = Math.ceil(count / ids.length)
  const jobs = Promise.all(
    ids.map((id, i) =>
      cl.request<RegisterSupervisedManyResult>(
        id,
        { op: 'registerSupervisedMany', prefix: PREFIX, start: i * per, count: Math.max(0, Math.min(per, count - i * per)), concurrency: 16, module: WORKERS_MODULE, fn: 'counter' },
        timeoutMs,
      ),
    ),
  )
  let done = false
  void jobs.then(
    () => (done = true),
    () => (done = true),
  )
  while (!done) {
    const sts = await Promise.all(ids.map((id) => cl.request<SwormProcessFullStatus>(id, { op: 'fullStatus' }, 2000).catch(() => undefined)))
    onProgress(sts.reduce((a, s) => a + (s?.supervised ?? 0), 0))
    await sleep(100)
  }
  const results = await jobs
  return { results, ok: results.reduce((a, r) => a + r.ok, 0) }
}
