/**
 * What the hub, its peers and its server share: the limits of the wire (sizes, timeouts, the
 * decode budget, the reconnect backoff), the check a frame passes before it is decoded, and small
 * socket helpers.
 * @module
 */

import { WebSocket, type ClientOptions, type RawData } from 'ws'
import type { BackoffPolicy } from '../util/retry.js'
import { MAX_COST_PER_BYTE, msgpackCost } from '../util/msgpack-guard.js'

/** Default largest frame, in bytes (`maxFrameBytes`). */
export const DEFAULT_MAX_FRAME = 64 * 1024 * 1024
/** Default buffered bytes per connection above which messages are dropped (`maxBufferedBytes`). */
export const DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
/** Most messages queued per peer; beyond, the oldest is dropped. */
export const MAX_QUEUE = 1000
/** Default time to authenticate, and to send a whole upgrade request (`handshakeTimeoutMs`). */
export const HANDSHAKE_TIMEOUT_MS = 5000
/** How a peer is dialed again: 50 ms doubling up to 2 s, each delay spread over `[d/2, d]`. */
export const RECONNECT_BACKOFF: BackoffPolicy = { minMs: 50, maxMs: 2000, jitter: true }
/** Period of the pings that find dead connections. */
export const PING_INTERVAL_MS = 15000
/** Default most inbound connections in handshake at once (`maxPendingHandshakes`). */
export const MAX_PENDING_HANDSHAKES = 256
/** How long a socket may take to close cleanly before it is terminated. */
export const CLOSE_GRACE_MS = 500
/** Largest frame accepted before the handshake completes. */
export const PRE_AUTH_MAX_FRAME = 1024
/** Most bytes a listener reads from a dialer before the handshake completes. */
export const PRE_AUTH_MAX_BYTES = 4096
/** A frame may cost at most DECODE_RATIO times its size plus DECODE_SLACK bytes once decoded. */
export const DECODE_RATIO = 16
/** See {@link DECODE_RATIO}. */
export const DECODE_SLACK = 64 * 1024
/**
 * Frames up to this size pass the decode check whatever they hold (431 bytes), and this hub's
 * encoder emits none of the types the check refuses: the sender checks only larger frames.
 */
export const ALWAYS_CHEAP_BYTES = Math.floor(DECODE_SLACK / (MAX_COST_PER_BYTE - DECODE_RATIO))

/** The messages of one data frame: `[group, msg]` pairs. */
export type Batch = [group: string, msg: unknown][]

/** TLS material for `wss` (see `WsHubOptions.tls`). */
export interface TlsMaterial {
  /** This node's private key. */
  key: string | Buffer
  /** This node's certificate. */
  cert: string | Buffer
  /** The CA that peers' certificates must chain to (default: the system CAs). */
  ca?: string | Buffer
  /** Whether a peer's certificate must verify (default true). */
  rejectUnauthorized?: boolean
}

/** Why a frame must not be decoded, or `undefined` (see `msgpackCost`). */
export function decodeProblem(frame: Uint8Array): { reason: string; code: number; why: string } | undefined {
  const cost = msgpackCost(frame, DECODE_RATIO * frame.length + DECODE_SLACK)
  if (typeof cost === 'number') return undefined
  if (cost === 'over budget' || cost === 'too deep') return { reason: 'frame would decode too large', code: 1009, why: cost }
  return { reason: 'undecodable frame', code: 1007, why: cost }
}

/** The options of a dialing WebSocket: no compression, and the TLS material if any. */
export function dialOptions(maxPayload: number, handshakeTimeout: number, tls: TlsMaterial | undefined): ClientOptions {
  return {
    maxPayload,
    perMessageDeflate: false,
    handshakeTimeout,
    ...(tls
      ? {
          key: tls.key,
          cert: tls.cert,
          ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
          rejectUnauthorized: tls.rejectUnauthorized ?? true,
        }
      : {}),
  }
}

/** The bytes of a received message, as one Buffer. */
export function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}

/** Whether `v` is a map (a frame must be one). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)
}

/** The message of an error, or the thing itself as a string. */
export function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

/** Close a socket cleanly, terminating it if the close handshake does not finish quickly. */
export function closeSocket(ws: WebSocket, code: number, reason: string): Promise<void> {
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
