/**
 * Hostile and bad input (issue #5): what peers and callers may throw at a node, and what must
 * happen. The rule everywhere: refused or dropped with a (rate-limited) log line, or handled by
 * Raft's own rules; never a crash, never an unhandled rejection; the node keeps serving.
 *
 * Trust model. The cluster secret is the trust boundary: a peer that completes the handshake is
 * treated as a cluster node that may be buggy, stale, partitioned or restarted, but does not lie
 * (crash faults, as in Raft). So the node refuses everything no correct node can send (malformed
 * messages, log terms that go down or beyond the message's term, entries not numbered from
 * `prevIndex + 1`, a snapshot newer than its term or without voters, misaddressed messages, a
 * `from` that is not the sender), and for the rest follows Raft: a higher term is legitimate and
 * makes nodes step down (the cluster elects again and goes on), an index beyond the log is
 * rejected, a commit index beyond it is clamped, a stale term is answered so the sender catches up.
 * A partitioned node's campaign cannot depose a healthy leader (pre-vote and leader stickiness).
 * A well-formed lie from a secret holder (a forged leader's entries, a forged transfer vote) is a
 * Byzantine fault and out of scope.
 *
 * Sections: A. impossible Raft content, injected into a simulated cluster (deterministic; the
 * seed is printed, HOSTILE_SEED replays); B. a rogue authenticated peer on a real cluster
 * (several sworms sharing the ports); C. floods; D. the public API: wrong types, sizes, unknown
 * refs, calls after stop().
 */
import { randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import fc from 'fast-check'
import { pack } from 'msgpackr'
import t, { type Test } from 'tap'
import { WebSocket } from 'ws'
import {
  InvalidArgumentError,
  NoWorkerError,
  NotFoundError,
  ShuttingDownError,
  Sworm,
  type Logger,
  type StartSpec,
  type WorkerRef,
} from '../src/index.js'
import { WsHub } from '../src/net/hub.js'
import type { SimCluster, SimMember } from './sim/raft-cluster.js'
import { settle, simCluster } from './sim/helpers.js'
import { startSworms, TEST_SECRET, waitFor } from './helpers.js'
import { VERSION, dialerAuth, hello, rawSocket, seal, type Raw, type Session } from './ws-protocol.js'
import { internals } from '../src/internal.js'
import { crc32c } from '../src/util/crc32c.js'

const seed = process.env.HOSTILE_SEED ? Number(process.env.HOSTILE_SEED) : Date.now() % 1e9
t.comment(`hostile seed ${seed} (replay: HOSTILE_SEED=${seed})`)

const unhandled: unknown[] = []
process.on('unhandledRejection', (e) => unhandled.push(e))

interface LogLine {
  level: string
  msg: string
  fields: Record<string, unknown>
}

function captureLogger(): { lines: LogLine[]; logger: Logger } {
  const lines: LogLine[] = []
  const at =
    (level: string) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      lines.push({ level, msg, fields: fields ?? {} })
    }
  return { lines, logger: { debug: () => {}, info: at('info'), warn: at('warn'), error: at('error') } }
}

// =================================================================================================
// A. Impossible Raft content in a simulated cluster
// =================================================================================================

interface Roles {
  c: SimCluster
  leader: SimMember
  /** The follower that receives the messages (or the leader, for cases aimed at it). */
  victim: SimMember
  /** Another member, the claimed sender. */
  other: SimMember
  term: number
  /** What the cluster logged since the injection. */
  lines: LogLine[]
}

interface SimCase {
  name: string
  /** Aim at the leader instead of a follower. */
  atLeader?: boolean
  /** Messages to inject: [transport sender, message]. */
  msgs: (r: Roles) => Array<[string, unknown]>
  /** The reason the node must log ('dropped a bad message'), if it drops the message. */
  dropped?: RegExp
  /** Extra checks once the cluster served again. */
  after?: (r: Roles, tt: Tap) => void
}

type Tap = Test

const FUTURE = 2 ** 40
const app = (from: string, to: string, term: number, extra: Record<string, unknown> = {}) => ({
  t: 'app',
  from,
  to,
  term,
  prevIndex: 0,
  prevTerm: 0,
  entries: [],
  commit: 0,
  ...extra,
})
const snap = (from: string, to: string, term: number, meta: Record<string, unknown>, data: unknown = pack([]), chunk: Record<string, unknown> = {}) => ({
  t: 'snap',
  from,
  to,
  term,
  meta: { index: 5, term, config: { voters: { n1: 'sim://n1', n2: 'sim://n2', n3: 'sim://n3' }, learners: {} }, ...meta },
  total: data instanceof Uint8Array ? data.length : 3,
  offset: 0,
  data,
  crc: data instanceof Uint8Array ? crc32c(data) : 0,
  ...chunk,
})
/** An append whose entries travel encoded, as nodes send them (`ents`: one binary per entry). */
const appEnts = (from: string, to: string, term: number, ents: unknown, extra: Record<string, unknown> = {}) => {
  const { entries: _none, ...m } = app(from, to, term, { prevIndex: 1, prevTerm: 1, ...extra })
  return { ...m, ents }
}
/** A map of `n` distinct one-character-ish keys: cheap on the wire, costly once decoded. */
const manyKeys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [i.toString(36), 0]))
const ghostEntry = (index: number, term: number) => ({ index, term, type: 'cmd', data: { op: 'put', key: 'ghost', value: 'boo' } })
/** The cluster moved past the injected term, and logged the new leader. */
const electedPastFuture = (r: Roles, tt: Tap): void => {
  const st = r.c.leader()!.node!.status()
  tt.ok(st.term > FUTURE, `the new leader's term ${st.term} is past the injected term`)
  tt.ok(r.lines.some((l) => l.msg === 'leader changed' && (l.fields.term as number) > FUTURE), 'the new leader is logged')
}

const simCases: SimCase[] = [
  {
    name: 'an append with a term from the future, from a member: followed (Raft), the cluster elects again and goes on',
    msgs: (r) => [[r.other.id, app(r.other.id, r.victim.id, FUTURE)]],
    after: electedPastFuture,
  },
  {
    name: 'an append with a term from the future, aimed at the leader: it steps down, a new leader serves',
    atLeader: true,
    msgs: (r) => [[r.other.id, app(r.other.id, r.victim.id, FUTURE)]],
    after: electedPastFuture,
  },
  {
    name: 'an append with a term from the future, from a node outside the configuration: same',
    msgs: (r) => [['stranger', app('stranger', r.victim.id, FUTURE)]],
    after: electedPastFuture,
  },
  {
    name: 'an append far beyond the log (prevIndex and commit ~1e9): rejected, nothing unknown applied',
    msgs: (r) => {
      const far = 1e9
      return [[r.leader.id, app(r.leader.id, r.victim.id, r.term, { prevIndex: far, prevTerm: r.term, entries: [ghostEntry(far + 1, r.term)], commit: far + 1 })]]
    },
  },
  {
    name: 'a heartbeat with a commit index far beyond the log: clamped to the log',
    msgs: (r) => [[r.leader.id, { t: 'hb', from: r.leader.id, to: r.victim.id, term: r.term, commit: 1e9, seq: 1 }]],
    after: (r, tt) => {
      const st = r.victim.node!.status()
      tt.ok(st.commit <= st.lastIndex, `commit ${st.commit} <= lastIndex ${st.lastIndex}`)
    },
  },
  {
    name: 'entries not contiguous with prevIndex: dropped',
    msgs: (r) => [[r.leader.id, app(r.leader.id, r.victim.id, r.term, { prevIndex: 1, prevTerm: 1, entries: [ghostEntry(7, r.term)] })]],
    dropped: /bad entry in app/,
  },
  {
    name: 'entries whose terms go down: dropped',
    msgs: (r) => [[r.leader.id, app(r.leader.id, r.victim.id, r.term, { prevIndex: 1, prevTerm: 1, entries: [ghostEntry(2, r.term), ghostEntry(3, 1)] })]],
    dropped: /bad entry in app/,
  },
  {
    name: 'encoded entries that are not binaries: dropped',
    msgs: (r) => [[r.leader.id, appEnts(r.leader.id, r.victim.id, r.term, ['x', 2])]],
    dropped: /bad ents/,
  },
  {
    name: 'an encoded entry that is not MessagePack: dropped',
    msgs: (r) => [[r.leader.id, appEnts(r.leader.id, r.victim.id, r.term, [new Uint8Array([0xc1])])]],
    dropped: /undecodable entry in app/,
  },
  {
    name: 'an encoded entry that would cost far more than its size to decode: dropped before decoding',
    msgs: (r) => [[r.leader.id, appEnts(r.leader.id, r.victim.id, r.term, [pack([2, r.term, 'cmd', manyKeys(6000)])])]],
    dropped: /undecodable entry in app: over budget/,
  },
  {
    name: 'an encoded entry that is not an entry tuple: dropped',
    msgs: (r) => [[r.leader.id, appEnts(r.leader.id, r.victim.id, r.term, [pack({ index: 2 })])]],
    dropped: /bad entry in app/,
  },
  {
    name: 'encoded entries not contiguous with prevIndex: dropped',
    msgs: (r) => [[r.leader.id, appEnts(r.leader.id, r.victim.id, r.term, [pack([7, r.term, 'cmd', ghostEntry(7, r.term).data])])]],
    dropped: /bad entry in app/,
  },
  {
    name: 'an append with both encoded and plain entries: dropped',
    msgs: (r) => [[r.leader.id, { ...appEnts(r.leader.id, r.victim.id, r.term, []), entries: [] }]],
    dropped: /both ents and entries/,
  },
  {
    name: 'an append whose prevTerm is beyond its term: dropped',
    msgs: (r) => [[r.leader.id, app(r.leader.id, r.victim.id, r.term, { prevIndex: 1, prevTerm: r.term + 7 })]],
    dropped: /bad app/,
  },
  {
    name: 'an entry with a negative index: dropped',
    msgs: (r) => [[r.leader.id, app(r.leader.id, r.victim.id, r.term, { prevIndex: -2, entries: [ghostEntry(-1, r.term)] })]],
    dropped: /bad app/,
  },
  {
    name: 'a snapshot newer than its own term: dropped',
    msgs: (r) => [[r.leader.id, snap(r.leader.id, r.victim.id, r.term, { index: 1e9, term: r.term + 5 })]],
    dropped: /bad snap/,
  },
  {
    name: 'a snapshot whose configuration has no voter: dropped',
    msgs: (r) => [[r.leader.id, snap(r.leader.id, r.victim.id, r.term, { index: 1e9, config: { voters: {}, learners: {} } })]],
    dropped: /bad snap/,
  },
  {
    name: 'a snapshot with a fractional index: dropped',
    msgs: (r) => [[r.leader.id, snap(r.leader.id, r.victim.id, r.term, { index: 2.5 })]],
    dropped: /bad snap/,
  },
  {
    name: 'a snapshot whose data is not bytes: dropped',
    msgs: (r) => [[r.leader.id, snap(r.leader.id, r.victim.id, r.term, { index: 1e9 }, 'not bytes')]],
    dropped: /bad snap/,
  },
  {
    name: 'a snapshot chunk that ends beyond the snapshot: dropped',
    msgs: (r) => [[r.leader.id, snap(r.leader.id, r.victim.id, r.term, { index: 1e9 }, new Uint8Array(8), { total: 4 })]],
    dropped: /bad snap/,
  },
  {
    name: 'an empty chunk of a non-empty snapshot: dropped',
    msgs: (r) => [[r.leader.id, snap(r.leader.id, r.victim.id, r.term, { index: 1e9 }, new Uint8Array(0), { total: 100 })]],
    dropped: /bad snap/,
  },
  {
    name: 'a snapshot answer with a negative offset: dropped',
    msgs: (r) => [[r.other.id, { t: 'snapResp', from: r.other.id, to: r.victim.id, term: r.term, index: 5, offset: -1 }]],
    dropped: /bad snapResp/,
  },
  {
    name: 'a snapshot chunk that fails its checksum, at a stale term: not installed',
    msgs: (r) => [[r.other.id, snap(r.other.id, r.victim.id, 1, { index: 2 ** 50, term: 1 }, new Uint8Array(8), { crc: 1 })]],
    after: (r, tt) => tt.ok(r.victim.node!.status().snapshotIndex < 2 ** 50, 'not installed'),
  },
  {
    name: 'a snapshot with an absurd index at a stale term: answered with the current term, not installed',
    msgs: (r) => [[r.other.id, snap(r.other.id, r.victim.id, 1, { index: 2 ** 50, term: 1 })]],
    after: (r, tt) => tt.ok(r.victim.node!.status().snapshotIndex < 2 ** 50, 'not installed'),
  },
  {
    name: 'a message addressed to another node: dropped',
    msgs: (r) => [[r.leader.id, app(r.leader.id, r.other.id, FUTURE)]],
    dropped: /not addressed to this node/,
    after: (r, tt) => tt.ok(r.victim.node!.status().term < FUTURE, 'its term did not move'),
  },
  {
    name: 'a message whose from is not its sender: dropped',
    msgs: (r) => [[r.other.id, app(r.leader.id, r.victim.id, FUTURE)]],
    dropped: /sender mismatch/,
    after: (r, tt) => tt.ok(r.victim.node!.status().term < FUTURE),
  },
  {
    name: 'a message of an unknown type: dropped',
    msgs: (r) => [[r.other.id, { t: 'takeOver', from: r.other.id, to: r.victim.id, term: FUTURE }]],
    dropped: /unknown message type/,
  },
  {
    name: 'a vote request whose last log term is beyond its term: dropped',
    msgs: (r) => [[r.other.id, { t: 'vote', from: r.other.id, to: r.victim.id, term: r.term + 1, pre: false, transfer: false, lastIndex: 1e9, lastTerm: FUTURE }]],
    dropped: /bad vote/,
  },
  {
    name: 'vote requests from a node outside the configuration at a stale term: refused',
    msgs: (r) => [['stranger', { t: 'vote', from: 'stranger', to: r.victim.id, term: 1, pre: false, transfer: false, lastIndex: 1e9, lastTerm: 1 }]],
  },
]

/** After the injection: a leader, a write through it, a linearizable read on every node, no safety violation. */
async function servesAgain(c: SimCluster, tt: Tap, label: string): Promise<void> {
  tt.ok(await c.sched.runUntilTrue(() => c.leader() !== undefined, 20_000), `${label}: a leader`)
  const leader = c.leader()!
  const out = await settle(c, leader.node!.propose({ op: 'put', key: 'after', value: label }), 20_000)
  tt.same(out, { ok: true }, `${label}: a write commits`)
  for (const m of c.alive()) {
    await settle(c, m.node!.read(), 20_000)
    tt.equal((m.sm as { data: Map<string, string> }).data.get('after'), label, `${label}: ${m.id} reads it`)
  }
  tt.same(c.violations, [], `${label}: no safety violation`)
  for (const m of c.alive()) tt.equal((m.sm as { data: Map<string, string> }).data.get('ghost'), undefined, `${label}: nothing unknown applied on ${m.id}`)
}

t.test('A. impossible Raft content: refused or handled by Raft, and the cluster serves', async (t) => {
  let i = 0
  for (const sc of simCases) {
    const caseSeed = seed + i++
    await t.test(sc.name, async (tt) => {
      const { lines, logger } = captureLogger()
      const c = await simCluster(3, caseSeed, { logger })
      // a committed write first, so the log is not empty
      await settle(c, c.leader()!.node!.propose({ op: 'put', key: 'before', value: '1' }))
      const leader = c.leader()!
      const followers = c.alive().filter((m) => m !== leader)
      const victim = sc.atLeader ? leader : followers[0]!
      const other = sc.atLeader ? followers[0]! : followers[1]!
      lines.length = 0
      const r: Roles = { c, leader, victim, other, term: leader.node!.status().term, lines }
      for (const [sender, msg] of sc.msgs(r)) c.net.inject(sender, victim.id, msg)
      await c.sched.runUntil(c.sched.now + 200)
      if (sc.dropped) {
        const line = lines.find((l) => l.msg === 'dropped a bad message' && l.fields.node === victim.id)
        tt.ok(line, 'a log line')
        tt.match(String(line?.fields.reason), sc.dropped)
        tt.equal(line?.level, 'warn')
      }
      await servesAgain(c, tt, sc.name.slice(0, 40))
      sc.after?.(r, tt)
      await c.stopAll()
    })
  }
})

t.test('A. a member flooding campaigns with a term from the future cannot depose a healthy leader', async (t) => {
  const c = await simCluster(3, seed + 100)
  const leader = c.leader()!
  const [f1, f2] = c.alive().filter((m) => m !== leader) as [SimMember, SimMember]
  // Healthy: every follower has heard from the leader. (Right after an election a follower that
  // voted but has not heard from the winner yet does follow a higher-term vote request: Raft.
  // A partitioned node cannot send one without winning a pre-vote first.)
  t.ok(await c.sched.runUntilTrue(() => [f1, f2].every((m) => m.node!.status().leader === leader.id), 5000), 'the followers know the leader')
  const term = leader.node!.status().term
  // pre-votes and votes with a stale log and with an (impossibly) long one, 300 rounds in 6 s
  for (let k = 0; k < 300; k++) {
    for (const to of [leader, f2]) {
      for (const pre of [true, false]) {
        for (const [lastIndex, lastTerm] of [
          [0, 0],
          [1e9, FUTURE + k - 1],
        ]) {
          c.net.inject(f1.id, to.id, { t: 'vote', from: f1.id, to: to.id, term: FUTURE + k, pre, transfer: false, lastIndex, lastTerm })
        }
      }
    }
    await c.sched.runUntil(c.sched.now + 20)
  }
  t.equal(c.leader(), leader, 'the leader kept its leadership')
  t.equal(leader.node!.status().term, term, 'and its term')
  t.equal(f2.node!.status().term, term, 'the other follower did not move either')
  await servesAgain(c, t, 'after the campaign flood')
  await c.stopAll()
})

// =================================================================================================
// Raw protocol clients, for peers that misbehave on purpose
// =================================================================================================

const openSockets = new Set<WebSocket | Socket>()
t.teardown(() => {
  for (const s of openSockets) {
    if (s instanceof WebSocket) s.terminate()
    else s.destroy()
  }
})

/** A raw WebSocket to `url`, not yet past any handshake (tracked for the final cleanup). */
const rawConnect = (url: string): Promise<Raw> => rawSocket(url, { opened: (ws) => openSockets.add(ws), closed: (ws) => openSockets.delete(ws) })

/** The proof a dialer sends after `challenge`, and the session it starts. */
function dialerProof(h: ReturnType<typeof hello>, id: string, serverId: string, challenge: unknown, secret = TEST_SECRET): { auth: Buffer; session: Session } {
  return dialerAuth(h, id, serverId, challenge as { boot: string; nonce: Uint8Array; tls: boolean }, secret)
}

/** A raw client that authenticated as node `id` with the cluster secret: a peer we control. */
async function rawPeer(url: string, id: string, serverId: string): Promise<Raw & { send(batch: Array<[string, unknown]>): void }> {
  const raw = await rawConnect(url)
  const h = hello(id)
  raw.ws.send(h.frame)
  await waitFor(() => raw.frames.length >= 1, 5000, 'challenge')
  const ch = raw.frames.shift() as { t: string }
  if (ch.t !== 'challenge') throw new Error(`expected a challenge, got ${JSON.stringify(ch)}`)
  const { auth, session } = dialerProof(h, id, serverId, ch)
  raw.next = session
  raw.ws.send(auth)
  await waitFor(() => raw.frames.length >= 1, 5000, 'ok')
  if ((raw.frames.shift() as { t?: string }).t !== 'ok') throw new Error('not accepted')
  return Object.assign(raw, { send: (batch: Array<[string, unknown]>) => raw.ws.send(seal(session, pack({ v: VERSION, b: batch }))) })
}

/** Data-frame messages a raw peer received, flattened to [group, msg]. */
const received = (raw: Raw): Array<[string, unknown]> => raw.frames.flatMap((f) => ((f as { b?: Array<[string, unknown]> }).b ?? []))

const echo = (tag: string) => ({ handleCall: (msg: unknown) => ({ tag, msg }) })

/** Every node registers a fresh name and every node reads all of them (linearizable reads). */
async function clusterServes(nodes: Sworm[], tt: Tap, label: string): Promise<void> {
  const refs: Array<[string, WorkerRef]> = []
  for (const s of nodes) {
    const name = `${label}:${s.nodeId}:${randomBytes(3).toString('hex')}`
    const ref = s.spawn(echo(s.nodeId))
    tt.equal(await s.registerName(name, ref), true, `${label}: ${s.nodeId} registers a name`)
    refs.push([name, ref])
  }
  for (const s of nodes) for (const [name, ref] of refs) tt.same(await s.whereisName(name, { consistent: true }), ref, `${label}: ${s.nodeId} reads ${name}`)
  tt.same(await nodes[0]!.call(refs[refs.length - 1]![0], 'ping'), { tag: nodes[nodes.length - 1]!.nodeId, msg: 'ping' }, `${label}: a call across nodes`)
}

const warnsSince = (lines: LogLine[], from: number, pred: (l: LogLine) => boolean = () => true): LogLine[] =>
  lines.slice(from).filter((l) => l.level === 'warn' && pred(l))

/** Over `seconds`, at most one line a second per message and reason (plus one for the edges). */
function atMostOneASecond(tt: Tap, warns: LogLine[], seconds: number): void {
  const per = new Map<string, number>()
  for (const l of warns) {
    const k = `${l.msg} / ${String(l.fields.reason ?? '')}`
    per.set(k, (per.get(k) ?? 0) + 1)
  }
  for (const [k, n] of per) tt.ok(n <= Math.ceil(seconds) + 1, `${k}: ${n} lines in ${seconds.toFixed(1)} s`)
}

// =================================================================================================
// B, C, D: one real cluster (3 nodes, real WebSockets and LevelDB), two sworms on the same ports
// =================================================================================================

t.test('a real cluster under hostile peers and callers', async (t) => {
  const { lines, logger } = captureLogger()
  const c = await startSworms(3, 'hostile', { logger })
  const nodes = c.nodes as [Sworm, Sworm, Sworm]
  const [n1, n2, n3] = nodes
  const others = await Promise.all(
    Object.entries(c.peers).map(([nodeId, listen]) =>
      Sworm.start({ name: 'other', nodeId, listen, peers: c.peers, dataDir: `${c.dir}/other-${nodeId}`, secret: TEST_SECRET, logger }),
    ),
  )
  t.teardown(async () => {
    await Promise.all(others.map((s) => s.stop().catch(() => {})))
    await c.stop()
  })
  await waitFor(() => others.some((s) => s.status().role === 'leader'), 10_000, 'a leader of the second sworm')
  const url = c.peers.n1!

  await t.test('B. a rogue authenticated peer: bad content dropped with a log line, the node serves', async (tt) => {
    const evil = await rawPeer(url, 'evil', 'n1')
    const mark = lines.length
    evil.send([
      ['raft:ghost', app('evil', 'n1', FUTURE)], // a sworm this hub does not serve
      ['msg:ghost', { t: 'cast' }],
      ['raft:hostile', app('n2', 'n1', FUTURE)], // claims to be n2
      ['msg:hostile', { t: 'nope' }],
      ['msg:hostile', { t: 'joinReq', node: 'x', url: 'not a url' }],
      ['msg:other', 42], // the second sworm on the port
      ['msg:hostile', { t: 'call', id: 7, to: { sworm: 'hostile', node: 'n1', inc: 'bogus', id: 1 }, msg: 'hi' }],
    ])
    await waitFor(() => received(evil).some(([g, m]) => g === 'msg:hostile' && (m as { id?: number }).id === 7), 5000, 'the reply to the bogus call')
    tt.match(received(evil).find(([, m]) => (m as { id?: number }).id === 7)![1], { t: 'reply', ok: false, code: 'NO_WORKER' }, 'a call to an unknown worker is answered NO_WORKER')
    const expected: Array<[string, (l: LogLine) => boolean]> = [
      ['unknown sworm', (l) => l.msg === 'message for unknown group dropped' && l.fields.peer === 'evil'],
      ['forged sender', (l) => l.msg === 'dropped a bad message' && l.fields.from === 'evil' && l.fields.reason === 'sender mismatch'],
      ['unknown worker message', (l) => l.msg === 'dropped a bad worker message' && l.fields.reason === 'unknown type'],
      ['the other sworm, its own', (l) => l.msg === 'dropped a bad worker message' && l.fields.reason === 'not an object'],
    ]
    await waitFor(() => expected.every(([, p]) => warnsSince(lines, mark).some(p)), 5000, 'the warn lines')
    for (const [what, p] of expected) tt.ok(warnsSince(lines, mark).some(p), `${what}: logged`)
    tt.ok(n1.status().term < FUTURE, 'the forged message did not move the term')
    tt.notOk(evil.isClosed(), 'bad content inside valid frames does not cost the connection')
    await clusterServes(nodes, tt, 'b1')
  })

  await t.test('B. replies forged by another peer do not answer a call', async (tt) => {
    let release: (v: string) => void = () => {}
    const gated = n2.spawn({ handleCall: () => new Promise<string>((r) => (release = r)) })
    tt.ok(await n2.registerName('b:gated', gated))
    const mark = lines.length
    const pending = n1.call('b:gated', 'q', { timeout: 20_000 })
    const evil = await rawPeer(url, 'evil-replier', 'n1')
    evil.send(Array.from({ length: 2000 }, (_, i): [string, unknown] => ['msg:hostile', { t: 'reply', id: i, ok: true, value: 'forged' }]))
    await waitFor(() => warnsSince(lines, mark, (l) => l.fields.reason === 'reply from a node the call did not go to').length === 1, 5000, 'the forged reply logged')
    release('genuine')
    tt.equal(await pending, 'genuine', 'the call got the reply of the node it went to')
  })

  await t.test('B. random worker-channel messages from an authenticated peer (fast-check, seeded)', async (tt) => {
    const refLike = fc.record({ sworm: fc.constantFrom('hostile', 'other', 'x'), node: fc.constantFrom('n1', 'n2', 'n9'), inc: fc.string(), id: fc.oneof(fc.nat(5), fc.double()) })
    const wireLike = fc
      .record(
        {
          t: fc.constantFrom('cast', 'call', 'reply', 'joinReq', 'metricsAt', 'x'),
          id: fc.oneof(fc.nat(1000), fc.string(), fc.double()),
          to: fc.oneof(refLike, fc.anything()),
          msg: fc.anything(),
          ok: fc.boolean(),
          value: fc.anything(),
          code: fc.oneof(fc.constantFrom('NO_WORKER', 'X'), fc.anything()),
          message: fc.anything(),
          node: fc.oneof(fc.constantFrom('n1', 'n2'), fc.string()),
          url: fc.oneof(fc.string(), fc.webUrl()),
          reply: fc.boolean(),
        },
        { requiredKeys: ['t'] },
      )
      // a valid join request would really add a (never reachable) node: keep those malformed
      .map((m) => (m.t === 'joinReq' ? { ...m, url: 'not a url' } : m))
    const samples = fc.sample(fc.oneof(wireLike, fc.anything()), { seed, numRuns: 3000 })
    const fuzzer = await rawPeer(url, 'fuzzer', 'n1')
    for (let i = 0; i < samples.length; i += 100) fuzzer.send(samples.slice(i, i + 100).map((m): [string, unknown] => ['msg:hostile', m]))
    await waitFor(() => (internals(n1).hub!.stats().peers.fuzzer?.received ?? 0) >= samples.length, 10_000, 'every sample received')
    tt.notOk(fuzzer.isClosed(), 'decoded and handled without closing the connection')
    await clusterServes(nodes, tt, 'b-fuzz')
  })

  await t.test('B. a term from the future from an authenticated stranger: the cluster steps down, elects again, serves', async (tt) => {
    const evil = await rawPeer(url, 'evil2', 'n1')
    const termBefore = n1.status().term
    evil.send([['raft:hostile', app('evil2', 'n1', FUTURE)]])
    const logged = () => lines.some((l) => l.msg === 'leader changed' && (l.fields.term as number) > FUTURE)
    await waitFor(() => nodes.every((s) => s.status().term > FUTURE) && nodes.some((s) => s.status().role === 'leader') && logged(), 15_000, 'a new leader past the term, logged')
    tt.ok(termBefore < FUTURE)
    tt.ok(others.every((s) => s.status().term < FUTURE), 'the other sworm on the same ports is not affected')
    await clusterServes(nodes, tt, 'b2')
    await clusterServes(others, tt, 'b2-other')
  })

  await t.test('C. an authenticated peer floods 50k frames: the node serves; queues and log lines stay bounded', async (tt) => {
    const flooder = await rawPeer(url, 'flooder', 'n1')
    const hub = internals(n1).hub!
    const mark = lines.length
    const term = n1.status().term
    // each frame names another unknown sworm: the log must not get a line per name
    const frameN = (i: number) =>
      pack({
        v: VERSION,
        b: [
          ['raft:hostile', { t: 'vote', from: 'flooder', to: 'n1', term: 1, pre: false, transfer: false, lastIndex: 0, lastTerm: 0 }], // stale: answered
          [`raft:ghost-${i}`, 1],
          ['msg:hostile', { t: 'zzz' }],
          ['raft:hostile', { t: 'bogus', from: 'flooder', to: 'n1', term: 1 }],
        ],
      })
    const frame = frameN(0)
    const FRAMES = 50_000
    const started = Date.now()
    let flooding = true
    let maxQueued = 0
    let commitsDuring = 0
    const writer = (async () => {
      for (let i = 0; flooding; i++) {
        if (await n1.registerName(`flood:${i}`, n1.spawn(echo('f')))) commitsDuring++
        maxQueued = Math.max(maxQueued, hub.stats().peers.flooder?.queued ?? 0)
      }
    })()
    for (let i = 0; i < FRAMES; i++) {
      flooder.ws.send(seal(flooder.session!, frameN(i)))
      if (i % 500 === 499) {
        maxQueued = Math.max(maxQueued, hub.stats().peers.flooder?.queued ?? 0)
        await new Promise((r) => setImmediate(r))
      }
    }
    await waitFor(() => (hub.stats().peers.flooder?.received ?? 0) >= FRAMES * 4, 60_000, 'every frame received')
    flooding = false
    await writer
    const seconds = (Date.now() - started) / 1000
    tt.comment(`${FRAMES} frames in ${seconds.toFixed(1)} s; ${commitsDuring} names registered meanwhile; ${received(flooder).length} answers`)
    tt.ok(commitsDuring >= 1, 'writes committed during the flood')
    tt.ok(maxQueued <= 1000, `the send queue to the flooder stayed bounded (max ${maxQueued})`)
    const warns = warnsSince(lines, mark)
    tt.comment(`${warns.length} warn lines for ${FRAMES * 4} bad messages in ${seconds.toFixed(1)} s`)
    atMostOneASecond(tt, warns, seconds)
    // the lines account for every message: each tells how many it held back since the last one
    const accounted = () =>
      warnsSince(lines, mark, (l) => l.msg === 'message for unknown group dropped').reduce((n, l) => n + 1 + ((l.fields.suppressed as number | undefined) ?? 0), 0)
    await waitFor(
      () => {
        flooder.ws.send(seal(flooder.session!, frame)) // one more after the window, to get the last count out
        return accounted() >= FRAMES
      },
      5000,
      'lines accounting for every unknown-group message',
    )
    tt.equal(n1.status().term, term, 'stale votes did not move the term')
    tt.notOk(flooder.isClosed())
    await clusterServes(nodes, tt, 'c1')
  })

  await t.test('C. frames of the maximum size, then one byte more', async (tt) => {
    const MAX = 64 * 1024 * 1024
    const big = await rawPeer(url, 'big', 'n1')
    const hub = internals(n1).hub!
    const mark = lines.length
    const frame = pack({ v: VERSION, b: [['raft:hostile', new Uint8Array(MAX - 64)]] })
    tt.ok(frame.length + 16 <= MAX, 'with its tag')
    for (let i = 0; i < 3; i++) big.ws.send(seal(big.session!, frame))
    await waitFor(() => (hub.stats().peers.big?.received ?? 0) >= 3, 30_000, 'three maximal frames received')
    tt.notOk(big.isClosed(), 'maximal frames are accepted')
    await clusterServes(nodes, tt, 'c2')
    big.ws.send(Buffer.alloc(MAX + 1))
    tt.equal((await big.closed).code, 1009, 'one byte more closes the connection')
    await waitFor(() => warnsSince(lines, mark, (l) => /maxFrameBytes/.test(l.msg)).length === 1, 5000, 'the oversize line')
    tt.ok(warnsSince(lines, mark, (l) => l.msg === 'dropped a bad message' && l.fields.from === 'big').length >= 1, 'the bytes-only messages were dropped with a line')
    await clusterServes(nodes, tt, 'c2-after')
  })

  await t.test('C. unauthenticated floods: pending handshakes are capped, bad handshakes refused with few lines', async (tt) => {
    // 300 connections that never say hello: the hub holds at most 256 in handshake
    const mark = lines.length
    const silent = await Promise.all(Array.from({ length: 300 }, () => rawConnect(url).catch(() => undefined)))
    await waitFor(() => silent.filter((r) => !r || r.isClosed()).length >= 300 - 256, 5000, 'the extra connections refused')
    tt.ok(warnsSince(lines, mark, (l) => /too many connections in handshake/.test(l.msg)).length >= 1, 'the refusal is logged')
    tt.ok(warnsSince(lines, mark, (l) => /too many connections in handshake/.test(l.msg)).length <= 5, 'once a second at most')
    await clusterServes(nodes, tt, 'c3-pending') // established peers are not affected
    for (const r of silent) r?.ws.terminate()

    // 400 bad handshakes, 50 at a time: garbage, text, an unknown version, a wrong secret
    const mark2 = lines.length
    const started = Date.now()
    let version = VERSION + 1
    const kinds = [
      (r: Raw) => r.ws.send(Buffer.from([0xc1, 0xc1, 0xc1])),
      (r: Raw) => r.ws.send('hello?'),
      // another version each time: the log must not get a line per version
      (r: Raw) => r.ws.send(pack({ v: version++, t: 'hello', id: 'x', boot: 'b', nonce: randomBytes(32) })),
      async (r: Raw) => {
        const h = hello('intruder')
        r.ws.send(h.frame)
        await waitFor(() => r.frames.length >= 1 || r.isClosed(), 5000, 'challenge')
        r.ws.send(dialerProof(h, 'intruder', 'n1', r.frames[0], '9c41e07b2d5f8a36c1e4b7d0f2a95e38').auth)
      },
    ]
    let refused = 0
    for (let round = 0; round < 8; round++) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const r = await rawConnect(url)
          await kinds[i % kinds.length]!(r)
          const { code } = await r.closed
          if (code >= 1002 && code <= 1008) refused++
        }),
      )
    }
    const seconds = (Date.now() - started) / 1000
    tt.equal(refused, 400, 'every bad handshake refused')
    const warns = warnsSince(lines, mark2)
    tt.ok(warns.length >= 4, 'logged')
    tt.comment(`${warns.length} warn lines for 400 refusals in ${seconds.toFixed(1)} s`)
    atMostOneASecond(tt, warns, seconds)
    await clusterServes(nodes, tt, 'c3-bad')
  })

  await t.test('C. eight unauthenticated 16 MiB frames of empty maps at once: refused unread and undecoded', async (tt) => {
    // decoded, each would take ~1 GiB of heap (this killed the node before the pre-auth limit)
    const n = 16 * 1024 * 1024
    const frame = Buffer.alloc(5 + n, 0x80)
    frame[0] = 0xdd
    frame.writeUInt32BE(n, 1)
    const mark = lines.length
    const raws = await Promise.all(Array.from({ length: 8 }, () => rawConnect(url)))
    for (const r of raws) r.ws.send(frame)
    for (const r of raws) tt.equal((await r.closed).code, 1009, 'closed: too much data before authentication')
    tt.ok(warnsSince(lines, mark, (l) => /before authentication/.test(String(l.fields.reason))).length >= 1, 'logged')
    await clusterServes(nodes, tt, 'c-unauth-big')
  })

  await t.test('C. an authenticated peer sends 16 MiB of empty maps: refused before decoding', async (tt) => {
    const maps = await rawPeer(url, 'maps', 'n1')
    const n = 16 * 1024 * 1024
    const body = Buffer.alloc(5 + n, 0x80)
    body[0] = 0xdd
    body.writeUInt32BE(n, 1)
    // { v, b: [['raft:hostile', <16 Mi empty maps>]] }: the last byte of the packed nil is replaced
    const frame = Buffer.concat([pack({ v: VERSION, b: [['raft:hostile', null]] }).subarray(0, -1), body])
    const mark = lines.length
    maps.ws.send(seal(maps.session!, frame))
    tt.equal((await maps.closed).code, 1009, 'closed')
    await waitFor(() => warnsSince(lines, mark, (l) => l.fields.reason === 'frame would decode too large' && l.fields.peer === 'maps').length === 1, 5000, 'the line')
    await clusterServes(nodes, tt, 'c-maps')
  })

  await t.test('D. wrong types and sizes: typed errors, nothing changes', async (tt) => {
    const ref = n1.spawn(echo('d'))
    tt.ok(await n1.registerName('d:target', ref))
    const before = n1.registered().length
    const other = others[0]!.spawn(echo('other'))
    const notStrings: unknown[] = [42, null, undefined, {}, [], true, Symbol('s'), () => 'x']
    const tooLong = ['x'.repeat(1025), '🦀'.repeat(257)] // 1,025 and 1,028 UTF-8 bytes; the limit is 1,024
    const badNames = [...notStrings, ...tooLong]
    const badRefs: unknown[] = [
      ...notStrings,
      'd:target-as-ref',
      { sworm: 'hostile', node: 'n1', inc: ref.inc },
      { ...ref, id: 'one' },
      { ...ref, id: NaN },
      { ...ref, id: 0 }, // (negative: a ref fixed at a supervised placement, valid)
      { ...ref, id: 1.5 },
      { ...ref, id: 2 ** 60 },
      { ...ref, node: '' },
      { ...ref, inc: 7 },
      other, // another sworm's
    ]
    const badTargets = [...badNames, ...badRefs.filter((r) => typeof r !== 'string')] // a string is a name
    const spec: StartSpec = { module: './nowhere.js', fn: 'start', args: [] }
    const badSpecs: unknown[] = [
      { module: 5, fn: 'start' },
      { module: '', fn: 'start' },
      { module: 'm', fn: '' },
      { module: 'm', fn: 'f', args: 'x' },
      { module: 'm', fn: 'f', restart: 'sometimes' },
      { module: 'm', fn: 'f', maxRestarts: -1 },
      { module: 'm', fn: 'f', maxSeconds: 'x' },
      { module: 'm', fn: 'f', args: ['x'.repeat(2 * 1024 * 1024)] },
    ]
    const circular: Record<string, unknown> = {}
    circular.self = circular
    const oneMiB = 1024 * 1024
    const badMessages: unknown[] = ['x'.repeat(oneMiB - 4), new Uint8Array(oneMiB), circular, 10n ** 40n]
    const badOpts: unknown[] = [null, 5, 'x', { timeout: -1 }, { timeout: 0 }, { timeout: NaN }, { timeout: Infinity }, { timeout: '100' }]
    const badWorkers: unknown[] = [42, null, 'x', [], { handleCall: 42 }, { handleCast: 'no' }, { terminate: {} }]

    type Row = [label: string, call: () => unknown]
    const rows: Row[] = [
      ...badNames.map((n): Row => [`registerName(${String(n).slice(0, 12)}, ref)`, () => n1.registerName(n as string, ref)]),
      ...badRefs.map((r, i): Row => [`registerName(name, bad ref #${i})`, () => n1.registerName('d:x', r as WorkerRef)]),
      ...badSpecs.map((sp, i): Row => [`registerName(name, bad spec #${i})`, () => n1.registerName('d:x', sp as StartSpec)]),
      ...badNames.map((n): Row => [`whereisOrRegisterName(${String(n).slice(0, 12)}, spec)`, () => n1.whereisOrRegisterName(n as string, spec)]),
      ...badSpecs.map((sp, i): Row => [`whereisOrRegisterName(name, bad spec #${i})`, () => n1.whereisOrRegisterName('d:x', sp as StartSpec)]),
      ...badNames.map((n): Row => [`whereisName(${String(n).slice(0, 12)})`, () => n1.whereisName(n as string)]),
      ...badNames.map((n): Row => [`whereisName(${String(n).slice(0, 12)}, consistent)`, () => n1.whereisName(n as string, { consistent: true })]),
      ...badNames.map((n): Row => [`unregisterName(${String(n).slice(0, 12)})`, () => n1.unregisterName(n as string)]),
      ...badNames.map((n): Row => [`join(${String(n).slice(0, 12)}, ref)`, () => n1.join(n as string, ref)]),
      ...badRefs.map((r, i): Row => [`join(group, bad ref #${i})`, () => n1.join('g', r as WorkerRef)]),
      ...badNames.map((n): Row => [`leave(${String(n).slice(0, 12)}, ref)`, () => n1.leave(n as string, ref)]),
      ...badRefs.map((r, i): Row => [`leave(group, bad ref #${i})`, () => n1.leave('g', r as WorkerRef)]),
      ...badNames.map((n): Row => [`members(${String(n).slice(0, 12)})`, () => n1.members(n as string)]),
      ...badTargets.map((x, i): Row => [`send(bad target #${i})`, () => n1.send(x as string, 'hi')]),
      ...badTargets.map((x, i): Row => [`call(bad target #${i})`, () => n1.call(x as string, 'hi')]),
      ...badMessages.map((m, i): Row => [`send(name, bad message #${i})`, () => n1.send('d:target', m)]),
      ...badMessages.map((m, i): Row => [`call(name, bad message #${i})`, () => n1.call('d:target', m)]),
      ...badMessages.map((m, i): Row => [`send(unknown name, bad message #${i}): the message is checked first`, () => n1.send('d:nobody', m)]),
      ...badOpts.map((o, i): Row => [`call(name, msg, bad options #${i})`, () => n1.call('d:target', 'hi', o as { timeout: number })]),
      ...badWorkers.map((w, i): Row => [`spawn(bad worker #${i})`, () => n1.spawn(w as object)]),
      ...badRefs.map((r, i): Row => [`exit(bad ref #${i})`, () => n1.exit(r as WorkerRef)]),
      ['exit(a ref of another node)', () => n1.exit(n2.spawn(echo('x')))],
      ...[null, 5, { timeoutMs: -1 }, { timeoutMs: 'soon' }].map((o, i): Row => [`drain(bad options #${i})`, () => n1.drain(o as { timeoutMs: number })]),
    ]
    for (const [label, call] of rows) {
      let r: unknown
      try {
        r = call()
      } catch (err) {
        tt.type(err, InvalidArgumentError, `${label}: throws InvalidArgumentError`)
        continue
      }
      tt.ok(r instanceof Promise, `${label}: returns a promise`)
      await tt.rejects(r as Promise<unknown>, InvalidArgumentError, `${label}: rejects InvalidArgumentError`)
    }
    tt.comment(`${rows.length} bad calls`)
    tt.equal(n1.registered().length, before, 'nothing was registered')
    tt.same(n1.groups(), [], 'no group was made')

    // just within the limits: accepted
    const exact = 'n'.repeat(1024)
    tt.equal(await n1.registerName(exact, n1.spawn(echo('exact'))), true, 'a name of exactly 1,024 bytes')
    tt.same(await n2.whereisName(exact, { consistent: true }), n1.whereisName(exact))
    const biggest = 'x'.repeat(oneMiB - 5) // a str32 header of 5 bytes: exactly 1 MiB encoded
    tt.same(await n2.call('d:target', biggest), { tag: 'd', msg: biggest }, 'a message of exactly 1 MiB, across nodes')
  })

  await t.test('D. unknown refs and names: typed errors; a name for a worker that is not there vanishes', async (tt) => {
    const ghostLocal: WorkerRef = { sworm: 'hostile', node: 'n1', inc: n1.incarnation, id: 999_999 }
    const ghostRemote: WorkerRef = { sworm: 'hostile', node: 'n2', inc: n2.incarnation, id: 999_999 }
    const staleRemote: WorkerRef = { sworm: 'hostile', node: 'n2', inc: 'an-old-incarnation', id: 1 }
    const noNode: WorkerRef = { sworm: 'hostile', node: 'n9', inc: 'x', id: 1 }
    const stranger = n1.spawn(echo('stranger'))

    await tt.rejects(n1.registerName('d:ghost-local', ghostLocal), NoWorkerError, 'registerName with a ref of this node that does not exist')
    await tt.rejects(n1.registerName('d:no-node', noNode), NoWorkerError, 'registerName with a ref of an unknown node')
    await tt.rejects(n1.registerName('d:stale', staleRemote), NoWorkerError, 'registerName with a ref of an old incarnation')
    await tt.rejects(n1.join('g', stranger), NotFoundError, 'join with a ref that holds no name')
    await tt.rejects(n1.leave('g', ghostRemote), NotFoundError, 'leave with an unknown ref')
    await tt.rejects(n1.send(noNode, 'hi'), NoWorkerError, 'send to a ref of an unknown node')
    const t0 = Date.now()
    await tt.rejects(n1.call(noNode, 'hi', { timeout: 10_000 }), NoWorkerError, 'call to a ref of an unknown node')
    tt.ok(Date.now() - t0 < 5000, 'at once, not after the timeout')
    await tt.rejects(n1.call(ghostRemote, 'hi'), NoWorkerError, 'call to an unknown worker of another node')
    await tt.rejects(n1.call(staleRemote, 'hi'), NoWorkerError, 'call to a worker of an old incarnation')
    await tt.rejects(n1.call(ghostLocal, 'hi'), NoWorkerError, 'call to an unknown local worker')
    await tt.rejects(n1.send(ghostLocal, 'hi'), NoWorkerError, 'send to an unknown local worker')
    await tt.rejects(n1.exit(ghostLocal), NoWorkerError, 'exit of an unknown worker')
    await tt.rejects(n1.call('d:nobody', 'hi'), NoWorkerError, 'call to an unknown name')
    await tt.rejects(n1.send('d:nobody', 'hi'), NoWorkerError, 'send to an unknown name')
    tt.equal(await n1.unregisterName('d:nobody'), false, 'unregisterName of an unknown name')
    tt.equal(n1.whereisName('d:nobody'), undefined)
    tt.same(n1.members('d:no-group'), [])

    // A ref of another node's current incarnation with an id it never gave out: only that node
    // can tell, so the name is taken, then dropped everywhere when the node sees it.
    tt.equal(await n1.registerName('d:ghost-remote', ghostRemote), true, 'taken (n1 cannot tell)')
    await waitFor(() => nodes.every((s) => s.whereisName('d:ghost-remote') === undefined), 5000, 'the name of a worker n2 never had vanishes')
    // The same when the worker ends while its registration is in flight (a race this test found).
    const brief = n1.spawn(echo('brief'))
    const reg = n1.registerName('d:brief', brief)
    await n1.exit(brief)
    tt.equal(await reg, true)
    await waitFor(() => nodes.every((s) => s.whereisName('d:brief') === undefined), 5000, 'the name of a worker that ended meanwhile vanishes')
  })

  await t.test('D. every method after stop(): ShuttingDownError', async (tt) => {
    const ref = n3.spawn(echo('n3'))
    tt.ok(await n3.registerName('d:on-n3', ref))
    const slow = n1.spawn({ handleCall: () => new Promise(() => {}) })
    tt.ok(await n1.registerName('d:slow', slow))
    await waitFor(() => n3.whereisName('d:slow') !== undefined, 5000, 'n3 sees the name') // so the call goes out at once
    const pending = tt.rejects(n3.call('d:slow', 'wait', { timeout: 60_000 }), ShuttingDownError, 'a call in flight at stop()')
    // a name n3 may not have applied yet: the call first reads through the leader, and stop()
    // begins meanwhile (such a call used to go out after stop() and wait for its whole timeout)
    tt.ok(await n1.registerName('d:slow-2', n1.spawn({ handleCall: () => new Promise(() => {}) })))
    const racing = tt.rejects(n3.call('d:slow-2', 'wait', { timeout: 60_000 }), ShuttingDownError, 'a call looking its name up at stop()')
    await n3.stop()
    await pending
    await racing
    await n3.stop() // idempotent
    const spec: StartSpec = { module: './nowhere.js', fn: 'start', args: [] }
    const rows: Array<[string, () => unknown]> = [
      ['spawn', () => n3.spawn(echo('late'))],
      ['exit', () => n3.exit(ref)],
      ['registerName(ref)', () => n3.registerName('d:late', ref)],
      ['registerName(spec)', () => n3.registerName('d:late', spec)],
      ['whereisOrRegisterName', () => n3.whereisOrRegisterName('d:late', spec)],
      ['unregisterName', () => n3.unregisterName('d:on-n3')],
      ['whereisName', () => n3.whereisName('d:target')],
      ['whereisName(consistent)', () => n3.whereisName('d:target', { consistent: true })],
      ['registered', () => n3.registered()],
      ['join', () => n3.join('g', ref)],
      ['leave', () => n3.leave('g', ref)],
      ['members', () => n3.members('g')],
      ['groups', () => n3.groups()],
      ['send', () => n3.send('d:target', 'hi')],
      ['call', () => n3.call('d:target', 'hi')],
      ['drain', () => n3.drain()],
      ['undrain', () => n3.undrain()],
      ['rebalance', () => n3.rebalance()],
    ]
    for (const [label, call] of rows) {
      let r: unknown
      try {
        r = call()
      } catch (err) {
        tt.type(err, ShuttingDownError, `${label}: throws ShuttingDownError`)
        continue
      }
      await tt.rejects(r as Promise<unknown>, ShuttingDownError, `${label}: rejects ShuttingDownError`)
    }
    tt.equal(n3.status().node, 'n3', 'status() still answers (for post-mortems)')
    tt.type(await n3.metrics(), 'string', 'so do the metrics')
    await waitFor(() => n1.whereisName('d:on-n3') === undefined, 10_000, "the stopped node's names are gone")
    await clusterServes([n1, n2], tt, 'd-after-stop')
  })
})

t.test('C. handshake timeout and pending cap (small values), idle and half-sent upgrade requests', async (t) => {
  const { lines, logger } = captureLogger()
  const opts = { listen: 'ws://127.0.0.1:0', secret: TEST_SECRET, handshakeTimeoutMs: 300, maxPendingHandshakes: 20 }
  const a = new WsHub({ ...opts, nodeId: 'a', logger })
  const b = new WsHub({ ...opts, nodeId: 'b' })
  await a.start()
  await b.start()
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const ca = a.channel('g')
  const cb = b.channel('g')
  const peers = { a: `ws://127.0.0.1:${a.address.port}`, b: `ws://127.0.0.1:${b.address.port}` }
  ca.setPeers(peers)
  cb.setPeers(peers)
  const got: unknown[] = []
  ca.onMessage((_from, m) => got.push(m))
  cb.send('a', 'first')
  await waitFor(() => got.includes('first'), 5000, 'the pair connected')
  const sockets = () => a.stats().sockets

  // 30 silent WebSockets: 20 wait in handshake, 10 are refused at once; the 20 time out
  const silent = await Promise.all(Array.from({ length: 30 }, () => rawConnect(peers.a)))
  await waitFor(() => silent.filter((r) => r.isClosed()).length >= 10, 2000, '10 refused at once')
  t.ok(lines.some((l) => /too many connections in handshake/.test(l.msg)))
  cb.send('a', 'during')
  await waitFor(() => got.includes('during'), 5000, 'the peer is served while the hub is full of pending handshakes')
  await waitFor(() => silent.every((r) => r.isClosed()), 3000, 'every silent connection closed by the timeout')
  t.ok(lines.some((l) => l.msg === 'refused connection' && l.fields.reason === 'handshake timeout'), 'the timeout is logged')
  t.equal(sockets(), 1, 'only the peer connection is left')

  // 20 raw TCP connections: idle, or sending half an upgrade request; cut by the same timeout
  const tcp = await Promise.all(
    Array.from(
      { length: 20 },
      (_, i) =>
        new Promise<{ closed: () => boolean }>((resolve) => {
          let closed = false
          const s = connect(a.address.port, '127.0.0.1', () => {
            if (i % 2) s.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n')
            resolve({ closed: () => closed })
          })
          openSockets.add(s)
          s.on('error', () => {})
          s.on('close', () => {
            closed = true
            openSockets.delete(s)
          })
        }),
    ),
  )
  await waitFor(() => tcp.every((s) => s.closed()), 5000, 'idle and half-sent requests cut')
  t.ok(lines.some((l) => l.msg === 'bad client request'), 'logged')

  // the authenticated connection outlived every one of these timeouts
  cb.send('a', 'after')
  ca.send('b', 'back')
  await waitFor(() => got.includes('after'), 5000, 'still connected')
  t.equal(a.stats().peers.b!.connected, true)
})

t.test('no unhandled rejection', async (t) => {
  t.same(unhandled.map(String), [])
})
