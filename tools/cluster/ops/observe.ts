/**
 * Observation operations of the Sworm node process: status, resources, queue sizes, the event
 * stream (`subscribe`) and the dashboard's status (`dashStatus`).
 * @module
 */
import type { SwormEvents, WorkerRef } from '../../../src/index.js'
import { takeLoopDelay } from '../loop-delay.js'
import { nowEpoch } from '../stats.js'
import type { DashStatus, QueueSizes, SwormProcessEvent, SwormProcessFullStatus, SwormProcessStatus, SwormRequest } from '../sworm-protocol.js'
import type { SwormNodeContext, SwormOpTable } from './context.js'
import { internals } from '../../../src/internal.js'

type Req<K extends SwormRequest['op']> = Extract<SwormRequest, { op: K }>

/** The Sworm events `subscribe` can push. */
const EVENT_NAMES: Array<keyof SwormEvents> = [
  'registered', 'unregistered', 'joined', 'left', 'nodeUp', 'nodeDown', 'leaderChanged',
  'workerStarted', 'workerStopped', 'workerMoved', 'leaseLost', 'leaseRenewed',
]

/** The observation operations of a node (they start tracking the supervised names running here). */
export function observeOps(ctx: SwormNodeContext) {
  const { sworm } = ctx
  const running = trackRunningNames(ctx)
  let subscribed = false
  return {
    status: () => ({ ...sworm.status(), pid: process.pid }) satisfies SwormProcessStatus,
    fullStatus: () => ({ ...sworm.status(), pid: process.pid, incarnation: sworm.incarnation }) satisfies SwormProcessFullStatus,
    cpu: () => {
      const c = process.cpuUsage()
      return { userMs: c.user / 1000, systemMs: c.system / 1000 }
    },
    memory: async (req) => {
      if (req.compact) await internals(sworm).raft.compactNow()
      const gc = (globalThis as { gc?: () => void }).gc
      if (gc) {
        gc()
        gc()
      }
      return { ...process.memoryUsage(), gcExposed: gc !== undefined }
    },
    queues: () => queueSizes(ctx),
    loopDelay: () => takeLoopDelay(),
    subscribe: (req) => {
      if (!subscribed) subscribe(ctx, req)
      subscribed = true
      return null
    },
    dashStatus: (req) => dashStatus(ctx, running, req),
  } satisfies Partial<SwormOpTable>
}

/** Supervised names running on this node (from the worker events), and a version of that set. */
interface RunningNames {
  readonly names: Map<string, string>
  version: number
}

function trackRunningNames({ sworm }: SwormNodeContext): RunningNames {
  const running: RunningNames = { names: new Map(), version: 0 }
  const refKey = (r: WorkerRef): string => `${r.inc}/${r.id}`
  sworm.on('workerStarted', ({ name, ref }) => {
    running.names.set(name, refKey(ref))
    running.version++
  })
  sworm.on('workerStopped', ({ name, ref }) => {
    if (running.names.get(name) === refKey(ref)) {
      running.names.delete(name)
      running.version++
    }
  })
  return running
}

function queueSizes({ sworm }: SwormNodeContext): QueueSizes {
  const inner = internals(sworm)
  const hub = inner.hub!.stats()
  const raft = inner.raft.queueSizes()
  const { requestsOut, mailboxQueued } = inner.queues()
  return {
    raftPending: raft.proposals,
    raftForwardsOut: raft.forwarded,
    raftReadsOut: raft.reads,
    hubQueued: Object.values(hub.peers).reduce((a, p) => a + p.queued, 0),
    hubDropped: Object.values(hub.peers).reduce((a, p) => a + p.dropped, 0),
    callsOut: requestsOut,
    mailboxQueued,
    names: sworm.status().names,
    workers: sworm.status().workers,
  }
}

/** `subscribe`: push events to the parent in batches. */
function subscribe(ctx: SwormNodeContext, req: Req<'subscribe'>): void {
  const flushMs = Math.max(1, req.flushMs ?? 100)
  const wanted = new Set<string>(req.events ?? [...EVENT_NAMES, 'snapshotTaken', 'snapshotInstalled'])
  const skip = req.skipNamePrefixes ?? []
  let outbox: SwormProcessEvent[] = []
  let flushTimer: NodeJS.Timeout | undefined
  const push = (event: string, data: unknown): void => {
    const name = (data as { name?: unknown } | undefined)?.name
    if (typeof name === 'string' && skip.some((p) => name.startsWith(p))) return
    outbox.push({ event, at: nowEpoch(), data: JSON.parse(JSON.stringify(data ?? {})) as Record<string, unknown> })
    flushTimer ??= setTimeout(() => {
      flushTimer = undefined
      const batch = outbox
      outbox = []
      ctx.send({ events: batch })
    }, flushMs)
  }
  for (const ev of EVENT_NAMES) if (wanted.has(ev)) ctx.sworm.on(ev, (data: unknown) => push(ev, data))
  ctx.setSnapshotListener((ev, f) => {
    if (wanted.has(ev)) push(ev, { index: f?.index, ...(f?.bytes !== undefined ? { bytes: f.bytes } : {}) })
  })
}

/** The commit latency histogram, from this sworm's Prometheus text. */
async function commitLatency({ sworm }: SwormNodeContext): Promise<DashStatus['commitLatency']> {
  const text = await sworm.metrics()
  let sum = 0
  let count = 0
  const buckets: Array<[number, number]> = []
  for (const line of text.split('\n')) {
    if (!line.startsWith('sworm_raft_commit_latency_seconds')) continue
    const value = Number(line.slice(line.lastIndexOf(' ') + 1))
    if (line.startsWith('sworm_raft_commit_latency_seconds_sum')) sum = value
    else if (line.startsWith('sworm_raft_commit_latency_seconds_count')) count = value
    else {
      const le = /le="([^"]+)"/.exec(line)?.[1]
      if (le !== undefined && le !== '+Inf') buckets.push([Number(le), value])
    }
  }
  return { sum, count, buckets }
}

async function dashStatus(ctx: SwormNodeContext, running: RunningNames, req: Req<'dashStatus'>): Promise<DashStatus> {
  const { sworm } = ctx
  const latency = await commitLatency(ctx)
  const groups: Record<string, Array<{ name: string; node: string }>> = {}
  if (req.groups?.length && !ctx.isStopping()) {
    const nameOf = new Map<string, string>()
    for (const [n, r] of sworm.registered()) nameOf.set(`${r.node}/${r.inc}/${r.id}`, n)
    for (const g of req.groups) {
      groups[g] = sworm.members(g).map((r) => ({ name: nameOf.get(`${r.node}/${r.inc}/${r.id}`) ?? String(r.id), node: r.node }))
    }
  }
  const out: DashStatus = { ...sworm.statusReport(), pid: process.pid, commitLatency: latency, namesVersion: running.version, groups }
  if (req.namesSince !== running.version) out.runningNames = [...running.names.keys()].sort()
  return out
}
