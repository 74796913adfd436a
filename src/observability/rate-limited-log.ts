/**
 * Rate-limited warnings, so that a peer flooding bad input cannot flood the log.
 * @module
 */
import type { Logger } from '../raft/types.js'

/**
 * Writes at most one warn line per key per interval and counts the lines it held back; the next
 * line written for that key carries the count as `suppressed`. Keys should name a bounded thing
 * (a peer or host and a fixed reason), never a value a peer chooses freely. Past `maxKeys` keys the
 * table is cleared, so memory stays bounded whatever the keys.
 */
export class RateLimitedLog {
  private readonly seen = new Map<string, { at: number; suppressed: number }>()

  /**
   * @param log - where the lines go
   * @param now - the clock, in milliseconds
   * @param intervalMs - at most one line per key per this many milliseconds (default 1,000)
   * @param maxKeys - the most keys remembered (default 10,000)
   */
  constructor(
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
    private readonly intervalMs = 1000,
    private readonly maxKeys = 10_000,
  ) {}

  /**
   * Warn with `msg` and `fields` unless a line for `key` was written within the interval.
   * @returns whether the line was written
   */
  warn(key: string, msg: string, fields: Record<string, unknown>): boolean {
    const now = this.now()
    const e = this.seen.get(key)
    if (e && now - e.at < this.intervalMs) {
      e.suppressed++
      return false
    }
    if (this.seen.size >= this.maxKeys) this.seen.clear()
    const suppressed = e?.suppressed ?? 0
    this.seen.set(key, { at: now, suppressed: 0 })
    this.log.warn(msg, suppressed > 0 ? { ...fields, suppressed } : fields)
    return true
  }
}

/** `s` cut to `max` characters (with an ellipsis), for putting peer-chosen strings in log lines. */
export function clip(s: string, max = 64): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`
}
