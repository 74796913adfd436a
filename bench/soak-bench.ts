/**
 * Soak: 100 concurrent clients for a few minutes on 3 real node processes (LevelDB, WebSockets),
 * `npm run bench:soak [-- --minutes M --window S --clients C]`. Each client owns name slots and
 * mixes registrations, worker exits (the name goes with the worker), group joins, consistent and
 * local whereis, and calls to names on any node (misses included). After every window the table
 * gets a row: throughput, latency percentiles per kind of operation, heap after a full GC and RSS
 * per node, and the queues (Raft proposals waiting, frames queued to peers, calls waiting for a
 * reply, worker mailboxes). The last lines compare the last window to the second (after warm-up):
 * memory and queues must not grow without bound.
 */
import { rmSync } from 'node:fs'
import { benchLogger, installBenchGuards, runMain } from './common.js'
import { intOption, parseCli } from '../tools/cli-args.js'
import type { QueueSizes, SoakResult } from '../tools/cluster/sworm-protocol.js'
import { startSwormCluster } from '../tools/cluster/sworm-cluster.js'

const { MINUTES, WINDOW_S, CLIENTS } = parseCli(
  'soak-bench.js [--minutes M] [--window S] [--clients C]',
  { minutes: { type: 'string' }, window: { type: 'string' }, clients: { type: 'string' } },
  (v) => ({
    MINUTES: intOption(v, 'minutes', 3, { min: 1 }),
    WINDOW_S: intOption(v, 'window', 15, { min: 1 }),
    CLIENTS: intOption(v, 'clients', 100, { min: 1 }),
  }),
)
const SLOTS = 20

const dirs = new Set<string>()
installBenchGuards(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
}, (MINUTES * 60 + 120) * 1000)
const log = benchLogger('soak')

interface Mem {
  heapUsed: number
  rss: number
}

const mb = (b: number): string => (b / 2 ** 20).toFixed(1)
const ms = (x: number | undefined): string => (x === undefined ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(1))

async function main(): Promise<void> {
  const c = await startSwormCluster({ n: 3, name: 'soak', requestTimeoutMs: 10_000, ipcTimeoutMs: (WINDOW_S + 60) * 1000 })
  dirs.add(c.dir)
  try {
    await c.waitForLeader(15_000)
    const ids = c.ids
    const per = ids.map((_, i) => Math.floor(CLIENTS / ids.length) + (i < CLIENTS % ids.length ? 1 : 0))
    const windows = Math.max(2, Math.round((MINUTES * 60) / WINDOW_S))
    log(`${CLIENTS} clients (${per.join('/')}) on ${ids.length} nodes, ${windows} windows of ${WINDOW_S} s`)
    const rows: string[] = []
    const mems: Mem[][] = []
    const queues: QueueSizes[][] = []
    const header =
      '| window | ops/s (local reads count 1 each) | writes/s | register p50/p99 ms | exit p50/p99 | consistent whereis p50/p99 | call p50/p99 | 100 local whereis p99 | errors | heap after GC MB (n1/n2/n3) | RSS MB | queues: raft pending / frames to peers / calls out / mailboxes (max over nodes) | names |'
    const sep = '|' + header.split('|').slice(1, -1).map(() => '---').join('|') + '|'
    for (let w = 0; w < windows; w++) {
      const results = await Promise.all(
        ids.map((id, i) => c.request<SoakResult>(id, { op: 'soak', clients: per[i]!, ms: WINDOW_S * 1000, slots: SLOTS, peers: ids.filter((x) => x !== id) })),
      )
      const mem = await Promise.all(ids.map((id) => c.request<Mem>(id, { op: 'memory' })))
      const q = await Promise.all(ids.map((id) => c.request<QueueSizes>(id, { op: 'queues' })))
      mems.push(mem)
      queues.push(q)
      const kinds = new Map<string, { n: number; p50: number[]; p99: number }>()
      const errors: Record<string, number> = {}
      let total = 0
      for (const r of results) {
        for (const [k, v] of Object.entries(r.kinds)) {
          const e = kinds.get(k) ?? { n: 0, p50: [], p99: 0 }
          e.n += v.n
          e.p50.push(v.p50)
          e.p99 = Math.max(e.p99, v.p99)
          kinds.set(k, e)
          total += k.startsWith('whereisLocal') ? v.n * 100 : v.n
        }
        for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v
      }
      const pp = (k: string): string => {
        const e = kinds.get(k)
        if (!e) return '-'
        const med = [...e.p50].sort((a, b) => a - b)[Math.floor(e.p50.length / 2)]
        return `${ms(med)} / ${ms(e.p99)}`
      }
      const errText = Object.entries(errors)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')
      const maxQ = (f: (x: QueueSizes) => number): number => Math.max(...q.map(f))
      const writes = ['register', 'exit', 'join'].reduce((a, k) => a + (kinds.get(k)?.n ?? 0), 0)
      const row = `| ${w + 1} | ${Math.round(total / WINDOW_S).toLocaleString('en-US')} | ${Math.round(writes / WINDOW_S).toLocaleString('en-US')} | ${pp('register')} | ${pp('exit')} | ${pp('whereisConsistent')} | ${pp('call')} | ${ms(kinds.get('whereisLocal x100')?.p99)} | ${errText || '0'} | ${mem.map((m) => mb(m.heapUsed)).join(' / ')} | ${mem.map((m) => mb(m.rss)).join(' / ')} | ${maxQ((x) => x.raftPending)} / ${maxQ((x) => x.hubQueued)} / ${maxQ((x) => x.callsOut)} / ${maxQ((x) => x.mailboxQueued)} | ${q[0]!.names} |`
      rows.push(row)
      log(`window ${w + 1}/${windows}: ${row}`)
    }
    console.log(`\nSoak: ${CLIENTS} clients on ${ids.length} node processes, ${windows} windows of ${WINDOW_S} s (${((windows * WINDOW_S) / 60).toFixed(1)} min)\n`)
    console.log(header)
    console.log(sep)
    for (const r of rows) console.log(r)
    const first = mems[1]!
    const last = mems[mems.length - 1]!
    console.log('')
    console.log(
      `heap after GC, window 2 -> ${mems.length}: ${ids.map((id, i) => `${id} ${mb(first[i]!.heapUsed)} -> ${mb(last[i]!.heapUsed)} MB`).join(', ')}; RSS ${ids.map((id, i) => `${id} ${mb(first[i]!.rss)} -> ${mb(last[i]!.rss)} MB`).join(', ')}`,
    )
    const qmax = (f: (x: QueueSizes) => number): number => Math.max(...queues.flat().map(f))
    console.log(
      `largest queues seen after a window: raft pending ${qmax((x) => x.raftPending)}, frames to peers ${qmax((x) => x.hubQueued)}, frames dropped ${qmax((x) => x.hubDropped)}, calls out ${qmax((x) => x.callsOut)}, mailboxes ${qmax((x) => x.mailboxQueued)}`,
    )
  } finally {
    await c.stopAll()
    dirs.delete(c.dir)
  }
}

runMain(main)
