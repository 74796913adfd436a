/**
 * One way to wait and try again, on an injected clock, for every retry loop in Sworm: proposals
 * retried in a client session, background proposals, joins, disk recovery, and (through
 * {@link backoffDelay}) the transport's reconnects.
 *
 * @module
 */

/** How long to wait between attempts: `minMs`, then multiplied by `factor` after each, up to `maxMs`. */
export interface BackoffPolicy {
  /** Delay after the first failed attempt, in ms. */
  readonly minMs: number
  /** Largest delay, in ms. Default `minMs` (a constant delay). */
  readonly maxMs?: number
  /** Growth per attempt. Default 2. */
  readonly factor?: number
  /**
   * Spread each delay uniformly over `[delay/2, delay]`, so that peers that failed together do
   * not retry together. Default false.
   */
  readonly jitter?: boolean
}

/** What {@link retry} needs of a clock (the real one, or the simulation's). */
export interface RetryClock {
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
}

/** A {@link BackoffPolicy} plus when to give up. */
export interface RetryPolicy extends BackoffPolicy {
  /** Give up once this much time has passed since the first attempt, in ms. Default: never. */
  readonly deadlineMs?: number
  /** Give up after this many attempts. Default: no limit. */
  readonly maxAttempts?: number
  /** Whether an error is worth another attempt. Default: every error is. */
  readonly retryable?: (err: unknown) => boolean
  /** Checked before each attempt and after each wait: true stops the loop with the last error. */
  readonly stopped?: () => boolean
  /** Called after each failed attempt that will be tried again (for logs and metrics). */
  readonly onRetry?: (err: unknown, attempt: number) => void
}

/**
 * The delay before attempt `attempt + 1`, after `attempt` failures (`attempt` starts at 1).
 * `random` is injectable for seeded simulations.
 */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const max = policy.maxMs ?? policy.minMs
  const factor = policy.factor ?? 2
  // cap the exponent: past the cap the delay is `max` anyway, and 2 ** 1000 is Infinity
  const grown = policy.minMs * factor ** Math.min(Math.max(0, attempt - 1), 30)
  const delay = Math.min(max, grown)
  return policy.jitter ? delay / 2 + random() * (delay / 2) : delay
}

/** A promise that resolves after `ms` on `clock`. */
export function sleep(clock: RetryClock, ms: number): Promise<void> {
  return new Promise((resolve) => {
    clock.setTimeout(resolve, ms)
  })
}

/**
 * `p`, or a rejection with `late()` once `ms` have passed on `clock` (the timer is cleared when
 * `p` settles first). `p` itself is not cancelled.
 */
export async function withDeadline<T>(clock: RetryClock & { clearTimeout(handle: unknown): void }, p: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: unknown
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = clock.setTimeout(() => reject(late()), ms)
      }),
    ])
  } finally {
    clock.clearTimeout(timer)
  }
}

/**
 * Run `attempt` until it resolves, waiting by `policy` between failures. It rejects with the last
 * error once that error is not retryable, `stopped()` is true, `maxAttempts` were made, or the
 * next attempt would start after the deadline. Each attempt is told its number (from 1) and the time left before the
 * deadline (`Infinity` without one).
 */
export async function retry<T>(clock: RetryClock, policy: RetryPolicy, attempt: (n: number, leftMs: number) => Promise<T>): Promise<T> {
  const deadline = policy.deadlineMs === undefined ? Infinity : clock.now() + policy.deadlineMs
  for (let n = 1; ; n++) {
    try {
      return await attempt(n, deadline - clock.now())
    } catch (err) {
      if ((policy.retryable && !policy.retryable(err)) || policy.stopped?.() || n >= (policy.maxAttempts ?? Infinity)) throw err
      const wait = backoffDelay(policy, n)
      if (clock.now() + wait >= deadline) throw err
      policy.onRetry?.(err, n)
      await sleep(clock, wait)
      if (policy.stopped?.()) throw err
    }
  }
}
