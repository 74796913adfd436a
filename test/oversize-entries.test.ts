/**
 * Nothing a user's value can make too large for the Raft log stops the cluster (session 29).
 * An entry travels to each follower in one frame of the transport at least (64 MiB): a leader
 * that appended a larger one could never send it, and every later entry waited behind it, so
 * one worker whose `beginHandoff` returned 65 MiB, drained on the leader, or one `init` that
 * threw a 65 MiB message, stopped every write of the cluster for good (both failed before this
 * session's fix: the drain and every later registration timed out).
 */
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { InvalidArgumentError, StartError } from '../src/errors.js'
import { Sworm } from '../src/sworm.js'
import { MAX_ENTRY_BYTES } from '../src/raft/types.js'
import { DEFAULT_MAX_FRAME } from '../src/net/wire.js'
import { MAX_START_ERROR_CHARS } from '../src/supervisor/supervisor.js'
import type { WorkerRef } from '../src/registry/types.js'
import { freePorts, startSworms, tempDir, TEST_SECRET } from './helpers.js'
import { settle, simCluster } from './sim/helpers.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))
/** More than a frame of the transport. */
const BIG_MIB = 65

t.test('the largest entry the Raft node accepts fits a frame of the transport', async (t) => {
  t.ok(MAX_ENTRY_BYTES < DEFAULT_MAX_FRAME, `${MAX_ENTRY_BYTES} < ${DEFAULT_MAX_FRAME}`)
})

t.test('a command too large for one entry is refused, nothing is appended, and the log goes on', async (t) => {
  const c = await simCluster(3)
  const l = c.leader()!
  const before = l.node!.status().lastIndex
  const err = await settle(c, l.node!.propose({ op: 'put', key: 'big', value: 'x'.repeat(MAX_ENTRY_BYTES + 1) })).catch((e: unknown) => e)
  t.ok(err instanceof InvalidArgumentError, `refused: ${String(err)}`)
  t.match(String(err), /more than the \d+ a log entry may take/)
  t.equal(l.node!.status().lastIndex, before, 'nothing appended')
  const follower = c.alive().find((m) => m !== l)!
  const err2 = await settle(c, follower.node!.propose({ op: 'put', key: 'big', value: 'x'.repeat(MAX_ENTRY_BYTES + 1) })).catch((e: unknown) => e)
  t.ok(err2 instanceof InvalidArgumentError, `refused on a follower too, not forwarded: ${String(err2)}`)
  t.same(await settle(c, follower.node!.propose({ op: 'putIfAbsent', key: 'a', value: '1' })), { ok: true }, 'the next proposal commits')
})

t.test('options that would let a registration outgrow a log entry are refused at start', async (t) => {
  const { dir, cleanup } = tempDir()
  t.teardown(cleanup)
  const [port] = await freePorts(1)
  const base = { name: 'caps', nodeId: 'n1', listen: `ws://127.0.0.1:${port}`, peers: { n1: `ws://127.0.0.1:${port}` }, dataDir: `${dir}/n1`, secret: TEST_SECRET }
  await t.rejects(Sworm.start({ ...base, maxMessageBytes: 32 * 1024 * 1024 + 1 }), { name: 'TypeError', message: /"maxMessageBytes" must be at most 32 MiB/ })
  await t.rejects(Sworm.start({ ...base, maxNameBytes: 1024 * 1024 + 1 }), { name: 'TypeError', message: /"maxNameBytes" must be at most 1 MiB/ })
})

t.test('a handoff state larger than a frame: the worker moves without it, and the cluster goes on', async (t) => {
  const c = await startSworms(3, 'bighand', { requestTimeoutMs: 5000 })
  t.teardown(() => c.stop())
  const leader = c.nodes.find((s) => s.status().role === 'leader')!
  // names until one is placed on the leader (placement goes by load: the first three spread)
  const onLeader: string[] = []
  for (let i = 0; onLeader.length === 0 && i < 12; i++) {
    const ref = await leader.registerName(`big:${i}`, { module: WORKERS, fn: 'bigHandoff', args: [BIG_MIB] })
    if (ref.node === leader.nodeId) onLeader.push(`big:${i}`)
  }
  t.ok(onLeader.length > 0, 'a worker on the leader')
  await leader.drain({ timeoutMs: 20_000 })
  for (const name of onLeader) {
    const ref = (await leader.whereisName(name)) as WorkerRef | undefined
    t.ok(ref && ref.node !== leader.nodeId, `${name} runs elsewhere`)
    t.equal(await leader.call(name, 'handedIn'), null, `${name} started without the state (endHandoff did not run)`)
  }
  t.ok(await leader.registerName('after', leader.spawn({ handleCall: () => 1 })), 'a registration after it commits')
})

t.test('an init that throws a message larger than a frame: StartError with the message cut, and the cluster goes on', async (t) => {
  const c = await startSworms(3, 'bigfail', { requestTimeoutMs: 5000 })
  t.teardown(() => c.stop())
  const leader = c.nodes.find((s) => s.status().role === 'leader')!
  // three at once: placement by load puts one on each node, the leader's included
  const outs = await Promise.all(
    [0, 1, 2].map((i) => leader.registerName(`fail:${i}`, { module: WORKERS, fn: 'failingAtLength', args: [BIG_MIB * 1024 * 1024] }).catch((e: unknown) => e)),
  )
  for (const err of outs) {
    t.ok(err instanceof StartError, `StartError: ${String(err).slice(0, 80)}`)
    const msg = (err as Error).message
    t.match(msg, /x{100}… \(\d+ more characters\)/, 'the cause, cut')
    t.ok(msg.length < MAX_START_ERROR_CHARS + 200, `message cut (${msg.length} characters)`)
  }
  t.ok(await leader.registerName('after', leader.spawn({ handleCall: () => 1 })), 'a registration after it commits')
})
