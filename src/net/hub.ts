/**
 * The network transport of Sworm: one {@link WsHub} per process listens on one port and carries
 * the messages of several Raft groups ("channels") to peer processes over WebSockets.
 *
 * Wire protocol, version 2 (every frame is a binary WebSocket message holding one msgpack value):
 *
 * - Handshake (mutual HMAC-SHA256 challenge-response over the cluster secret; the dialer proves
 *   first, so a stranger who connects learns nothing that depends on the secret):
 *   1. dialer → listener: `{ v: 2, t: 'hello', id, boot, nonce, tls, probe? }`
 *   2. listener → dialer: `{ v: 2, t: 'challenge', id, boot, nonce, tls }` (no proof)
 *   3. dialer → listener: `{ v: 2, t: 'auth', proof }` with the dialer's proof
 *   4. listener → dialer: `{ v: 2, t: 'ok', proof }` with the listener's proof, sent only once
 *      the dialer's proof checked out; the dialer closes the connection unless it checks out too.
 *
 *   Keys: `K = HKDF-SHA256(secret as UTF-8, salt 'sworm-ws', info 'sworm-ws v2 auth', 32 bytes)`.
 *   The transcript `T` is `JSON.stringify(['sworm-ws', 2, dialerId, listenerId, dialerBoot,
 *   listenerBoot, hex(dialerNonce), hex(listenerNonce), dialerTls, listenerTls, probe])`, and a
 *   proof is `HMAC-SHA256(K, role + ' ' + T)` with role `dialer` or `listener`. Nonces are 32 fresh
 *   random bytes from each side, so a recorded handshake cannot be replayed. `boot` is a random id
 *   of the hub instance, used to recognise a restarted peer. `tls` says whether that side's socket
 *   is TLS (the dialer dialed `wss://`; the listener's socket is encrypted). `probe` (see
 *   {@link WsHub.discover}) asks the listener to close the connection after the handshake.
 * - Data: `{ v: 2, b: [[group, msg], [group, msg], ...] }`, one frame per peer per event-loop
 *   turn (messages are batched).
 * - Integrity: unless both sides are TLS, every data frame is followed by a 16-byte tag,
 *   `HMAC-SHA256(key, uint64be(seq) ‖ frame)` truncated to 16 bytes, where `seq` counts the data
 *   frames sent in that direction from 0 and `key` is that direction's half of
 *   `HKDF-SHA256(K, salt dialerNonce ‖ listenerNonce, info 'sworm-ws v2 session' ‖ SHA-256(T), 64)`
 *   (the first 32 bytes dialer → listener, the last 32 listener → dialer). A frame injected,
 *   replayed, reordered or altered on the path fails its tag and closes the connection. Over TLS
 *   on both sides there is no tag: TLS already protects every record.
 *
 * Limits: until a connection is authenticated any other frame closes it, a frame may not exceed
 * 1 KiB and the listener reads at most 4 KiB from the dialer (larger is refused before being
 * buffered or decoded). Every frame, before it is decoded, is checked (see
 * {@link msgpackCost}) to cost at most 16 times its size plus 64 KiB of heap once decoded; the
 * sender drops a message that would not pass, like one over `maxFrameBytes`.
 *
 * The secret (see {@link secretProblem}) must have at least 32 characters, 8 of them distinct:
 * e.g. `openssl rand -hex 16` (128 random bits). Whoever records a handshake can test guesses of
 * the secret against it offline; only a random secret makes that hopeless.
 * @module
 */

import { createHash, createHmac, createSecretKey, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto'
import * as http from 'node:http'
import * as https from 'node:https'
import type { AddressInfo } from 'node:net'
import { Packr } from 'msgpackr'
import { WebSocket, WebSocketServer, type RawData } from 'ws'
import { SwormError } from '../raft/errors.js'
import { MAX_COST_PER_BYTE, msgpackCost } from './msgpack-guard.js'
import { RateLimitedLog, clip } from '../raft/rate-limited-log.js'
import { silentLogger, type Logger, type NodeId, type Transport } from '../raft/types.js'

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
   * {@link secretProblem}); e.g. `openssl rand -hex 16`.
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
  /** Messages dropped so far (queue overflow, back-pressure, oversized, blocked). */
  dropped: number
  /** Messages received from the peer so far (including those dropped by {@link WsHub.blockPeer}). */
  received: number
}

/** Protocol version spoken by this hub (2: the dialer proves first; frames carry a tag). */
export const WS_PROTOCOL_VERSION = 2

const DEFAULT_MAX_FRAME = 64 * 1024 * 1024
const DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
const MAX_QUEUE = 1000
const HANDSHAKE_TIMEOUT_MS = 5000
const BACKOFF_MIN_MS = 50
const BACKOFF_MAX_MS = 2000
const PING_INTERVAL_MS = 15000
const MAX_PENDING_HANDSHAKES = 256
const CLOSE_GRACE_MS = 500
const NONCE_BYTES = 32
const MAX_ID_LENGTH = 256
/** Largest frame accepted before the handshake completes. */
const PRE_AUTH_MAX_FRAME = 1024
/** Most bytes a listener reads from a dialer before the handshake completes. */
const PRE_AUTH_MAX_BYTES = 4096
/** Bytes of the per-frame tag. */
const TAG_BYTES = 16
/** A frame may cost at most DECODE_RATIO times its size plus DECODE_SLACK bytes once decoded. */
const DECODE_RATIO = 16
const DECODE_SLACK = 64 * 1024
/**
 * Frames up to this size pass the decode check whatever they hold (431 bytes), and this hub's
 * encoder emits none of the types the check refuses: the sender checks only larger frames.
 */
const ALWAYS_CHEAP_BYTES = Math.floor(DECODE_SLACK / (MAX_COST_PER_BYTE - DECODE_RATIO))
const SECRET_MIN_LENGTH = 32
const SECRET_MIN_DISTINCT = 8
const AUTH_KEY_SALT = 'sworm-ws'
const AUTH_KEY_INFO = `sworm-ws v${WS_PROTOCOL_VERSION} auth`
const SESSION_INFO = `sworm-ws v${WS_PROTOCOL_VERSION} session`
const BAD_DIALER_PROOF = "authentication failed: the peer's proof does not match; check that every node uses the same secret"
const BAD_LISTENER_PROOF = "authentication failed: the listener's proof does not match; check that every node uses the same secret"
const BAD_TAG = 'frame failed its integrity check (forged, replayed or reordered on the path)'

type Batch = [group: string, msg: unknown][]

/**
 * `retiring`: an authenticated duplicate being closed; frames the peer sent on it before it
 * learned of the duplicate are still delivered, but nothing is sent on it.
 */
type ConnState = 'handshake' | 'open' | 'retiring' | 'closed'

/** One WebSocket, inbound or outbound, with its handshake state. */
interface Conn {
  ws: WebSocket
  /** True when this hub dialed it. */
  outbound: boolean
  /** For outbound connections: who we expect to reach. After auth: who it is. */
  peerId: string | undefined
  /** The peer hub's instance id (after hello/challenge). */
  peerBoot: string | undefined
  state: ConnState
  /** Handshake step the connection is waiting for. */
  expect: 'hello' | 'challenge' | 'auth' | 'ok' | 'data'
  nonce: Buffer
  peerNonce: Buffer | undefined
  /** Whether this side of the socket is TLS, and (from the handshake) the peer's side. */
  tls: boolean
  peerTls: boolean
  /** A discovery probe (closed by the listener after the handshake). */
  probe: boolean
  /** Whether data frames carry a tag (unless both sides are TLS), with the session's keys. */
  mac: boolean
  sendKey: KeyObject | undefined
  recvKey: KeyObject | undefined
  sendSeq: number
  recvSeq: number
  /** Stops counting the bytes read before authentication (inbound connections). */
  stopCounting: (() => void) | undefined
  remote: string
  timer: NodeJS.Timeout | undefined
  alive: boolean
}

interface Peer {
  id: string
  conn: Conn | undefined
  dialing: Conn | undefined
  out: Batch
  attempts: number
  retryTimer: NodeJS.Timeout | undefined
  dropped: number
  received: number
}

interface Channel {
  group: string
  handler: ((from: NodeId, msg: unknown) => void) | undefined
  peers: Record<NodeId, string>
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)
}

function isId(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_ID_LENGTH
}

function isNonce(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array && v.length === NONCE_BYTES
}

function isBool(v: unknown): v is boolean {
  return v === true || v === false
}

/**
 * Why `secret` cannot be a cluster secret, or `undefined` if it can. The rule (at least 128 bits of
 * entropy, as far as a rule can tell): a string of at least 32 characters with at least 8 distinct
 * ones, e.g. 16 random bytes in hex (`openssl rand -hex 16`) or 24 in base64
 * (`openssl rand -base64 24`).
 * @param secret - the candidate
 * @returns a sentence fragment naming the rule (e.g. "must have at least 32 characters, not 15
 * (...)"), or `undefined`
 */
export function secretProblem(secret: unknown): string | undefined {
  const why = 'at least 128 bits of entropy; e.g. the output of `openssl rand -hex 16`'
  if (typeof secret !== 'string') return `must be a string of at least ${SECRET_MIN_LENGTH} characters (${why})`
  const chars = [...secret]
  if (chars.length < SECRET_MIN_LENGTH) return `must have at least ${SECRET_MIN_LENGTH} characters, not ${chars.length} (${why})`
  const distinct = new Set(chars).size
  if (distinct < SECRET_MIN_DISTINCT) return `must have at least ${SECRET_MIN_DISTINCT} distinct characters, not ${distinct} (${why})`
  return undefined
}

/** The handshake transcript (see the module doc). */
function transcript(
  dialerId: string,
  listenerId: string,
  dialerBoot: string,
  listenerBoot: string,
  dialerNonce: Uint8Array,
  listenerNonce: Uint8Array,
  dialerTls: boolean,
  listenerTls: boolean,
  probe: boolean,
): string {
  const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
  return JSON.stringify(['sworm-ws', WS_PROTOCOL_VERSION, dialerId, listenerId, dialerBoot, listenerBoot, hex(dialerNonce), hex(listenerNonce), dialerTls, listenerTls, probe])
}

const seqBytes = Buffer.alloc(8)

/** The tag of data frame number `seq` (see the module doc). */
function frameTag(key: KeyObject, seq: number, body: Uint8Array): Buffer {
  seqBytes.writeUInt32BE(Math.floor(seq / 0x100000000), 0)
  seqBytes.writeUInt32BE(seq >>> 0, 4)
  return createHmac('sha256', key).update(seqBytes).update(body).digest().subarray(0, TAG_BYTES)
}

/** Why a frame must not be decoded, or `undefined` (see {@link msgpackCost}). */
function decodeProblem(frame: Uint8Array): { reason: string; code: number; why: string } | undefined {
  const cost = msgpackCost(frame, DECODE_RATIO * frame.length + DECODE_SLACK)
  if (typeof cost === 'number') return undefined
  if (cost === 'over budget' || cost === 'too deep') return { reason: 'frame would decode too large', code: 1009, why: cost }
  return { reason: 'undecodable frame', code: 1007, why: cost }
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}

/** The host part of `host:port`. */
function hostOf(remote: string): string {
  return remote.replace(/:[^:]*$/, '')
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
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
  private readonly maxBuffered: number
  private readonly handshakeTimeout: number
  private readonly maxPending: number
  private readonly tls: WsHubOptions['tls']
  private readonly secure: boolean
  private readonly listenHost: string
  private readonly listenPort: number
  private readonly boot = randomBytes(8).toString('hex')
  private readonly packr = new Packr({ useRecords: false })

  private server: http.Server | https.Server | undefined
  private wss: WebSocketServer | undefined
  private addr: { host: string; port: number } | undefined
  private started = false
  private closed = false

  private readonly channels = new Map<string, Channel>()
  private readonly peers = new Map<string, Peer>()
  /** Union of the peer addresses of every channel. */
  private addresses = new Map<string, string>()
  private readonly conns = new Set<Conn>()
  private readonly blocked = new Set<string>()
  private readonly flushQueue = new Set<Peer>()
  private flushImmediate: NodeJS.Immediate | undefined
  private pingTimer: NodeJS.Timeout | undefined
  private readonly limited: RateLimitedLog

  /**
   * Create a hub (it does not listen until {@link WsHub.start}).
   * @param opts - see {@link WsHubOptions}
   * @throws TypeError when the secret breaks the rule of {@link secretProblem}
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
    this.authKey = Buffer.from(hkdfSync('sha256', Buffer.from(opts.secret, 'utf8'), AUTH_KEY_SALT, AUTH_KEY_INFO, 32))
    this.log = opts.logger ?? silentLogger
    this.maxFrame = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME
    this.maxBuffered = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED
    this.handshakeTimeout = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS
    this.maxPending = opts.maxPendingHandshakes ?? MAX_PENDING_HANDSHAKES
    this.limited = new RateLimitedLog(this.log)
    this.tls = opts.tls
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
    const onRequest = (_req: http.IncomingMessage, res: http.ServerResponse): void => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' })
      res.end('upgrade required\n')
    }
    // A peer must send its whole upgrade request (and finish TLS) within the handshake timeout;
    // idle and half-sent requests are cut then, not after Node's default minute.
    const timeouts: http.ServerOptions = {
      headersTimeout: this.handshakeTimeout,
      requestTimeout: this.handshakeTimeout,
      connectionsCheckingInterval: Math.min(1000, Math.max(50, this.handshakeTimeout / 2)),
    }
    const server = this.secure
      ? https.createServer(
          {
            ...timeouts,
            handshakeTimeout: this.handshakeTimeout,
            key: this.tls!.key,
            cert: this.tls!.cert,
            ...(this.tls!.ca !== undefined
              ? { ca: this.tls!.ca, requestCert: true, rejectUnauthorized: this.tls!.rejectUnauthorized ?? true }
              : {}),
          },
          onRequest,
        )
      : http.createServer(timeouts, onRequest)
    this.server = server
    const wss = new WebSocketServer({ server, maxPayload: this.maxFrame, perMessageDeflate: false })
    this.wss = wss
    wss.on('error', (e) => this.log.warn('ws server error', { error: errMessage(e) }))
    wss.on('connection', (ws, req) => this.onIncoming(ws, req))
    server.on('clientError', (e, socket) => {
      this.limitedWarn('clientError', 'bad client request', { error: errMessage(e) })
      socket.destroy()
    })
    server.on('tlsClientError', (e: Error) => {
      this.limitedWarn('tlsClientError', 'TLS handshake failed', { error: errMessage(e) })
    })
    return new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => {
        server.off('listening', onListening)
        reject(e)
      }
      const onListening = (): void => {
        server.off('error', onError)
        server.on('error', (err) => this.log.error('server error', { error: errMessage(err) }))
        if (!this.closed) {
          this.pingTimer = setInterval(() => this.pingAll(), PING_INTERVAL_MS)
          this.pingTimer.unref()
        }
        const a = server.address() as AddressInfo
        this.addr = { host: a.address, port: a.port }
        this.log.info('listening', { node: this.nodeId, host: a.address, port: a.port, tls: this.secure })
        resolve()
      }
      server.once('error', onError)
      server.once('listening', onListening)
      server.listen(this.listenPort, this.listenHost)
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
    const ch: Channel = { group, handler: undefined, peers: {} }
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
        ws = new WebSocket(url, {
          maxPayload: PRE_AUTH_MAX_FRAME,
          perMessageDeflate: false,
          handshakeTimeout: timeoutMs,
          ...(this.tls
            ? { key: this.tls.key, cert: this.tls.cert, ...(this.tls.ca !== undefined ? { ca: this.tls.ca } : {}), rejectUnauthorized: this.tls.rejectUnauthorized ?? true }
            : {}),
        })
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
          if (f.t !== 'challenge' || !isId(f.id) || !isId(f.boot) || !isNonce(f.nonce) || !isBool(f.tls)) return bad()
          id = f.id
          t = transcript(this.nodeId, f.id, this.boot, f.boot, nonce, f.nonce, tls, f.tls, true)
          ws.send(this.packr.pack({ v: WS_PROTOCOL_VERSION, t: 'auth', proof: this.proof('dialer', t) }), { binary: true })
        } else {
          if (f.t !== 'ok') return bad()
          if (!WsHub.proofOk(this.proof('listener', t), f.proof)) return finish(new SwormError('DISCOVERY', `${url}: ${BAD_LISTENER_PROOF}`))
          finish(undefined)
        }
      })
    })
  }

  /**
   * Test hook for partitions: while `blocked`, every frame to and from peer `id` is dropped (the
   * connection itself stays up).
   */
  blockPeer(id: string, blocked: boolean): void {
    if (blocked) {
      this.blocked.add(id)
      const p = this.peers.get(id)
      if (p) {
        p.dropped += p.out.length
        p.out = []
      }
    } else {
      this.blocked.delete(id)
    }
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
    if (this.flushImmediate) clearImmediate(this.flushImmediate)
    this.flushImmediate = undefined
    this.flushQueue.clear()
    if (this.pingTimer) clearInterval(this.pingTimer)
    this.pingTimer = undefined
    for (const p of this.peers.values()) {
      if (p.retryTimer) clearTimeout(p.retryTimer)
      p.retryTimer = undefined
      p.out = []
    }
    const waits: Promise<void>[] = []
    for (const c of this.conns) {
      if (c.timer) clearTimeout(c.timer)
      c.timer = undefined
      waits.push(this.closeSocket(c.ws, 1001, 'shutting down'))
    }
    await Promise.all(waits)
    this.conns.clear()
    this.peers.clear()
    this.channels.clear()
    if (this.wss) {
      const wss = this.wss
      await new Promise<void>((resolve) => wss.close(() => resolve()))
    }
    if (this.server) {
      const server = this.server
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
    this.log.info('hub closed', { node: this.nodeId })
  }

  // ---------------------------------------------------------------------------------------------
  // Sending
  // ---------------------------------------------------------------------------------------------

  private send(group: string, to: NodeId, msg: unknown): void {
    try {
      if (this.closed || to === this.nodeId) return
      if (this.blocked.has(to)) {
        const p = this.peers.get(to)
        if (p) p.dropped++
        return
      }
      let peer = this.peers.get(to)
      if (!peer) {
        // Unknown peers (no address, no connection) drop the message.
        if (!this.addresses.has(to)) return
        peer = this.newPeer(to)
      }
      const conn = peer.conn
      if (conn && conn.ws.bufferedAmount > this.maxBuffered) {
        peer.dropped++
        this.limitedWarn(`backpressure:${to}`, 'peer connection is congested; dropping messages', {
          peer: to,
          buffered: conn.ws.bufferedAmount,
          dropped: peer.dropped,
        })
        return
      }
      peer.out.push([group, msg])
      if (peer.out.length > MAX_QUEUE) {
        peer.out.shift()
        peer.dropped++
        this.limitedWarn(`overflow:${to}`, 'send queue full; dropping oldest message', { peer: to, dropped: peer.dropped })
      }
      if (conn) this.scheduleFlush(peer)
      else this.dial(peer)
    } catch (e) {
      this.log.error('send failed', { peer: to, error: errMessage(e) })
    }
  }

  private newPeer(id: string): Peer {
    const p: Peer = { id, conn: undefined, dialing: undefined, out: [], attempts: 0, retryTimer: undefined, dropped: 0, received: 0 }
    this.peers.set(id, p)
    return p
  }

  private scheduleFlush(peer: Peer): void {
    this.flushQueue.add(peer)
    if (this.flushImmediate) return
    this.flushImmediate = setImmediate(() => {
      this.flushImmediate = undefined
      const peers = [...this.flushQueue]
      this.flushQueue.clear()
      for (const p of peers) this.flush(p)
    })
  }

  private flush(peer: Peer): void {
    const conn = peer.conn
    if (!conn || peer.out.length === 0 || conn.ws.readyState !== WebSocket.OPEN) return
    const batch = peer.out
    peer.out = []
    try {
      this.sendBatch(peer, conn, batch)
    } catch (e) {
      peer.dropped += batch.length
      this.limitedWarn(`encode:${peer.id}`, 'could not send messages', { peer: peer.id, error: errMessage(e) })
    }
  }

  /**
   * Encode and send `batch`, splitting it when the frame would exceed the frame limit or would be
   * refused by the peer as too costly to decode.
   */
  private sendBatch(peer: Peer, conn: Conn, batch: Batch): void {
    let frame: Buffer
    try {
      frame = this.packr.pack({ v: WS_PROTOCOL_VERSION, b: batch })
    } catch (e) {
      if (batch.length === 1) {
        peer.dropped++
        this.limitedWarn(`encode:${peer.id}`, 'message cannot be encoded; dropped', {
          peer: peer.id,
          group: batch[0]![0],
          error: errMessage(e),
        })
        return
      }
      frame = Buffer.alloc(0)
    }
    const room = this.maxFrame - (conn.mac ? TAG_BYTES : 0)
    const costly = frame.length > ALWAYS_CHEAP_BYTES && frame.length <= room ? decodeProblem(frame) : undefined
    if (costly) {
      if (batch.length === 1) {
        peer.dropped++
        this.limitedWarn(`costly:${peer.id}`, `message would cost more than ${DECODE_RATIO} times its size to decode; dropped`, {
          peer: peer.id,
          group: batch[0]![0],
          bytes: frame.length,
          why: costly.why,
        })
        return
      }
      frame = Buffer.alloc(0)
    }
    if (frame.length === 0 || frame.length > room) {
      if (batch.length === 1) {
        peer.dropped++
        this.limitedWarn(`oversize:${peer.id}`, 'message exceeds maxFrameBytes; dropped', {
          peer: peer.id,
          group: batch[0]![0],
          bytes: frame.length,
          max: this.maxFrame,
        })
        return
      }
      const mid = batch.length >> 1
      this.sendBatch(peer, conn, batch.slice(0, mid))
      this.sendBatch(peer, conn, batch.slice(mid))
      return
    }
    if (conn.mac) frame = Buffer.concat([frame, frameTag(conn.sendKey!, conn.sendSeq++, frame)])
    conn.ws.send(frame, { binary: true }, (err) => {
      if (err) this.log.debug('frame not sent', { peer: peer.id, error: errMessage(err) })
    })
  }

  // ---------------------------------------------------------------------------------------------
  // Peers and dialing
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
      if (p.retryTimer) clearTimeout(p.retryTimer)
      p.retryTimer = undefined
      if (!p.conn) {
        p.out = []
        if (!p.dialing) this.peers.delete(p.id)
      }
    }
  }

  private dial(peer: Peer): void {
    if (this.closed || peer.conn || peer.dialing || peer.retryTimer) return
    const url = this.addresses.get(peer.id)
    if (url === undefined) return
    let ws: WebSocket
    try {
      ws = new WebSocket(url, {
        maxPayload: this.maxFrame,
        perMessageDeflate: false,
        handshakeTimeout: this.handshakeTimeout,
        ...(this.tls
          ? {
              key: this.tls.key,
              cert: this.tls.cert,
              ...(this.tls.ca !== undefined ? { ca: this.tls.ca } : {}),
              rejectUnauthorized: this.tls.rejectUnauthorized ?? true,
            }
          : {}),
      })
    } catch (e) {
      this.limitedWarn(`dial:${peer.id}`, 'cannot dial peer', { peer: peer.id, url, error: errMessage(e) })
      this.scheduleRetry(peer)
      return
    }
    const conn = this.track(ws, true, url, url.startsWith('wss:'))
    conn.peerId = peer.id
    peer.dialing = conn
    ws.on('open', () => {
      if (this.closed) return
      this.sendRaw(conn, { v: WS_PROTOCOL_VERSION, t: 'hello', id: this.nodeId, boot: this.boot, nonce: conn.nonce, tls: conn.tls })
    })
    ws.on('unexpected-response', (_req, res) => {
      this.limitedWarn(`dial:${peer.id}`, 'peer refused the upgrade', { peer: peer.id, url, status: res.statusCode })
      res.resume()
      ws.terminate()
    })
  }

  private scheduleRetry(peer: Peer): void {
    if (this.closed || peer.conn || peer.dialing || peer.retryTimer) return
    if (!this.addresses.has(peer.id)) {
      if (!peer.conn && !peer.dialing) {
        peer.out = []
        this.peers.delete(peer.id)
      }
      return
    }
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(peer.attempts, 10))
    peer.attempts++
    const delay = base / 2 + Math.random() * (base / 2)
    peer.retryTimer = setTimeout(() => {
      peer.retryTimer = undefined
      if (this.peers.get(peer.id) === peer) this.dial(peer)
    }, delay)
    peer.retryTimer.unref()
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
    // Until the dialer has proved itself, read at most PRE_AUTH_MAX_BYTES from it: this listener
    // runs after ws's own, so ws holds at most one more chunk of a frame when it fires.
    let seen = 0
    const count = (chunk: Buffer): void => {
      seen += chunk.length
      if (seen <= PRE_AUTH_MAX_BYTES) return
      if (conn.state === 'handshake') {
        this.refuse(conn, 'too much data before authentication', 1009, { bytes: seen, max: PRE_AUTH_MAX_BYTES })
      }
      sock.pause() // read no more; the socket is closed after the close grace
    }
    sock.on('data', count)
    conn.stopCounting = () => sock.off('data', count)
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
      mac: true,
      sendKey: undefined,
      recvKey: undefined,
      sendSeq: 0,
      recvSeq: 0,
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
    void this.closeSocket(conn.ws, code, reason)
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
      if (!peer.conn) this.scheduleRetry(peer)
    }
    if (peer.conn === conn) {
      peer.conn = undefined
      if (wasOpen) this.log.info('peer disconnected', { peer: id, remote: conn.remote })
      if (this.addresses.has(id)) {
        peer.attempts = 0
        this.scheduleRetry(peer)
      } else if (!peer.dialing) {
        peer.dropped += peer.out.length
        peer.out = []
        this.peers.delete(id)
      }
    }
  }

  /** Close a socket cleanly, terminating it if the close handshake does not finish quickly. */
  private closeSocket(ws: WebSocket, code: number, reason: string): Promise<void> {
    if (ws.readyState === WebSocket.CLOSED) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate()
      }, CLOSE_GRACE_MS)
      timer.unref()
      ws.once('close', () => {
        clearTimeout(timer)
        resolve()
      })
      try {
        if (ws.readyState === WebSocket.CONNECTING) ws.terminate()
        else ws.close(code, reason)
      } catch {
        ws.terminate()
      }
    })
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

  /** A handshake proof (see the module doc). */
  private proof(role: 'dialer' | 'listener', t: string): Buffer {
    return createHmac('sha256', this.authKey).update(`${role} ${t}`).digest()
  }

  private static proofOk(expected: Buffer, got: unknown): boolean {
    return got instanceof Uint8Array && got.length === expected.length && timingSafeEqual(expected, got)
  }

  /** The transcript of `conn`'s handshake, once both hello and challenge are known. */
  private transcriptOf(conn: Conn): string {
    const peerId = conn.peerId!
    const peerBoot = conn.peerBoot!
    const peerNonce = conn.peerNonce!
    return conn.outbound
      ? transcript(this.nodeId, peerId, this.boot, peerBoot, conn.nonce, peerNonce, conn.tls, conn.peerTls, conn.probe)
      : transcript(peerId, this.nodeId, peerBoot, this.boot, peerNonce, conn.nonce, conn.peerTls, conn.tls, conn.probe)
  }

  /** Derive the connection's frame keys (unless both sides are TLS: then frames carry no tag). */
  private startSession(conn: Conn, t: string): void {
    conn.mac = !(conn.tls && conn.peerTls)
    if (!conn.mac) return
    const [dialerNonce, listenerNonce] = conn.outbound ? [conn.nonce, conn.peerNonce!] : [conn.peerNonce!, conn.nonce]
    const info = Buffer.concat([Buffer.from(SESSION_INFO), createHash('sha256').update(t).digest()])
    const keys = Buffer.from(hkdfSync('sha256', this.authKey, Buffer.concat([dialerNonce, listenerNonce]), info, 64))
    const toListener = createSecretKey(keys.subarray(0, 32))
    const toDialer = createSecretKey(keys.subarray(32))
    conn.sendKey = conn.outbound ? toListener : toDialer
    conn.recvKey = conn.outbound ? toDialer : toListener
    conn.sendSeq = 0
    conn.recvSeq = 0
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
    } else if (conn.mac) {
      const body = buf.length >= TAG_BYTES ? buf.subarray(0, buf.length - TAG_BYTES) : undefined
      if (!body || !timingSafeEqual(frameTag(conn.recvKey!, conn.recvSeq, body), buf.subarray(body.length))) {
        this.refuse(conn, BAD_TAG, 1008, { seq: conn.recvSeq, bytes: buf.length })
        return
      }
      conn.recvSeq++
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
    if (f.t !== 'hello' || !isId(f.id) || !isNonce(f.nonce) || !isId(f.boot) || !isBool(f.tls) || (f.probe !== undefined && !isBool(f.probe))) {
      return this.refuse(conn, 'bad hello')
    }
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
    if (f.t !== 'challenge' || !isId(f.id) || !isNonce(f.nonce) || !isId(f.boot) || !isBool(f.tls)) {
      return this.refuse(conn, 'bad challenge')
    }
    if (f.id !== conn.peerId) return this.refuse(conn, 'unexpected peer id', 1008, { expected: conn.peerId, got: clip(f.id) })
    conn.peerBoot = f.boot
    conn.peerNonce = Buffer.from(f.nonce)
    conn.peerTls = f.tls
    conn.expect = 'ok'
    this.sendRaw(conn, { v: WS_PROTOCOL_VERSION, t: 'auth', proof: this.proof('dialer', this.transcriptOf(conn)) })
  }

  /** Listener side, step 2: the dialer proves it knows the secret; then we prove it too. */
  private onAuth(conn: Conn, f: Record<string, unknown>): void {
    if (f.t !== 'auth') return this.refuse(conn, 'expected auth')
    const t = this.transcriptOf(conn)
    if (!WsHub.proofOk(this.proof('dialer', t), f.proof)) return this.refuse(conn, BAD_DIALER_PROOF)
    this.sendRaw(conn, { v: WS_PROTOCOL_VERSION, t: 'ok', proof: this.proof('listener', t) })
    if (conn.probe) {
      this.log.debug('discovery probe answered', { peer: conn.peerId, remote: conn.remote })
      this.markClosed(conn)
      void this.closeSocket(conn.ws, 1000, 'probe answered')
      return
    }
    this.startSession(conn, t)
    this.authenticated(conn)
  }

  /** Dialer side, last step: the listener proves it knows the secret. */
  private onOk(conn: Conn, f: Record<string, unknown>): void {
    if (f.t !== 'ok') return this.refuse(conn, 'expected ok')
    const t = this.transcriptOf(conn)
    if (!WsHub.proofOk(this.proof('listener', t), f.proof)) return this.refuse(conn, BAD_LISTENER_PROOF)
    this.startSession(conn, t)
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
      if (keepNew) peer.conn = conn
      loser.state = 'retiring'
      if (loser.timer) clearTimeout(loser.timer)
      loser.timer = undefined
      void this.closeSocket(loser.ws, 1000, 'duplicate connection')
      if (!keepNew) return
    } else {
      peer.conn = conn
      this.log.info('peer connected', { peer: id, remote: conn.remote, outbound: conn.outbound })
    }
    peer.attempts = 0
    if (peer.retryTimer) {
      clearTimeout(peer.retryTimer)
      peer.retryTimer = undefined
    }
    if (peer.out.length > 0) this.scheduleFlush(peer)
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
    if (this.blocked.has(from)) return
    for (const [group, msg] of b as Batch) {
      if (conn.state === 'closed' || this.closed) return
      const ch = this.channels.get(group)
      if (!ch || !ch.handler) {
        // keyed by peer, not group: a peer naming a new group in every message gets one line a second
        this.limitedWarn(`group:${from}`, 'message for unknown group dropped', { peer: from, group: clip(group) })
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
