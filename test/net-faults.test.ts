/**
 * PeerFaults (src/net/faults.ts): a wrapper around any Transport that drops what goes to, or
 * comes from, a blocked peer. Tested over a tiny in-memory network.
 */
import t from 'tap'
import { PeerFaults } from '../src/net/faults.js'
import type { NodeId, Transport } from '../src/raft/types.js'

/** An in-memory network: one channel per (node, group), delivering synchronously. */
class MemNet {
  readonly handlers = new Map<string, (from: NodeId, msg: unknown) => void>()
  readonly peersSet: Record<string, Record<NodeId, string>> = {}
  readonly closed: string[] = []

  transport(self: NodeId, group: string): Transport {
    const key = `${self}/${group}`
    return {
      self,
      send: (to, msg) => this.handlers.get(`${to}/${group}`)?.(self, msg),
      onMessage: (handler) => {
        this.handlers.set(key, handler)
      },
      setPeers: (peers) => {
        this.peersSet[key] = peers
      },
      close: async () => {
        this.closed.push(key)
        this.handlers.delete(key)
      },
    }
  }
}

/** A node with the given channels, each wrapped by one PeerFaults, recording what it receives. */
function node(net: MemNet, id: NodeId, groups: string[]): { faults: PeerFaults; ch: Record<string, Transport>; got: string[] } {
  const faults = new PeerFaults()
  const ch: Record<string, Transport> = {}
  const got: string[] = []
  for (const g of groups) {
    ch[g] = faults.wrap(net.transport(id, g))
    ch[g].onMessage((from, msg) => got.push(`${g}:${from}:${String(msg)}`))
  }
  return { faults, ch, got }
}

t.test('messages pass while nothing is blocked', async (tt) => {
  const net = new MemNet()
  const a = node(net, 'a', ['g'])
  const b = node(net, 'b', ['g'])
  a.ch.g!.send('b', 1)
  b.ch.g!.send('a', 2)
  tt.same(b.got, ['g:a:1'])
  tt.same(a.got, ['g:b:2'])
  tt.equal(a.faults.dropped, 0)
  tt.notOk(a.faults.isBlocked('b'))
})

t.test('a blocked peer is cut off both ways, other peers are not, and unblocking restores it', async (tt) => {
  const net = new MemNet()
  const a = node(net, 'a', ['g'])
  const b = node(net, 'b', ['g'])
  const c = node(net, 'c', ['g'])
  a.faults.block('b', true)
  tt.ok(a.faults.isBlocked('b'))
  tt.notOk(a.faults.isBlocked('c'))

  a.ch.g!.send('b', 'out') // dropped on the way out
  b.ch.g!.send('a', 'in') // reaches a's transport, dropped before a's handler
  tt.same(b.got, [], 'nothing sent to b')
  tt.same(a.got, [], 'nothing delivered from b')
  tt.equal(a.faults.dropped, 2, 'both counted')
  tt.equal(b.faults.dropped, 0, "b's own faults are untouched")

  a.ch.g!.send('c', 'to-c')
  c.ch.g!.send('a', 'from-c')
  tt.same(c.got, ['g:a:to-c'])
  tt.same(a.got, ['g:c:from-c'])

  a.faults.block('b', true) // idempotent
  a.faults.block('b', false)
  tt.notOk(a.faults.isBlocked('b'))
  a.ch.g!.send('b', 'after-out')
  b.ch.g!.send('a', 'after-in')
  tt.same(b.got, ['g:a:after-out'])
  tt.same(a.got, ['g:c:from-c', 'g:b:after-in'])
  tt.equal(a.faults.dropped, 2, 'nothing more dropped')
})

t.test('one PeerFaults wrapping several channels cuts them all with one block', async (tt) => {
  const net = new MemNet()
  const a = node(net, 'a', ['raft', 'msg'])
  const b = node(net, 'b', ['raft', 'msg'])
  a.faults.block('b', true)
  for (const g of ['raft', 'msg']) {
    a.ch[g]!.send('b', 'x')
    b.ch[g]!.send('a', 'y')
  }
  tt.same(a.got, [])
  tt.same(b.got, [])
  tt.equal(a.faults.dropped, 4)
  a.faults.block('b', false)
  for (const g of ['raft', 'msg']) b.ch[g]!.send('a', 'z')
  tt.same(a.got, ['raft:b:z', 'msg:b:z'])
})

t.test('the wrapper passes self, setPeers, onMessage and close through', async (tt) => {
  const net = new MemNet()
  const faults = new PeerFaults()
  const w = faults.wrap(net.transport('a', 'g'))
  tt.equal(w.self, 'a')
  w.setPeers({ b: 'ws://b' })
  tt.same(net.peersSet['a/g'], { b: 'ws://b' })
  const first: unknown[] = []
  const second: unknown[] = []
  w.onMessage((_from, msg) => first.push(msg))
  w.onMessage((_from, msg) => second.push(msg)) // replaces the handler, as a transport does
  net.transport('b', 'g').send('a', 1)
  tt.same(first, [])
  tt.same(second, [1])
  await w.close()
  tt.same(net.closed, ['a/g'])
})
