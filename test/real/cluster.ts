/**
 * A harness that runs a Raft cluster as real OS processes (one {@link ProcessArgs} node per
 * process, see `test/fixtures/raft-kv-process.ts`) on loopback ports, with LevelDB storage in
 * temporary directories. Used by `test/raft-process.test.ts` and `bench/raft-bench.ts`.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import type { ProcessArgs } from '../fixtures/raft-kv-process.js'

const FIXTURE = fileURLToPath(new URL('../fixtures/raft-kv-process.js', import.meta.url))

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

/** An error a node answered a request with. */
export class NodeRequestError extends Error {
  constructor(
    readonly node: string,
    readonly code: string,
    message: string,
    readonly leader?: string,
  ) {
    super(`${node}: ${code}: ${message}`)
  }
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

interface Proc {
  child: ChildProcess
  alive: boolean
  exited: Promise<void>
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>
  stderrTail: string[]
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

/** Free loopback ports: bind port 0, note the port, close. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<import('node:net').Server>((resolve, reject) => {
          const s = createServer()
          s.once('error', reject)
          s.listen(0, '127.0.0.1', () => resolve(s))
        }),
    ),
  )
  const ports = servers.map((s) => {
    const a = s.address()
    if (!a || typeof a === 'string') throw new Error('no port')
    return a.port
  })
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))))
  return ports
}

/** Poll `fn` until it returns a value other than `undefined`; throw after `timeoutMs`. */
export async function pollUntil<T>(
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  what: string,
  intervalMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastErr: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined) return v
    } catch (err) {
      lastErr = err
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${String(lastErr)})` : ''}`)
    }
    await new Promise((r) => setTimeout(r, intervalMs))
  }
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
  const echo = opts.echoLogs ?? process.env.SWORM_CLUSTER_LOG !== undefined
  const startTimeout = opts.startTimeoutMs ?? 15_000
  const defaultTimeout = opts.requestTimeoutMs ?? 15_000
  const procs = new Map<string, Proc>()
  let seq = 0
  let stopped = false

  const argsOf = (id: string, bootstrap: boolean): ProcessArgs => {
    const a: ProcessArgs = { id, listen: peers[id]!, peers, dataDir: opts.dataDirs?.[id] ?? join(dir, id), secret, bootstrap }
    if (opts.snapshotEvery !== undefined) a.snapshotEvery = opts.snapshotEvery
    if (opts.logLevel) a.logLevel = opts.logLevel
    if (opts.tickMs !== undefined) a.tickMs = opts.tickMs
    if (opts.electionTicks !== undefined) a.electionTicks = opts.electionTicks
    return a
  }

  const spawnNode = (id: string, bootstrap: boolean): Promise<void> => {
    const child = spawn(process.execPath, [FIXTURE, JSON.stringify(argsOf(id, bootstrap))], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    })
    let onExit!: () => void
    const p: Proc = {
      child,
      alive: true,
      exited: new Promise<void>((r) => (onExit = r)),
      pending: new Map(),
      stderrTail: [],
    }
    procs.set(id, p)
    let partial = ''
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (chunk: string) => {
      if (echo) process.stderr.write(chunk)
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      p.stderrTail.push(...lines)
      if (p.stderrTail.length > 200) p.stderrTail.splice(0, p.stderrTail.length - 200)
    })
    child.stdout!.resume()
    return new Promise<void>((resolve, reject) => {
      let ready = false
      const timer = setTimeout(() => {
        if (!ready) reject(new Error(`node ${id} not ready after ${startTimeout} ms; stderr:\n${p.stderrTail.join('\n')}`))
      }, startTimeout)
      child.on('message', (raw: unknown) => {
        const m = raw as { ready?: boolean; id?: number; ok?: boolean; result?: unknown; error?: { code: string; message: string; leader?: string } }
        if (m.ready) {
          ready = true
          clearTimeout(timer)
          resolve()
          return
        }
        if (typeof m.id !== 'number') return
        const w = p.pending.get(m.id)
        if (!w) return
        p.pending.delete(m.id)
        clearTimeout(w.timer)
        if (m.ok) w.resolve(m.result)
        else w.reject(new NodeRequestError(id, m.error?.code ?? 'ERROR', m.error?.message ?? 'unknown error', m.error?.leader))
      })
      child.on('error', (err) => {
        if (!ready) {
          clearTimeout(timer)
          reject(err)
        }
      })
      child.on('exit', (code, signal) => {
        p.alive = false
        for (const w of p.pending.values()) {
          clearTimeout(w.timer)
          w.reject(new NodeRequestError(id, 'EXITED', `process exited (code ${code}, signal ${signal})`))
        }
        p.pending.clear()
        onExit()
        if (!ready) {
          clearTimeout(timer)
          reject(new Error(`node ${id} exited before ready (code ${code}, signal ${signal}); stderr:\n${p.stderrTail.join('\n')}`))
        }
      })
    })
  }

  const request = <T>(nodeId: string, msg: Record<string, unknown> & { op: string }, timeoutMs = defaultTimeout): Promise<T> => {
    const p = procs.get(nodeId)
    if (!p || !p.alive) return Promise.reject(new NodeRequestError(nodeId, 'DOWN', 'process is not running'))
    const id = ++seq
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        p.pending.delete(id)
        reject(new NodeRequestError(nodeId, 'IPC_TIMEOUT', `no answer to ${msg.op} within ${timeoutMs} ms`))
      }, timeoutMs)
      p.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      try {
        p.child.send({ ...msg, id })
      } catch (err) {
        clearTimeout(timer)
        p.pending.delete(id)
        reject(new NodeRequestError(nodeId, 'IPC', String(err)))
      }
    })
  }

  const kill = async (nodeId: string): Promise<void> => {
    const p = procs.get(nodeId)
    if (!p || !p.alive) return
    p.child.kill('SIGKILL')
    await p.exited
  }

  const cluster: Cluster = {
    ids,
    dir,
    request,
    status: (nodeId, timeoutMs = 2000) => request<NodeStatus>(nodeId, { op: 'status' }, timeoutMs),
    isAlive: (nodeId) => procs.get(nodeId)?.alive ?? false,
    alive: () => ids.filter((id) => procs.get(id)?.alive),
    pid: (nodeId) => {
      const p = procs.get(nodeId)
      return p?.alive ? p.child.pid : undefined
    },
    kill,
    restart: async (nodeId) => {
      if (stopped) throw new Error('cluster stopped')
      const p = procs.get(nodeId)
      if (p?.alive) throw new Error(`node ${nodeId} is still running`)
      await spawnNode(nodeId, false)
    },
    waitForLeader: (timeoutMs = 10_000, wopts = {}) =>
      pollUntil(
        async () => {
          const live = ids.filter((id) => procs.get(id)?.alive && !(wopts.exclude ?? []).includes(id))
          const sts = (await Promise.all(live.map((id) => cluster.status(id, 1000).catch(() => undefined)))).filter(
            (s): s is NodeStatus => s !== undefined,
          )
          const leaders = sts.filter((s) => s.role === 'leader')
          if (leaders.length === 0) return undefined
          // the leader of the highest term; it must be named by a majority of the cluster
          const l = leaders.reduce((a, b) => (b.term > a.term ? b : a))
          const votes = sts.filter((s) => s.term === l.term && s.leader === l.id).length
          return votes >= Math.floor(n / 2) + 1 ? l.id : undefined
        },
        timeoutMs,
        'a leader',
        10,
      ),
    logs: (nodeId) => [...(procs.get(nodeId)?.stderrTail ?? [])],
    stopAll: async () => {
      stopped = true
      await Promise.all(ids.map((id) => kill(id)))
      await rm(dir, { recursive: true, force: true })
    },
  }

  try {
    await Promise.all(ids.map((id) => spawnNode(id, true)))
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
  return new Promise<number>((resolve, reject) => {
    let done = false
    let attempt = 0
    let lastErr = ''
    const deadline = performance.now() + timeoutMs
    const finish = (fn: () => void): void => {
      if (done) return
      done = true
      clearInterval(timer)
      fn()
    }
    const fire = (): void => {
      if (done) return
      if (performance.now() > deadline) {
        finish(() => reject(new Error(`no proposal committed through ${nodes.join(',')} within ${timeoutMs} ms (last error: ${lastErr})`)))
        return
      }
      const i = attempt++
      const node = nodes[i % nodes.length]!
      c.request<{ ok?: boolean }>(node, { op: 'propose', input: { op: 'putIfAbsent', key: `${keyPrefix}${i}`, value: 'x' } }, timeoutMs).then(
        (r) => {
          if (r.ok === true) {
            const at = performance.now()
            finish(() => resolve(at))
          } else lastErr = `unexpected result ${JSON.stringify(r)}`
        },
        (err: unknown) => {
          lastErr = String(err)
        },
      )
    }
    const timer = setInterval(fire, intervalMs)
    fire()
  })
}
