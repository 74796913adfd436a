/**
 * The dashboard's HTTP server: the static page (`demo/dashboard/`), the live updates as
 * Server-Sent Events (`/api/events`), the state as JSON (`/api/state`), and the actions
 * (`POST /api/action`).
 * @module
 */
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Action } from './dashboard-state.js'
import { dim, say } from './terminal.js'

const STATIC_DIR = new URL('../../demo/dashboard/', import.meta.url)
const STATIC: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
  '/style.css': 'style.css',
}
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' }

/** What the server asks of the dashboard's state. */
export interface DashboardModel {
  hello(): unknown
  snapshot(): unknown
  namesMap(): Record<string, string[]>
  act(a: Action): string | undefined
}

/** One Server-Sent Event. */
export const sse = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`

/** The dashboard's running server. */
export interface DashboardServer {
  /** The port it listens on. */
  port: number
  /** Send SSE text to every connected page. */
  broadcast(msg: string): void
  /** Close the server and drop the pages. */
  close(): void
}

/** Serve `state` on `host:port` (with `fallback`, on a free port when that one is taken). */
export async function serveDashboard(state: DashboardModel, host: string, port: number, fallback: boolean): Promise<DashboardServer> {
  const clients = new Set<ServerResponse>()
  const server = createServer((req, res) => void handle(req, res, state, clients))
  const bound = await listen(server, host, port, fallback)
  return {
    port: bound,
    broadcast: (msg) => {
      for (const c of clients) c.write(msg)
    },
    close: () => {
      for (const c of clients) c.destroy()
      server.close()
    },
  }
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

async function handle(req: IncomingMessage, res: ServerResponse, state: DashboardModel, clients: Set<ServerResponse>): Promise<void> {
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
