/**
 * Proposes registry commands for this node: API calls in this incarnation's client session
 * (retried safely across leader changes, applied at most once), and background commands that
 * must eventually be applied.
 * @module
 */
import { InvalidArgumentError, NotLeaderError, ProposalDroppedError, ShuttingDownError, TimeoutError } from '../errors.js'
import type { RaftNode } from '../raft/node.js'
import type { Clock, Logger } from '../raft/types.js'
import { retry } from '../util/retry.js'
import type { RegistryCommand, RegistryResult } from './types.js'

/** What the client needs of its node. */
export interface RegistryClientHost {
  readonly raft: RaftNode<RegistryCommand, RegistryResult>
  readonly clock: Clock
  readonly nodeId: string
  readonly incarnation: string
  readonly requestTimeoutMs: number
  /** Where a background proposal that is refused for good is reported. */
  readonly log: Logger
  stopped(): boolean
}

const retryable = (err: unknown): boolean => err instanceof ProposalDroppedError || err instanceof TimeoutError || err instanceof NotLeaderError

/** The registry client of one node incarnation. */
export class RegistryClient {
  /** This incarnation's client session: the last sequence number used, and those in flight. */
  private sessionSeq = 0
  private readonly inFlight = new Set<number>()

  constructor(private readonly host: RegistryClientHost) {}

  /**
   * Propose a command for an API call, in this incarnation's client session (see
   * `SessionTag` in registry/types.ts): the state machine applies it at most once, so it is proposed again, with
   * the same sequence number, after a leader change or a dropped proposal, until `requestTimeoutMs`
   * runs out (one attempt never ends early on a timer: that would only add load under a backlog). A
   * TimeoutError then still means the outcome is unknown.
   */
  async propose(cmd: RegistryCommand): Promise<RegistryResult> {
    const { raft, nodeId, incarnation } = this.host
    const seq = ++this.sessionSeq
    this.inFlight.add(seq)
    // once an attempt's outcome is unknown, so is the call's, whatever the later attempts say
    let unknown: TimeoutError | undefined
    try {
      return await retry(
        this.host.clock,
        { minMs: 10, maxMs: 200, deadlineMs: this.host.requestTimeoutMs, retryable, stopped: () => this.host.stopped() },
        async (_n, left) => {
          const low = this.inFlight.values().next().value as number
          try {
            // One attempt may take all the time left: proposing again while the first may still be
            // in the log would only add load (the node re-forwards to a new leader by itself); the
            // session makes the attempts after a definite failure safe.
            // idempotent: the session makes a second append harmless, so the node may send it to a
            // new leader when the first is gone without an answer
            const res = await raft.propose({ ...cmd, s: { node: nodeId, inc: incarnation, seq, low } }, { timeoutMs: Math.max(1, left), idempotent: true })
            if (res === 'session-expired') throw new ShuttingDownError('this node incarnation is no longer the one the cluster knows (it restarted, or was declared gone)')
            return res
          } catch (err) {
            if (err instanceof TimeoutError) unknown ??= err
            throw err
          }
        },
      )
    } catch (err) {
      if (unknown && !(err instanceof TimeoutError)) {
        throw new TimeoutError(`the outcome is unknown: an attempt timed out (${unknown.message}), and the last one failed (${err instanceof Error ? err.message : String(err)})`)
      }
      throw err
    } finally {
      this.inFlight.delete(seq)
    }
  }

  /** Background proposal that must eventually happen (retried until applied or stopped). */
  async proposeUntilDone(cmd: RegistryCommand): Promise<void> {
    // (a command the Raft node refuses as too large for the log is refused again at every try)
    await retry(this.host.clock, { minMs: 200, retryable: (err) => !(err instanceof ShuttingDownError) && !(err instanceof InvalidArgumentError), stopped: () => this.host.stopped() }, () =>
      this.host.raft.propose(cmd),
    ).catch((err: unknown) => {
      if (err instanceof InvalidArgumentError) this.host.log.error('a background proposal was refused; it is dropped', { command: cmd.c, err: err.message })
    })
  }
}
