/**
 * A harness that runs a Raft cluster as real OS processes (one {@link ProcessArgs} node per
 * process, see `raft-kv-node.ts`) on loopback ports, with LevelDB storage in
 * temporary directories. Used by `test/raft-process.test.ts` and `bench/raft-bench.ts`.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ProcessArgs } from './raft-kv-protocol.js'
import { firstToSucceed, freePorts, NodeProcesses, NodeRequestError, pollUntil, waitForLeader } from './processes.js'

export { freePorts, NodeRequestError, pollUntil }

const FIXTURE = fileURLToPath(new URL('./raft-kv-node.js', import.meta.url))

/** Options of {@link startCluster}. */
export interface ClusterOptions {
  /** Number of nodes (ids n1..nN). */
  n: number
  /** Parent of the cluster's temporary directory (default: the OS temp dir). */
  baseDir?: string
  /** How long to wait for each process to be ready (default 15 s). */
  startTimeoutMs?: number
  /** Default timeout of {@link Cluster.request} (default 15 s). */
  requestTimeoutMs?: number
  /** Copy the nodes' stderr to this process's stderr (default: only when SWORM_CLUSTER_LOG is set). */
  echoLogs?: boolean
  /** Log level of the nodes (default 'warn'). */
  logLevel?: ProcessArgs['logLevel']
  tickMs?: number
  electionTicks?: number
  snapshotEvery?: number
  /** Data directories of some nodes (default: `<cluster dir>/<id>`), e.g. on a small filesystem. */
  dataDirs?: Record<string, string>
}

/** Status of a node, as answered by the `status` request. */
export interface NodeStatus {
  id: string
  role: 'follower' | 'precandidate' | 'candidate' | 'leader'
  term: number
  leader: string | undefined
  commit: number
  applied: number
  lastIndex: number
  snapshotIndex: number
  pid: number
  /** Why the node stopped serving (a storage failure), while it lasts. */
  failed: string | undefined
  /** Set while the node catches up past log entries it lost to corruption. */
  recoveringUpTo: number | undefined
}

/** A running cluster of node processes. */
export interface Cluster {
  /** Node ids, `n1` .. `nN`. */
  readonly ids: string[]
  /** The cluster's temporary directory (holds each node's data dir). */
  readonly dir: string
  /** Send a request over IPC; resolves with its result or rejects with {@link NodeRequestError}. */
  request<T = unknown>(nodeId: string, msg: Record<string, unknown> & { op: string }, timeoutMs?: number): Promise<T>
  /** Status of one node. */
  status(nodeId: string, timeoutMs?: number): Promise<NodeStatus>
  /** Whether the node's process is running. */
  isAlive(nodeId: string): boolean
  /** Ids of running nodes. */
  alive(): string[]
  /** OS pid of a running node. */
  pid(nodeId: string): number | undefined
  /** SIGKILL a node and wait until the process is gone. */
  kill(nodeId: string): Promise<void>
  /** Start a killed (or stopped) node again from its data dir (no bootstrap). */
  restart(nodeId: string): Promise<void>
  /**
   * Poll the live nodes until one is leader and a majority of the cluster's nodes (among the live
   * ones, the leader included) name it as leader. Resolves with its id.
   */
  waitForLeader(timeoutMs?: number, opts?: { exclude?: string[] }): Promise<string>
  /** The last lines a node wrote to stderr. */
  logs(nodeId: string): string[]
  /** Kill every process and remove the temporary directory. */
  stopAll(): Promise<void>
}

/** Start `n` node processes forming a new cluster. */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const n = opts.n
  const dir = await mkdtemp(join(opts.baseDir ?? tmpdir(), 'sworm-cluster-'))
  const ports = await freePorts(n)
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`)
  const peers: Record<string, string> = {}
  ids.forEach((id, i) => (peers[id] = `ws://127.0.0.1:${ports[i]}`))
  const secret = randomBytes(16).toString('hex')
  const procs = new NodeProcesses({
    fixture: FIXTURE,
    echoLogs: opts.echoLogs ?? process.env.SWORM_CLUSTER_LOG !== undefined,
    startTimeoutMs: opts.startTimeoutMs ?? 15_000,
    requestTimeoutMs: opts.requestTimeoutMs ?? 15_000,
  })

  const argsOf = (id: string, bootstrap: boolean): ProcessArgs => {
    const a: ProcessArgs = { id, listen: peers[id]!, peers, dataDir: opts.dataDirs?.[id] ?? join(dir, id), secret, bootstrap }
    if (opts.snapshotEvery !== undefined) a.snapshotEvery = opts.snapshotEvery
    if (opts.logLevel) a.logLevel = opts.logLevel
    if (opts.tickMs !== undefined) a.tickMs = opts.tickMs
    if (opts.electionTicks !== undefined) a.electionTicks = opts.electionTicks
    return a
  }

  const cluster: Cluster = {
    ids,
    dir,
    request: (nodeId, msg, timeoutMs) => procs.request(nodeId, msg, timeoutMs),
    status: (nodeId, timeoutMs = 2000) => procs.request<NodeStatus>(nodeId, { op: 'status' }, timeoutMs),
    isAlive: (nodeId) => procs.isAlive(nodeId),
    alive: () => ids.filter((id) => procs.isAlive(id)),
    pid: (nodeId) => procs.pid(nodeId),
    kill: (nodeId) => procs.kill(nodeId),
    restart: (nodeId) => procs.spawn(nodeId, argsOf(nodeId, false)),
    waitForLeader: (timeoutMs = 10_000, wopts = {}) =>
      waitForLeader(
        () => ids.filter((id) => procs.isAlive(id) && !(wopts.exclude ?? []).includes(id)),
        async (id) => {
          const s = await cluster.status(id, 1000)
          return { self: s.id, role: s.role, term: s.term, leader: s.leader }
        },
        Math.floor(n / 2) + 1,
        timeoutMs,
      ),
    logs: (nodeId) => procs.logs(nodeId),
    stopAll: async () => {
      await procs.killAll()
      await rm(dir, { recursive: true, force: true })
    },
  }

  try {
    await Promise.all(ids.map((id) => procs.spawn(id, argsOf(id, true))))
  } catch (err) {
    await cluster.stopAll().catch(() => {})
    throw err
  }
  return cluster
}

/**
 * Fire a `putIfAbsent` proposal every `intervalMs` at `nodes` (round-robin, not waiting for
 * earlier ones: a proposal forwarded to a dead leader only fails at its own deadline) until one
 * commits. Resolves with the time of that first commit, `performance.now()` based.
 */
export function firstCommit(
  c: Cluster,
  nodes: string[],
  keyPrefix: string,
  timeoutMs: number,
  intervalMs = 5,
): Promise<number> {
  return firstToSucceed(
    async (i) => {
      const node = nodes[i % nodes.length]!
      const r = await c.request<{ ok?: boolean }>(node, { op: 'propose', input: { op: 'putIfAbsent', key: `${keyPrefix}${i}`, value: 'x' } }, timeoutMs)
      if (r.ok !== true) throw new Error(`unexpected result ${JSON.stringify(r)}`)
    },
    timeoutMs,
    intervalMs,
    (lastErr) => `no proposal committed through ${nodes.join(',')} within ${timeoutMs} ms (last error: ${lastErr})`,
  )
}
