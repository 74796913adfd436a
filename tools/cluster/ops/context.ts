/**
 * What the operation tables of the Sworm node process share: the node's context, the type of a
 * table (op name -> handler), and a few helpers.
 * @module
 */
import type { Sworm, WorkerRef } from '../../../src/index.js'
import type { SendToParent } from '../node-process.js'
import type { SwormRequest } from '../sworm-protocol.js'

/** Called with a Raft snapshot line of the node's log, as an event name and the line's fields. */
export type SnapshotListener = (event: 'snapshotTaken' | 'snapshotInstalled', fields: Record<string, unknown> | undefined) => void

/** The running node, as every operation sees it. */
export interface SwormNodeContext {
  readonly sworm: Sworm
  /** This node's id. */
  readonly node: string
  /** Push a message to the parent (events). */
  readonly send: SendToParent
  /** Change the rate of this process's skewed clock. */
  readonly setClockRate: (rate: number) => void
  /** Whether the `stop` request came. */
  isStopping(): boolean
  /** Have `listener` called with the Raft snapshot lines of the log (`subscribe` does). */
  setSnapshotListener(listener: SnapshotListener): void
}

/** An operation name the tables answer (`stop` belongs to the process scaffolding). */
export type SwormOp = Exclude<SwormRequest['op'], 'stop'>

/** The handler of operation `K`: its result (or a promise of it) is the answer. */
export type SwormOpHandler<K extends SwormOp> = (req: Extract<SwormRequest, { op: K }>) => unknown

/** Every operation's handler, by name. */
export type SwormOpTable = { [K in SwormOp]: SwormOpHandler<K> }

/** An echo worker: replies with its tag, the message and the node that ran it. */
export const echoWorker = (tag: string, node: string) => ({ handleCall: (m: unknown) => ({ tag, m, node }) })

/** The ref `name` is bound to here (local read); throws `NOT_FOUND`. */
export function refOf(ctx: SwormNodeContext, name: string): WorkerRef {
  const ref = ctx.sworm.whereisName(name)
  if (!ref) throw Object.assign(new Error(`no name ${JSON.stringify(name)} on ${ctx.node}`), { code: 'NOT_FOUND' })
  return ref
}

/** Register a fresh echo worker as `name`; the worker exits if the name was taken. */
export async function registerEcho(ctx: SwormNodeContext, name: string, tag: string): Promise<{ won: boolean; ref: WorkerRef }> {
  const ref = ctx.sworm.spawn(echoWorker(tag, ctx.node))
  const won = await ctx.sworm.registerName(name, ref)
  if (!won) await ctx.sworm.exit(ref).catch(() => {})
  return { won, ref }
}
