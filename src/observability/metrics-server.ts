/**
 * A small HTTP server per sworm: `GET /metrics` (Prometheus text), `GET /status` (JSON) and
 * `GET /ready` (200 when the node serves the sworm, 503 when not; a readiness probe's target).
 * @module
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** What the server serves. */
export interface MetricsHandlers {
  metrics(): Promise<string>
  metricsContentType: string
  status(): unknown
  ready(): { ready: boolean; reason: string }
}

/** A running metrics server. */
export interface MetricsServer {
  /** `http://host:port` */
  readonly address: string
  close(): Promise<void>
}

/** Listen on `host:port` (port 0: a free one) and serve `/metrics`, `/status` and `/ready`. */
export async function startMetricsServer(host: string, port: number, h: MetricsHandlers): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/metrics') {
      h.metrics().then(
        (text) => res.writeHead(200, { 'content-type': h.metricsContentType }).end(req.method === 'HEAD' ? undefined : text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err)),
      )
      return
    }
    if (path === '/status' || path === '/ready') {
      let body: string
      let code = 200
      try {
        if (path === '/status') body = JSON.stringify(h.status())
        else {
          const r = h.ready()
          code = r.ready ? 200 : 503
          body = JSON.stringify(r)
        }
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err))
        return
      }
      res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : body)
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /status or /ready\n')
  })
  server.keepAliveTimeout = 5000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  server.unref()
  const a = server.address() as AddressInfo
  const shownHost = a.family === 'IPv6' ? `[${a.address}]` : a.address
  return {
    address: `http://${shownHost}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
