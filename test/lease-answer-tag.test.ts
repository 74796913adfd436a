/**
 * A node's lease is renewed only by the acknowledgement of an answer its own process sent (found
 * by review of 3c909ec, session 22). The failure detector declares a node gone `lease + drift`
 * after the leader last heard it, on the promise that no lease it gave starts later than that. A
 * follower restarted under the same node id answered a late copy of a heartbeat round its previous
 * process had answered (one the hub kept while the connection was down, say), while its own
 * answers did not reach the leader; the leader's next heartbeat acknowledged that round (its
 * predecessor's answer), and the new process renewed its lease from when it answered: 1.5 s after
 * the leader last heard the node. Fails on 3c909ec (renewed at 3311 ms, last heard at 1804 ms).
 */
import t from 'tap'
import type { MsgHeartbeat } from '../src/raft/types.js'
import { validateRaftMessage } from '../src/raft/validate.js'
import { SimCluster } from './sim/raft-cluster.js'

t.test("a restarted follower is not renewed by the acknowledgement of its previous process's answer", async (t) => {
  const c = new SimCluster({ seed: 7, tickMs: 50 })
  await c.start(['a', 'b', 'c'], { voters: { a: '', b: '', c: '' }, learners: {} })
  t.ok(await c.sched.runUntilTrue(() => c.leader() !== undefined, 10_000), 'a leader')
  await c.sched.runUntil(c.sched.now + 1000)
  const L = c.leader()!
  const F = [...c.members.values()].find((m) => m.id !== L.id)!
  // every heartbeat round L sends F, kept as first sent
  const net = c.net as unknown as { send: (from: string, to: string, msg: unknown, ch: string) => void }
  const kept = new Map<number, MsgHeartbeat>()
  const send = net.send.bind(c.net)
  net.send = (from, to, msg, ch) => {
    const m = msg as MsgHeartbeat
    if (from === L.id && to === F.id && m?.t === 'hb' && !kept.has(m.seq)) kept.set(m.seq, structuredClone(m))
    send(from, to, msg, ch)
  }
  await c.sched.runUntil(c.sched.now + 500)
  t.ok(F.node!.leaseRenewedAt() !== undefined, 'the follower holds a lease')
  await c.crash(F.id)
  const round = Math.max(...kept.keys())
  const heard = L.node!.lastHeard(F.id)!
  await c.sched.runUntil(c.sched.now + 1500) // down 1.5 s
  c.net.block(F.id, L.id) // from now on its answers do not reach the leader
  await c.restart(F.id)
  const F2 = c.members.get(F.id)!
  // a late copy of a round its previous process answered reaches the new process
  c.net.inject(L.id, F.id, kept.get(round))
  await c.sched.runUntil(c.sched.now + 300)
  t.equal(L.node!.lastHeard(F.id), heard, 'the leader has not heard the node since its crash')
  const renewed = F2.node!.leaseRenewedAt()
  t.ok(renewed === undefined || renewed <= heard, `the new process holds no lease from after the leader last heard the node (renewed at ${renewed}, last heard at ${heard.toFixed(1)})`)
  // the link heals: the new process's own answers renew it
  c.net.heal()
  t.ok(await c.sched.runUntilTrue(() => (F2.node!.leaseRenewedAt() ?? -1) > heard, 5_000), "its own answers renew it once the leader hears them")
  await c.stopAll()
})

t.test('a tag that is not a safe natural number makes the message malformed', async (t) => {
  const hb = { t: 'hb', from: 'n2', to: 'n1', term: 3, commit: 0, seq: 4, lease: true, ack: 3 }
  const hbResp = { t: 'hbResp', from: 'n2', to: 'n1', term: 3, seq: 4 }
  for (const bad of [1.5, -1, 2 ** 60, 'x', null, {}]) {
    t.type(validateRaftMessage({ ...hb, ackP: bad }, 'n2', 'n1'), 'string', `hb with ackP ${JSON.stringify(bad)} refused`)
    t.type(validateRaftMessage({ ...hbResp, p: bad }, 'n2', 'n1'), 'string', `hbResp with p ${JSON.stringify(bad)} refused`)
  }
  for (const good of [0, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER]) {
    t.type(validateRaftMessage({ ...hb, ackP: good }, 'n2', 'n1'), 'object', `hb with ackP ${good} taken`)
    t.type(validateRaftMessage({ ...hbResp, p: good }, 'n2', 'n1'), 'object', `hbResp with p ${good} taken`)
  }
  t.type(validateRaftMessage(hbResp, 'n2', 'n1'), 'object', 'an answer without a tag (a core without answerTag) taken')
})
