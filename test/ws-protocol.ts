/**
 * The dialer's side of the WsHub wire protocol (version 8), written from the module doc of
 * `src/net/hub.ts`, for tests that speak it by hand (raw clients, rogue peers).
 */
import { createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto'
import { pack, unpack } from 'msgpackr'
import { WebSocket } from 'ws'

/** The protocol version these helpers speak. */
export const VERSION = 12

/** The key handshake proofs are made with. */
export function authKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), 'sworm-ws', `sworm-ws v${VERSION} auth`, 32))
}

/** What both sides said in hello and challenge. */
export interface Hellos {
  dialerId: string
  listenerId: string
  dialerBoot: string
  listenerBoot: string
  dialerNonce: Uint8Array
  listenerNonce: Uint8Array
  dialerTls: boolean
  listenerTls: boolean
  probe: boolean
}

/** The dialer's `auth` frame for a listener's `challenge`, and the session it starts. */
export function dialerAuth(
  h: { boot: string; nonce: Uint8Array; tls: boolean },
  dialerId: string,
  listenerId: string,
  challenge: { boot: string; nonce: Uint8Array; tls: boolean },
  secret: string,
): { auth: Buffer; session: Session; hellos: Hellos } {
  const hellos: Hellos = {
    dialerId,
    listenerId,
    dialerBoot: h.boot,
    listenerBoot: challenge.boot,
    dialerNonce: h.nonce,
    listenerNonce: challenge.nonce,
    dialerTls: h.tls,
    listenerTls: challenge.tls,
    probe: false,
  }
  return { auth: pack({ v: VERSION, t: 'auth', proof: proof('dialer', hellos, secret) }), session: dialerSession(hellos, secret), hellos }
}

/** The handshake transcript. */
export function transcript(h: Hellos): string {
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
  return JSON.stringify(['sworm-ws', VERSION, h.dialerId, h.listenerId, h.dialerBoot, h.listenerBoot, hex(h.dialerNonce), hex(h.listenerNonce), h.dialerTls, h.listenerTls, h.probe])
}

/** A proof of `role` over the transcript, with the key of `secret`. */
export function proof(role: 'dialer' | 'listener', h: Hellos, secret: string): Buffer {
  return createHmac('sha256', authKey(secret)).update(`${role} ${transcript(h)}`).digest()
}

/** One side's view of an authenticated connection: keys and frame counters. */
export interface Session {
  sendKey: Buffer
  recvKey: Buffer
  sendSeq: number
  recvSeq: number
}

/** The dialer's session after a handshake over plain ws (frames carry tags). */
export function dialerSession(h: Hellos, secret: string): Session {
  const info = Buffer.concat([Buffer.from(`sworm-ws v${VERSION} session`), createHash('sha256').update(transcript(h)).digest()])
  const keys = Buffer.from(hkdfSync('sha256', authKey(secret), Buffer.concat([h.dialerNonce, h.listenerNonce]), info, 64))
  return { sendKey: keys.subarray(0, 32), recvKey: keys.subarray(32), sendSeq: 0, recvSeq: 0 }
}

function tag(key: Buffer, seq: number, body: Uint8Array): Buffer {
  const s = Buffer.alloc(8)
  s.writeBigUInt64BE(BigInt(seq))
  return createHmac('sha256', key).update(s).update(body).digest().subarray(0, 16)
}

/** `frame` followed by its tag (the next frame of the session). */
export function seal(s: Session, frame: Uint8Array): Buffer {
  return Buffer.concat([frame, tag(s.sendKey, s.sendSeq++, frame)])
}

/** The frame without its tag, or `undefined` if the tag is wrong. */
export function unseal(s: Session, data: Buffer): Buffer | undefined {
  if (data.length < 16) return undefined
  const body = data.subarray(0, data.length - 16)
  if (!tag(s.recvKey, s.recvSeq, body).equals(data.subarray(data.length - 16))) return undefined
  s.recvSeq++
  return body
}

/** A hello frame and the fields it fixes. */
export function hello(id: string, opts: { boot?: string; tls?: boolean; probe?: boolean } = {}): { frame: Buffer; nonce: Buffer; boot: string; tls: boolean; probe: boolean } {
  const nonce = randomBytes(32)
  const boot = opts.boot ?? `raw-${id}`
  const tls = opts.tls ?? false
  const probe = opts.probe ?? false
  return { frame: pack({ v: VERSION, t: 'hello', id, boot, nonce, tls, ...(opts.probe !== undefined ? { probe } : {}) }), nonce, boot, tls, probe }
}

/** A raw WebSocket client that speaks the protocol by hand. */
export interface Raw {
  ws: WebSocket
  /** Decoded frames received ('bad tag' or 'undecodable' for frames that are neither). */
  frames: unknown[]
  closed: Promise<{ code: number; reason: string }>
  isClosed: () => boolean
  /** After the handshake: the keys and counters of the frames' tags. */
  session?: Session
  /** The session to start when the listener's `ok` arrives. */
  next?: Session
}

/** Open a raw WebSocket to `url`, not yet past any handshake; `hooks` track it for cleanup. */
export async function rawSocket(url: string, hooks: { opened?: (ws: WebSocket) => void; closed?: (ws: WebSocket) => void } = {}): Promise<Raw> {
  const ws = new WebSocket(url, { perMessageDeflate: false })
  hooks.opened?.(ws)
  ws.on('error', () => {})
  const frames: unknown[] = []
  let done = false
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
      done = true
      hooks.closed?.(ws)
      resolve({ code, reason: reason.toString() })
    }),
  )
  const raw: Raw = { ws, frames, closed, isClosed: () => done }
  ws.on('message', (d: Buffer) => {
    const body = raw.session ? unseal(raw.session, d) : d
    if (!body) return void frames.push('bad tag')
    let f: unknown
    try {
      f = unpack(body)
    } catch {
      f = 'undecodable'
    }
    frames.push(f)
    if (raw.next && (f as { t?: string }).t === 'ok') {
      raw.session = raw.next
      raw.next = undefined
    }
  })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  return raw
}
