/**
 * DNS discovery (issue #13) against a real DNS server: Debian's dnsmasq on a high loopback port,
 * serving `sworm.test` as a Kubernetes headless Service would (one A record per node, nodes on
 * 127.0.0.2, .3, ...) and `_sworm._tcp.sworm.test` as SRV records. Skips when dnsmasq is absent
 * (`.ci/run` installs it).
 *
 * Checked: three nodes started at once with `discovery: { expect: 3 }` on empty data directories
 * form one cluster; a fourth, added to DNS later (dnsmasq reloads its hosts file on SIGHUP),
 * finds the running cluster and joins it; a node found through SRV records joins too; the
 * options are checked.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Sworm, silentLogger } from '../src/index.js'
import { internals } from '../src/internal.js'
import { freePorts, tempDir, TEST_SECRET, waitFor } from './helpers.js'

const DNSMASQ = ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq'].find((p) => existsSync(p))

async function startDnsmasq(hostsFile: string, port: number, srv: string[]): Promise<ChildProcess> {
  const args = ['--keep-in-foreground', '--no-resolv', '--no-hosts', `--addn-hosts=${hostsFile}`, `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--pid-file=', '--log-facility=-', '--cache-size=0', ...srv.map((s) => `--srv-host=${s}`)]
  if (process.getuid?.() === 0) args.push('-u', 'root')
  const child = spawn(DNSMASQ!, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  await waitFor(() => err.includes('read ') || child.exitCode !== null, 10_000, 'dnsmasq started')
  if (child.exitCode !== null) throw new Error(`dnsmasq exited: ${err}`)
  return child
}

t.test('discovery options are checked', async (t) => {
  const base = { name: 'd', nodeId: 'a', listen: 'ws://127.0.0.1:1', dataDir: '/nonexistent', secret: TEST_SECRET, logger: silentLogger }
  await t.rejects(Sworm.start({ ...base, discovery: { dns: 'x' }, join: 'ws://127.0.0.1:2' }), { name: 'TypeError', message: /one of options "peers", "join" and "discovery"/ })
  await t.rejects(Sworm.start({ ...base, discovery: { dns: '' } }), { name: 'TypeError', message: /"dns"/ })
  await t.rejects(Sworm.start({ ...base, discovery: { dns: 'x', expect: 0 } }), { name: 'TypeError', message: /"expect"/ })
  await t.rejects(Sworm.start({ ...base, discovery: { dns: 'x', servers: [] } }), { name: 'TypeError', message: /"servers"/ })
})

t.test('nodes find each other through DNS: a new cluster with expect, then nodes that join it (A and SRV records)', { skip: DNSMASQ ? false : 'dnsmasq is not installed (apt-get install dnsmasq-base)', timeout: 120_000 }, async (t) => {
  const { dir, cleanup } = tempDir('sworm-discovery-')
  const [port, dnsPort, srvPort] = (await freePorts(3)) as [number, number, number]
  const hosts = join(dir, 'hosts')
  writeFileSync(hosts, ['127.0.0.2', '127.0.0.3', '127.0.0.4'].map((ip) => `${ip} sworm.test`).join('\n') + '\n')
  // the SRV records name a node on 127.0.0.6 (target and port)
  const dns = await startDnsmasq(hosts, dnsPort, [`_sworm._tcp.sworm.test,127.0.0.2,${port}`, `_sworm._tcp.sworm.test,127.0.0.6,${srvPort}`])
  const sworms: Sworm[] = []
  t.teardown(async () => {
    await Promise.all(sworms.map((s) => s.stop().catch(() => {})))
    dns.kill()
    cleanup()
  })
  const servers = [`127.0.0.1:${dnsPort}`]
  const start = (id: string, ip: string, p: number, discovery: Record<string, unknown>): Promise<Sworm> =>
    Sworm.start({
      name: 'disco',
      nodeId: id,
      listen: `ws://${ip}:${p}`,
      dataDir: join(dir, id),
      secret: TEST_SECRET,
      ...(process.env.DISCOVERY_LOG ? { logLevel: 'info' as const } : { logger: silentLogger }),
      stopOnSignals: false,
      discovery: { dns: 'sworm.test', servers, intervalMs: 200, ...discovery },
    }).then((s) => {
      sworms.push(s)
      return s
    })

  // three instances of the app start at once, each on an empty data directory
  const first = await Promise.all([start('a', '127.0.0.2', port, { expect: 3 }), start('b', '127.0.0.3', port, { expect: 3 }), start('c', '127.0.0.4', port, { expect: 3 })])
  await waitFor(() => first.some((s) => s.status().role === 'leader'), 10_000, 'a leader')
  await waitFor(() => first.every((s) => JSON.stringify(Object.keys(internals(s).raft.status().config.voters).sort()) === '["a","b","c"]'), 10_000, 'one cluster of the three, every one a voter')
  const ids = (): Array<string | undefined> => first.map((s) => internals(s).raft.status().config.cluster)
  await waitFor(() => ids()[0] !== undefined && new Set(ids()).size === 1, 10_000, 'the same cluster id on all three')
  const ref = first[0].spawn({ handleCall: () => 'pong' })
  t.ok(await first[0].registerName('ping', ref))

  // a fourth instance: DNS now lists it too (dnsmasq reloads its hosts file on SIGHUP)
  writeFileSync(hosts, ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'].map((ip) => `${ip} sworm.test`).join('\n') + '\n')
  dns.kill('SIGHUP')
  const d = await start('d', '127.0.0.5', port, {})
  const dcfg = internals(d).raft.status().config
  t.ok(dcfg.learners.d ?? dcfg.voters.d, 'the fourth found the running cluster and joined it')
  await waitFor(() => d.whereisName('ping') !== undefined, 10_000, 'the fourth sees the names')
  t.equal(await d.call('ping', 'x'), 'pong', 'and reaches their workers')

  // a fifth, through SRV records (target and port from DNS)
  const e = await start('e', '127.0.0.6', srvPort, { dns: '_sworm._tcp.sworm.test' })
  await waitFor(() => e.whereisName('ping') !== undefined, 10_000, 'the node found through SRV records sees the names')
  // autopilot: fewer nodes than 5 voters wanted, so the joined ones become voters too
  await waitFor(() => Object.keys(internals(first[0]).raft.status().config.voters).length === 5, 20_000, 'five voters')
  t.pass('five voters')
})
