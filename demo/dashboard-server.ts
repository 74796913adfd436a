/**
 * `npm run demo` (without `--script`): five node processes, N supervised workers, and a live
 * dashboard on localhost (static files in `demo/dashboard/`, live updates over Server-Sent Events).
 *
 * The demo process polls every node over IPC every 250 ms (`dashStatus`) and receives the nodes'
 * Sworm events (`subscribe`); the page's buttons (kill, restart, partition, heal, drain, register
 * more) are POSTed to `/api/action` and carried out on the node processes. After each disruption
 * the demo waits until every worker runs again on healthy nodes and says how long it took.
 * @module
 */
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import type { DashStatus, RegisterSupervisedManyResult, SwormProcessEvent } from '../tools/cluster/sworm-protocol.js'
import { startSwormCluster, type SwormCluster } from '../tools/cluster/sworm-cluster.js'

/** Options of {@link runDashboard}. */
export interface DashboardOptions {
  /** Supervised workers registered at start. */
  workers: number
  /** Port to serve on; `undefined`: 8080, or a free port when 8080 is busy. */
  port: number | undefined
  /** Interface to serve on (default 127.0.0.1). */
  host?: string
}

const NODES = 5
const PREFIX = 'counter:'
const GROUPS = ['vip', 'billing', 'chat']
const POLL_MS = 250
/** Every PROBE_MS the leader commits one entry (a join to this group), so the latency chart has data when idle. */
const PROBE_GROUP = '_latency-probe'
const PROBE_MS = 500
const WORKERS_MODULE = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))
const STATIC_DIR = new URL('../../demo/dashboard/', import.meta.url)
const STATIC: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
  '/style.css': 'style.css',
}
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' }

const TTY = process.stdout.isTTY === true
const COLOR = TTY && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb'
const paint = (code: string) => (s: string) => (COLOR ? `\x1b[${code}m${s}\x1b[0m` : s)
const bold = paint('1')
const dim = paint('2')
const green = paint('32')
const red = paint('31')
const yellow = paint('33')
const cyan = paint('36')

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const fmt = (ms: number): string => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`)
const num = (n: number): string => n.toLocaleString('en-US')
const epoch = (): number => performance.timeOrigin + performance.now()
const nameOf = (i: number): string => `${PREFIX}${i}`

type LogKind = 'info' | 'ok' | 'warn' | 'bad' | 'action'
interface LogEntry {
  at: number
  kind: LogKind
  text: string
}

/** One second of the charts. */
interface Second {
  /** Epoch second. */
  t: number
  /** `registered` events (new names, restarts and moves). */
  registered: number
  latSum: number
  latCount: number
  /** Commit latency histogram deltas, per bucket (non-cumulative). */
  latBuckets: number[]
}

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

let lineOpen = false
function progress(text: string, final = false): void {
  if (TTY) {
    process.stdout.write(`\r\x1b[2K${text}`)
    lineOpen = !final
    if (final) process.stdout.write('\n')
  } else if (final) process.stdout.write(`${text}\n`)
}
function say(text: string): void {
  if (lineOpen) {
    process.stdout.write('\n')
    lineOpen = false
  }
  process.stdout.write(`${text}\n`)
}
function bar(done: number, total: number, width = 28): string {
  const k = total === 0 ? width : Math.min(width, Math.round((done / total) * width))
  return `[${'█'.repeat(k)}${dim('░'.repeat(width - k))}]`
}

/** Listen on `port` (on `host`); with `fallback`, on a free port when that one is taken. */
function listen(server: Server, host: string, port: number, fallback: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      if (fallback && err.code === 'EADDRINUSE') {
        say(dim(`   port ${port} is busy: picking a free one`))
        server.listen(0, host)
      } else reject(err)
    }
    server.on('error', onError)
    server.once('listening', () => {
      server.off('error', onError)
      resolve((server.address() as AddressInfo).port)
    })
    server.listen(port, host)
  })
}

/** Run the dashboard demo until SIGINT/SIGTERM. */
export async function runDashboard(opts: DashboardOptions): Promise<void> {
  const N = opts.workers
  const host = opts.host ?? '127.0.0.1'
  const tStart = performance.now()
  let cluster: SwormCluster | undefined
  let server: Server | undefined
  const clients = new Set<ServerResponse>()

  let cleaning: Promise<void> | undefined
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      for (const c of clients) c.destroy()
      server?.close()
      if (cluster) await Promise.race([cluster.stopAll().catch(() => {}), sleep(10_000)])
    })())
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      say(`\n${sig}: stopping the nodes and removing their data directories`)
      void cleanup().then(() => process.exit(0))
    })
  }

  try {
    say(bold(`Sworm demo: ${NODES} node processes, ${num(N)} supervised workers, live dashboard`))
    // ------------------------------------------------------------------ start
    cluster = await startSwormCluster({ n: NODES, name: 'demo', startTimeoutMs: 30_000, ipcTimeoutMs: 15_000 })
    const cl = cluster
    const ids = [...cl.ids]
    const state = new DemoState(cl, ids, N)
    cl.onEvents((id, evs) => state.onEvents(id, evs))
    await Promise.all(ids.map((id) => cl.request(id, { op: 'subscribe' })))
    const leader = await cl.waitForLeader(20_000)
    state.startPolling((msg) => {
      for (const c of clients) c.write(msg)
    })
    say(`   ${green('✔')} ${NODES} nodes up in ${fmt(performance.now() - tStart)} (leader ${cyan(leader)}); data under ${dim(cl.dir)}`)

    // ------------------------------------------------------------------ register
    const t0 = performance.now()
    const per = Math.ceil(N / ids.length)
    const jobs = Promise.all(
      ids.map((id, i) =>
        cl.request<RegisterSupervisedManyResult>(
          id,
          { op: 'registerSupervisedMany', prefix: PREFIX, start: i * per, count: Math.max(0, Math.min(per, N - i * per)), concurrency: 16, module: WORKERS_MODULE, fn: 'counter' },
          120_000,
        ),
      ),
    )
    let done = false
    void jobs.then(
      () => (done = true),
      () => (done = true),
    )
    while (!done) {
      const sts = await Promise.all(ids.map((id) => cl.request<{ supervised: number }>(id, { op: 'fullStatus' }, 2000).catch(() => undefined)))
      const running = sts.reduce((a, s) => a + (s?.supervised ?? 0), 0)
      progress(`   ${bar(running, N)} ${num(running)}/${num(N)} workers running  ${dim(fmt(performance.now() - t0))}`)
      await sleep(100)
    }
    const results = await jobs
    const ok = results.reduce((a, r) => a + r.ok, 0)
    const regMs = performance.now() - t0
    progress(`   ${bar(ok, N)} ${num(ok)}/${num(N)} workers running  ${dim(fmt(regMs))}`, true)
    if (ok < N) say(yellow(`   only ${ok} of ${N} registrations succeeded: ${results.flatMap((r) => r.errorSamples).slice(0, 3).join('; ')}`))
    state.total = ok
    state.nextIndex = N
    state.log('ok', `${num(ok)} workers registered and running in ${fmt(regMs)} (${Math.round(ok / (regMs / 1000))}/s)`, epoch(), true)

    // a few group members, so the groups panel shows something
    const lead = await cl.waitForLeader(20_000)
    const joins: Array<[string, string]> = []
    for (let i = 0; i < N; i++) {
      if (i < 5) joins.push(['vip', nameOf(i)])
      if (i < 100 && i % 10 === 3) joins.push(['billing', nameOf(i)])
      if (i % 25 === 7) joins.push(['chat', nameOf(i)])
    }
    await Promise.all(joins.map(([group, name]) => cl.request(lead, { op: 'join', group, name }, 15_000).catch(() => undefined)))

    // ------------------------------------------------------------------ serve
    server = createServer((req, res) => void handle(req, res, state, clients))
    const port = await listen(server, host, opts.port ?? 8080, opts.port !== 0)
    const url = `http://${host}:${port}`
    say(`\n   ${bold('Dashboard:')} ${cyan(url)}   ${dim('(Ctrl-C stops the nodes and exits)')}`)
    say(`DASHBOARD ${url}`)
    const servedAt = epoch()
    state.echo = (e) => e.at >= servedAt && say(`   ${dim(new Date(e.at).toISOString().slice(11, 23))} ${e.kind === 'ok' ? green(e.text) : e.kind === 'bad' ? red(e.text) : e.kind === 'warn' ? yellow(e.text) : e.text}`)
    await new Promise<never>(() => {})
  } catch (err) {
    say(`\n${red(bold('✘ demo failed:'))} ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    await cleanup()
    process.exit(1)
  }
}

// ---------------------------------------------------------------------------- HTTP

async function handle(req: IncomingMessage, res: ServerResponse, state: DemoState, clients: Set<ServerResponse>): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost')
  try {
    if (req.method === 'GET' && STATIC[url.pathname]) {
      const file = STATIC[url.pathname]!
      const body = await readFile(new URL(file, STATIC_DIR))
      res.writeHead(200, { 'content-type': TYPES[file.split('.').pop()!] ?? 'application/octet-stream', 'cache-control': 'no-store' })
      res.end(body)
      return
    }
    if (req.method === 'GET' && url.pathname === '/api/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
      res.write(`retry: 1000\n\n`)
      res.write(sse('hello', state.hello()))
      clients.add(res)
      req.on('close', () => clients.delete(res))
      return
    }
    if (req.method === 'GET' && url.pathname === '/api/state') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ...(state.snapshot() as object), names: state.namesMap() }))
      return
    }
    if (req.method === 'POST' && url.pathname === '/api/action') {
      let body = ''
      for await (const chunk of req) body += String(chunk)
      const a = JSON.parse(body || '{}') as Action
      const err = state.act(a)
      res.writeHead(err ? 400 : 200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(err ? { ok: false, error: err } : { ok: true }))
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' })
    res.end('not found')
  } catch (err) {
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
    res.end(String(err))
  }
}

const sse = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`

// ---------------------------------------------------------------------------- state

/** What the page can ask for. */
interface Action {
  op: 'kill' | 'restart' | 'partition' | 'heal' | 'drain' | 'undrain' | 'register'
  node?: string
  nodes?: string[]
  count?: number
}

/** Aggregated events of one kind within one flush (so 1,000 registrations are one log line). */
interface Agg {
  at: number
  kind: LogKind
  count: number
  names: string[]
  text: (count: number, names: string[]) => string
}

class DemoState {
  /** Supervised names expected to run. */
  total = 0
  /** Index of the next `counter:` name to register. */
  nextIndex = 0
  /** Print log entries on the terminal too (set once the dashboard is up). */
  echo: ((e: LogEntry) => void) | undefined
  private readonly nodes = new Map<string, NodeView>()
  private readonly names = new Map<string, { version: number; names: string[] }>()
  private readonly logEntries: LogEntry[] = []
  private readonly seconds: Second[] = []
  private readonly pending: Pending[] = []
  /** Minority side of the current partition (empty: none). */
  private minority = new Set<string>()
  /** Nodes replaying the log (restarted, healed): their registry events are old news. */
  private readonly catchingUp = new Set<string>()
  /** Dedupe of registry-level events seen from several nodes: key -> epoch ms. */
  private readonly seen = new Map<string, number>()
  private readonly knownNames = new Set<string>()
  private readonly agg = new Map<string, Agg>()
  /** Last latency histogram per node (to take deltas). */
  private readonly lastLat = new Map<string, { pid: number; sum: number; count: number; buckets: number[] }>()
  private readonly busy = new Set<string>()
  private banner: { text: string; kind: LogKind; at: number } | undefined
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

  // -------------------------------------------------------------- log

  /** Add a log line; `headline`: also show it in the page's banner (outcomes of actions). */
  log(kind: LogKind, text: string, at = epoch(), headline = false): void {
    const e = { at, kind, text }
    // in time order (events come in batches, a little after they happened)
    let i = this.logEntries.length
    while (i > 0 && this.logEntries[i - 1]!.at > at) i--
    this.logEntries.splice(i, 0, e)
    if (this.logEntries.length > 500) this.logEntries.splice(0, this.logEntries.length - 500)
    this.outbox.push(sse('log', e))
    this.echo?.(e)
    if (headline) this.banner = { text, kind, at }
  }

  private outbox: string[] = []

  private aggregate(key: string, at: number, kind: LogKind, name: string | undefined, text: Agg['text']): void {
    let a = this.agg.get(key)
    if (!a) this.agg.set(key, (a = { at, kind, count: 0, names: [], text }))
    a.count++
    if (name !== undefined && a.names.length < 3) a.names.push(name)
  }

  private flushAgg(): void {
    const list = [...this.agg.values()].sort((a, b) => a.at - b.at)
    this.agg.clear()
    for (const a of list) this.log(a.kind, a.text(a.count, a.names), a.at)
  }

  /** `once(key)`: true the first time `key` is seen within `windowMs`. */
  private once(key: string, at: number, windowMs = 60_000): boolean {
    const prev = this.seen.get(key)
    if (prev !== undefined && at - prev < windowMs) return false
    this.seen.set(key, at)
    return true
  }

  private second(at: number): Second {
    const t = Math.floor(at / 1000)
    let s = this.seconds[this.seconds.length - 1]
    if (!s || s.t < t) {
      // fill gaps so the chart's x axis is continuous
      let from = s ? s.t + 1 : t
      if (t - from > 120) from = t - 120
      for (let k = from; k <= t; k++) this.seconds.push((s = { t: k, registered: 0, latSum: 0, latCount: 0, latBuckets: [] }))
      if (this.seconds.length > 180) this.seconds.splice(0, this.seconds.length - 180)
      return s!
    }
    return this.seconds.find((x) => x.t === t) ?? s
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
          if (!this.once(`reg:${name}:${ref.node}:${ref.inc}:${ref.id}`, e.at)) break
          this.second(e.at).registered++
          if (!this.knownNames.has(name)) {
            this.knownNames.add(name)
            this.aggregate('registered', e.at, 'info', name, (k, ns) => `registered ${num(k)} name${k > 1 ? 's' : ''}: ${ns.join(', ')}${k > ns.length ? ', …' : ''}`)
          }
          break
        }
        case 'unregistered':
          if (replaying || !name || !this.once(`unreg:${name}:${ref?.id ?? ''}`, e.at)) break
          this.aggregate('unregistered', e.at, 'info', name, (k) => `unregistered ${num(k)} name${k > 1 ? 's' : ''}`)
          break
        case 'joined':
        case 'left': {
          const g = String(d.group)
          if (g === PROBE_GROUP) break
          if (replaying || !ref || !this.once(`${e.event}:${g}:${ref.node}:${ref.inc}:${ref.id}`, e.at)) break
          this.aggregate(`${e.event}:${g}`, e.at, 'info', undefined, (k) => `${num(k)} worker${k > 1 ? 's' : ''} ${e.event} group “${g}”`)
          break
        }
        case 'leaderChanged': {
          const term = Number(d.term)
          if (!this.once(`leader:${term}`, e.at, Infinity)) break
          this.log('info', `${String(d.leader)} elected leader (term ${term})`, e.at)
          break
        }
        case 'nodeDown':
          if (replaying || !this.once(`down:${String(d.node)}`, e.at, 5000)) break
          this.log('warn', `${String(d.node)} declared down by the leader: its workers move`, e.at)
          break
        case 'nodeUp':
          if ((replaying && d.node !== id) || !this.once(`up:${String(d.node)}`, e.at, 5000)) break
          this.log('info', `${String(d.node)} up (serving the sworm)`, e.at)
          break
        case 'workerMoved': {
          const from = String(d.from)
          this.aggregate(`moved:${from}>${id}`, e.at, 'info', name, (k) => `${num(k)} worker${k > 1 ? 's' : ''} moved ${from} → ${id}`)
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
          if (f) this.aggregate(`stopped:${id}:${reason}`, e.at, 'info', name, f)
          break
        }
        case 'leaseLost':
          this.log('warn', `${id} lost its lease: it stops its ${num(Number(d.workers))} workers (fencing)`, e.at)
          break
        case 'leaseRenewed':
          this.log('info', `${id} holds its lease again`, e.at)
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
          this.log('bad', `poll failed: ${String(err)}`)
        }
        const msgs = this.outbox
        this.outbox = []
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
          this.latency(id, st)
        } catch {
          v.stale = true
        }
      }),
    )
    // the events that came in meanwhile go to the log before any "settled" line
    this.flushAgg()
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
    if (this.dupStreak === 3) this.log('bad', `names running on two nodes: ${dups.slice(0, 5).join(', ')}`, epoch(), true)
    // settling
    const now = performance.now()
    for (const p of [...this.pending]) {
      const msg = p.check()
      if (msg !== undefined || now > p.deadline) {
        this.pending.splice(this.pending.indexOf(p), 1)
        if (msg !== undefined) this.log('ok', msg, epoch(), true)
        else this.log('warn', `${p.label}: not done after ${fmt(now - p.t0)}`, epoch(), true)
      }
    }
    // forget old dedupe keys
    const cut = epoch() - 120_000
    if (this.seen.size > 20_000) for (const [k, at] of this.seen) if (at < cut) this.seen.delete(k)
  }

  private latency(id: string, st: DashStatus): void {
    const cur = { pid: st.pid, sum: st.commitLatency.sum, count: st.commitLatency.count, buckets: st.commitLatency.buckets.map(([, c]) => c) }
    const prev = this.lastLat.get(id)
    this.lastLat.set(id, cur)
    if (!prev || prev.pid !== cur.pid || cur.count < prev.count) return
    const dc = cur.count - prev.count
    if (dc <= 0) return
    const s = this.second(epoch())
    s.latSum += cur.sum - prev.sum
    s.latCount += dc
    for (let i = 0; i < cur.buckets.length; i++) {
      const now = cur.buckets[i]! - (i > 0 ? cur.buckets[i - 1]! : 0)
      const before = (prev.buckets[i] ?? 0) - (i > 0 ? (prev.buckets[i - 1] ?? 0) : 0)
      s.latBuckets[i] = (s.latBuckets[i] ?? 0) + (now - before)
    }
  }

  private bucketBounds(): number[] {
    for (const v of this.nodes.values()) if (v.st) return v.st.commitLatency.buckets.map(([le]) => le)
    return []
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
        .catch((err: unknown) => this.log('bad', `${a.op}${node ? ` ${node}` : ''} failed: ${err instanceof Error ? err.message : String(err)}`, epoch(), true))
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
          this.log('action', `you killed ${node}${wasLeader ? ' (the leader)' : ''} with SIGKILL: ${num(had)} workers ran there`)
          await this.cl.kill(node)
          v.alive = false
          this.settle(`${node} killed`)
        })
      }
      case 'restart': {
        if (!node || this.cl.isAlive(node)) return `${node} is running`
        return run(async () => {
          this.log('action', `you restarted ${node} from its data directory`)
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
          this.log('action', `you partitioned the network: {${side.join(', ')}} | {${other.join(', ')}}`)
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
          this.log('action', `you healed the partition ({${cut.join(', ')}} reconnect)`)
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
          this.log('action', `you drained ${node}: its ${num(had)} workers move away with their state`)
          this.settle(`${node} drain`)
          const r = await this.cl.request<{ ms: number }>(node, { op: 'drain', timeoutMs: 60_000 }, 70_000)
          this.log('info', `${node} drain() resolved after ${fmt(r.ms)}`)
        })
      }
      case 'undrain': {
        if (!node || !this.cl.isAlive(node)) return `${node} is not running`
        return run(async () => {
          await this.cl.request(node, { op: 'undrain' }, 15_000)
          this.log('action', `you undrained ${node}: it takes new workers again`)
        })
      }
      case 'register': {
        const count = Math.max(1, Math.min(10_000, Math.floor(a.count ?? 100)))
        const target = this.leader()
        if (!target) return 'no leader right now'
        const start = this.nextIndex
        this.nextIndex += count
        return run(async () => {
          this.log('action', `you registered ${num(count)} more workers (${nameOf(start)} … ${nameOf(start + count - 1)})`)
          this.total += count
          this.settle(`register ${num(count)}`)
          const r = await this.cl.request<RegisterSupervisedManyResult>(
            target,
            { op: 'registerSupervisedMany', prefix: PREFIX, start, count, concurrency: 16, module: WORKERS_MODULE, fn: 'counter' },
            120_000,
          )
          if (r.errors) {
            this.total -= r.errors
            this.log('warn', `${r.errors} of ${count} registrations failed: ${r.errorSamples.slice(0, 2).join('; ')}`)
          }
          const spread = Object.entries(r.perNode)
            .sort()
            .map(([k, v]) => `${k} ${v}`)
            .join(' · ')
          this.log('info', `${num(r.ok)} registrations acknowledged in ${fmt(r.ms)} (p50 ${fmt(r.p50)}, p99 ${fmt(r.p99)}); placed ${spread}`)
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
    return { ids: this.ids, groups: GROUPS, log: this.logEntries.slice(-300), names: this.namesMap(), state: this.snapshot() }
  }

  snapshot(): unknown {
    const leader = this.leader()
    const lst = leader ? this.nodes.get(leader)?.st : undefined
    const records = new Map((lst?.nodes ?? []).map((n) => [n.node, n]))
    const bounds = this.bucketBounds()
    const nowT = Math.floor(epoch() / 1000)
    const series = this.seconds
      .filter((s) => s.t > nowT - 61 && s.t < nowT)
      .map((s) => {
        let p99: number | null = null
        const tot = s.latBuckets.reduce((a, b) => a + (b ?? 0), 0)
        if (tot > 0) {
          let acc = 0
          for (let i = 0; i < s.latBuckets.length; i++) {
            acc += s.latBuckets[i] ?? 0
            if (acc >= 0.99 * tot) {
              p99 = (bounds[i] ?? 5) * 1000
              break
            }
          }
        }
        return { t: s.t, reg: s.registered, latMean: s.latCount ? (s.latSum / s.latCount) * 1000 : null, latP99: p99, commits: s.latCount }
      })
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
      banner: this.banner ?? null,
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
