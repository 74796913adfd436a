/**
 * What the Raft KV node process (`raft-kv-node.ts`) understands: its command-line
 * argument, the requests it answers over IPC, and the result of `load`. Types only.
 * @module
 */
import type { NodeId } from '../../src/raft/types.js'
import type { KvInput } from '../../src/testkit/linearizability.js'
import type { LoadStats } from './stats.js'

/** The single JSON command-line argument. */
export interface ProcessArgs {
  id: NodeId
  /** `ws://127.0.0.1:port` */
  listen: string
  /** Every member of the cluster (this node included), id -> ws url. */
  peers: Record<NodeId, string>
  dataDir: string
  secret: string
  /** Bootstrap a new cluster with every peer as a voter (ignored when the storage is not fresh). */
  bootstrap: boolean
  /** Optional RaftNode timing overrides. */
  tickMs?: number
  electionTicks?: number
  snapshotEvery?: number
  /** Log level on stderr (default 'warn'). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error'
}

/** Requests understood over IPC (each also carries a numeric `id`). */
export type Request =
  | { op: 'propose'; input: KvInput }
  | { op: 'read'; key: string }
  | { op: 'localGet'; key: string }
  | { op: 'localGetMany'; keys: string[] }
  | { op: 'localSize' }
  | { op: 'status' }
  | { op: 'cpu' }
  | { op: 'transfer'; to?: NodeId }
  | { op: 'addNode'; node: NodeId; address: string; voter?: boolean }
  | { op: 'removeNode'; node: NodeId }
  | {
      op: 'load'
      count: number
      concurrency: number
      keyPrefix: string
      /** 'putIfAbsent' (default) proposes; 'read' runs linearizable reads of existing keys. */
      kind?: 'putIfAbsent' | 'read'
      /** Stop issuing new operations after this long (the result reports how many ran). */
      maxMs?: number
    }
  | { op: 'stop' }

/** Result of the `load` request: what it measured (latencies of commits or reads). */
export interface LoadResult extends LoadStats {
  /** Operations that succeeded. */
  ops: number
}
