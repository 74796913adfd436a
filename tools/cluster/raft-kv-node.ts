/**
 * One Raft node as a real OS process, for the process-level tests and the Raft bench.
 *
 * Spawned as `node dist/tools/cluster/raft-kv-node.js '<json>'` with an IPC channel; the JSON
 * argument is a {@link ProcessArgs}. The node stores its log in LevelDB (`LevelStorage`) in
 * `dataDir`, talks to its peers through a `WsHub` listening on `listen`, and runs a
 * `KvStateMachine`. Once serving it sends `{ ready: true, id, pid }`, then answers the requests of
 * {@link Request} (the IPC protocol, start failures and shutdown are those of `node-process.ts`).
 * Logs go to stderr.
 * @module
 */
import { performance } from 'node:perf_hooks'
import { LevelStorage } from '../../src/raft/storage/level-storage.js'
import { RaftNode } from '../../src/raft/node.js'
import { consoleLogger, type ClusterConfig, type Logger, type NodeId } from '../../src/raft/types.js'
import { WsHub } from '../../src/net/hub.js'
import { KvStateMachine } from '../../src/testkit/kv-state-machine.js'
import type { KvInput, KvOutput } from '../../src/testkit/linearizability.js'
import { opTableHandler, runNodeProcess } from './node-process.js'
import type { LoadResult, ProcessArgs, Request } from './raft-kv-protocol.js'
import { measureLoad } from './stats.js'

type Req<K extends Request['op']> = Extract<Request, { op: K }>

/** Run `req.count` proposals (or linearizable reads) with `req.concurrency` in flight. */
async function load(node: RaftNode<KvInput, KvOutput>, sm: KvStateMachine, req: Req<'load'>): Promise<LoadResult> {
  const kind = req.kind ?? 'putIfAbsent'
  let ops = 0
  const stats = await measureLoad(req.count, req.concurrency, req.maxMs, async (i) => {
    const key = `${req.keyPrefix}${i}`
    const s = performance.now()
    if (kind === 'read') {
      await node.read()
      sm.data.get(key)
    } else {
      const r = (await node.propose({ op: 'putIfAbsent', key, value: String(i) })) as { ok?: boolean }
      if (r.ok !== true) throw new Error(`putIfAbsent ${key} returned ${JSON.stringify(r)}`)
    }
    ops++
    return performance.now() - s
  })
  return { ops, ...stats }
}

runNodeProcess<ProcessArgs, Logger>({
  title: 'raft-kv-process',
  log: (args) => consoleLogger(args.logLevel ?? 'warn', { node: args.id }),
  nameAsCode: false,
  async start(args, _send, log) {
    const storage = await LevelStorage.open(args.dataDir, { logger: log })
    const hub = new WsHub({ nodeId: args.id, listen: args.listen, secret: args.secret, logger: log })
    await hub.start()
    const sm = new KvStateMachine()
    const bootstrap: ClusterConfig | undefined = args.bootstrap ? { voters: { ...args.peers }, learners: {} } : undefined
    const seeds: Record<NodeId, string> = { ...args.peers }
    delete seeds[args.id]
    const node = await RaftNode.start<KvInput, KvOutput>({
      id: args.id,
      storage,
      transport: hub.channel('kv'),
      stateMachine: sm,
      bootstrap,
      seeds,
      logger: log,
      ...(args.tickMs !== undefined ? { tickMs: args.tickMs } : {}),
      ...(args.electionTicks !== undefined ? { electionTicks: args.electionTicks } : {}),
      ...(args.snapshotEvery !== undefined ? { snapshotEvery: args.snapshotEvery } : {}),
    })
    node.on('failed', (err) => log.error('node failed', { err: err.message }))

    const ops: { [K in Exclude<Request['op'], 'stop'>]: (req: Req<K>) => unknown } = {
      propose: (req) => node.propose(req.input),
      read: async (req) => {
        await node.read()
        return { value: sm.data.get(req.key) }
      },
      localGet: (req) => ({ value: sm.data.get(req.key) }),
      localGetMany: (req) => req.keys.map((k) => sm.data.get(k) ?? null),
      localSize: () => sm.data.size,
      status: () => {
        const failure = node.storageFailure()
        return { ...node.status(), pid: process.pid, failed: failure ? failure.message : undefined }
      },
      cpu: () => {
        const c = process.cpuUsage()
        return { userMs: c.user / 1000, systemMs: c.system / 1000 }
      },
      transfer: async (req) => {
        await node.transferLeadership(req.to)
        return { leader: node.leader }
      },
      addNode: async (req) => void (await node.addNode(req.node, req.address, req.voter === undefined ? {} : { voter: req.voter })),
      removeNode: async (req) => void (await node.removeNode(req.node)),
      load: (req) => load(node, sm, req),
    }
    return {
      ready: { id: args.id },
      handle: opTableHandler<Request>(ops),
      stop: async () => {
        await node.stop()
        await hub.close()
      },
    }
  },
})
