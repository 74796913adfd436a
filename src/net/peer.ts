/**
 * One peer of a hub: the connection to it, the queue of messages waiting for that connection,
 * their batching into frames, and dialing it again with backoff when the connection drops.
 * @module
 */

import type { Packr } from 'msgpackr'
import { WebSocket } from 'ws'
import type { Logger } from '../raft/types.js'
import { backoffDelay } from '../util/retry.js'
import { TAG_BYTES, WS_PROTOCOL_VERSION, type FrameSession } from './handshake.js'
import {
  ALWAYS_CHEAP_BYTES,
  DECODE_RATIO,
  MAX_QUEUE,
  RECONNECT_BACKOFF,
  decodeProblem,
  dialOptions,
  errMessage,
  type Batch,
  type TlsMaterial,
} from './wire.js'

/**
 * `retiring`: an authenticated duplicate being closed; frames the peer sent on it before it
 * learned of the duplicate are still delivered, but nothing is sent on it.
 */
export type ConnState = 'handshake' | 'open' | 'retiring' | 'closed'

/** One WebSocket, inbound or outbound, with its handshake state. */
export interface Conn {
  /** The socket. */
  ws: WebSocket
  /** True when this hub dialed it. */
  outbound: boolean
  /** For outbound connections: who we expect to reach. After auth: who it is. */
  peerId: string | undefined
  /** The peer hub's instance id (after hello/challenge). */
  peerBoot: string | undefined
  /** Where the connection stands (see {@link ConnState}). */
  state: ConnState
  /** Handshake step the connection is waiting for. */
  expect: 'hello' | 'challenge' | 'auth' | 'ok' | 'data'
  /** This side's handshake nonce. */
  nonce: Buffer
  /** The peer's handshake nonce (after hello/challenge). */
  peerNonce: Buffer | undefined
  /** Whether this side of the socket is TLS. */
  tls: boolean
  /** Whether the peer's side of the socket is TLS (from its hello/challenge). */
  peerTls: boolean
  /** A discovery probe (closed by the listener after the handshake). */
  probe: boolean
  /** Once authenticated: the tags of data frames, or `undefined` when both sides are TLS. */
  session: FrameSession | undefined
  /** Stops counting the bytes read before authentication (inbound connections). */
  stopCounting: (() => void) | undefined
  /** The peer's address: `host:port` (inbound) or the URL dialed (outbound). */
  remote: string
  /** The handshake timeout, until authenticated. */
  timer: NodeJS.Timeout | undefined
  /** Whether the peer answered the last ping. */
  alive: boolean
}

/** What a {@link Peer} needs of its hub. */
export interface PeerHost {
  /** This node's id. */
  readonly nodeId: string
  /** This hub instance's random id. */
  readonly boot: string
  /** The hub's codec. */
  readonly packr: Packr
  /** Where to log. */
  readonly log: Logger
  /** Largest frame, in bytes. */
  readonly maxFrame: number
  /** Buffered bytes of a connection above which messages are dropped. */
  readonly maxBuffered: number
  /** Time a connection has to authenticate. */
  readonly handshakeTimeout: number
  /** TLS material presented when dialing, if any. */
  readonly tls: TlsMaterial | undefined
  /** Whether the hub is closed. */
  isClosed(): boolean
  /** The address peer `id` is known at, if any channel knows it. */
  addressOf(id: string): string | undefined
  /** Whether `peer` is still the hub's peer of its id. */
  isCurrent(peer: Peer): boolean
  /** Forget `peer` (no address, no connection). */
  forget(peer: Peer): void
  /** Register a new socket and its handlers. */
  track(ws: WebSocket, outbound: boolean, remote: string, tls: boolean): Conn
  /** Send a handshake frame. */
  sendRaw(conn: Conn, obj: unknown): void
  /** Flush `peer`'s queue at the end of this event-loop turn. */
  scheduleFlush(peer: Peer): void
  /** Warn at most once per second per `key`. */
  limitedWarn(key: string, msg: string, fields: Record<string, unknown>): void
}

/** Binary payload sent to one peer in one turn at most (one message at least; see {@link Peer.flush}). */
export const FLUSH_TURN_BYTES = 1024 * 1024

/** Bytes of a message's binaries: its own `Uint8Array` fields, and those in its array fields. */
function payloadBytes(msg: unknown): number {
  if (typeof msg !== 'object' || msg === null) return 0
  if (ArrayBuffer.isView(msg)) return msg.byteLength
  if (Array.isArray(msg)) return 0 // (not walked: a message is an object; an array of many items would cost a walk per flush)
  let n = 0
  for (const k in msg) {
    const v = (msg as Record<string, unknown>)[k]
    if (v instanceof Uint8Array) n += v.byteLength
    else if (Array.isArray(v) && v.length > 0 && v[0] instanceof Uint8Array) for (const x of v) if (x instanceof Uint8Array) n += x.byteLength
  }
  return n
}

/** How many of the first messages of `batch` to send this turn (see {@link FLUSH_TURN_BYTES}). */
function withinTurnBytes(batch: Batch): number {
  let bytes = 0
  for (let i = 0; i < batch.length; i++) {
    bytes += payloadBytes(batch[i]![1])
    if (bytes > FLUSH_TURN_BYTES && i > 0) return i
  }
  return batch.length
}

/** One peer: its connection (or the one being dialed), its queue, its counters and its redial timer. */
export class Peer {
  /** The authenticated connection in use, if any. */
  conn: Conn | undefined = undefined
  /** The outbound connection in handshake, if any. */
  dialing: Conn | undefined = undefined
  /** Messages waiting to be sent. */
  out: Batch = []
  /** Failed dials since the last connection. */
  attempts = 0
  /** The timer of the next dial. */
  retryTimer: NodeJS.Timeout | undefined = undefined
  /** Messages dropped so far. */
  dropped = 0
  /** Messages received so far. */
  received = 0
  /** Bytes of binaries in the messages {@link Peer.flush} held back for the next turn (they count as buffered). */
  private heldBytes = 0

  /**
   * @param id - the peer's node id
   * @param host - its hub
   */
  constructor(
    readonly id: string,
    private readonly host: PeerHost,
  ) {}

  /** Queue a message for the peer; send it this turn if connected, else dial. */
  enqueue(group: string, msg: unknown): void {
    const conn = this.conn
    // (what the socket buffers, and the binaries held back for the next turns: see flush())
    const held = this.out.length > 0 ? this.heldBytes : 0
    if (conn && conn.ws.bufferedAmount + held > this.host.maxBuffered) {
      this.dropped++
      this.host.limitedWarn(`backpressure:${this.id}`, 'peer connection is congested; dropping messages', {
        peer: this.id,
        buffered: conn.ws.bufferedAmount + held,
        dropped: this.dropped,
      })
      return
    }
    this.out.push([group, msg])
    // Connected, the queue goes out at the end of the turn (about a MiB of binaries a turn, see
    // flush()); a turn that queues more than it holds (a backlog of frames handled in one turn,
    // each answered) sends a frame at once rather than drop messages on a connection that works.
    // The bound drops only while disconnected.
    if (conn && this.out.length >= MAX_QUEUE) this.flush(true)
    if (this.out.length > MAX_QUEUE) {
      this.out.shift()
      this.dropped++
      this.host.limitedWarn(`overflow:${this.id}`, 'send queue full; dropping oldest message', { peer: this.id, dropped: this.dropped })
    }
    if (conn) this.host.scheduleFlush(this)
    else this.dial()
  }

  /** Forget the queued messages (the connection they were meant for is gone). */
  dropQueue(): void {
    this.out = []
    this.heldBytes = 0
  }

  /** A connection to the peer was authenticated: reset the backoff and send what waits. */
  connected(): void {
    this.attempts = 0
    this.cancelRetry()
    if (this.out.length > 0) this.host.scheduleFlush(this)
  }

  /** Stop the redial timer, if any. */
  cancelRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.retryTimer = undefined
  }

  /**
   * Send the queued messages on the open connection, in frames of at most the frame limit: those
   * that carry up to {@link FLUSH_TURN_BYTES} of binary payload (one message at least), the rest
   * at the next turn, so that no turn packs, tags and copies many MiB (a leader's snapshot chunks
   * went out 12 MiB a frame). `all`: every queued message now.
   */
  flush(all = false): void {
    const conn = this.conn
    if (!conn || this.out.length === 0 || conn.ws.readyState !== WebSocket.OPEN) return
    const take = all ? this.out.length : withinTurnBytes(this.out)
    const batch = take === this.out.length ? this.out : this.out.slice(0, take)
    this.out = take === this.out.length ? [] : this.out.slice(take)
    let held = 0
    for (const [, m] of this.out) held += payloadBytes(m)
    this.heldBytes = held
    try {
      this.sendBatch(conn, batch)
    } catch (e) {
      this.dropped += batch.length
      this.host.limitedWarn(`encode:${this.id}`, 'could not send messages', { peer: this.id, error: errMessage(e) })
    }
    if (this.out.length > 0) this.host.scheduleFlush(this)
  }

  /**
   * Encode and send `batch`, splitting it when the frame would exceed the frame limit or would be
   * refused by the peer as too costly to decode.
   */
  private sendBatch(conn: Conn, batch: Batch): void {
    const { host } = this
    let frame: Buffer
    try {
      frame = host.packr.pack({ v: WS_PROTOCOL_VERSION, b: batch })
    } catch (e) {
      if (batch.length === 1) {
        this.dropped++
        host.limitedWarn(`encode:${this.id}`, 'message cannot be encoded; dropped', {
          peer: this.id,
          group: batch[0]![0],
          error: errMessage(e),
        })
        return
      }
      frame = Buffer.alloc(0)
    }
    const room = host.maxFrame - (conn.session ? TAG_BYTES : 0)
    const costly = frame.length > ALWAYS_CHEAP_BYTES && frame.length <= room ? decodeProblem(frame) : undefined
    if (costly) {
      if (batch.length === 1) {
        this.dropped++
        host.limitedWarn(`costly:${this.id}`, `message would cost more than ${DECODE_RATIO} times its size to decode; dropped`, {
          peer: this.id,
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
        this.dropped++
        host.limitedWarn(`oversize:${this.id}`, 'message exceeds maxFrameBytes; dropped', {
          peer: this.id,
          group: batch[0]![0],
          bytes: frame.length,
          max: host.maxFrame,
        })
        return
      }
      const mid = batch.length >> 1
      this.sendBatch(conn, batch.slice(0, mid))
      this.sendBatch(conn, batch.slice(mid))
      return
    }
    if (conn.session) frame = conn.session.seal(frame)
    conn.ws.send(frame, { binary: true }, (err) => {
      if (err) host.log.debug('frame not sent', { peer: this.id, error: errMessage(err) })
    })
  }

  /** Dial the peer at its known address, unless connected, dialing or waiting to redial. */
  dial(): void {
    const { host } = this
    if (host.isClosed() || this.conn || this.dialing || this.retryTimer) return
    const url = host.addressOf(this.id)
    if (url === undefined) return
    let ws: WebSocket
    try {
      ws = new WebSocket(url, dialOptions(host.maxFrame, host.handshakeTimeout, host.tls))
    } catch (e) {
      host.limitedWarn(`dial:${this.id}`, 'cannot dial peer', { peer: this.id, url, error: errMessage(e) })
      this.scheduleRetry()
      return
    }
    const conn = host.track(ws, true, url, url.startsWith('wss:'))
    conn.peerId = this.id
    this.dialing = conn
    ws.on('open', () => {
      if (host.isClosed()) return
      host.sendRaw(conn, { v: WS_PROTOCOL_VERSION, t: 'hello', id: host.nodeId, boot: host.boot, nonce: conn.nonce, tls: conn.tls })
    })
    ws.on('unexpected-response', (_req, res) => {
      host.limitedWarn(`dial:${this.id}`, 'peer refused the upgrade', { peer: this.id, url, status: res.statusCode })
      res.resume()
      ws.terminate()
    })
  }

  /**
   * Dial again after the backoff delay of the failures so far; a peer no longer known (no
   * address) is forgotten instead.
   */
  scheduleRetry(): void {
    const { host } = this
    if (host.isClosed() || this.conn || this.dialing || this.retryTimer) return
    if (host.addressOf(this.id) === undefined) {
      this.dropQueue()
      host.forget(this)
      return
    }
    this.attempts++
    const delay = backoffDelay(RECONNECT_BACKOFF, this.attempts)
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      if (host.isCurrent(this)) this.dial()
    }, delay)
    this.retryTimer.unref()
  }
}

/** The peers to flush at the end of this event-loop turn: one frame per peer per turn. */
export class FlushQueue {
  private readonly queue = new Set<Peer>()
  private immediate: NodeJS.Immediate | undefined

  /** Flush `peer` at the end of this turn (once, however often it is added). */
  add(peer: Peer): void {
    this.queue.add(peer)
    if (this.immediate) return
    this.immediate = setImmediate(() => {
      this.immediate = undefined
      this.run(false)
    })
  }

  /** Flush every queued peer now, all it holds (the end-of-turn flush then has nothing left to do, or what came since). */
  now(): void {
    this.run(true)
  }

  private run(all: boolean): void {
    if (this.queue.size === 0) return
    const peers = [...this.queue]
    this.queue.clear()
    for (const p of peers) p.flush(all)
  }

  /** Cancel the pending flush. */
  clear(): void {
    if (this.immediate) clearImmediate(this.immediate)
    this.immediate = undefined
    this.queue.clear()
  }
}
