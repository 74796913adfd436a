/**
 * The `sworm` command line tool.
 *
 * `sworm status <http://host:port>` prints the `/status` of a node's metrics server (option
 * `metricsPort`) as a table, with one row per member whose metrics address the node knows.
 * Exit code 1 when the node cannot be reached, 2 on bad usage.
 * @module
 */
import { get as httpGet } from 'node:http'
import { get as httpsGet } from 'node:https'
import type { SwormStatusReport } from './sworm.js'

const USAGE = `usage: sworm status <http://host:port>   the status of a node (and of the members it knows)
       sworm help`

type Row = { address: string; status?: SwormStatusReport; error?: string }

/** Fetch `/status` from `base` (`http://host:port`, with or without the path). */
export async function fetchStatus(base: string, timeoutMs = 3000): Promise<SwormStatusReport> {
  let url: URL
  try {
    url = new URL(base)
  } catch {
    throw new Error(`not a URL: ${base}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`not an http:// URL: ${base}`)
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/status'
  const get = url.protocol === 'https:' ? httpsGet : httpGet
  const text = await new Promise<string>((resolve, reject) => {
    const req = get(url, { timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`${url.href} answered ${res.statusCode} ${res.statusMessage ?? ''}`.trim()))
        else resolve(Buffer.concat(chunks).toString('utf8'))
      })
    })
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
  })
  let body: SwormStatusReport
  try {
    body = JSON.parse(text) as SwormStatusReport
  } catch {
    throw new Error(`${url.href} did not answer JSON`)
  }
  if (typeof body !== 'object' || body === null || typeof body.node !== 'string') throw new Error(`${url.href} did not answer a sworm status`)
  return body
}

function errText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message
  }
  return String(err)
}

function duration(s: number): string {
  if (s < 60) return `${s.toFixed(0)}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.floor(s % 60)}s`
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`
}

/** Render rows as an aligned text table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

function render(rows: Row[]): string {
  const header = ['NODE', 'ROLE', 'TERM', 'LEADER', 'COMMIT', 'APPLIED', 'NAMES', 'WORKERS', 'SUPERVISED', 'LEASE', 'UPTIME', 'ADDRESS']
  const body = rows.map((r) => {
    const s = r.status
    if (!s) return ['?', 'unreachable', '', '', '', '', '', '', '', '', '', `${r.address} (${r.error ?? 'no answer'})`]
    return [
      s.node,
      s.role,
      String(s.term),
      s.leader ?? '-',
      String(s.commit),
      String(s.applied),
      String(s.names),
      String(s.workers),
      String(s.supervised),
      s.lease ? 'ok' : 'LOST',
      duration(s.uptime),
      r.address,
    ]
  })
  return table(header, body)
}

async function status(target: string): Promise<number> {
  let first: SwormStatusReport
  try {
    first = await fetchStatus(target)
  } catch (err) {
    process.stderr.write(`sworm: cannot reach ${target}: ${errText(err)}\n`)
    return 1
  }
  const rows: Row[] = [{ address: first.metricsAddress ?? target, status: first }]
  const others = Object.entries(first.metricsPeers ?? {}).filter(([node]) => node !== first.node)
  const more = await Promise.all(
    others.map(async ([, address]): Promise<Row> => {
      try {
        return { address, status: await fetchStatus(address) }
      } catch (err) {
        return { address, error: errText(err) }
      }
    }),
  )
  rows.push(...more)
  rows.sort((a, b) => (a.status?.node ?? '~').localeCompare(b.status?.node ?? '~'))
  const members = [...Object.keys(first.peers?.voters ?? {}).map((n) => `${n} (voter)`), ...Object.keys(first.peers?.learners ?? {}).map((n) => `${n} (learner)`)]
  const out = [
    `sworm ${JSON.stringify(first.sworm)}: leader ${first.leader ?? 'unknown'}, term ${first.term}, ${first.names} names; members: ${members.join(', ') || 'none'}`,
    '',
    render(rows),
  ]
  const unknown = Object.keys(first.peers?.voters ?? {}).filter((n) => !rows.some((r) => r.status?.node === n))
  if (unknown.length) out.push('', `no metrics address known for: ${unknown.join(', ')}`)
  process.stdout.write(out.join('\n') + '\n')
  return 0
}

/** Run the tool with `argv` (without `node` and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (cmd === 'status' && rest.length === 1) return status(rest[0]!)
  if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE + '\n')
    return 0
  }
  process.stderr.write(USAGE + '\n')
  return 2
}

/** Run directly (`node dist/src/cli.js ...`); `bin/sworm.js` imports {@link main} instead. */
const isEntry = process.argv[1] !== undefined && /(?:^|[\\/])cli\.js$/.test(process.argv[1])
if (isEntry) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      process.stderr.write(`sworm: ${errText(err)}\n`)
      process.exitCode = 1
    },
  )
}
