/**
 * Fuzzing with fast-check (seeded; the seed is printed on failure and FC_SEED replays it): the
 * message validator never throws and only lets well-formed messages through; a Raft node fed
 * random and mutated messages from a peer keeps serving; the WebSocket hub survives random bytes
 * from an unauthenticated client and random frames from an authenticated peer.
 */
import fc from 'fast-check'
import { pack } from 'msgpackr'
import t from 'tap'
import { WebSocket } from 'ws'
import { silentLogger } from '../src/raft/types.js'
import { validateRaftMessage } from '../src/raft/validate.js'
import { WsHub } from '../src/net/hub.js'
import { settle, simCluster } from './sim/helpers.js'
import { waitFor } from './helpers.js'

const FUZZ_SECRET = '2e7c9a0f4b8d1e63c5a9f2b7e0d4c81a'

const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : Date.now() % 1e9
const runs = Number(process.env.FC_RUNS ?? 300)
t.comment(`fast-check seed ${seed} (replay: FC_SEED=${seed})`)

const types = ['vote', 'voteResp', 'app', 'appResp', 'hb', 'hbResp', 'snap', 'snapResp', 'timeoutNow', 'readIndex', 'readIndexResp', 'fwd', 'fwdResp', 'x']
/** Messages that look like protocol messages, with random (often wrong) fields. */
const messageLike = fc.record(
  {
    t: fc.constantFrom(...types),
    from: fc.constantFrom('n1', 'n2', 'n3', 'evil', ''),
    to: fc.constantFrom('n1', 'n2', 'n3'),
    term: fc.oneof(fc.nat(10), fc.integer(), fc.double(), fc.constant(2 ** 53), fc.string()),
    pre: fc.boolean(),
    transfer: fc.boolean(),
    granted: fc.boolean(),
    success: fc.boolean(),
    lastIndex: fc.oneof(fc.nat(20), fc.integer()),
    lastTerm: fc.nat(10),
    prevIndex: fc.oneof(fc.nat(20), fc.integer()),
    prevTerm: fc.nat(10),
    commit: fc.oneof(fc.nat(50), fc.integer()),
    index: fc.oneof(fc.nat(50), fc.integer()),
    hint: fc.nat(50),
    seq: fc.nat(1000),
    p: fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.constant(2 ** 60), fc.string(), fc.constant(null)),
    ackP: fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.constant(2 ** 60), fc.string(), fc.constant(null)),
    ids: fc.array(fc.oneof(fc.nat(), fc.string()), { maxLength: 3 }),
    entries: fc.array(
      fc.record({ index: fc.nat(30), term: fc.nat(10), type: fc.constantFrom('cmd', 'noop', 'conf', 'bad'), data: fc.anything() }, { requiredKeys: [] }),
      { maxLength: 4 },
    ),
    snapshot: fc.anything(),
    reqs: fc.anything(),
    res: fc.anything(),
    boot: fc.string(),
  },
  { requiredKeys: ['t'] },
)

t.test('validateRaftMessage never throws and rejects what is malformed', async (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.anything(), messageLike), (m) => {
      const r = validateRaftMessage(m, 'n2', 'n1')
      if (typeof r === 'string') return true
      // what passes has the fields the core relies on
      if (typeof r.term !== 'number' || !Number.isSafeInteger(r.term) || r.to !== 'n1' || r.from !== 'n2') return false
      // ... and nothing a correct node cannot send
      if (r.t === 'app') {
        let term = r.prevTerm
        for (const [i, e] of r.entries.entries()) {
          if (e.index !== r.prevIndex + 1 + i || e.term < term || e.term > r.term) return false
          term = e.term
        }
        return r.prevTerm <= r.term
      }
      if (r.t === 'snap') return r.meta.term <= r.term && Object.keys(r.meta.config.voters).length > 0 && r.offset + r.data.length <= r.total
      if (r.t === 'vote') return r.lastTerm <= r.term
      // a process tag is a safe natural number when there is one
      const nat = (x: unknown): boolean => x === undefined || (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)
      if (r.t === 'hb') return nat(r.ackP)
      if (r.t === 'hbResp') return nat(r.p)
      return true
    }),
    { seed, numRuns: runs * 10 },
  )
  t.pass(`${runs * 10} random messages`)
})

t.test('a node fed random messages from a peer keeps serving and stays consistent', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(messageLike, fc.anything()), { minLength: 1, maxLength: 30 }), fc.nat(2), async (msgs, target) => {
      const c = await simCluster(3, seed % 1000)
      const victim = c.alive()[target]!
      // Malformed messages from a cluster member (a buggy peer; well-formed lies from a member are
      // Byzantine faults, out of scope), and anything at all from a stranger.
      const member = victim.id === 'n2' ? 'n3' : 'n2'
      for (const m of msgs) {
        const withIds = typeof m === 'object' && m !== null && !Array.isArray(m) ? { ...m, from: member, to: victim.id } : m
        if (typeof validateRaftMessage(withIds, member, victim.id) === 'string') c.net.inject(member, victim.id, withIds)
        c.net.inject('evil', victim.id, m)
      }
      await c.sched.runUntil(c.sched.now + 300)
      const l = c.leader()
      if (!l) await c.sched.runUntilTrue(() => c.leader() !== undefined, 5000)
      const out = await settle(c, c.leader()!.node!.propose({ op: 'put', key: 'k', value: 'v' }), 10_000)
      await c.stopAll()
      return (out as { ok?: boolean }).ok === true && c.violations.length === 0
    }),
    { seed, numRuns: Math.max(20, runs / 10) },
  )
  t.pass('the cluster served a write after every batch of garbage')
})

t.test('the hub survives random bytes and random authenticated frames', async (t) => {
  const a = new WsHub({ nodeId: 'a', listen: 'ws://127.0.0.1:0', secret: FUZZ_SECRET, logger: silentLogger })
  const b = new WsHub({ nodeId: 'b', listen: 'ws://127.0.0.1:0', secret: FUZZ_SECRET, logger: silentLogger })
  await a.start()
  await b.start()
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const ca = a.channel('g')
  const cb = b.channel('g')
  ca.setPeers({ b: `ws://127.0.0.1:${b.address.port}` })
  cb.setPeers({ a: `ws://127.0.0.1:${a.address.port}` })
  const got: unknown[] = []
  cb.onMessage((_f, m) => got.push(m))
  const samples = fc.sample(fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.anything().map((x) => pack(x))), { seed, numRuns: Math.max(50, runs) })
  // unauthenticated: each sample on a fresh raw connection
  await Promise.all(
    samples.slice(0, 50).map(
      (bytes) =>
        new Promise<void>((resolve) => {
          const ws = new WebSocket(`ws://127.0.0.1:${b.address.port}`)
          ws.on('open', () => ws.send(bytes))
          ws.on('error', () => resolve())
          ws.on('close', () => resolve())
          setTimeout(() => {
            ws.terminate()
            resolve()
          }, 500).unref()
        }),
    ),
  )
  // authenticated: random payloads as messages of a real peer (delivered or dropped, never a crash)
  for (const s of samples) ca.send('b', s)
  ca.send('b', { marker: true })
  await waitFor(() => got.some((m) => (m as { marker?: boolean } | null)?.marker === true), 5000, 'the marker after the garbage')
  t.pass(`hub alive after ${samples.length} random frames; the marker arrived`)
})
