/**
 * Node processes driven over IPC, for the real-process harnesses (`raft-cluster.ts` for bare Raft
 * nodes, `sworm-cluster.ts` for sworm nodes): spawning a fixture with a JSON argument and waiting
 * for its `{ ready: true }`, request/answer over IPC with timeouts, the tail of each process's
 * stderr, SIGKILL, signals, and which exits the harness did not cause.
 *
 * The IPC protocol of the fixtures: a request is `{ id, op, ... }`; the answer is
 * `{ id, ok: true, result }` or `{ id, ok: false, error: { code, message, leader? } }`; anything
 * else with an `events` array is pushed to {@link NodeProcessesOptions.onEvents}.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { performance } from 'node:perf_hooks'

/** With `SWORM_CPU_PROF`, how long {@link NodeProcesses.killAll} gives nodes to write their profiles. */
const PROFILE_WRITE_MS = 3000

/** `n` free TCP ports on 127.0.0.1. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import('node:net').Server>((resolve, reject) => {
          const s = createServer()
          s.once('error', reject)
          s.listen(0, '127.0.0.1', () => resolve(s))
        }),
    ),
  )
  const ports = servers.map((s) => (s.address() as import('node:net').AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

/** An error a node answered a request with (or the harness's: `DOWN`, `IPC_TIMEOUT`, `EXITED`). */
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

/**
 * A process that did not get ready: `code` is the one the fixture reported
 * (`{ startFailed: { code, message } }` before exiting), else `EXITED`, or `START_TIMEOUT` when it
 * is still starting after the start timeout (it keeps running then: kill it or wait).
 */
export class NodeStartError extends Error {
  constructor(
    readonly node: string,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** Options of one {@link NodeProcesses.spawn}. */
export interface SpawnOptions {
  /** How long it may take to get ready (default: {@link NodeProcessesOptions.startTimeoutMs}). */
  startTimeoutMs?: number
  /**
   * A start the fixture reports as failed (`startFailed`, then its exit) is not a crash: the caller
   * expects that it may be refused. Exits without such a report still are.
   */
  mayBeRefused?: boolean
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

/**
 * Start `attempt(0)`, `attempt(1)`, ... every `intervalMs` (not waiting for earlier ones: one sent
 * to a dead node only fails at its own deadline) until one resolves; resolves with the time of
 * that first success (`performance.now()` based). After `timeoutMs` rejects with
 * `failure(last error)`.
 */
export function firstToSucceed(attempt: (i: number) => Promise<unknown>, timeoutMs: number, intervalMs: number, failure: (lastErr: string) => string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let done = false
    let i = 0
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
      if (performance.now() > deadline) return finish(() => reject(new Error(failure(lastErr))))
      attempt(i++).then(
        () => {
          const at = performance.now()
          finish(() => resolve(at))
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

/** What a leader poll needs of a node's status. */
export interface LeaderView {
  /** The node's own id. */
  self: string
  role: string
  term: number
  leader: string | undefined
}

/**
 * Poll the live nodes until one is leader and `quorum` of them (the leader included) name it in
 * its term. Resolves with its id.
 */
export function waitForLeader(live: () => string[], status: (id: string) => Promise<LeaderView>, quorum: number, timeoutMs: number): Promise<string> {
  return pollUntil(
    async () => {
      const sts = (await Promise.all(live().map((id) => status(id).catch(() => undefined)))).filter((s): s is LeaderView => s !== undefined)
      const leaders = sts.filter((s) => s.role === 'leader')
      if (leaders.length === 0) return undefined
      // the leader of the highest term, named by a quorum
      const l = leaders.reduce((a, b) => (b.term > a.term ? b : a))
      const votes = sts.filter((s) => s.term === l.term && s.leader === l.self).length
      return votes >= quorum ? l.self : undefined
    },
    timeoutMs,
    'a leader',
    10,
  )
}

/** Options of {@link NodeProcesses}. */
export interface NodeProcessesOptions {
  /** The fixture script to run. */
  fixture: string
  /** Flags for node (default none). */
  execArgv?: string[]
  /** Copy the processes' stderr to this process's stderr. */
  echoLogs: boolean
  /** How long a process may take to say it is ready. */
  startTimeoutMs: number
  /** Default timeout of {@link NodeProcesses.request}. */
  requestTimeoutMs: number
  /** Events a process pushes (`{ events: [...] }` messages). */
  onEvents?: (nodeId: string, events: unknown[]) => void
}

interface Proc {
  child: ChildProcess
  alive: boolean
  exited: Promise<void>
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>
  stderrTail: string[]
  /** Set when the harness kills or stops it: its exit is not a crash. */
  expectExit: boolean
  /** How it exited, once it has. */
  exit?: { code: number | null; signal: NodeJS.Signals | null }
  /** What the fixture reported when its start failed. */
  startFailed?: { code: string; message: string }
}

/** The processes of one cluster, by node id (one running process per id at most). */
export class NodeProcesses {
  private readonly procs = new Map<string, Proc>()
  private readonly crashes: string[] = []
  private seq = 0
  private closed = false

  constructor(private readonly opts: NodeProcessesOptions) {}

  /**
   * Start the fixture for `nodeId` with `args` (JSON) and resolve once it says it is ready; reject
   * with a {@link NodeStartError} if it does not.
   */
  spawn(nodeId: string, args: unknown, env: NodeJS.ProcessEnv = process.env, sopts: SpawnOptions = {}): Promise<void> {
    if (this.closed) return Promise.reject(new Error('cluster stopped'))
    if (this.procs.get(nodeId)?.alive) return Promise.reject(new Error(`node ${nodeId} is still running`))
    const child = spawn(process.execPath, [...(this.opts.execArgv ?? []), this.opts.fixture, JSON.stringify(args)], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env,
    })
    let onExit!: () => void
    const p: Proc = { child, alive: true, exited: new Promise<void>((r) => (onExit = r)), pending: new Map(), stderrTail: [], expectExit: false }
    this.procs.set(nodeId, p)
    let partial = ''
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (chunk: string) => {
      if (this.opts.echoLogs) process.stderr.write(chunk)
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      p.stderrTail.push(...lines)
      if (p.stderrTail.length > 200) p.stderrTail.splice(0, p.stderrTail.length - 200)
    })
    child.stdout!.resume()
    return new Promise<void>((resolve, reject) => {
      let ready = false
      const startTimeoutMs = sopts.startTimeoutMs ?? this.opts.startTimeoutMs
      const timer = setTimeout(() => {
        if (!ready) reject(new NodeStartError(nodeId, 'START_TIMEOUT', `node ${nodeId} not ready after ${startTimeoutMs} ms; stderr:\n${p.stderrTail.join('\n')}`))
      }, startTimeoutMs)
      child.on('message', (raw: unknown) => {
        const m = raw as {
          ready?: boolean
          id?: number
          ok?: boolean
          result?: unknown
          error?: { code: string; message: string; leader?: string }
          events?: unknown[]
          startFailed?: { code: string; message: string }
        }
        if (m.startFailed && !ready) {
          p.startFailed = { code: String(m.startFailed.code), message: String(m.startFailed.message) }
          if (sopts.mayBeRefused) p.expectExit = true
          return
        }
        if (Array.isArray(m.events)) {
          this.opts.onEvents?.(nodeId, m.events)
          return
        }
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
        else w.reject(new NodeRequestError(nodeId, m.error?.code ?? 'ERROR', m.error?.message ?? 'unknown error', m.error?.leader))
      })
      child.on('error', (err) => {
        if (!ready) {
          clearTimeout(timer)
          reject(err)
        }
      })
      child.on('exit', (code, signal) => {
        p.alive = false
        p.exit = { code, signal }
        for (const w of p.pending.values()) {
          clearTimeout(w.timer)
          w.reject(new NodeRequestError(nodeId, 'EXITED', `process exited (code ${code}, signal ${signal})`))
        }
        p.pending.clear()
        onExit()
        let decided = false
        const decide = (): void => {
          if (decided) return
          decided = true
          if (!p.expectExit && !this.closed) this.crashes.push(`${nodeId} exited (code ${code}, signal ${signal}): ${p.stderrTail.slice(-5).join(' | ')}`)
          if (!ready) {
            clearTimeout(timer)
            const why = p.startFailed ? `: ${p.startFailed.code}: ${p.startFailed.message}` : ''
            reject(new NodeStartError(nodeId, p.startFailed?.code ?? 'EXITED', `node ${nodeId} exited before ready (code ${code}, signal ${signal})${why}; stderr:\n${p.stderrTail.join('\n')}`))
          }
        }
        // the fixture's last message (startFailed) may come after the exit: wait for the channel to close
        if (ready || !child.connected) decide()
        else {
          child.once('disconnect', decide)
          setTimeout(decide, 500).unref()
        }
      })
    })
  }

  /** Send a request over IPC; resolves with its result or rejects with {@link NodeRequestError}. */
  request<T>(nodeId: string, msg: Record<string, unknown> & { op: string }, timeoutMs = this.opts.requestTimeoutMs): Promise<T> {
    const p = this.procs.get(nodeId)
    if (!p || !p.alive) return Promise.reject(new NodeRequestError(nodeId, 'DOWN', 'process is not running'))
    const id = ++this.seq
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

  isAlive(nodeId: string): boolean {
    return this.procs.get(nodeId)?.alive ?? false
  }

  /** OS pid of a running node. */
  pid(nodeId: string): number | undefined {
    const p = this.procs.get(nodeId)
    return p?.alive ? p.child.pid : undefined
  }

  /** SIGKILL a node and wait until the process is gone. */
  async kill(nodeId: string): Promise<void> {
    const p = this.procs.get(nodeId)
    if (!p || !p.alive) return
    p.expectExit = true
    p.child.kill('SIGKILL')
    await p.exited
  }

  /**
   * Stop a node the way `stopRequest` asks it to (an IPC request), SIGKILL it if it is still
   * running after `graceMs`, and wait until it is gone.
   */
  async stop(nodeId: string, stopRequest: Record<string, unknown> & { op: string }, graceMs = 10_000): Promise<void> {
    const p = this.procs.get(nodeId)
    if (!p || !p.alive) return
    p.expectExit = true
    await this.request(nodeId, stopRequest, 20_000).catch(() => {})
    const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs)
    await p.exited
    clearTimeout(t)
  }

  /**
   * Send SIGTERM (as Kubernetes or systemd would), SIGKILL the node if it is still running after
   * `graceMs`, and wait until it is gone. Resolves with how it exited.
   */
  async terminate(nodeId: string, graceMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const p = this.procs.get(nodeId)
    if (!p || !p.alive) throw new Error(`node ${nodeId} is not running`)
    p.expectExit = true
    p.child.kill('SIGTERM')
    const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs)
    await p.exited
    clearTimeout(t)
    return p.exit ?? { code: null, signal: null }
  }

  /** Send SIGSTOP or SIGCONT to a running node. */
  signal(nodeId: string, sig: 'SIGSTOP' | 'SIGCONT'): void {
    const p = this.procs.get(nodeId)
    if (!p || !p.alive) throw new Error(`node ${nodeId} is not running`)
    if (!p.child.kill(sig)) throw new Error(`could not send ${sig} to ${nodeId}`)
  }

  /** The last lines a node wrote to stderr (200 at most). */
  logs(nodeId: string): string[] {
    return [...(this.procs.get(nodeId)?.stderrTail ?? [])]
  }

  /** Exits the harness did not cause (crashes), e.g. `n2 exited (code 1, signal null): ...`. */
  unexpectedExits(): string[] {
    return [...this.crashes]
  }

  /** Kill every process; no more spawns. */
  async killAll(): Promise<void> {
    this.closed = true
    if (process.env.SWORM_CPU_PROF) {
      // profiled nodes: each writes its profile since the last part first (cpu-profile.ts), then dies
      for (const p of this.procs.values()) if (p.alive) p.child.kill('SIGUSR2')
      await new Promise((r) => setTimeout(r, PROFILE_WRITE_MS))
    }
    await Promise.all([...this.procs.keys()].map((id) => this.kill(id)))
  }
}
