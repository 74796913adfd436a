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
import { performance } from 'node:perf_hooks'
import type { SwormCluster } from '../tools/cluster/sworm-cluster.js'
import { serveDashboard, type DashboardServer } from './dashboard-http.js'
import { epoch } from './dashboard-log.js'
import { DemoState } from './dashboard-state.js'
import { NODES, nameOf, registerDemoWorkers, startDemoCluster } from './demo-cluster.js'
import { bar, bold, cyan, dim, formatMs, green, num, progress, red, say, sleep, yellow } from './terminal.js'

/** Options of {@link runDashboard}. */
export interface DashboardOptions {
  /** Supervised workers registered at start. */
  workers: number
  /** Port to serve on; `undefined`: 8080, or a free port when 8080 is busy. */
  port: number | undefined
  /** Interface to serve on (default 127.0.0.1). */
  host?: string
}

const fmt = (ms: number): string => formatMs(ms, 1)

/** Run the dashboard demo until SIGINT/SIGTERM. */
export async function runDashboard(opts: DashboardOptions): Promise<void> {
  const N = opts.workers
  const host = opts.host ?? '127.0.0.1'
  const tStart = performance.now()
  let cluster: SwormCluster | undefined
  let server: DashboardServer | undefined

  let cleaning: Promise<void> | undefined
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
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
    cluster = await startDemoCluster()
    const cl = cluster
    const ids = [...cl.ids]
    const state = new DemoState(cl, ids, N)
    cl.onEvents((id, evs) => state.onEvents(id, evs))
    await Promise.all(ids.map((id) => cl.request(id, { op: 'subscribe' })))
    const leader = await cl.waitForLeader(20_000)
    state.startPolling((msg) => server?.broadcast(msg))
    say(`   ${green('✔')} ${NODES} nodes up in ${fmt(performance.now() - tStart)} (leader ${cyan(leader)}); data under ${dim(cl.dir)}`)

    // ------------------------------------------------------------------ register
    const t0 = performance.now()
    const { results, ok } = await registerDemoWorkers(cl, ids, N, 120_000, (running) =>
      progress(`   ${bar(running, N)} ${num(running)}/${num(N)} workers running  ${dim(fmt(performance.now() - t0))}`),
    )
    const regMs = performance.now() - t0
    progress(`   ${bar(ok, N)} ${num(ok)}/${num(N)} workers running  ${dim(fmt(regMs))}`, true)
    if (ok < N) say(yellow(`   only ${ok} of ${N} registrations succeeded: ${results.flatMap((r) => r.errorSamples).slice(0, 3).join('; ')}`))
    state.total = ok
    state.nextIndex = N
    state.activity.log('ok', `${num(ok)} workers registered and running in ${fmt(regMs)} (${Math.round(ok / (regMs / 1000))}/s)`, epoch(), true)

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
    server = await serveDashboard(state, host, opts.port ?? 8080, opts.port !== 0)
    const port = server.port
    const url = `http://${host}:${port}`
    say(`\n   ${bold('Dashboard:')} ${cyan(url)}   ${dim('(Ctrl-C stops the nodes and exits)')}`)
    say(`DASHBOARD ${url}`)
    const servedAt = epoch()
    state.activity.echo = (e) => e.at >= servedAt && say(`   ${dim(new Date(e.at).toISOString().slice(11, 23))} ${e.kind === 'ok' ? green(e.text) : e.kind === 'bad' ? red(e.text) : e.kind === 'warn' ? yellow(e.text) : e.text}`)
    await new Promise<never>(() => {})
  } catch (err) {
    say(`\n${red(bold('✘ demo failed:'))} ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    await cleanup()
    process.exit(1)
  }
}
