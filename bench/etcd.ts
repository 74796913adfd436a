/**
 * A small launcher for a local etcd cluster (one OS process per member, data in a temporary
 * directory, loopback ports), for the registry bench's side-by-side column.
 * @module
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Etcd3, type IOptions } from 'etcd3'
import { freePorts, pollUntil } from '../tools/cluster/raft-cluster.js'
import { findExecutable } from './common.js'

/** Every etcd process started by this module that is still running (killed on process exit). */
const live = new Set<ChildProcess>()
/** Data directories not yet removed. */
const dirs = new Set<string>()

/** Synchronous last-resort cleanup (for `exit` and signal handlers). */
export function killAllEtcdSync(): void {
  for (const p of live) p.kill('SIGKILL')
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}

/** Path of `etcd` on PATH, if any. */
export function findEtcd(): string | undefined {
  return findExecutable('etcd')
}

type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>

/** Runs the call as is: no retries and no circuit breaker, which would distort timings. */
const direct = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
} as unknown as FaultPolicy

/** An etcd3 client for one endpoint, without retry policies. */
export function etcdClientFor(url: string, callTimeoutMs = 5_000): Etcd3 {
  return new Etcd3({
    hosts: [url],
    dialTimeout: 2_000,
    faultHandling: { global: direct, host: () => direct },
    defaultCallOptions: () => ({ deadline: Date.now() + callTimeoutMs }),
  })
}

const clockTicks = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const n = Number(r.stdout?.trim())
  return Number.isFinite(n) && n > 0 ? n : 100
})()

/** user+system CPU time of a process in ms, read from /proc (Linux only). */
export function processCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1000) / clockTicks
  } catch {
    return undefined
  }
}

/** One running member. */
export interface EtcdMember {
  name: string
  clientUrl: string
  pid: number
  client: Etcd3
}

/** A running local etcd cluster. */
export interface EtcdCluster {
  version: string
  members: EtcdMember[]
  /** Poll until every member names the same leader; resolves with that member. */
  leader(timeoutMs?: number): Promise<EtcdMember>
  /** Sum of the members' CPU time, ms (undefined off Linux). */
  cpuMs(): number | undefined
  /** Kill every member and remove the data directory. */
  stop(): Promise<void>
}

/** Start an `n`-member etcd cluster from `bin`. */
export async function startEtcdCluster(bin: string, n = 3): Promise<EtcdCluster> {
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout?.match(/etcd Version:\s*(\S+)/)?.[1] ?? '?'
  const dir = await mkdtemp(join(tmpdir(), 'sworm-etcd-'))
  dirs.add(dir)
  const procs: ChildProcess[] = []
  const clients: Etcd3[] = []
  const tails = new Map<string, string[]>()
  const stop = async (): Promise<void> => {
    for (const c of clients) c.close()
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null || p.signalCode !== null) return resolve()
            p.once('exit', () => resolve())
            p.kill('SIGKILL')
          }),
      ),
    )
    await rm(dir, { recursive: true, force: true })
    dirs.delete(dir)
  }
  try {
    const ports = await freePorts(2 * n)
    const names = Array.from({ length: n }, (_, i) => `e${i + 1}`)
    const peerUrl = (i: number): string => `http://127.0.0.1:${ports[n + i]}`
    const initialCluster = names.map((nm, i) => `${nm}=${peerUrl(i)}`).join(',')
    const token = `sworm-bench-${process.pid}-${Date.now()}`
    const members: EtcdMember[] = names.map((name, i) => {
      const clientUrl = `http://127.0.0.1:${ports[i]}`
      const args = [
        '--name', name,
        '--data-dir', join(dir, name),
        '--listen-client-urls', clientUrl,
        '--advertise-client-urls', clientUrl,
        '--listen-peer-urls', peerUrl(i),
        '--initial-advertise-peer-urls', peerUrl(i),
        '--initial-cluster', initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', token,
        '--logger', 'zap',
        '--log-level', 'error',
      ]
      const p = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] })
      procs.push(p)
      live.add(p)
      p.once('exit', () => live.delete(p))
      const tail: string[] = []
      tails.set(name, tail)
      p.on('error', (err) => tail.push(String(err)))
      p.stderr!.setEncoding('utf8')
      p.stderr!.on('data', (chunk: string) => {
        tail.push(...chunk.split('\n').filter(Boolean))
        if (tail.length > 30) tail.splice(0, tail.length - 30)
      })
      const client = etcdClientFor(clientUrl)
      clients.push(client)
      return { name, clientUrl, pid: p.pid ?? -1, client }
    })
    const leader = (timeoutMs = 30_000): Promise<EtcdMember> =>
      pollUntil(
        async () => {
          const sts = await Promise.all(members.map((m) => m.client.maintenance.status().catch(() => undefined)))
          if (sts.some((s) => s === undefined)) return undefined
          const lid = sts[0]!.leader
          if (!lid || lid === '0' || sts.some((s) => s!.leader !== lid)) return undefined
          const i = sts.findIndex((s) => s!.header.member_id === lid)
          return i >= 0 ? members[i] : undefined
        },
        timeoutMs,
        'an etcd leader',
        50,
      )
    await leader().catch((err: unknown) => {
      const logs = [...tails].map(([nm, t]) => `${nm}: ${t.slice(-5).join('\n')}`).join('\n')
      throw new Error(`${String(err)}\n${logs}`)
    })
    return {
      version,
      members,
      leader,
      cpuMs: () => {
        let sum = 0
        for (const m of members) {
          const c = processCpuMs(m.pid)
          if (c === undefined) return undefined
          sum += c
        }
        return sum
      },
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
