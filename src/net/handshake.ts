/**
 * The wire protocol of Sworm's network layer, and its pure half: the handshake's transcript,
 * proofs and keys, the per-frame tags, and the checks of what a peer says. No sockets here (the
 * hub in `hub.ts` drives these functions over WebSockets).
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
 *   Keys: `K = HKDF-SHA256(secret as UTF-8, salt 'sworm-ws', info 'sworm-ws v4 auth', 32 bytes)`.
 *   The transcript `T` is `JSON.stringify(['sworm-ws', 4, dialerId, listenerId, dialerBoot,
 *   listenerBoot, hex(dialerNonce), hex(listenerNonce), dialerTls, listenerTls, probe])`, and a
 *   proof is `HMAC-SHA256(K, role + ' ' + T)` with role `dialer` or `listener`. Nonces are 32 fresh
 *   random bytes from each side, so a recorded handshake cannot be replayed. `boot` is a random id
 *   of the hub instance, used to recognise a restarted peer. `tls` says whether that side's socket
 *   is TLS (the dialer dialed `wss://`; the listener's socket is encrypted). `probe` (see
 *   `WsHub.discover`) asks the listener to close the connection after the handshake.
 * - Data: `{ v: 3, b: [[group, msg], [group, msg], ...] }`, one frame per peer per event-loop
 *   turn (messages are batched).
 * - Integrity: unless both sides are TLS, every data frame is followed by a 16-byte tag,
 *   `HMAC-SHA256(key, uint64be(seq) ‖ frame)` truncated to 16 bytes, where `seq` counts the data
 *   frames sent in that direction from 0 and `key` is that direction's half of
 *   `HKDF-SHA256(K, salt dialerNonce ‖ listenerNonce, info 'sworm-ws v4 session' ‖ SHA-256(T), 64)`
 *   (the first 32 bytes dialer → listener, the last 32 listener → dialer). A frame injected,
 *   replayed, reordered or altered on the path fails its tag and closes the connection. Over TLS
 *   on both sides there is no tag: TLS already protects every record.
 *
 * Limits: until a connection is authenticated any other frame closes it, a frame may not exceed
 * 1 KiB and the listener reads at most 4 KiB from the dialer (larger is refused before being
 * buffered or decoded). Every frame, before it is decoded, is checked (see `msgpackCost` in
 * `util/msgpack-guard.ts`) to cost at most 16 times its size plus 64 KiB of heap once decoded; the
 * sender drops a message that would not pass, like one over `maxFrameBytes`. (The numbers live in
 * `wire.ts`.)
 *
 * The secret (see {@link secretProblem}) must have at least 32 characters, 8 of them distinct:
 * e.g. `openssl rand -hex 16` (128 random bits). Whoever records a handshake can test guesses of
 * the secret against it offline; only a random secret makes that hopeless.
 * @module
 */

import { createHash, createHmac, createSecretKey, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto'

/**
 * Protocol version spoken by this hub (2: the dialer proves first; frames carry a tag. 3: the
 * same handshake; Raft snapshots travel in chunks and replicas iterate names in a new order, so
 * a node of version 2 must not join: a cluster upgrades from 2 by a full stop. 4: registry
 * commands carry checks that nodes of version 3 would ignore, so they would apply them otherwise:
 * `nodeUp` compares the incarnation it replaces, `supervise` asks for epochs that are never reused;
 * a cluster upgrades from 3 by a full stop too, and replays its old log as version 3 did. 5:
 * AppendEntries carry each entry as its stored encoding (`ents`), and a node's failure moves its
 * supervised names in name order: replicas of version 4 would read no entries, and place them
 * otherwise; a cluster upgrades from 4 by a full stop. 6: a node reports its supervised starts in
 * batches (`startedMany`), which a replica of version 5 would skip, so its registry would hold
 * no worker for those names; a cluster upgrades from 5 by a full stop. 7: a node stopping
 * gracefully drops the static names of its workers in one entry (`workersDown`), which a replica
 * of version 6 would skip; a cluster upgrades from 6 by a full stop. 8: a node reports the ends of
 * its supervised workers in batches (`stoppedMany`), which a replica of version 7 would skip, so
 * its registry would go on placing workers that ended; and a gone node's supervised names move a
 * slice an entry (`nodeDown` with `max`, then `moveOff`), where a replica of version 7 would move
 * them all in the `nodeDown`, and place them otherwise; a cluster upgrades from 7 by a full stop).
 * 9: a supervised registration may fix its worker's ref when it is placed (`supervise` with
 * `fx`, `registerName(..., { wait: 'placed' })`), which a replica of version 8 would not do, so
 * its registry would show no worker where the others show one; a cluster upgrades from 8 by a
 * full stop. 10: a heartbeat answer carries its process's tag (`hbResp.p`) and the leader echoes
 * it with its acknowledgement (`hb.ackP`); a node of version 10 renews its lease only on an
 * acknowledgement that echoes its own tag, so under a leader of version 9 it would never hold a
 * lease; a cluster upgrades from 9 by a full stop. (11: the experiment of 0d5a813, reverted by
 * 68e10fa; never used again.) 12: a follower forwards each proposal as its encoding (`fwd.reqs`:
 * binaries), which the leader decodes within an entry's budget; a leader of version 10 would
 * append the binary itself as the command; a cluster upgrades from 10 by a full stop.
 */
export const WS_PROTOCOL_VERSION = 12

/** Bytes of each side's handshake nonce. */
export const NONCE_BYTES = 32
/** Longest node id or boot id accepted in a handshake. */
export const MAX_ID_LENGTH = 256
/** Bytes of the per-frame tag. */
export const TAG_BYTES = 16

const SECRET_MIN_LENGTH = 32
const SECRET_MIN_DISTINCT = 8
const AUTH_KEY_SALT = 'sworm-ws'
const AUTH_KEY_INFO = `sworm-ws v${WS_PROTOCOL_VERSION} auth`
const SESSION_INFO = `sworm-ws v${WS_PROTOCOL_VERSION} session`

/** Why the listener refuses a dialer whose proof is wrong. */
export const BAD_DIALER_PROOF = "authentication failed: the peer's proof does not match; check that every node uses the same secret"
/** Why the dialer drops a listener whose proof is wrong. */
export const BAD_LISTENER_PROOF = "authentication failed: the listener's proof does not match; check that every node uses the same secret"
/** Why a connection is closed when a data frame fails its tag. */
export const BAD_TAG = 'frame failed its integrity check (forged, replayed or reordered on the path)'

/** Which side of a connection: the one that dialed, or the one that listened. */
export type Role = 'dialer' | 'listener'

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

/** Whether `v` is a node id or boot id a peer may send (a non-empty string, not too long). */
export function isId(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_ID_LENGTH
}

/** Whether `v` is a handshake nonce (exactly {@link NONCE_BYTES} bytes). */
export function isNonce(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array && v.length === NONCE_BYTES
}

/** Whether `v` is `true` or `false`. */
export function isBool(v: unknown): v is boolean {
  return v === true || v === false
}

/** What a side says of itself in `hello` (the dialer) or `challenge` (the listener). */
export interface Greeting {
  /** Its node id. */
  id: string
  /** The random id of its hub instance. */
  boot: string
  /** Its fresh nonce. */
  nonce: Uint8Array
  /** Whether its socket is TLS. */
  tls: boolean
}

/** Whether `f` is a well-formed `hello` frame (its `probe`, if any, a boolean). */
export function isHello(f: Record<string, unknown>): f is Record<string, unknown> & Greeting & { probe?: boolean } {
  return f.t === 'hello' && isGreeting(f) && (f.probe === undefined || isBool(f.probe))
}

/** Whether `f` is a well-formed `challenge` frame. */
export function isChallenge(f: Record<string, unknown>): f is Record<string, unknown> & Greeting {
  return f.t === 'challenge' && isGreeting(f)
}

function isGreeting(f: Record<string, unknown>): boolean {
  return isId(f.id) && isNonce(f.nonce) && isId(f.boot) && isBool(f.tls)
}

/** Everything both sides said in `hello` and `challenge`: what the transcript is made of. */
export interface Hellos {
  /** The dialer's `hello`. */
  dialer: Greeting
  /** The listener's `challenge`. */
  listener: Greeting
  /** Whether the dialer asked for a discovery probe. */
  probe: boolean
}

/** The handshake transcript `T` (see the module doc). */
export function transcript(h: Hellos): string {
  const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
  const { dialer: d, listener: l } = h
  return JSON.stringify(['sworm-ws', WS_PROTOCOL_VERSION, d.id, l.id, d.boot, l.boot, hex(d.nonce), hex(l.nonce), d.tls, l.tls, h.probe])
}

/** The key `K` proofs are made with, derived from the cluster secret (see the module doc). */
export function authKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), AUTH_KEY_SALT, AUTH_KEY_INFO, 32))
}

/** The proof of `role` over transcript `t` (see the module doc). */
export function makeProof(key: Buffer, role: Role, t: string): Buffer {
  return createHmac('sha256', key).update(`${role} ${t}`).digest()
}

/** Whether `got` (as sent by the peer) is the proof of `role` over `t`; constant-time. */
export function proofOk(key: Buffer, role: Role, t: string, got: unknown): boolean {
  const expected = makeProof(key, role, t)
  return got instanceof Uint8Array && got.length === expected.length && timingSafeEqual(expected, got)
}

const seqBytes = Buffer.alloc(8)

/** The tag of data frame number `seq` (see the module doc). */
export function frameTag(key: KeyObject, seq: number, body: Uint8Array): Buffer {
  seqBytes.writeUInt32BE(Math.floor(seq / 0x100000000), 0)
  seqBytes.writeUInt32BE(seq >>> 0, 4)
  return createHmac('sha256', key).update(seqBytes).update(body).digest().subarray(0, TAG_BYTES)
}

/**
 * One side's tags on an authenticated connection: its two keys and the count of data frames
 * each way. {@link FrameSession.seal} appends the next tag; {@link FrameSession.open} checks one.
 */
export class FrameSession {
  private sendSeq = 0
  private recvSeq = 0

  /**
   * @param sendKey - the key of the frames this side sends
   * @param recvKey - the key of the frames it receives
   */
  constructor(
    private readonly sendKey: KeyObject,
    private readonly recvKey: KeyObject,
  ) {}

  /** How many frames have passed {@link FrameSession.open} (the number of the next one). */
  get received(): number {
    return this.recvSeq
  }

  /** `frame` followed by its tag, as the next frame sent. */
  seal(frame: Buffer): Buffer {
    return Buffer.concat([frame, frameTag(this.sendKey, this.sendSeq++, frame)])
  }

  /** The frame without its tag, if the tag is that of the next frame received; else `undefined`. */
  open(data: Buffer): Buffer | undefined {
    const body = data.length >= TAG_BYTES ? data.subarray(0, data.length - TAG_BYTES) : undefined
    if (!body || !timingSafeEqual(frameTag(this.recvKey, this.recvSeq, body), data.subarray(body.length))) return undefined
    this.recvSeq++
    return body
  }
}

/**
 * The session of `role` after a handshake over transcript `t` with `key`, or `undefined` when
 * both sides are TLS (then frames carry no tag).
 */
export function startSession(key: Buffer, h: Hellos, t: string, role: Role): FrameSession | undefined {
  if (h.dialer.tls && h.listener.tls) return undefined
  const info = Buffer.concat([Buffer.from(SESSION_INFO), createHash('sha256').update(t).digest()])
  const keys = Buffer.from(hkdfSync('sha256', key, Buffer.concat([h.dialer.nonce, h.listener.nonce]), info, 64))
  const toListener = createSecretKey(keys.subarray(0, 32))
  const toDialer = createSecretKey(keys.subarray(32))
  return role === 'dialer' ? new FrameSession(toListener, toDialer) : new FrameSession(toDialer, toListener)
}
