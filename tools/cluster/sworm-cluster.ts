/**
 * A harness that runs a sworm as real OS processes (one `sworm-node.ts` per
 * node) on loopback ports, with LevelDB in temporary directories. Used by
 * `test/sworm-process.test.ts` and `bench/registry-bench.ts`.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SwormProcessArgs, SwormProcessEvent, SwormProcessStatus, SwormRequest } from './sworm-protocol.js'
import { freePorts, NodeProcesses, NodeRequestError, NodeStartError, pollUntil, waitForLeader, type SpawnOptions } from './processes.js'

export { freePorts, NodeRequestError, NodeStartError, pollUntil, type SpawnOptions }

const FIXTURE = fileURLToPath(new URL('./sworm-node.js', import.meta.url))

/** Path of the counter-worker module (`workers.ts`), for supervised registrations (`{ module, fn: 'counter' }`). */
export const WORKERS_MODULE = fileURLToPath(new URL('./workers.js', import.meta.url))

/** The nodes' log level named by `SWORM_CLUSTER_LOG` (`SWORM_CLUSTER_LOG=info`), if it names one. */
function envLogLevel(): SwormProcessArgs['logLevel'] {
  const v = process.env.SWORM_CLUSTER_LOG
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error' ? v : undefined
}

/** Options of {@link startSwormCluster}. */
export interface SwormClusterOptions {
  /** Number of nodes started at once with `peers` (ids n1..nN). */
  n: number
  /** Name of the sworm (default 'procs'). */
  name?: string
  /** Parent of the cluster's temporary directory (default: the OS temp dir). */
  baseDir?: string
  nodeDownAfterMs?: number
  requestTimeoutMs?: number
  /** Raft `snapshotEvery` of the nodes (default: the library's). */
  snapshotEvery?: number
  /** Raft `snapshotChunkBytes` and `maxLogEntries` of the nodes (default: the library's). */
  snapshotChunkBytes?: number
  maxLogEntries?: number
  /** Raft `electionTicks` of the nodes (default: the library's, 6 ticks of 50 ms). */
  electionTicks?: number
  /** How long to wait for each process to be ready (default 20 s). */
  startTimeoutMs?: number
  /** `startTimeoutMs` of the nodes' `Sworm.start` (how long a supervised registration waits for its worker). */
  workerStartTimeoutMs?: number
  /** Default timeout of {@link SwormCluster.request} (default 15 s). */
  ipcTimeoutMs?: number
  /** Copy the nodes' stderr to this process's stderr (default: only when SWORM_CLUSTER_LOG is set). */
  echoLogs?: boolean
  /** Log level of the nodes (default: `SWORM_CLUSTER_LOG` when it names a level, else 'warn'). */
  logLevel?: SwormProcessArgs['logLevel']
  /** Extra node flags (default `['--expose-gc']`). */
  execArgv?: string[]
  /** `leaseTimeoutMs` of the nodes (default: the library's, 2,000 ms). */
  leaseTimeoutMs?: number
  /** `maxClockDriftMs` of the nodes (default: the library's, 500 ms). */
  maxClockDriftMs?: number
  /**
   * Where the counter workers of `tools/cluster/workers.ts` append their starts and stops (wall
   * clock), one file per process start: `<lifeDir>/<id>.<k>.jsonl`. Survives SIGKILL.
   */
  lifeDir?: string
  /** Data directories of some nodes (default: `<cluster dir>/<id>`), e.g. on a small filesystem. */
  dataDirs?: Record<string, string>
  /** `voters` of the nodes (default: the library's, 5). */
  voters?: number
  /** The zone of each node (default: none). */
  zoneOf?: (nodeId: string) => string | undefined
  /** `autopilot.stabilizationMs` and `deadNodeTimeoutMs` of the nodes (default: the library's). */
  stabilizationMs?: number
  deadNodeTimeoutMs?: number
  /** Clock skew of each process start (see `SwormProcessArgs.clockRate`); called at every spawn. */
  clockOf?: (nodeId: string) => { rate: number; offsetMs: number } | undefined
}

type Req = SwormRequest | (Record<string, unknown> & { op: string })

/** A running sworm of node processes. */
export interface SwormCluster {
  /** Node ids: `n1` .. `nN`, then the ids of nodes started with {@link startJoining}. */
  readonly ids: string[]
  /** The cluster's temporary directory (holds each node's data dir). */
  readonly dir: string
  /** Listen address of each node. */
  readonly urls: Record<string, string>
  /** Send a request over IPC; resolves with its result or rejects with {@link NodeRequestError}. */
  request<T = unknown>(nodeId: string, msg: Req, timeoutMs?: number): Promise<T>
  /** Status of one node. */
  status(nodeId: string, timeoutMs?: number): Promise<SwormProcessStatus>
  /** Whether the node's process is running. */
  isAlive(nodeId: string): boolean
  /** Ids of running nodes. */
  alive(): string[]
  /** OS pid of a running node. */
  pid(nodeId: string): number | undefined
  /** SIGKILL a node and wait until the process is gone. */
  kill(nodeId: string): Promise<void>
  /**
   * Start a killed (or stopped) node again from its data dir. Rejects with a {@link NodeStartError}
   * if it does not get ready (see {@link SpawnOptions}). A node started with `join` joins through
   * `opts.join` if given (and from then on), else through the address it joined through before.
   * `opts.startWith` makes this one start, and only it, with the cluster's `peers` or with `join`
   * through the address given, whichever way the node started before (a wiped voter started again
   * as an operator might).
   */
  restart(nodeId: string, opts?: SpawnOptions & { join?: string; startWith?: 'peers' | { join: string } }): Promise<void>
  /**
   * Start a new node `nodeId` on a fresh data dir that joins through `via` (an address; default
   * n1's) with the `join` option, listening on `opts.url` (default: a free port).
   */
  startJoining(nodeId: string, via?: string, opts?: SpawnOptions & { url?: string }): Promise<void>
  /** The data dir of a node. */
  dataDir(nodeId: string): string
  /**
   * Forget a node that was removed from the cluster (it must not be running): it leaves
   * {@link ids} (its address stays in {@link urls}).
   */
  retire(nodeId: string): void
  /** Graceful stop of one node (`sworm.stop()`), waiting for its process to exit. */
  stop(nodeId: string): Promise<void>
  /** SIGTERM a node (SIGKILL after `graceMs`, default 30 s) and wait until it exits; resolves with how it exited. */
  terminate(nodeId: string, graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /**
   * Poll the live nodes until one is leader and a majority of the voters named by `ids` (the
   * leader included) name it. Resolves with its id.
   */
  waitForLeader(timeoutMs?: number, opts?: { exclude?: string[] }): Promise<string>
  /** The last lines a node wrote to stderr. */
  logs(nodeId: string): string[]
  /** Kill every process and remove the temporary directory. */
  stopAll(): Promise<void>
  /**
   * Cut `nodeId` off from every other node (both directions, with `faultsForTests().block`; the
   * processes and their IPC keep running). Skips nodes that are not running.
   */
  isolate(nodeId: string): Promise<void>
  /** Undo {@link isolate} (on every running node). */
  heal(nodeId: string): Promise<void>
  /**
   * Freeze a running node's process (SIGSTOP): it keeps its sockets but runs nothing, like a long
   * GC or VM pause. IPC requests to it wait until {@link thaw}. `kill` and `stopAll` still work.
   */
  freeze(nodeId: string): void
  /** Resume a frozen node (SIGCONT). */
  thaw(nodeId: string): void
  /**
   * Listen to the events a node pushes after an IPC `subscribe` request (each node process,
   * restarted ones too, must be subscribed on its own).
   */
  onEvents(listener: (nodeId: string, events: SwormProcessEvent[]) => void): void
  /** Exits the harness did not cause (crashes), e.g. `n2 exited (code 1, signal null)`. */
  unexpectedExits(): string[]
}

/** Start `n` sworm node processes forming a new cluster. */
export async function startSwormCluster(opts: SwormClusterOptions): Promise<SwormCluster> {
  const n = opts.n
  const name = opts.name ?? 'procs'
  const dir = await mkdtemp(join(opts.baseDir ?? tmpdir(), 'sworm-procs-'))
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`)
  const urls: Record<string, string> = {}
  const peers: Record<string, string> = {}
  const secret = randomBytes(16).toString('hex')
  const eventListeners: Array<(nodeId: string, events: SwormProcessEvent[]) => void> = []
  const procs = new NodeProcesses({
    fixture: FIXTURE,
    execArgv: opts.execArgv ?? ['--expose-gc'],
    echoLogs: opts.echoLogs ?? process.env.SWORM_CLUSTER_LOG !== undefined,
    startTimeoutMs: opts.startTimeoutMs ?? 20_000,
    requestTimeoutMs: opts.ipcTimeoutMs ?? 15_000,
    onEvents: (id, events) => {
      for (const l of eventListeners) l(id, events as SwormProcessEvent[])
    },
  })
  /** Nodes started with `join`, and the address they joined through. */
  const joinedVia = new Map<string, string>()
  const starts = new Map<string, number>()

  try {
    const ports = await freePorts(n)
    ids.forEach((id, i) => (peers[id] = urls[id] = `ws://127.0.0.1:${ports[i]}`))
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }

  const argsOf = (id: string): SwormProcessArgs => {
    const via = joinedVia.get(id)
    const a: SwormProcessArgs = { name, nodeId: id, listen: urls[id]!, dataDir: dataDirOf(id), secret }
    if (via !== undefined) a.join = via
    else a.peers = peers
    a.logLevel = opts.logLevel ?? envLogLevel() ?? 'warn'
    if (opts.nodeDownAfterMs !== undefined) a.nodeDownAfterMs = opts.nodeDownAfterMs
    if (opts.requestTimeoutMs !== undefined) a.requestTimeoutMs = opts.requestTimeoutMs
    if (opts.snapshotEvery !== undefined) a.snapshotEvery = opts.snapshotEvery
    if (opts.snapshotChunkBytes !== undefined) a.snapshotChunkBytes = opts.snapshotChunkBytes
    if (opts.maxLogEntries !== undefined) a.maxLogEntries = opts.maxLogEntries
    if (opts.electionTicks !== undefined) a.electionTicks = opts.electionTicks
    if (opts.leaseTimeoutMs !== undefined) a.leaseTimeoutMs = opts.leaseTimeoutMs
    if (opts.workerStartTimeoutMs !== undefined) a.workerStartTimeoutMs = opts.workerStartTimeoutMs
    if (opts.maxClockDriftMs !== undefined) a.maxClockDriftMs = opts.maxClockDriftMs
    if (opts.voters !== undefined) a.voters = opts.voters
    const zone = opts.zoneOf?.(id)
    if (zone !== undefined) a.zone = zone
    if (opts.stabilizationMs !== undefined) a.stabilizationMs = opts.stabilizationMs
    if (opts.deadNodeTimeoutMs !== undefined) a.deadNodeTimeoutMs = opts.deadNodeTimeoutMs
    const skew = opts.clockOf?.(id)
    if (skew) {
      a.clockRate = skew.rate
      a.clockOffsetMs = skew.offsetMs
    }
    return a
  }

  const spawnNode = (id: string, sopts: SpawnOptions = {}, startWith?: 'peers' | { join: string }): Promise<void> => {
    const k = (starts.get(id) ?? 0) + 1
    starts.set(id, k)
    const env = opts.lifeDir ? { ...process.env, SWORM_LIFE_FILE: join(opts.lifeDir, `${id}.${k}.jsonl`) } : process.env
    const a = argsOf(id)
    if (startWith === 'peers') {
      // (a node added later is not in the first peers: it lists itself beside them)
      delete a.join
      a.peers = id in peers ? peers : { ...peers, [id]: urls[id]! }
    } else if (startWith !== undefined) {
      delete a.peers
      a.join = startWith.join
    }
    return procs.spawn(id, a, env, sopts)
  }
  const dataDirOf = (id: string): string => opts.dataDirs?.[id] ?? join(dir, id)
  const request = <T>(nodeId: string, msg: Req, timeoutMs?: number): Promise<T> => procs.request<T>(nodeId, msg, timeoutMs)

  const cluster: SwormCluster = {
    ids,
    dir,
    urls,
    request,
    status: (nodeId, timeoutMs = 2000) => request<SwormProcessStatus>(nodeId, { op: 'status' }, timeoutMs),
    isAlive: (nodeId) => procs.isAlive(nodeId),
    alive: () => ids.filter((id) => procs.isAlive(id)),
    pid: (nodeId) => procs.pid(nodeId),
    kill: (nodeId) => procs.kill(nodeId),
    restart: async (nodeId, ropts = {}) => {
      if (!ids.includes(nodeId)) throw new Error(`unknown node ${nodeId}`)
      const { join: via, startWith, ...sopts } = ropts
      if (via !== undefined && joinedVia.has(nodeId)) joinedVia.set(nodeId, via)
      await spawnNode(nodeId, sopts, startWith)
    },
    startJoining: async (nodeId, via, jopts = {}) => {
      if (ids.includes(nodeId)) throw new Error(`node ${nodeId} already exists`)
      const { url, ...sopts } = jopts
      urls[nodeId] = url ?? `ws://127.0.0.1:${(await freePorts(1))[0]}`
      joinedVia.set(nodeId, via ?? urls[ids[0]!]!)
      ids.push(nodeId)
      await spawnNode(nodeId, sopts)
    },
    dataDir: dataDirOf,
    retire: (nodeId) => {
      if (procs.isAlive(nodeId)) throw new Error(`node ${nodeId} is still running`)
      const i = ids.indexOf(nodeId)
      if (i >= 0) ids.splice(i, 1)
    },
    stop: (nodeId) => procs.stop(nodeId, { op: 'stop' }),
    terminate: (nodeId, graceMs) => procs.terminate(nodeId, graceMs),
    waitForLeader: (timeoutMs = 10_000, wopts = {}) =>
      waitForLeader(
        () => ids.filter((id) => procs.isAlive(id) && !(wopts.exclude ?? []).includes(id)),
        async (id) => {
          const s = await cluster.status(id, 1000)
          return { self: s.node, role: s.role, term: s.term, leader: s.leader }
        },
        Math.floor(ids.length / 2) + 1,
        timeoutMs,
      ),
    logs: (nodeId) => procs.logs(nodeId),
    stopAll: async () => {
      await procs.killAll()
      await rm(dir, { recursive: true, force: true })
    },
    isolate: (nodeId) => setBlocked(nodeId, true),
    heal: (nodeId) => setBlocked(nodeId, false),
    freeze: (nodeId) => procs.signal(nodeId, 'SIGSTOP'),
    thaw: (nodeId) => procs.signal(nodeId, 'SIGCONT'),
    onEvents: (listener) => void eventListeners.push(listener),
    unexpectedExits: () => procs.unexpectedExits(),
  }

  async function setBlocked(nodeId: string, blocked: boolean): Promise<void> {
    const others = ids.filter((id) => id !== nodeId)
    const live = (id: string): boolean => procs.isAlive(id)
    await Promise.all([
      live(nodeId) ? request(nodeId, { op: 'blockPeers', peers: others, blocked }, 5000) : undefined,
      ...others.filter(live).map((id) => request(id, { op: 'blockPeers', peers: [nodeId], blocked }, 5000)),
    ])
  }

  try {
    await Promise.all(ids.map((id) => spawnNode(id)))
  } catch (err) {
    await cluster.stopAll().catch(() => {})
    throw err
  }
  return cluster
}
