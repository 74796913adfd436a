/**
 * A request of the node's caller (a proposal or a read) until it settles: once, by its result,
 * its failure, or its deadline.
 * @module
 */
import { TimeoutError } from '../errors.js'

/** One waiting proposal or read. */
export interface Pending<R> {
  /** Term of the entry the proposal became (0 until appended). */
  term: number
  resolve: (r: R) => void
  reject: (e: Error) => void
  /** When it gives up (this node's clock). */
  deadline: number
  /** When it was made (this node's clock). */
  start: number
  settled: boolean
  /**
   * A copy of this proposal went to more than one leader (see raft/forwarding.ts): a copy
   * dropped by one may have taken effect through another, so "dropped" means "unknown".
   */
  uncertain?: boolean
}

/** A new pending request made at `now` that gives up after `timeoutMs`. */
export function pending<R>(resolve: (r: R) => void, reject: (e: Error) => void, now: number, timeoutMs: number): Pending<R> {
  return { term: 0, resolve, reject, deadline: now + timeoutMs, start: now, settled: false }
}

/** Reject `p` with `err` unless it is settled already. */
export function rejectOnce<R>(p: Pending<R>, err: Error): void {
  if (p.settled) return
  p.settled = true
  p.reject(err)
}

/**
 * The error to reject `p` with when a copy of it was dropped (`err`): `err` itself, or, when
 * another copy may have taken effect, a TimeoutError saying the outcome is unknown.
 */
export function droppedError<R>(p: Pending<R>, err: Error): Error {
  return p.uncertain ? new TimeoutError(`the outcome is unknown: ${err.message}, but another copy went to another leader`) : err
}

/** Resolve `p` with `value` unless it is settled already. */
export function resolveOnce<R>(p: Pending<R>, value: R): void {
  if (p.settled) return
  p.settled = true
  p.resolve(value)
}
