/**
 * The dashboard's activity log: lines in time order (the last 500), events of one kind within a
 * poll aggregated into one line, registry events seen from several nodes logged once, and the
 * banner (the outcome of the last action).
 * @module
 */
import { performance } from 'node:perf_hooks'
import { sse } from './dashboard-http.js'

/** Wall-clock time in ms (sub-ms precision). */
export const epoch = (): number => performance.timeOrigin + performance.now()

/** The kind of a log line (its colour). */
export type LogKind = 'info' | 'ok' | 'warn' | 'bad' | 'action'
/** One line of the log. */
export interface LogEntry {
  at: number
  kind: LogKind
  text: string
}

/** Aggregated events of one kind within one flush (so 1,000 registrations are one log line). */
interface Agg {
  at: number
  kind: LogKind
  count: number
  names: string[]
  text: (count: number, names: string[]) => string
}

/** The activity log. */
export class ActivityLog {
  /** Print log entries on the terminal too (set once the dashboard is up). */
  echo: ((e: LogEntry) => void) | undefined
  /** The outcome of the last action, for the page's banner. */
  banner: { text: string; kind: LogKind; at: number } | undefined
  private readonly entries: LogEntry[] = []
  private readonly agg = new Map<string, Agg>()
  /** Dedupe of registry-level events seen from several nodes: key -> epoch ms. */
  private readonly seen = new Map<string, number>()
  /** SSE messages not sent yet. */
  private outbox: string[] = []

  /** Add a log line; `headline`: also show it in the page's banner (outcomes of actions). */
  log(kind: LogKind, text: string, at = epoch(), headline = false): void {
    const e = { at, kind, text }
    // in time order (events come in batches, a little after they happened)
    let i = this.entries.length
    while (i > 0 && this.entries[i - 1]!.at > at) i--
    this.entries.splice(i, 0, e)
    if (this.entries.length > 500) this.entries.splice(0, this.entries.length - 500)
    this.outbox.push(sse('log', e))
    this.echo?.(e)
    if (headline) this.banner = { text, kind, at }
  }

  /** Count one event toward the line `key` (logged by {@link flush}); the first few names are listed. */
  aggregate(key: string, at: number, kind: LogKind, name: string | undefined, text: Agg['text']): void {
    let a = this.agg.get(key)
    if (!a) this.agg.set(key, (a = { at, kind, count: 0, names: [], text }))
    a.count++
    if (name !== undefined && a.names.length < 3) a.names.push(name)
  }

  /** Log the aggregated lines. */
  flush(): void {
    const list = [...this.agg.values()].sort((a, b) => a.at - b.at)
    this.agg.clear()
    for (const a of list) this.log(a.kind, a.text(a.count, a.names), a.at)
  }

  /** `once(key)`: true the first time `key` is seen within `windowMs`. */
  once(key: string, at: number, windowMs = 60_000): boolean {
    const prev = this.seen.get(key)
    if (prev !== undefined && at - prev < windowMs) return false
    this.seen.set(key, at)
    return true
  }

  /** The SSE messages of the lines logged since the last call. */
  drain(): string[] {
    const out = this.outbox
    this.outbox = []
    return out
  }

  /** The last `n` lines. */
  recent(n: number): LogEntry[] {
    return this.entries.slice(-n)
  }

  /** Forget dedupe keys older than 2 minutes (once there are many). */
  forgetOld(): void {
    const cut = epoch() - 120_000
    if (this.seen.size > 20_000) for (const [k, at] of this.seen) if (at < cut) this.seen.delete(k)
  }
}
