/**
 * A local Redis for the registry bench's side-by-side column (issue #15): Debian's
 * `redis-server` on a free loopback port, persistence off (`--save '' --appendonly no`), and a
 * minimal pipelining client for `SET key value NX` (what a registry on Redis does to claim a
 * name). The client keeps every command of a load on one connection, as Redis clients do, so
 * Redis is measured at its best.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { freePorts, pollUntil } from '../tools/cluster/raft-cluster.js'
import { findExecutable } from './common.js'
import { processCpuMs } from './etcd.js'

/** Every redis-server started by this module that is still running (killed on process exit). */
const live = new Set<ChildProcess>()

/** Synchronous last-resort cleanup (for `exit` and signal handlers). */
export function killAllRedisSync(): void {
  for (const p of live) p.kill('SIGKILL')
}

/** Path of `redis-server` on PATH (or in /usr/bin, /usr/sbin), if any. */
export function findRedis(): string | undefined {
  return findExecutable('redis-server', ['/usr/bin', '/usr/sbin'])
}

/** A connection that sends commands and resolves each with its reply line (simple replies only). */
class RespConnection {
  private readonly waiting: Array<(line: string) => void> = []
  private buf = ''

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8')
    socket.setNoDelay(true)
    socket.on('data', (chunk: string) => {
      this.buf += chunk
      let at: number
      while ((at = this.buf.indexOf('\r\n')) >= 0) {
        const line = this.buf.slice(0, at)
        this.buf = this.buf.slice(at + 2)
        this.waiting.shift()?.(line)
      }
    })
  }

  static open(port: number): Promise<RespConnection> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(new RespConnection(s)))
      s.once('error', reject)
    })
  }

  /** Send one command; resolves with its one-line reply (`+OK`, `$-1`, `-ERR ...`, `:1`). */
  command(...args: string[]): Promise<string> {
    let out = `*${args.length}\r\n`
    for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
    return new Promise((resolve) => {
      this.waiting.push(resolve)
      this.socket.write(out)
    })
  }

  close(): void {
    this.socket.destroy()
  }
}

/** A running local Redis. */
export interface LocalRedis {
  version: string
  pid: number
  /** CPU time of the server process, ms (undefined off Linux). */
  cpuMs(): number | undefined
  /**
   * `SET ${prefix}${i} worker-${i} NX` for `count` names, `concurrency` in flight on one
   * connection; stops issuing after `maxMs`.
   */
  setNx(prefix: string, count: number, concurrency: number, maxMs: number): Promise<{ ok: number; bad: number; ms: number; lat: number[] }>
  stop(): Promise<void>
}

/** Start `redis-server` from `bin` on a free loopback port, without persistence. */
export async function startRedis(bin: string): Promise<LocalRedis> {
  const [port] = await freePorts(1)
  const p = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {
    stdio: ['ignore', 'ignore', 'ignore'],
  })
  live.add(p)
  p.once('exit', () => live.delete(p))
  const stop = async (): Promise<void> => {
    if (p.exitCode !== null || p.signalCode !== null) return
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve())
      p.kill('SIGKILL')
    })
  }
  try {
    const conn = await pollUntil(() => RespConnection.open(port!).catch(() => undefined), 10_000, 'redis-server to listen', 50)
    const pong = await conn.command('PING')
    conn.close()
    if (pong !== '+PONG') throw new Error(`redis-server answered PING with ${JSON.stringify(pong)}`)
    const version = await new Promise<string>((resolve) => {
      const v = spawn(bin, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] })
      let out = ''
      v.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
      v.once('close', () => resolve(out.match(/v=(\S+)/)?.[1] ?? '?'))
    })
    return {
      version,
      pid: p.pid ?? -1,
      cpuMs: () => (p.pid ? processCpuMs(p.pid) : undefined),
      async setNx(prefix, count, concurrency, maxMs) {
        const c = await RespConnection.open(port!)
        const lat: number[] = []
        let next = 0
        let ok = 0
        let bad = 0
        const t0 = performance.now()
        const stopAt = t0 + maxMs
        const worker = async (): Promise<void> => {
          while (next < count && performance.now() < stopAt) {
            const i = next++
            const s = performance.now()
            const reply = await c.command('SET', `${prefix}${i}`, `worker-${i}`, 'NX')
            lat.push(performance.now() - s)
            if (reply === '+OK') ok++
            else bad++
          }
        }
        await Promise.all(Array.from({ length: concurrency }, worker))
        const ms = performance.now() - t0
        c.close()
        return { ok, bad, ms, lat }
      },
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
