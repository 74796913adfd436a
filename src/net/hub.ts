/**
 * The network transport of Sworm: one {@link WsHub} per process listens on one port and carries
 * the messages of several Raft groups ("channels") to peer processes over WebSockets.
 *
 * The wire protocol (handshake, data frames, tags, limits) is documented in `handshake.ts`, which
 * holds its pure half; `peer.ts` queues, batches and dials for one peer, `server.ts` listens, and
 * this file ties them together: the connections, their handshake, and the channels per group.
 * @module
 */

import { randomBytes } from 'node:crypto'
import type * as http from 'node:http'
import { Packr } from 'msgpackr'
import { WebSocket, type RawData } from 'ws'
import { SwormError } from '../errors.js'
import { RateLimitedLog, clip } from '../observability/rate-limited-log.js'
import { silentLogger, type Logger, type NodeId, type Transport } from '../raft/types.js'
import {
  BAD_DIALER_PROOF,
  BAD_LISTENER_PROOF,
  BAD_TAG,
  NONCE_BYTES,
  WS_PROTOCOL_VERSION,
  authKey,
  isChallenge,
  isHello,
  isId,
  makeProof,
  proofOk,
  secretProblem,
  startSession,
  transcript,
  type Hellos,
} from './handshake.js'
import { FlushQueue, Peer, type Conn, type PeerHost } from './peer.js'
import { WsServer, limitPreAuthBytes } from './server.js'
import {
  DEFAULT_MAX_BUFFERED,
  DEFAULT_MAX_FRAME,
  HANDSHAKE_TIMEOUT_MS,
  MAX_PENDING_HANDSHAKES,
  PING_INTERVAL_MS,
  PRE_AUTH_MAX_BYTES,
  PRE_AUTH_MAX_FRAME,
  closeSocket,
  decodeProblem,
  dialOptions,
  errMessage,
  isPlainObject,
  toBuffer,
  type Batch,
} from './wire.js'

/** Options of a {@link WsHub}. */
export interface WsHubOptions {
  /** This node's id (the same in every channel). */
  nodeId: string
  /**
   * The address to listen on, `ws://host:port` or `wss://host:port` (port 0 picks a free port;
   * see {@link WsHub.address}). `wss` requires {@link WsHubOptions.tls}.
   */
  listen: string
  /**
   * The cluster secret, shared by every node: at least 32 characters, 8 of them distinct (see
   * the secret rule (see the README)); e.g. `openssl rand -hex 16`.
   */
  secret: string
  /**
   * TLS material for `wss`. The listener serves `key`/`cert`; the dialer presents them too and
   * verifies the listener against `ca` (or the system CAs). When `ca` is given, the listener also
   * requests and verifies client certificates (mutual TLS). `rejectUnauthorized` defaults to true.
   */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer; rejectUnauthorized?: boolean }
  /** Largest accepted frame in bytes (default 64 MiB). Larger frames are refused and logged. */
  maxFrameBytes?: number
  /**
   * Per peer connection, the socket's buffered bytes above which new messages to that peer are
   * dropped (default 16 MiB).
   */
  maxBufferedBytes?: number
  /**
   * How long a connection may take to authenticate, and an HTTP upgrade request to arrive whole,
   * before it is closed (default 5,000 ms).
   */
  handshakeTimeoutMs?: number
  /**
   * The most inbound connections in handshake at once; more are refused (default 256). Connections
   * that completed the handshake do not count.
   */
  maxPendingHandshakes?: number
  /** Where to log (default: nowhere). */
  logger?: Logger
}

/** Per-peer counters, as reported by {@link WsHub.stats}. */
export interface WsPeerStats {
  /** Whether an authenticated connection to the peer is open. */
  connected: boolean
  /** Messages waiting to be sent. */
  queued: number
  /** Messages dropped so far (queue overflow, back-pressure, oversized). */
  dropped: number
  /** Messages received from the peer so far (including those a `PeerFaults` wrapper then drops). */
  received: number
}

interface Channel {
  group: string
  handler: ((from: NodeId, msg: unknown) => void) | undefined
  connHandler: ((peer: NodeId, up: boolean) => void) | undefined
  peers: Record<NodeId, string>
}

/** The host part of `host:port`. */
function hostOf(remote: string): string {
  return remote.replace(/:[^:]*$/, '')
}

/**
 * One per process: listens on one port and carries the messages of several Raft groups to peer
 * processes over authenticated WebSockets. Each Raft group gets its {@link Transport} from
 * {@link WsHub.channel}.
 *
 * There is at most one connection per pair of nodes, used in both directions; if both sides dial
 * at once, the connection dialed by the node with the lower id is kept. Connections to known
 * peers (addresses given by any channel's `setPeers`) are re-established with exponential backoff
 * and jitter; messages sent meanwhile wait in a bounded queue (oldest dropped).
 */
export class WsHub {
  private readonly nodeId: string
  /** The key proofs are made with, derived from the secret. */
  private readonly authKey: Buffer
  private readonly log: Logger
  private readonly maxFrame: number
  private readonly handshakeTimeout: number
  private readonly maxPending: number
  private readonly tls: WsHubOptions['tls']
  private readonly secure: boolean
  private readonly listenHost: string
  private readonly listenPort: number
  private readonly boot = randomBytes(8).toString('hex')
  private readonly packr = new Packr({ useRecords: false })
  /** What each {@link Peer} sees of this hub. */
  private readonly peerHost: PeerHost

  private server: WsServer | undefined
  private addr: { host: string; port: number } | undefined
  private started = false
  private closed = false

  private readonly channels = new Map<string, Channel>()
  private readonly peers = new Map<string, Peer>()
  /** Union of the peer addresses of every channel. */
  private addresses = new Map<string, string>()
  private readonly conns = new Set<Conn>()
  private readonly flushQueue = new FlushQueue()
  private pingTimer: NodeJS.Timeout | undefined
  private readonly limited: RateLimitedLog

  /**
   * Create a hub (it does not listen until {@link WsHub.start}).
   * @param opts - see {@link WsHubOptions}
   * @throws TypeError when the secret breaks the rule of the secret rule (see the README)
   * @throws SwormError `INVALID_ARGUMENT` on a missing id, a bad `listen` URL, or `wss` without
   * `tls`
   */
  constructor(opts: WsHubOptions) {
    if (!isId(opts.nodeId)) throw new SwormError('INVALID_ARGUMENT', 'nodeId must be a non-empty string')
    const problem = secretProblem(opts.secret)
    if (problem !== undefined) throw new TypeError(`WsHub: secret ${problem}`)
    let url: URL
    try {
      url = new URL(opts.listen)
    } catch {
      throw new SwormError('INVALID_ARGUMENT', `listen is not a URL: ${opts.listen}`)
    }
    if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
      throw new SwormError('INVALID_ARGUMENT', `listen must be a ws:// or wss:// URL: ${opts.listen}`)
    }
    this.secure = url.protocol === 'wss:'
    if (this.secure && !opts.tls) throw new SwormError('INVALID_ARGUMENT', 'wss:// requires the tls option')
    this.listenHost = url.hostname.replace(/^\[(.*)\]$/, '$1')
    this.listenPort = url.port === '' ? (this.secure ? 443 : 80) : Number(url.port)
    this.nodeId = opts.nodeId
    this.authKey = authKey(opts.secret)
    this.log = opts.logger ?? silentLogger
    this.maxFrame = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME
    this.handshakeTimeout = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS
    this.maxPending = opts.maxPendingHandshakes ?? MAX_PENDING_HANDSHAKES
    this.limited = new RateLimitedLog(this.log)
    this.tls = opts.tls
    this.peerHost = {
      nodeId: this.nodeId,
      boot: this.boot,
      packr: this.packr,
      log: this.log,
      maxFrame: this.maxFrame,
      maxBuffered: opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED,
      handshakeTimeout: this.handshakeTimeout,
      tls: this.tls,
      isClosed: () => this.closed,
      addressOf: (id) => this.addresses.get(id),
      isCurrent: (peer) => this.peers.get(peer.id) === peer,
      forget: (peer) => {
        this.peers.delete(peer.id)
      },
      track: (ws, outbound, remote, tls) => this.track(ws, outbound, remote, tls),
      sendRaw: (conn, obj) => this.sendRaw(conn, obj),
      scheduleFlush: (peer) => this.flushQueue.add(peer),
      limitedWarn: (key, msg, fields) => this.limitedWarn(key, msg, fields),
    }
  }

  /** The address the hub listens on (after {@link WsHub.start}; the real port when 0 was asked). */
  get address(): { host: string; port: number } {
    if (!this.addr) throw new SwormError('NOT_STARTED', 'the hub is not listening')
    return { ...this.addr }
  }

  /**
   * Start listening.
   * @returns resolves once listening; rejects with the listen error (e.g. `EADDRINUSE`)
   */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new SwormError('SHUTTING_DOWN', 'the hub is closed'))
    if (this.started) return Promise.reject(new SwormError('INVALID_ARGUMENT', 'the hub is already started'))
    this.started = true
    const server = new WsServer({
      secure: this.secure,
      tls: this.tls,
      maxFrame: this.maxFrame,
      handshakeTimeout: this.handshakeTimeout,
      log: this.log,
      limitedWarn: (key, msg, fields) => this.limitedWarn(key, msg, fields),
      onConnection: (ws, req) => this.onIncoming(ws, req),
    })
    this.server = server
    return server.listen(this.listenPort, this.listenHost).then((a) => {
      if (!this.closed) {
        this.pingTimer = setInterval(() => this.pingAll(), PING_INTERVAL_MS)
        this.pingTimer.unref()
      }
      this.addr = { host: a.address, port: a.port }
      this.log.info('listening', { node: this.nodeId, host: a.address, port: a.port, tls: this.secure })
    })
  }

  /**
   * The transport of one Raft group.
   * @param group - the group's name; messages carry it so each reaches the same group on the peer
   * @throws SwormError `INVALID_ARGUMENT` if a channel of that group is already open
   */
  channel(group: string): Transport {
    if (typeof group !== 'string') throw new SwormError('INVALID_ARGUMENT', 'group must be a string')
    if (this.channels.has(group)) throw new SwormError('INVALID_ARGUMENT', `channel ${group} is already open`)
    if (this.closed) throw new SwormError('SHUTTING_DOWN', 'the hub is closed')
    const ch: Channel = { group, handler: undefined, connHandler: undefined, peers: {} }
    this.channels.set(group, ch)
    let open = true
    return {
      self: this.nodeId,
      send: (to, msg) => {
        if (open) this.send(group, to, msg)
      },
      onMessage: (handler) => {
        ch.handler = handler
      },
      onConnection: (handler) => {
        ch.connHandler = handler
      },
      flush: () => this.flushQueue.now(),
      setPeers: (peers) => {
        if (!open) return
        const copy: Record<NodeId, string> = {}
        for (const [id, url] of Object.entries(peers)) if (id !== this.nodeId) copy[id] = url
        ch.peers = copy
        this.recomputeAddresses()
      },
      close: async () => {
        if (!open) return
        open = false
        ch.handler = undefined
        if (this.channels.get(group) === ch) this.channels.delete(group)
        this.recomputeAddresses()
      },
    }
  }

  /**
   * Learn the node id of the hub listening at `url` (for joining a cluster through any member's
   * address). Runs the whole handshake as a probe: both sides prove they know the secret, the
   * listener says who it is, then closes the connection.
   * @throws SwormError `DISCOVERY` when the peer cannot be reached or fails authentication
   */
  discover(url: string, timeoutMs = HANDSHAKE_TIMEOUT_MS): Promise<string> {
    return new Promise((resolve, reject) => {
      const nonce = randomBytes(NONCE_BYTES)
      const tls = url.startsWith('wss:')
      let done = false
      let ws: WebSocket
      let t: string | undefined
      let id: string | undefined
      const finish = (err: Error | undefined): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        try {
          ws.terminate()
        } catch {
          // already closed
        }
        if (err) reject(err)
        else resolve(id!)
      }
      const timer = setTimeout(() => finish(new SwormError('DISCOVERY', `no answer from ${url} within ${timeoutMs} ms`)), timeoutMs)
      timer.unref()
      try {
        ws = new WebSocket(url, dialOptions(PRE_AUTH_MAX_FRAME, timeoutMs, this.tls))
      } catch (e) {
        clearTimeout(timer)
        reject(new SwormError('DISCOVERY', `cannot dial ${url}: ${errMessage(e)}`))
        return
      }
      const bad = (): void => finish(new SwormError('DISCOVERY', `bad answer from ${url}`))
      ws.on('error', (e) => finish(new SwormError('DISCOVERY', `cannot reach ${url}: ${errMessage(e)}`)))
      ws.on('close', (_code, reason) =>
        // (a close reason has at most 123 bytes)
        finish(new SwormError('DISCOVERY', `${url} closed the connection${reason.length > 0 ? `: ${reason.toString()}` : ''}`)),
      )
      ws.on('open', () =>
        ws.send(this.packr.pack({ v: WS_PROTOCOL_VERSION, t: 'hello', id: this.nodeId, boot: this.boot, nonce, tls, probe: true }), { binary: true }),
      )
      ws.on('message', (data) => {
        const buf = toBuffer(data)
        let f: unknown
        try {
          if (decodeProblem(buf)) return bad()
          f = this.packr.unpack(buf)
        } catch {
          return bad()
        }
        if (!isPlainObject(f) || f.v !== WS_PROTOCOL_VERSION) return bad()
        if (t === undefined) {
          if (!isChallenge(f)) return bad()
          id = f.id
          t = transcript({ dialer: { id: this.nodeId, boot: this.boot, nonce, tls }, listener: f, probe: true })
          ws.send(this.packr.pack({ v: WS_PROTOCOL_VERSION, t: 'auth', proof: makeProof(this.authKey, 'dialer', t) }), { binary: true })
        } else {
          if (f.t !== 'ok') return bad()
          if (!proofOk(this.authKey, 'listener', t, f.proof)) return finish(new SwormError('DISCOVERY', `${url}: ${BAD_LISTENER_PROOF}`))
          finish(undefined)
        }
      })
    })
  }

  /** Counters per peer and the number of open sockets (for monitoring and tests). */
  stats(): { sockets: number; peers: Record<NodeId, WsPeerStats> } {
    const peers: Record<NodeId, WsPeerStats> = {}
    for (const p of this.peers.values()) {
      peers[p.id] = { connected: p.conn !== undefined, queued: p.out.length, dropped: p.dropped, received: p.received }
    }
    return { sockets: this.conns.size, peers }
  }

  /** Close the server and every connection; cancels every timer. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.flushQueue.clear()
    if (this.pingTimer) clearInterval(this.pingTimer)
    this.pingTimer = undefined
    for (const p of this.peers.values()) {
      p.cancelRetry()
      p.dropQueue()
    }
    const waits: Promise<void>[] = []
    for (const c of this.conns) {
      if (c.timer) clearTimeout(c.timer)
      c.timer = undefined
      waits.push(closeSocket(c.ws, 1001, 'shutting down'))
    }
    await Promise.all(waits)
    this.conns.clear()
    this.peers.clear()
    this.channels.clear()
    await this.server?.close()
    this.log.info('hub closed', { node: this.nodeId })
  }

  // ---------------------------------------------------------------------------------------------
  // Sending
  // ---------------------------------------------------------------------------------------------

  private send(group: string, to: NodeId, msg: unknown): void {
    try {
      if (this.closed || to === this.nodeId) return
      let peer = this.peers.get(to)
      if (!peer) {
        // Unknown peers (no address, no connection) drop the message.
        if (!this.addresses.has(to)) return
        peer = this.newPeer(to)
      }
      peer.enqueue(group, msg)
    } catch (e) {
      this.log.error('send failed', { peer: to, error: errMessage(e) })
    }
  }

  private newPeer(id: string): Peer {
    const p = new Peer(id, this.peerHost)
    this.peers.set(id, p)
    return p
  }

  // ---------------------------------------------------------------------------------------------
  // Peers
  // ---------------------------------------------------------------------------------------------

  private recomputeAddresses(): void {
    const next = new Map<string, string>()
    for (const ch of this.channels.values()) {
      for (const [id, url] of Object.entries(ch.peers)) {
        const prev = next.get(id)
        if (prev !== undefined && prev !== url) {
          this.log.debug('conflicting peer addresses across channels', { peer: id, a: prev, b: url })
        }
        next.set(id, url)
      }
    }
    this.addresses = next
    for (const p of [...this.peers.values()]) {
      if (next.has(p.id)) continue
      // No longer known: stop reconnecting; an open connection stays usable until it drops.
      p.cancelRetry()
      if (!p.conn) {
        p.dropQueue()
        if (!p.dialing) this.peers.delete(p.id)
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Connections
  // ---------------------------------------------------------------------------------------------

  private onIncoming(ws: WebSocket, req: http.IncomingMessage): void {
    const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`
    if (this.closed) {
      ws.terminate()
      return
    }
    let pending = 0
    for (const c of this.conns) if (c.state === 'handshake' && !c.outbound) pending++
    if (pending >= this.maxPending) {
      this.limitedWarn('pending', 'too many connections in handshake; refusing', { remote })
      ws.on('error', () => {})
      ws.terminate()
      return
    }
    const sock = req.socket
    const conn = this.track(ws, false, remote, 'encrypted' in sock && sock.encrypted === true)
    // Until the dialer has proved itself, read at most PRE_AUTH_MAX_BYTES from it.
    conn.stopCounting = limitPreAuthBytes(sock, PRE_AUTH_MAX_BYTES, (seen) => {
      if (conn.state === 'handshake') {
        this.refuse(conn, 'too much data before authentication', 1009, { bytes: seen, max: PRE_AUTH_MAX_BYTES })
      }
    })
  }

  /** Register a socket: handlers, handshake timeout, bookkeeping. */
  private track(ws: WebSocket, outbound: boolean, remote: string, tls: boolean): Conn {
    const conn: Conn = {
      ws,
      outbound,
      peerId: undefined,
      peerBoot: undefined,
      state: 'handshake',
      expect: outbound ? 'challenge' : 'hello',
      nonce: randomBytes(NONCE_BYTES),
      peerNonce: undefined,
      tls,
      peerTls: false,
      probe: false,
      session: undefined,
      stopCounting: undefined,
      remote,
      timer: undefined,
      alive: true,
    }
    this.conns.add(conn)
    conn.timer = setTimeout(() => {
      conn.timer = undefined
      if (conn.state === 'handshake') this.refuse(conn, 'handshake timeout')
    }, this.handshakeTimeout)
    conn.timer.unref()
    ws.on('error', (e: Error & { code?: string }) => {
      if (e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.limitedWarn(`oversize-in:${hostOf(remote)}`, 'frame exceeds maxFrameBytes; closing connection', {
          remote,
          peer: conn.state === 'handshake' ? undefined : conn.peerId,
          max: this.maxFrame,
        })
      } else if (conn.state === 'open' || conn.state === 'retiring') {
        this.limitedWarn(`sockerr:${conn.peerId}`, 'socket error', { peer: conn.peerId, remote, error: errMessage(e) })
      } else if (conn.outbound) {
        // Typically the peer is down (ECONNREFUSED); the dial is retried with backoff.
        this.log.debug('dial failed', { peer: conn.peerId, url: remote, error: errMessage(e) })
      } else {
        this.limitedWarn(`sockerr:${hostOf(remote)}`, 'socket error during handshake', {
          remote,
          peer: conn.peerId,
          error: errMessage(e),
        })
      }
    })
    ws.on('pong', () => {
      conn.alive = true
    })
    ws.on('message', (data, isBinary) => {
      try {
        this.onFrame(conn, data, isBinary)
      } catch (e) {
        this.log.error('frame handling failed', { remote, error: errMessage(e) })
        this.refuse(conn, 'internal error')
      }
    })
    ws.on('close', (code, reason) => this.onClose(conn, code, reason.toString()))
    return conn
  }

  private sendRaw(conn: Conn, obj: unknown): void {
    try {
      conn.ws.send(this.packr.pack(obj), { binary: true }, () => {})
    } catch (e) {
      this.log.debug('handshake frame not sent', { remote: conn.remote, error: errMessage(e) })
    }
  }

  /**
   * Refuse / abort a connection because of bad input; logs one warn line (rate-limited per host
   * and reason, so `reason` must be a fixed string; details go in `fields`).
   */
  private refuse(conn: Conn, reason: string, code = 1008, fields: Record<string, unknown> = {}): void {
    if (conn.state === 'closed') return
    this.limitedWarn(`refuse:${hostOf(conn.remote)}:${reason}`, conn.state === 'handshake' ? 'refused connection' : 'closing connection', {
      remote: conn.remote,
      peer: conn.peerId,
      reason,
      ...fields,
    })
    this.markClosed(conn)
    void closeSocket(conn.ws, code, reason)
  }

  private markClosed(conn: Conn): void {
    if (conn.timer) clearTimeout(conn.timer)
    conn.timer = undefined
    const wasOpen = conn.state === 'open'
    conn.state = 'closed'
    const id = conn.peerId
    if (id === undefined) return
    const peer = this.peers.get(id)
    if (!peer) return
    if (peer.dialing === conn) {
      peer.dialing = undefined
      if (!peer.conn) peer.scheduleRetry()
    }
    if (peer.conn === conn) {
      peer.conn = undefined
      if (wasOpen) this.log.info('peer disconnected', { peer: id, remote: conn.remote })
      this.connectionLost(peer)
      if (this.addresses.has(id)) {
        peer.attempts = 0
        peer.scheduleRetry()
      } else if (!peer.dialing) {
        peer.dropped += peer.out.length
        peer.dropQueue()
        this.peers.delete(id)
      }
    }
  }

  private onClose(conn: Conn, code: number, reason: string): void {
    this.conns.delete(conn)
    if (conn.state !== 'closed') {
      if (conn.state === 'handshake' && conn.outbound && code === 1008) {
        this.limitedWarn(`refusedby:${conn.peerId}`, 'peer refused the connection', {
          peer: conn.peerId,
          remote: conn.remote,
          reason,
        })
      }
      this.markClosed(conn)
    }
  }

  private pingAll(): void {
    for (const c of this.conns) {
      if (c.state !== 'open') continue
      if (!c.alive) {
        this.log.warn('peer not answering pings; dropping connection', { peer: c.peerId, remote: c.remote })
        this.markClosed(c)
        c.ws.terminate()
        continue
      }
      c.alive = false
      try {
        c.ws.ping()
      } catch {
        // closing already
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Frames and handshake
  // ---------------------------------------------------------------------------------------------

  /** What both sides said in `conn`'s handshake, once both hello and challenge are known. */
  private hellosOf(conn: Conn): Hellos {
    const self = { id: this.nodeId, boot: this.boot, nonce: conn.nonce, tls: conn.tls }
    const peer = { id: conn.peerId!, boot: conn.peerBoot!, nonce: conn.peerNonce!, tls: conn.peerTls }
    return conn.outbound ? { dialer: self, listener: peer, probe: conn.probe } : { dialer: peer, listener: self, probe: conn.probe }
  }

  private onFrame(conn: Conn, data: RawData, isBinary: boolean): void {
    if (conn.state === 'closed' || this.closed) return
    if (!isBinary) {
      this.refuse(conn, 'text frame', 1003)
      return
    }
    let buf = toBuffer(data)
    if (conn.state === 'handshake') {
      if (buf.length > PRE_AUTH_MAX_FRAME) {
        this.refuse(conn, 'frame too large before authentication', 1009, { bytes: buf.length, max: PRE_AUTH_MAX_FRAME })
        return
      }
    } else if (conn.session) {
      const body = conn.session.open(buf)
      if (!body) {
        this.refuse(conn, BAD_TAG, 1008, { seq: conn.session.received, bytes: buf.length })
        return
      }
      buf = body
    }
    const problem = decodeProblem(buf)
    if (problem) {
      this.refuse(conn, problem.reason, problem.code, { bytes: buf.length, why: problem.why })
      return
    }
    let obj: unknown
    try {
      obj = this.packr.unpack(buf)
    } catch {
      this.refuse(conn, 'undecodable frame', 1007)
      return
    }
    if (!isPlainObject(obj)) {
      this.refuse(conn, 'malformed frame', 1007)
      return
    }
    if (obj.v !== WS_PROTOCOL_VERSION) {
      this.refuse(conn, 'unsupported protocol version', 1002, { version: clip(String(obj.v)), ours: WS_PROTOCOL_VERSION })
      return
    }
    switch (conn.expect) {
      case 'hello':
        return this.onHello(conn, obj)
      case 'challenge':
        return this.onChallenge(conn, obj)
      case 'auth':
        return this.onAuth(conn, obj)
      case 'ok':
        return this.onOk(conn, obj)
      case 'data':
        return this.onData(conn, obj)
    }
  }

  /** Listener side, step 1: the dialer introduces itself; we answer with our nonce, no proof. */
  private onHello(conn: Conn, f: Record<string, unknown>): void {
    if (!isHello(f)) return this.refuse(conn, 'bad hello')
    if (f.id === this.nodeId) return this.refuse(conn, 'peer uses our node id')
    conn.peerId = f.id
    conn.peerBoot = f.boot
    conn.peerNonce = Buffer.from(f.nonce)
    conn.peerTls = f.tls
    conn.probe = f.probe === true
    conn.expect = 'auth'
    this.sendRaw(conn, { v: WS_PROTOCOL_VERSION, t: 'challenge', id: this.nodeId, boot: this.boot, nonce: conn.nonce, tls: conn.tls })
  }

  /** Dialer side: the listener's nonce; we prove first. */
  private onChallenge(conn: Conn, f: Record<string, unknown>): void {
    if (!isChallenge(f)) return this.refuse(conn, 'bad challenge')
    if (f.id !== conn.peerId) return this.refuse(conn, 'unexpected peer id', 1008, { expected: conn.peerId, got: clip(f.id) })
    conn.peerBoot = f.boot
    conn.peerNonce = Buffer.from(f.nonce)
    conn.peerTls = f.tls
    conn.expect = 'ok'
    this.sendRaw(conn, { v: WS_PROTOCOL_VERSION, t: 'auth', proof: makeProof(this.authKey, 'dialer', transcript(this.hellosOf(conn))) })
  }

  /** Listener side, step 2: the dialer proves it knows the secret; then we prove it too. */
  private onAuth(conn: Conn, f: Record<string, unknown>): void {
    if (f.t !== 'auth') return this.refuse(conn, 'expected auth')
    const h = this.hellosOf(conn)
    const t = transcript(h)
    if (!proofOk(this.authKey, 'dialer', t, f.proof)) return this.refuse(conn, BAD_DIALER_PROOF)
    this.sendRaw(conn, { v: WS_PROTOCOL_VERSION, t: 'ok', proof: makeProof(this.authKey, 'listener', t) })
    if (conn.probe) {
      this.log.debug('discovery probe answered', { peer: conn.peerId, remote: conn.remote })
      this.markClosed(conn)
      void closeSocket(conn.ws, 1000, 'probe answered')
      return
    }
    conn.session = startSession(this.authKey, h, t, 'listener')
    this.authenticated(conn)
  }

  /** Dialer side, last step: the listener proves it knows the secret. */
  private onOk(conn: Conn, f: Record<string, unknown>): void {
    if (f.t !== 'ok') return this.refuse(conn, 'expected ok')
    const h = this.hellosOf(conn)
    const t = transcript(h)
    if (!proofOk(this.authKey, 'listener', t, f.proof)) return this.refuse(conn, BAD_LISTENER_PROOF)
    conn.session = startSession(this.authKey, h, t, 'dialer')
    this.authenticated(conn)
  }

  private authenticated(conn: Conn): void {
    const id = conn.peerId!
    conn.stopCounting?.()
    conn.stopCounting = undefined
    if (conn.timer) clearTimeout(conn.timer)
    conn.timer = undefined
    conn.state = 'open'
    conn.expect = 'data'
    let peer = this.peers.get(id)
    if (!peer) peer = this.newPeer(id)
    if (peer.dialing === conn) peer.dialing = undefined
    const existing = peer.conn
    if (existing && existing !== conn) {
      let keepNew: boolean
      if (existing.peerBoot !== conn.peerBoot) keepNew = true // the peer restarted; the old one is stale
      else if (existing.outbound === conn.outbound) keepNew = true
      else keepNew = conn.outbound === (this.nodeId < id) // keep the one dialed by the lower id
      const loser = keepNew ? existing : conn
      this.log.debug('duplicate connection; closing one', { peer: id, keptOutbound: !loser.outbound })
      // the peer restarted: what was sent to its old process may or may not have arrived
      if (existing.peerBoot !== conn.peerBoot) this.connectionLost(peer)
      if (keepNew) peer.conn = conn
      loser.state = 'retiring'
      if (loser.timer) clearTimeout(loser.timer)
      loser.timer = undefined
      void closeSocket(loser.ws, 1000, 'duplicate connection')
      if (!keepNew) return
    } else {
      peer.conn = conn
      this.log.info('peer connected', { peer: id, remote: conn.remote, outbound: conn.outbound })
    }
    peer.connected()
    this.tellConnection(id, true)
  }

  /**
   * The connection to `peer` was lost: what waits in its queue was meant for that connection, and
   * the channels are told it may never arrive (a call is then failed as "outcome unknown"), so it
   * must not arrive later, on the next connection, either. Raft sends what it still needs again.
   */
  private connectionLost(peer: Peer): void {
    peer.dropped += peer.out.length
    peer.dropQueue()
    this.tellConnection(peer.id, false)
  }

  /** Tell every channel that the connection to `peer` opened or was lost. */
  private tellConnection(peer: NodeId, up: boolean): void {
    for (const ch of this.channels.values()) {
      try {
        ch.connHandler?.(peer, up)
      } catch (err) {
        this.log.error('connection handler threw', { peer, err: String(err) })
      }
    }
  }

  private onData(conn: Conn, f: Record<string, unknown>): void {
    const from = conn.peerId!
    const b = f.b
    if (!Array.isArray(b) || f.t !== undefined) return this.refuse(conn, 'malformed data frame', 1007)
    for (const item of b) {
      if (!Array.isArray(item) || item.length !== 2 || typeof item[0] !== 'string') {
        return this.refuse(conn, 'malformed data frame', 1007)
      }
    }
    const peer = this.peers.get(from)
    if (peer) peer.received += b.length
    for (const [group, msg] of b as Batch) {
      if (conn.state === 'closed' || this.closed) return
      const ch = this.channels.get(group)
      if (!ch) {
        // keyed by peer, not group: a peer naming a new group in every message gets one line a second
        this.limitedWarn(`group:${from}`, 'message for unknown group dropped', { peer: from, group: clip(group) })
        continue
      }
      if (!ch.handler) {
        // the group is opened but its owner is still starting (every normal start sees a few): not worth a warning
        this.log.debug('message for a group still starting dropped', { peer: from, group: clip(group) })
        continue
      }
      try {
        ch.handler(from, msg)
      } catch (e) {
        this.limitedWarn(`handler:${group}`, 'message handler threw', { peer: from, group, error: errMessage(e) })
      }
    }
  }

  /** Warn at most once per second per `key`, reporting how many lines were suppressed. */
  private limitedWarn(key: string, msg: string, fields: Record<string, unknown>): void {
    this.limited.warn(key, msg, fields)
  }
}
