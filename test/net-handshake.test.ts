/**
 * The pure half of the wire protocol (src/net/handshake.ts), without sockets: proofs, transcript,
 * session keys and frame tags, the checks of hello/challenge frames, and the secret rule. The
 * helpers of test/ws-protocol.ts, written from the module doc, serve as an independent reference.
 */
import { createHmac, createSecretKey, randomBytes } from 'node:crypto'
import t from 'tap'
import {
  MAX_ID_LENGTH,
  NONCE_BYTES,
  TAG_BYTES,
  authKey,
  frameTag,
  isChallenge,
  isHello,
  isId,
  isNonce,
  makeProof,
  proofOk,
  secretProblem,
  startSession,
  transcript,
  type FrameSession,
  type Hellos,
} from '../src/net/handshake.js'
import * as reference from './ws-protocol.js'

const SECRET = 'b1e4c9a27f03d8e6a5c2b7f19d04e3a8' // 16 random bytes, hex
const SECRET2 = '5f8d2e1c9b7a4036e2d1c8b9a7f60e4d'

function hellos(over: Partial<Hellos> = {}): Hellos {
  return {
    dialer: { id: 'a', boot: 'boot-a', nonce: randomBytes(NONCE_BYTES), tls: false },
    listener: { id: 'b', boot: 'boot-b', nonce: randomBytes(NONCE_BYTES), tls: false },
    probe: false,
    ...over,
  }
}

/** The same handshake in the shape of test/ws-protocol.ts. */
function flat(h: Hellos): reference.Hellos {
  const { dialer: d, listener: l } = h
  return {
    dialerId: d.id,
    listenerId: l.id,
    dialerBoot: d.boot,
    listenerBoot: l.boot,
    dialerNonce: d.nonce,
    listenerNonce: l.nonce,
    dialerTls: d.tls,
    listenerTls: l.tls,
    probe: h.probe,
  }
}

/** Both ends of a session over plain ws. */
function sessions(h = hellos()): { dialer: FrameSession; listener: FrameSession } {
  const k = authKey(SECRET)
  const tr = transcript(h)
  const dialer = startSession(k, h, tr, 'dialer')
  const listener = startSession(k, h, tr, 'listener')
  if (!dialer || !listener) throw new Error('expected tagged sessions over plain ws')
  return { dialer, listener }
}

t.test('a good proof is accepted, by either role, and matches the reference implementation', async (tt) => {
  const h = hellos()
  const k = authKey(SECRET)
  const tr = transcript(h)
  tt.equal(tr, reference.transcript(flat(h)), 'transcript as the module doc says')
  tt.same(k, reference.authKey(SECRET), 'key as the module doc says')
  for (const role of ['dialer', 'listener'] as const) {
    const p = makeProof(k, role, tr)
    tt.equal(p.length, 32)
    tt.same(p, reference.proof(role, flat(h), SECRET), `${role} proof as the module doc says`)
    tt.ok(proofOk(k, role, tr, p), `${role} proof accepted`)
    tt.ok(proofOk(k, role, tr, new Uint8Array(p)), `${role} proof accepted as a plain Uint8Array (as decoded)`)
  }
  tt.notOk(proofOk(k, 'listener', tr, makeProof(k, 'dialer', tr)), "the dialer's proof is not the listener's")
  tt.notOk(proofOk(k, 'dialer', tr, makeProof(k, 'listener', tr)), "the listener's proof is not the dialer's")
})

t.test('a proof made with another secret is refused', async (tt) => {
  const h = hellos()
  const tr = transcript(h)
  const forged = makeProof(authKey(SECRET2), 'dialer', tr)
  tt.notOk(proofOk(authKey(SECRET), 'dialer', tr, forged))
  tt.notSame(authKey(SECRET), authKey(SECRET2))
})

t.test('a proof over a tampered transcript is refused', async (tt) => {
  const h = hellos()
  const k = authKey(SECRET)
  const p = makeProof(k, 'dialer', transcript(h))
  const flip = (b: Uint8Array): Buffer => {
    const c = Buffer.from(b)
    c[0] = c[0]! ^ 1
    return c
  }
  const tampered: Record<string, Hellos> = {
    'dialer id': { ...h, dialer: { ...h.dialer, id: 'x' } },
    'listener id': { ...h, listener: { ...h.listener, id: 'x' } },
    'dialer boot': { ...h, dialer: { ...h.dialer, boot: 'other' } },
    'listener boot': { ...h, listener: { ...h.listener, boot: 'other' } },
    'dialer nonce': { ...h, dialer: { ...h.dialer, nonce: flip(h.dialer.nonce) } },
    'listener nonce': { ...h, listener: { ...h.listener, nonce: flip(h.listener.nonce) } },
    'dialer tls': { ...h, dialer: { ...h.dialer, tls: true } },
    'listener tls': { ...h, listener: { ...h.listener, tls: true } },
    probe: { ...h, probe: true },
    'roles swapped': { ...h, dialer: h.listener, listener: h.dialer },
  }
  for (const [what, other] of Object.entries(tampered)) {
    tt.notOk(proofOk(k, 'dialer', transcript(other), p), `${what} changed: refused`)
  }
  tt.ok(proofOk(k, 'dialer', transcript(h), p), 'the untouched transcript still passes')
})

t.test('malformed proofs are refused without throwing', async (tt) => {
  const k = authKey(SECRET)
  const tr = transcript(hellos())
  const good = makeProof(k, 'dialer', tr)
  for (const bad of [undefined, null, 'proof', 42, good.toString('hex'), good.subarray(0, 31), Buffer.concat([good, Buffer.alloc(1)]), Buffer.alloc(0)]) {
    tt.notOk(proofOk(k, 'dialer', tr, bad))
  }
})

t.test('frame tags: in-order frames open; replay, reorder, alteration and truncation fail', async (tt) => {
  const { dialer, listener } = sessions()
  const frames = [0, 1, 2].map((i) => dialer.seal(Buffer.from(`frame ${i}`)))
  tt.equal(frames[0]!.length, 'frame 0'.length + TAG_BYTES)

  // Reordered: frame 1 arrives first.
  tt.equal(listener.open(frames[1]!), undefined, 'frame 1 before frame 0 fails')
  tt.equal(listener.received, 0, 'a failed frame does not advance the count')
  tt.same(listener.open(frames[0]!), Buffer.from('frame 0'))
  tt.equal(listener.received, 1)

  // Replayed: frame 0 again.
  tt.equal(listener.open(frames[0]!), undefined, 'frame 0 replayed fails')
  tt.same(listener.open(frames[1]!), Buffer.from('frame 1'))

  // Altered, in the body or in the tag, and truncated.
  const altered = Buffer.from(frames[2]!)
  altered[0] = altered[0]! ^ 1
  tt.equal(listener.open(altered), undefined, 'altered body fails')
  const badTag = Buffer.from(frames[2]!)
  badTag[badTag.length - 1] = badTag[badTag.length - 1]! ^ 1
  tt.equal(listener.open(badTag), undefined, 'altered tag fails')
  tt.equal(listener.open(frames[2]!.subarray(0, TAG_BYTES - 1)), undefined, 'shorter than a tag fails')
  tt.same(listener.open(frames[2]!), Buffer.from('frame 2'), 'the genuine frame still opens')

  // The other direction has its own key and count.
  const back = listener.seal(Buffer.from('back'))
  tt.equal(dialer.open(frames[0]!), undefined, "a side cannot open its own frames (the other direction's key)")
  tt.same(dialer.open(back), Buffer.from('back'))
})

t.test('frame tags: a frame of one session does not open in another', async (tt) => {
  const one = sessions()
  const two = sessions()
  tt.equal(two.listener.open(one.dialer.seal(Buffer.from('x'))), undefined)
})

t.test('frame tags match the reference implementation, both ways', async (tt) => {
  const h = hellos()
  const { dialer, listener } = sessions(h)
  const ref = reference.dialerSession(flat(h), SECRET)
  tt.same(listener.open(reference.seal(ref, Buffer.from('from reference'))), Buffer.from('from reference'))
  tt.same(reference.unseal(ref, listener.seal(Buffer.from('to reference'))), Buffer.from('to reference'))
  tt.same(dialer.seal(Buffer.from('same')), reference.seal(reference.dialerSession(flat(h), SECRET), Buffer.from('same')))
})

t.test('frameTag encodes the sequence number as 64 bits', async (tt) => {
  const key = createSecretKey(randomBytes(32))
  const body = Buffer.from('body')
  for (const seq of [0, 1, 0xffffffff, 0x100000000, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
    const s = Buffer.alloc(8)
    s.writeBigUInt64BE(BigInt(seq))
    const want = createHmac('sha256', key).update(s).update(body).digest().subarray(0, TAG_BYTES)
    tt.same(frameTag(key, seq, body), want, `seq ${seq}`)
  }
})

t.test('no tags when both sides are TLS; tags when either is not', async (tt) => {
  const k = authKey(SECRET)
  const tls = (d: boolean, l: boolean): Hellos => {
    const h = hellos()
    return { ...h, dialer: { ...h.dialer, tls: d }, listener: { ...h.listener, tls: l } }
  }
  const both = tls(true, true)
  tt.equal(startSession(k, both, transcript(both), 'dialer'), undefined)
  tt.equal(startSession(k, both, transcript(both), 'listener'), undefined)
  for (const h of [tls(true, false), tls(false, true), tls(false, false)]) {
    tt.ok(startSession(k, h, transcript(h), 'dialer'))
  }
})

t.test('hello and challenge checks', async (tt) => {
  const nonce = randomBytes(NONCE_BYTES)
  const hello = { v: 2, t: 'hello', id: 'a', boot: 'boot', nonce, tls: false }
  const challenge = { ...hello, t: 'challenge' }
  tt.ok(isHello(hello))
  tt.ok(isHello({ ...hello, probe: true }))
  tt.ok(isHello({ ...hello, probe: false }))
  tt.ok(isChallenge(challenge))
  tt.notOk(isHello(challenge), 'a challenge is not a hello')
  tt.notOk(isChallenge(hello), 'a hello is not a challenge')
  const bad: Record<string, Record<string, unknown>> = {
    'no id': { id: undefined },
    'empty id': { id: '' },
    'id too long': { id: 'x'.repeat(MAX_ID_LENGTH + 1) },
    'id not a string': { id: 7 },
    'no boot': { boot: undefined },
    'boot too long': { boot: 'x'.repeat(MAX_ID_LENGTH + 1) },
    'short nonce': { nonce: randomBytes(NONCE_BYTES - 1) },
    'long nonce': { nonce: randomBytes(NONCE_BYTES + 1) },
    'nonce as hex': { nonce: nonce.toString('hex') },
    'tls not a boolean': { tls: 'no' },
    'no tls': { tls: undefined },
  }
  for (const [what, change] of Object.entries(bad)) {
    tt.notOk(isHello({ ...hello, ...change }), `hello: ${what}`)
    tt.notOk(isChallenge({ ...challenge, ...change }), `challenge: ${what}`)
  }
  tt.notOk(isHello({ ...hello, probe: 1 }), 'hello: probe not a boolean')
  tt.ok(isId('x'.repeat(MAX_ID_LENGTH)), 'an id of the longest length passes')
  tt.ok(isNonce(new Uint8Array(NONCE_BYTES)))
  tt.notOk(isNonce(new Array(NONCE_BYTES).fill(0)), 'a nonce must be bytes')
})

t.test('secretProblem: the rule of at least 32 characters, 8 of them distinct', async (tt) => {
  tt.equal(secretProblem(SECRET), undefined, '16 random bytes in hex pass')
  tt.equal(secretProblem(randomBytes(24).toString('base64')), undefined, '24 random bytes in base64 pass')
  tt.match(secretProblem(undefined), /^must be a string of at least 32 characters/)
  tt.match(secretProblem(1234567890), /^must be a string/)
  tt.match(secretProblem(''), /^must have at least 32 characters, not 0 /)
  tt.match(secretProblem(SECRET.slice(0, 31)), /^must have at least 32 characters, not 31 /)
  tt.match(secretProblem('ab'.repeat(16)), /^must have at least 8 distinct characters, not 2 /)
  tt.match(secretProblem('abcdefg'.repeat(5)), /^must have at least 8 distinct characters, not 7 /)
  tt.equal(secretProblem('abcdefgh'.repeat(4)), undefined, 'exactly 32 characters, 8 distinct pass')
  // characters, not UTF-16 units: 16 emoji are 32 units but 16 characters
  tt.match(secretProblem('😀😁😂😃😄😅😆😇'.repeat(2)), /not 16 /)
  for (const bad of [undefined, '', 'short']) tt.match(secretProblem(bad), /openssl rand -hex 16/, 'the message says how to make one')
})
