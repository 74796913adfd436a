/**
 * The listening half of a hub: an HTTP or HTTPS server that upgrades to WebSockets, with the
 * timeouts that cut slow or idle requests, and the byte counter that bounds what a dialer may send
 * before it has authenticated.
 * @module
 */

import * as http from 'node:http'
import * as https from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'
import type { Logger } from '../raft/types.js'
import { errMessage, type TlsMaterial } from './wire.js'

/** Options of a {@link WsServer}. */
export interface WsServerOptions {
  /** Whether to serve TLS (`wss`); requires `tls`. */
  secure: boolean
  /** The TLS material served (and, with `ca`, required of clients). */
  tls: TlsMaterial | undefined
  /** Largest frame, in bytes. */
  maxFrame: number
  /** Time a client has to finish TLS and send its whole upgrade request. */
  handshakeTimeout: number
  /** Where to log. */
  log: Logger
  /** Warn at most once per second per `key`. */
  limitedWarn: (key: string, msg: string, fields: Record<string, unknown>) => void
  /** Called with each upgraded socket and its request. */
  onConnection: (ws: WebSocket, req: http.IncomingMessage) => void
}

/** An HTTP(S) server that answers plain requests with 426 and upgrades the others to WebSockets. */
export class WsServer {
  private readonly server: http.Server | https.Server
  private readonly wss: WebSocketServer
  private readonly log: Logger

  /**
   * Create the server (it does not listen until {@link WsServer.listen}).
   * @param opts - see {@link WsServerOptions}
   */
  constructor(opts: WsServerOptions) {
    const onRequest = (_req: http.IncomingMessage, res: http.ServerResponse): void => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' })
      res.end('upgrade required\n')
    }
    // A peer must send its whole upgrade request (and finish TLS) within the handshake timeout;
    // idle and half-sent requests are cut then, not after Node's default minute.
    const timeouts: http.ServerOptions = {
      headersTimeout: opts.handshakeTimeout,
      requestTimeout: opts.handshakeTimeout,
      connectionsCheckingInterval: Math.min(1000, Math.max(50, opts.handshakeTimeout / 2)),
    }
    const tls = opts.tls
    const server =
      opts.secure && tls
        ? https.createServer(
            {
              ...timeouts,
              handshakeTimeout: opts.handshakeTimeout,
              key: tls.key,
              cert: tls.cert,
              ...(tls.ca !== undefined ? { ca: tls.ca, requestCert: true, rejectUnauthorized: tls.rejectUnauthorized ?? true } : {}),
            },
            onRequest,
          )
        : http.createServer(timeouts, onRequest)
    this.server = server
    this.log = opts.log
    const wss = new WebSocketServer({ server, maxPayload: opts.maxFrame, perMessageDeflate: false })
    this.wss = wss
    const { log, limitedWarn } = opts
    wss.on('error', (e) => log.warn('ws server error', { error: errMessage(e) }))
    wss.on('connection', (ws, req) => opts.onConnection(ws, req))
    server.on('clientError', (e, socket) => {
      limitedWarn('clientError', 'bad client request', { error: errMessage(e) })
      socket.destroy()
    })
    server.on('tlsClientError', (e: Error) => {
      limitedWarn('tlsClientError', 'TLS handshake failed', { error: errMessage(e) })
    })
  }

  /**
   * Start listening.
   * @returns the address listened on; rejects with the listen error (e.g. `EADDRINUSE`)
   */
  listen(port: number, host: string): Promise<AddressInfo> {
    const server = this.server
    return new Promise<AddressInfo>((resolve, reject) => {
      const onError = (e: Error): void => {
        server.off('listening', onListening)
        reject(e)
      }
      const onListening = (): void => {
        server.off('error', onError)
        server.on('error', (err) => this.log.error('server error', { error: errMessage(err) }))
        resolve(server.address() as AddressInfo)
      }
      server.once('error', onError)
      server.once('listening', onListening)
      server.listen(port, host)
    })
  }

  /** Stop accepting connections and close the server (after the hub closed its sockets). */
  async close(): Promise<void> {
    const { wss, server } = this
    await new Promise<void>((resolve) => wss.close(() => resolve()))
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/**
 * Count the bytes read from `sock` until the returned function is called; past `max`, call
 * `tooMuch` and read no more (the socket is then closed by its owner).
 * @param sock - an inbound socket, not yet authenticated
 * @param max - the most bytes it may send before authentication
 * @param tooMuch - told the bytes seen so far
 * @returns a function that stops counting
 */
export function limitPreAuthBytes(sock: Socket, max: number, tooMuch: (seen: number) => void): () => void {
  // This listener runs after ws's own, so ws holds at most one more chunk of a frame when it fires.
  let seen = 0
  const count = (chunk: Buffer): void => {
    seen += chunk.length
    if (seen <= max) return
    tooMuch(seen)
    sock.pause() // read no more; the socket is closed after the close grace
  }
  sock.on('data', count)
  return () => sock.off('data', count)
}
