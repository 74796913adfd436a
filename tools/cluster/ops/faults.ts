/**
 * Fault operations of the Sworm node process: a skewed clock and cut links.
 * @module
 */
import { performance } from 'node:perf_hooks'
import { systemClock } from '../../../src/raft/types.js'
import type { SwormNodeContext, SwormOpTable } from './context.js'
import { internals } from '../../../src/internal.js'

/** The fault operations of a node. */
export function faultOps(ctx: SwormNodeContext) {
  return {
    clockRate: (req) => ctx.setClockRate(req.rate),
    blockPeers: (req) => {
      for (const p of req.peers) if (p !== ctx.node) internals(ctx.sworm).faults!.block(p, req.blocked)
      return null
    },
    degradeLink: (req) => {
      internals(ctx.sworm).faults!.degrade(req.peer, { loss: req.loss, corruptChunks: req.corruptChunks, chunkDelayMs: req.chunkDelayMs })
      return { corrupted: internals(ctx.sworm).faults!.corrupted }
    },
    snapshotStats: () => ({ ...internals(ctx.sworm).raft.snapshotStats(), snapshotIndex: internals(ctx.sworm).raft.status().snapshotIndex, corrupted: internals(ctx.sworm).faults!.corrupted }),
  } satisfies Partial<SwormOpTable>
}

/**
 * Make the library's real clock (`systemClock`, shared by every module of this process) read
 * `offsetMs` ahead and run at `rate` times real speed. Its readings stay monotonic when the rate
 * changes.
 */
export function skewClock(rate: number, offsetMs: number): { setRate(r: number): void } {
  let r = rate
  let anchorReal = performance.now()
  let anchorSkewed = anchorReal + offsetMs
  const now = (): number => anchorSkewed + (performance.now() - anchorReal) * r
  const install = (): void => {
    const realSet = systemClock.setTimeout
    systemClock.now = now
    systemClock.setTimeout = (fn, ms) => realSet(fn, ms / r)
  }
  if (rate !== 1 || offsetMs !== 0) install()
  return {
    setRate(next: number): void {
      if (systemClock.now !== now) install()
      anchorSkewed = now()
      anchorReal = performance.now()
      r = next
    },
  }
}
