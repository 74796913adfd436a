/**
 * Lease fencing: supervised workers run only while this node's lease holds (it exchanged
 * heartbeats with a leader that holds a quorum within `leaseTimeoutMs`). The fence stops them the
 * moment the lease runs out, and every message to a supervised worker checks the lease first, so
 * a node that was frozen (SIGSTOP, a long pause) fences before its workers handle anything.
 * @module
 */
import type { Clock } from '../raft/types.js'
import type { Supervisor } from './supervisor.js'

/** What the fence needs of the node. */
export interface FenceHost {
  readonly clock: Clock
  readonly leaseTimeoutMs: number
  /** When this node's lease was last renewed (its clock), if ever. */
  leaseRenewedAt(): number | undefined
  stopped(): boolean
}

/** The lease fence of one node. */
export class LeaseFence {
  /** Fires when the lease as last seen runs out, so fencing is not late by up to a supervisor tick. */
  private timer: unknown

  constructor(
    private readonly host: FenceHost,
    private readonly supervisor: Supervisor,
  ) {}

  /** Whether this node's lease holds now. */
  leaseOk(): boolean {
    const at = this.host.leaseRenewedAt()
    return at !== undefined && this.host.clock.now() - at < this.host.leaseTimeoutMs
  }

  /**
   * Arm the timer that stops supervised workers when the lease runs out. The leader moves them
   * after `leaseTimeoutMs + maxClockDriftMs` of its own clock, which leaves no room for a late
   * fence when the clocks' rates differ by all the drift allows.
   */
  arm(): void {
    const { clock } = this.host
    clock.clearTimeout(this.timer)
    const at = this.host.leaseRenewedAt()
    if (at === undefined || this.host.stopped() || this.supervisor.size === 0) return
    const left = at + this.host.leaseTimeoutMs - clock.now()
    if (left <= 0) return // over already: the supervisor's tick fenced
    this.timer = clock.setTimeout(() => {
      // Not renewed since: the lease is over. (A timer may fire a hair early by this clock, when
      // leaseOk() would still say yes for that long: fence anyway.)
      if (this.host.leaseRenewedAt() === at) void this.supervisor.fenceForLease()
      else this.arm()
    }, left)
  }

  /**
   * Before worker `id` handles anything: true if it may (not supervised, or the lease holds);
   * otherwise the node fences and it may not.
   */
  gate(id: number): boolean {
    if (!this.supervisor.isSupervised(id)) return true
    if (this.leaseOk()) return true
    void this.supervisor.fenceForLease()
    return false
  }

  /** Disarm (on stop). */
  clear(): void {
    this.host.clock.clearTimeout(this.timer)
  }
}
