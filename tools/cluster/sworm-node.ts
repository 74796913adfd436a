/**
 * One Sworm node as a real OS process, for the process-level tests, the benches and the demo.
 *
 * Spawned as `node --expose-gc dist/tools/cluster/sworm-node.js '<json>'` with an IPC channel;
 * the JSON argument is a {@link SwormProcessArgs}. The node runs `Sworm.start(...)` (LevelDB in
 * `dataDir`, WebSockets on `listen`). Once started it sends `{ ready: true, nodeId, pid }`, then
 * answers the requests of {@link SwormRequest} (the IPC protocol, start failures and shutdown are
 * those of `node-process.ts`). Logs go to stderr.
 *
 * The operations are tables by area, op name -> handler: `ops/registry.ts`, `ops/supervisor.ts`,
 * `ops/load.ts` (the benches), `ops/faults.ts`, `ops/observe.ts`.
 * @module
 */
import { pinoLogger, Sworm, type Logger } from '../../src/index.js'
import { opTableHandler, runNodeProcess, stderrLog, type ProcessLog } from './node-process.js'
import type { SnapshotListener, SwormNodeContext, SwormOpTable } from './ops/context.js'
import { faultOps, skewClock } from './ops/faults.js'
import { loadOps } from './ops/load.js'
import { observeOps } from './ops/observe.js'
import { registryOps } from './ops/registry.js'
import { supervisorOps } from './ops/supervisor.js'
import { startCpuProfile } from './cpu-profile.js'
import { logStalls, startLoopDelay } from './loop-delay.js'
import type { SwormProcessArgs, SwormRequest } from './sworm-protocol.js'

/** `Sworm.start` with the process's arguments. */
function startSworm(args: SwormProcessArgs, logger: Logger): Promise<Sworm> {
  return Sworm.start({
    name: args.name,
    nodeId: args.nodeId,
    listen: args.listen,
    ...(args.peers ? { peers: args.peers } : {}),
    ...(args.join ? { join: args.join } : {}),
    dataDir: args.dataDir,
    secret: args.secret,
    logger,
    ...(args.nodeDownAfterMs !== undefined ? { nodeDownAfterMs: args.nodeDownAfterMs } : {}),
    ...(args.requestTimeoutMs !== undefined ? { requestTimeoutMs: args.requestTimeoutMs } : {}),
    raft: {
      ...(args.snapshotEvery !== undefined ? { snapshotEvery: args.snapshotEvery } : {}),
      ...(args.snapshotChunkBytes !== undefined ? { snapshotChunkBytes: args.snapshotChunkBytes } : {}),
      ...(args.maxLogEntries !== undefined ? { maxLogEntries: args.maxLogEntries } : {}),
      ...(args.electionTicks !== undefined ? { electionTicks: args.electionTicks } : {}),
    },
    ...(args.leaseTimeoutMs !== undefined ? { leaseTimeoutMs: args.leaseTimeoutMs } : {}),
    ...(args.workerStartTimeoutMs !== undefined ? { startTimeoutMs: args.workerStartTimeoutMs } : {}),
    ...(args.maxClockDriftMs !== undefined ? { maxClockDriftMs: args.maxClockDriftMs } : {}),
    ...(args.voters !== undefined ? { voters: args.voters } : {}),
    ...(args.zone !== undefined ? { zone: args.zone } : {}),
    ...(args.stabilizationMs !== undefined ? { autopilot: { stabilizationMs: args.stabilizationMs } } : {}),
    ...(args.deadNodeTimeoutMs !== undefined ? { deadNodeTimeoutMs: args.deadNodeTimeoutMs } : {}),
  })
}

/** The library's logger, plus the Raft snapshot lines (logged below 'warn') handed to `onSnapshot`. */
function snapshotWatchingLogger(args: SwormProcessArgs, onSnapshot: SnapshotListener): Logger {
  const out = pinoLogger(args.logLevel ?? 'warn', { sworm: args.name, node: args.nodeId })
  return {
    ...out,
    debug: (msg, f) => {
      if (msg === 'snapshot taken') onSnapshot('snapshotTaken', f)
      out.debug(msg, f)
    },
    info: (msg, f) => {
      if (msg === 'installed snapshot from leader') onSnapshot('snapshotInstalled', f)
      out.info(msg, f)
    },
  }
}

runNodeProcess<SwormProcessArgs, ProcessLog>({
  title: 'sworm-process',
  log: () => stderrLog,
  async start(args, send) {
    startLoopDelay()
    logStalls(args.nodeId)
    const stopProfile = startCpuProfile(args.nodeId)
    const clock = skewClock(args.clockRate ?? 1, args.clockOffsetMs ?? 0)
    let onSnapshot: SnapshotListener | undefined
    const sworm = await startSworm(
      args,
      snapshotWatchingLogger(args, (ev, f) => onSnapshot?.(ev, f)),
    )
    let stopping = false
    const ctx: SwormNodeContext = {
      sworm,
      node: sworm.nodeId,
      send,
      setClockRate: (r) => clock.setRate(r),
      isStopping: () => stopping,
      setSnapshotListener: (l) => (onSnapshot = l),
    }
    const ops: SwormOpTable = { ...registryOps(ctx), ...supervisorOps(ctx), ...loadOps(ctx), ...faultOps(ctx), ...observeOps(ctx) }
    return {
      ready: { nodeId: sworm.nodeId },
      handle: opTableHandler<SwormRequest>(ops),
      stop: async () => {
        stopping = true
        await sworm.stop()
        await stopProfile()
      },
    }
  },
})
