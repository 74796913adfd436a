/**
 * The dashboard's state: the nodes as last polled, the names running on each, what the demo waits
 * for after an action (settling), and the actions themselves (kill, restart, partition, heal,
 * drain, undrain, register). The activity log and the charts are `dashboard-log.ts` and
 * `dashboard-charts.ts`.
 * @module
 */
import { performance } from 'node:perf_hooks'
import type { SwormCluster } from '../tools/cluster/sworm-cluster.js'
import type { DashStatus, RegisterSupervisedManyResult, SwormProcessEvent } from '../tools/cluster/sworm-protocol.js'
import { Charts } from './dashboard-charts.js'
import { sse } from './dashboard-http.js'
import { ActivityLog, epoch } from './dashboard-log.js'
import { PREFIX, WORKERS_MODULE, nameOf } from './demo-cluster.js'
import { formatMs, num, sleep } from './terminal.js'

/** Groups whose members the page shows. */
export const GROUPS = ['vip', 'billing', 'chat']
const POLL_MS = 250
/** Every PROBE_MS the leader commits one entry (a join to this group), so the latency chart has data when idle. */
const PROBE_GROUP = '_latency-probe'
const PROBE_MS = 500
const fmt = (ms: number): string => formatMs(ms, 1)

/** Something the demo waits for after an action (settling), with the message to log when done. */
interface Pending {
  label: string
  t0: number
  deadline: number
  check: () => string | undefined
}

interface NodeView {
  id: string
  alive: boolean
  /** On the minority side of the current partition. */
  partitioned: boolean
  /** The last status answered (undefined before the first, or after a kill). */
  st: DashStatus | undefined
  /** The last status request failed. */
  stale: boolean
}

/** What the page can ask for. */
export interface Action {
  op: 'kill' | 'restart' | 'partition' | 'heal' | 'drain' | 'undrain' | 'register' | 'rebalance'
  node?: string
  nodes?: string[]
  count?: number
}

/** What the dashboard knows of the demo cluster, and the actions the page can start on it. */
export class DemoState {
  /** Supervised names expected to run. */
  total = 0
  /** Index of the next `counter:` name to register. */
  nextIndex = 0
  /** The activity log (events and actions), as the page shows it. */
  readonly activity = new ActivityLog()
  /** The per-second charts. */
  readonly charts = new Charts()
  private readonly nodes = new Map<string, NodeView>()
  private readonly names = new Map<string, { version: number; names: string[] }>()
  private readonly pending: Pending[] = []
  /** Minority side of the current partition (empty: none). */
  private minority = new Set<string>()
  /** Nodes replaying the log (restarted, healed): their registry events are old news. */
  private readonly catchingUp = new Set<string>()
  private readonly knownNames = new Set<string>()
  private readonly busy = new Set<string>()
  /** Polls in a row that saw some name running on two nodes. */
  private dupStreak = 0
  private dupNames: string[] = []
  private namesDirty = true

  constructor(
    private readonly cl: SwormCluster,
    private readonly ids: string[],
    initialWorkers: number,
  ) {
    for (const id of ids) this.nodes.set(id, { id, alive: true, partitioned: false, st: undefined, stale: false })
    this.total = initialWorkers
  }

  onEvents(id: string, evs: SwormProcessEvent[]): void {
    const replaying = this.catchingUp.has(id)
    for (const e of evs) {
      const d = e.data
      const ref = d.ref as { node: string; inc: string; id: string | number } | undefined
      const name = typeof d.name === 'string' ? d.name : undefined
      switch (e.event) {
        case 'registered': {
          if (replaying || !ref || !name) break
          if (!this.activity.once(`reg:${name}:${ref.node}:${ref.inc}:${ref.id}`, e.at)) break
          this.charts.second(e.at).registered++
          if (!this.knownNames.has(name)) {
            this.knownNames.add(name)
            this.activity.aggregate('registered', e.at, 'info', name, (k, ns) => `registered ${num(k)} name${k > 1 ? 's' : ''}: ${ns.join(', ')}${k > ns.length ? ', …' : ''}`)
          }
          break
        }
        case 'unregistered':
          if (replaying || !name || !this.activity.once(`unreg:${name}:${ref?.id ?? ''}`, e.at)) break
          this.activity.aggregate('unregistered', e.at, 'info', name, (k) => `unregistered ${num(k)} name${k > 1 ? 's' : ''}`)
          break
        case 'joined':
        case 'left': {
          const g = String(d.group)
          if (g === PROBE_GROUP) break
          if (replaying || !ref || !this.activity.once(`${e.event}:${g}:${ref.node}:${ref.inc}:${ref.id}`, e.at)) break
          this.activity.aggregate(`${e.event}:${g}`, e.at, 'info', undefined, (k) => `${num(k)} worker${k > 1 ? 's' : ''} ${e.event} group “${g}”`)
          break
        }
        case 'leaderChanged': {
          const term = Number(d.term)
          if (!this.activity.once(`leader:${term}`, e.at, Infinity)) break
          this.activity.log('info', `${String(d.leader)} elected leader (term ${term})`, e.at)
          break
        }
        case 'nodeDown':
          if (replaying || !this.activity.once(`down:${String(d.node)}`, e.at, 5000)) break
          this.activity.log('warn', `${String(d.node)} declared down by the leader: its workers move`, e.at)
          break
        case 'nodeUp':
          if ((replaying && d.node !== id) || !this.activity.once(`up:${String(d.node)}`, e.at, 5000)) break
          this.activity.log('info', `${String(d.node)} up (serving the sworm)`, e.at)
          break
        case 'workerMoved': {
          const from = String(d.from)
          this.activity.aggregate(`moved:${from}>${id}`, e.at, 'info', name, (k) => `${num(k)} worker${k > 1 ? 's' : ''} moved ${from} → ${id}`)
          break
        }
        case 'workerStopped': {
          const reason = String(d.reason)
          const text: Record<string, (k: number) => string> = {
            handoff: (k) => `${id} handed off ${num(k)} worker${k > 1 ? 's' : ''} (with their state)`,
            crash: (k) => `${num(k)} worker${k > 1 ? 's' : ''} crashed on ${id}: restarting`,
            moved: (k) => `${id} stopped ${num(k)} worker${k > 1 ? 's' : ''} that moved away`,
            shutdown: (k) => `${id} stopped ${num(k)} worker${k > 1 ? 's' : ''} (shutdown)`,
          }
          const f = text[reason]
          if (f) this.activity.aggregate(`stopped:${id}:${reason}`, e.at, 'info', name, f)
          break
        }
        case 'leaseLost':
          this.activity.log('warn', `${id} lost its lease: it stops its ${num(Number(d.workers))} workers (fencing)`, e.at)
          break
        case 'leaseRenewed':
          this.activity.log('info', `${id} holds its lease again`, e.at)
          break
        default:
          break
      }
    }
  }

  // -------------------------------------------------------------- polling

  startPolling(broadcast: (msg: string) => void): void {
    const loop = async (): Promise<void> => {
      for (;;) {
        const t0 = performance.now()
        try {
          await this.poll()
        } catch (err) {
          this.activity.log('bad', `poll failed: ${String(err)}`)
        }
        const msgs = this.activity.drain()
        if (this.namesDirty) {
          msgs.push(sse('names', this.namesMap()))
          this.namesDirty = false
        }
        msgs.push(sse('state', this.snapshot()))
        broadcast(msgs.join(''))
        await sleep(Math.max(10, POLL_MS - (performance.now() - t0)))
      }
    }
    void loop()
    const probe = async (): Promise<void> => {
      for (;;) {
        await sleep(PROBE_MS)
        const l = this.leader()
        if (l && this.total > 0) await this.cl.request(l, { op: 'join', group: PROBE_GROUP, name: nameOf(0) }, 2000).catch(() => undefined)
      }
    }
    void probe()
  }

  private async poll(): Promise<void> {
    await Promise.all(
      this.ids.map(async (id) => {
        const v = this.nodes.get(id)!
        v.alive = this.cl.isAlive(id)
        if (!v.alive) {
          if (v.st) this.namesDirty = true
          v.st = undefined
          this.names.delete(id)
          return
        }
        const since = this.names.get(id)?.version ?? -1
        try {
          const st = await this.cl.request<DashStatus>(id, { op: 'dashStatus', groups: GROUPS, namesSince: since }, 1500)
          v.st = st
          v.stale = false
          if (st.runningNames) {
            this.names.set(id, { version: st.namesVersion, names: st.runningNames })
            this.namesDirty = true
          }
          this.charts.latency(id, st)
        } catch {
          v.stale = true
        }
      }),
    )
    // the events that came in meanwhile go to the log before any "settled" line
    this.activity.flush()
    const leader = this.leader()
    const lst = leader ? this.nodes.get(leader)?.st : undefined
    for (const id of [...this.catchingUp]) {
      const st = this.nodes.get(id)?.st
      if (!this.cl.isAlive(id) || (st && lst && st.applied >= lst.commit && st.leader === leader)) this.catchingUp.delete(id)
    }
    // a name running on two nodes at once, seen in 3 polls in a row (one poll can catch a handoff mid-way)
    const where = new Map<string, number>()
    for (const [, v] of this.names) for (const n of v.names) where.set(n, (where.get(n) ?? 0) + 1)
    const dups = [...where].filter(([, k]) => k > 1).map(([n]) => n)
    this.dupStreak = dups.length ? this.dupStreak + 1 : 0
    this.dupNames = dups.slice(0, 5)
    if (this.dupStreak === 3) this.activity.log('bad', `names running on two nodes: ${dups.slice(0, 5).join(', ')}`, epoch(), true)
    // settling
    const now = performance.now()
    for (const p of [...this.pending]) {
      const msg = p.check()
      if (msg !== undefined || now > p.deadline) {
        this.pending.splice(this.pending.indexOf(p), 1)
        if (msg !== undefined) this.activity.log('ok', msg, epoch(), true)
        else this.activity.log('warn', `${p.label}: not done after ${fmt(now - p.t0)}`, epoch(), true)
      }
    }
    this.activity.forgetOld()
  }

  private bucketBounds(): number[] {
    for (const v of this.nodes.values()) if (v.st) return v.st.commitLatency.buckets.map(([le]) => le)
    return []
  }

  /** How many nodes run on the majority side, of how many: without a majority the sworm waits, by design. */
  private reachable(): { up: number; of: number; ok: boolean } {
    const up = this.ids.filter((id) => this.cl.isAlive(id) && !this.minority.has(id)).length
    return { up, of: this.ids.length, ok: up > this.ids.length / 2 }
  }

  /** The leader of the highest term that a live node names as itself. */
  private leader(): string | undefined {
    let best: DashStatus | undefined
    for (const v of this.nodes.values()) {
      if (!v.alive || !v.st || v.stale || v.st.role !== 'leader') continue
      if (!best || v.st.term > best.term) best = v.st
    }
    return best?.node
  }

  /** Nodes that can run workers: alive, on the majority side, holding their lease, not draining. */
  private healthy(): NodeView[] {
    const lst = this.leader() ? this.nodes.get(this.leader()!)?.st : undefined
    const draining = new Set((lst?.nodes ?? []).filter((n) => n.draining).map((n) => n.node))
    return [...this.nodes.values()].filter((v) => v.alive && !v.partitioned && v.st && v.st.lease && !draining.has(v.id))
  }

  private runningHealthy(): number {
    return this.healthy().reduce((a, v) => a + (v.st?.supervised ?? 0), 0)
  }

  /** Wait until every worker runs on healthy nodes, then log how long it took. */
  private settle(label: string, extra?: () => boolean): void {
    const t0 = performance.now()
    this.pending.push({
      label,
      t0,
      deadline: t0 + 90_000,
      check: () => {
        if (this.runningHealthy() !== this.total || this.dupStreak > 0) return undefined
        if (extra && !extra()) return undefined
        return `${label}: all ${num(this.total)} workers running again after ${fmt(performance.now() - t0)}`
      },
    })
  }

  // -------------------------------------------------------------- actions

  /** Start an action; returns an error message when it cannot be done. */
  act(a: Action): string | undefined {
    const node = a.node
    if (node !== undefined && !this.ids.includes(node)) return `unknown node ${node}`
    const key = `${a.op}:${node ?? ''}`
    if (this.busy.has(key)) return `${a.op} ${node ?? ''} is already under way`
    const run = (p: () => Promise<void>): undefined => {
      this.busy.add(key)
      p()
        .catch((err: unknown) => this.activity.log('bad', `${a.op}${node ? ` ${node}` : ''} failed: ${err instanceof Error ? err.message : String(err)}`, epoch(), true))
        .finally(() => this.busy.delete(key))
      return undefined
    }
    switch (a.op) {
      case 'kill': {
        if (!node || !this.cl.isAlive(node)) return `${node} is not running`
        const v = this.nodes.get(node)!
        const had = v.st?.supervised ?? 0
        const wasLeader = v.st?.role === 'leader'
        return run(async () => {
          this.activity.log('action', `you killed ${node}${wasLeader ? ' (the leader)' : ''} with SIGKILL: ${num(had)} workers ran there`)
          await this.cl.kill(node)
          v.alive = false
          this.settle(`${node} killed`)
        })
      }
      case 'restart': {
        if (!node || this.cl.isAlive(node)) return `${node} is running`
        return run(async () => {
          this.activity.log('action', `you restarted ${node} from its data directory`)
          const t0 = performance.now()
          this.catchingUp.add(node)
          await this.cl.restart(node)
          await this.cl.request(node, { op: 'subscribe' })
          if (this.minority.size) await this.applyPartition()
          const procMs = performance.now() - t0
          this.pending.push({
            label: `${node} restart`,
            t0,
            deadline: t0 + 60_000,
            check: () => {
              const st = this.nodes.get(node)?.st
              const l = this.leader()
              const lst = l ? this.nodes.get(l)?.st : undefined
              if (!st || !lst || !st.leader || (st.leader !== l && !this.nodes.get(node)!.partitioned) || st.applied < lst.commit - 2) return undefined
              if (!this.nodes.get(node)!.partitioned && !st.lease) return undefined
              return `${node} rejoined after ${fmt(performance.now() - t0)} (process ready in ${fmt(procMs)}), applied ${num(st.applied)}`
            },
          })
        })
      }
      case 'partition': {
        const side = [...new Set(a.nodes ?? [])].filter((n) => this.ids.includes(n))
        if (side.length === 0 || side.length >= this.ids.length) return 'choose the nodes of one side (not all of them)'
        return run(async () => {
          this.minority = new Set(side)
          const other = this.ids.filter((n) => !this.minority.has(n))
          this.activity.log('action', `you partitioned the network: {${side.join(', ')}} | {${other.join(', ')}}`)
          await this.applyPartition()
          this.settle('partition')
        })
      }
      case 'heal': {
        if (this.minority.size === 0) return 'no partition to heal'
        return run(async () => {
          const cut = [...this.minority]
          this.minority = new Set()
          for (const v of this.nodes.values()) v.partitioned = false
          for (const n of cut) this.catchingUp.add(n)
          this.activity.log('action', `you healed the partition ({${cut.join(', ')}} reconnect)`)
          const live = this.cl.alive()
          await Promise.all(live.map((n) => this.cl.request(n, { op: 'blockPeers', peers: this.ids, blocked: false }, 5000)))
          const t0 = performance.now()
          this.pending.push({
            label: 'heal',
            t0,
            deadline: t0 + 60_000,
            check: () => {
              const l = this.leader()
              const lst = l ? this.nodes.get(l)?.st : undefined
              if (!lst) return undefined
              for (const n of cut) {
                if (!this.cl.isAlive(n)) continue
                const st = this.nodes.get(n)?.st
                if (!st || st.leader !== l || !st.lease || st.applied < lst.commit - 2) return undefined
              }
              return `{${cut.join(', ')}} caught up with leader ${l} after ${fmt(performance.now() - t0)}`
            },
          })
          this.settle('heal')
        })
      }
      case 'drain': {
        if (!node || !this.cl.isAlive(node)) return `${node} is not running`
        return run(async () => {
          const had = this.nodes.get(node)?.st?.supervised ?? 0
          this.activity.log('action', `you drained ${node}: its ${num(had)} workers move away with their state`)
          this.settle(`${node} drain`)
          const r = await this.cl.request<{ ms: number }>(node, { op: 'drain', timeoutMs: 60_000 }, 70_000)
          this.activity.log('info', `${node} drain() resolved after ${fmt(r.ms)}`)
        })
      }
      case 'undrain': {
        if (!node || !this.cl.isAlive(node)) return `${node} is not running`
        return run(async () => {
          await this.cl.request(node, { op: 'undrain' }, 15_000)
          this.activity.log('action', `you undrained ${node}: it takes new workers again`)
        })
      }
      case 'register': {
        const count = Math.max(1, Math.min(10_000, Math.floor(a.count ?? 100)))
        const target = this.leader()
        if (!target) return 'no leader right now'
        const start = this.nextIndex
        this.nextIndex += count
        return run(async () => {
          this.activity.log('action', `you registered ${num(count)} more workers (${nameOf(start)} … ${nameOf(start + count - 1)})`)
          this.total += count
          this.settle(`register ${num(count)}`)
          const r = await this.cl.request<RegisterSupervisedManyResult>(
            target,
            { op: 'registerSupervisedMany', prefix: PREFIX, start, count, concurrency: 16, module: WORKERS_MODULE, fn: 'counter' },
            120_000,
          )
          if (r.errors) {
            this.total -= r.errors
            this.activity.log('warn', `${r.errors} of ${count} registrations failed: ${r.errorSamples.slice(0, 2).join('; ')}`)
          }
          const spread = Object.entries(r.perNode)
            .sort()
            .map(([k, v]) => `${k} ${v}`)
            .join(' · ')
          this.activity.log('info', `${num(r.ok)} registrations acknowledged in ${fmt(r.ms)} (p50 ${fmt(r.p50)}, p99 ${fmt(r.p99)}); placed ${spread}`)
        })
      }
      case 'rebalance': {
        const target = this.leader()
        if (!target) return 'no leader right now'
        return run(async () => {
          this.activity.log('action', 'you asked for a rebalance: workers move, with their state, from the most to the least loaded nodes')
          this.settle('rebalance')
          await this.cl.request(target, { op: 'rebalance' }, 30_000)
        })
      }
      default:
        return `unknown action ${String((a as { op?: unknown }).op)}`
    }
  }

  /** Block traffic between the two sides of {@link minority} (on every running node). */
  private async applyPartition(): Promise<void> {
    const side = this.minority
    for (const v of this.nodes.values()) v.partitioned = side.has(v.id) && side.size <= this.ids.length / 2
    // the side with fewer nodes is the minority (the page asks for it; if more were chosen, the other side is)
    if (side.size > this.ids.length / 2) for (const v of this.nodes.values()) v.partitioned = !side.has(v.id)
    await Promise.all(
      this.cl.alive().map((n) =>
        this.cl.request(n, { op: 'blockPeers', peers: this.ids.filter((p) => side.has(p) !== side.has(n)), blocked: true }, 5000),
      ),
    )
  }

  // -------------------------------------------------------------- what the page gets

  namesMap(): Record<string, string[]> {
    const out: Record<string, string[]> = {}
    for (const id of this.ids) out[id] = this.names.get(id)?.names ?? []
    return out
  }

  hello(): unknown {
    return { ids: this.ids, groups: GROUPS, log: this.activity.recent(300), names: this.namesMap(), state: this.snapshot() }
  }

  snapshot(): unknown {
    const leader = this.leader()
    const lst = leader ? this.nodes.get(leader)?.st : undefined
    const records = new Map((lst?.nodes ?? []).map((n) => [n.node, n]))
    const bounds = this.bucketBounds()
    const series = this.charts.series(bounds)
    const pending = this.pending.map((p) => ({ label: p.label, ms: performance.now() - p.t0 }))
    let groups: Record<string, Array<{ name: string; node: string }>> = {}
    const gsrc = lst ?? [...this.nodes.values()].find((v) => v.st && !v.partitioned)?.st
    if (gsrc) groups = gsrc.groups
    return {
      now: epoch(),
      total: this.total,
      running: this.runningHealthy(),
      leader: leader ?? null,
      partition: this.minority.size ? [...this.minority] : null,
      duplicates: this.dupStreak >= 3 ? this.dupNames : [],
      pending,
      quorum: this.reachable(),
      banner: this.activity.banner ?? null,
      busy: [...this.busy],
      series,
      groups,
      nodes: this.ids.map((id) => {
        const v = this.nodes.get(id)!
        const st = v.st
        return {
          id,
          alive: v.alive,
          stale: v.stale,
          partitioned: v.partitioned,
          catchingUp: this.catchingUp.has(id),
          draining: records.get(id)?.draining ?? false,
          up: records.get(id)?.up ?? null,
          role: st?.role ?? null,
          // a learner replicates and hosts workers but does not vote (the voters option)
          voter: st ? Object.prototype.hasOwnProperty.call(st.peers.voters, id) : null,
          term: st?.term ?? null,
          leader: st?.leader ?? null,
          commit: st?.commit ?? null,
          applied: st?.applied ?? null,
          supervised: st?.supervised ?? 0,
          names: st?.names ?? null,
          lease: st?.lease ?? null,
          pid: st?.pid ?? null,
          incarnation: st?.incarnation ?? null,
          uptime: st?.uptime ?? null,
        }
      }),
    }
  }
}
