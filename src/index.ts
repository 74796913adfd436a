/**
 * Sworm: an embedded, strongly consistent, distributed registry and supervisor for named
 * workers, replicated by its own Raft.
 * @packageDocumentation
 */
export { Sworm, type SwormEvents, type SwormOptions, type SwormReadiness, type SwormStatus, type SwormStatusReport, type WorkerStopReason, type MultiCallResult, type Abortable, type SuperviseOptions } from './sworm.js'
export { pinoLogger } from './observability/logging.js'
export { COMMIT_LATENCY_BUCKETS } from './observability/metrics.js'
export type { WorkerRef, StartSpec, RestartPolicy } from './registry/types.js'
export { hashPlacement, defaultPlacement, type PlacementStrategy, type PlacementCandidate } from './registry/placement.js'
export type { Worker, WorkerContext, ExitReason } from './supervisor/local-workers.js'
export type { DiscoveryOptions } from './cluster/discovery.js'
export type { AutopilotStep } from './cluster/autopilot.js'
export {
  SwormError,
  NotLeaderError,
  TimeoutError,
  ShuttingDownError,
  ProposalDroppedError,
  ConfigChangeError,
  CorruptStorageError,
  StorageError,
  InvalidArgumentError,
  NotFoundError,
  NoWorkerError,
  WorkerCrashedError,
  OutcomeUnknownError,
  AbortError,
  AlreadyRegisteredError,
  StartError,
  NoNodeError,
  NodeDataLostError,
  ClusterExistsError,
} from './errors.js'
export {
  consoleLogger,
  silentLogger,
  systemClock,
  type Logger,
  type LogLevel,
  type Clock,
  type ClusterConfig,
  type RaftStorage,
  type Transport,
  type NodeId,
  type Entry,
  type Snapshot,
  type PersistedState,
  type HardState,
  type EntryType,
  type SnapshotMeta,
  type StorageRecovery,
  type StorageWrite,
} from './raft/types.js'
// The engine, for applications that want a replicated state machine of their own.
export { RaftNode, type RaftNodeOptions, type RaftNodeEvents, type StateMachine, type StepTask } from './raft/node.js'
export type { CoreStatus, Role } from './raft/core.js'
export { LevelStorage, type LevelStorageOptions } from './raft/storage/level-storage.js'
export { WsHub, type WsHubOptions, type WsPeerStats } from './net/hub.js'
export type { RegistryCommand, RegistryOp, RegistryResult, RegistrationKind, SessionTag, SuperviseResult } from './registry/types.js'
