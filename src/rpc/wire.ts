/**
 * The messages sworm nodes exchange outside Raft (on the `msg:<name>` channel): worker calls and
 * casts, join and remove requests, disk probes, and metrics addresses. Anything that arrives is
 * checked field by field before use: a peer may be buggy or hostile.
 * @module
 */
import type { ProbeMsg } from '../cluster/identity.js'
import type { WorkerRef } from '../registry/types.js'

/** Every message of the `msg:<name>` channel. */
export type WireMsg =
  | { t: 'cast'; to: WorkerRef; msg: unknown }
  | { t: 'call'; id: number; to: WorkerRef; msg: unknown }
  | { t: 'reply'; id: number; ok: true; value: unknown }
  | { t: 'reply'; id: number; ok: false; code: string; message: string }
  | { t: 'joinReq'; node: string; url: string; disk?: string }
  /** The cluster will not add the node that asked to join; `code` is DATA_LOST or CONFIG_CHANGE. */
  | { t: 'joinRefused'; node: string; code: string; message: string }
  | ProbeMsg
  /** Ask the leader to take `node` out of the Raft configuration; answered by `removeResp`. */
  | { t: 'removeReq'; id: number; node: string }
  | { t: 'removeResp'; id: number; ok: true }
  | { t: 'removeResp'; id: number; ok: false; code: string; message: string; leader?: string }
  /**
   * Supervised workers that run on the sender, incarnation `inc`, each `[name, epoch, id]`: told
   * the node that registered them, before the log has their start (see supervisor/early-starts.ts).
   */
  | { t: 'startedAt'; inc: string; starts: Array<[name: string, epoch: number, id: number]> }
  /** Where a node serves its metrics (`reply`: answer with yours). */
  | { t: 'metricsAt'; url: string; reply: boolean }

/** The type tags of {@link WireMsg}. */
export type WireType = WireMsg['t']

/** The message of type `T`, as it may arrive: its fields still to be checked. */
export type Incoming<T extends WireType> = Partial<Extract<WireMsg, { t: T }>> & Record<string, unknown>
