/**
 * Deterministic simulation kit: a seeded random source, simulated time with timers, and an
 * in-process network that can partition, drop, duplicate, delay and reorder messages.
 *
 * Everything runs in one process on one event queue; each event runs to completion and then all
 * promise continuations it caused are drained before the next event, so the same seed replays
 * the same run.
 * @module
 */
import { pack, unpack } from 'msgpackr'
import type { Clock, NodeId, Transport } from '../raft/types.js'

/** A small, fast, seeded PRNG (mulberry32). Returns numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface SimEvent {
  at: number
  seq: number
  fn: () => void
  cancelled: boolean
}

const drainMicrotasks = (): Promise<void> => new Promise((r) => setImmediate(r))

/** Simulated time: a priority queue of timed events. */
export class SimScheduler {
  now = 0
  private seq = 0
  private heap: SimEvent[] = []
  readonly random: () => number

  constructor(seed: number) {
    this.random = seededRandom(seed)
  }

  /** Run `fn` at simulated time `now + ms`. */
  schedule(ms: number, fn: () => void): SimEvent {
    const ev: SimEvent = { at: this.now + Math.max(0, ms), seq: this.seq++, fn, cancelled: false }
    this.push(ev)
    return ev
  }

  /** A clock for one node; `skew` is added to what it reads (clock drift), `alive` gates its timers. */
  clock(opts: { skew?: () => number; alive?: () => boolean } = {}): Clock {
    const alive = opts.alive ?? (() => true)
    return {
      now: () => this.now + (opts.skew ? opts.skew() : 0),
      setTimeout: (fn, ms) =>
        this.schedule(ms, () => {
          if (alive()) fn()
        }),
      clearTimeout: (h) => {
        if (h && typeof h === 'object' && 'cancelled' in h) (h as SimEvent).cancelled = true
      },
    }
  }

  /**
   * A monotonic clock for one node process whose rate may differ from simulated time (see
   * {@link SimClock}); `alive` gates its timers.
   */
  driftingClock(opts: { offset?: number; rate?: number; alive?: () => boolean } = {}): SimClock {
    return new SimClock(this, opts)
  }

  /** A promise resolved at `now + ms` of simulated time. */
  sleep(ms: number): Promise<void> {
    return new Promise((r) => this.schedule(ms, r))
  }

  /** Process events until simulated time `until` (or the queue is empty). */
  async runUntil(until: number): Promise<void> {
    await drainMicrotasks()
    while (this.heap.length && this.heap[0]!.at <= until) {
      const ev = this.pop()!
      if (ev.cancelled) continue
      this.now = ev.at
      ev.fn()
      await drainMicrotasks()
    }
    if (this.now < until) this.now = until
  }

  /** Process events until `cond()` holds or `maxMs` of simulated time passed. Returns whether it held. */
  async runUntilTrue(cond: () => boolean, maxMs: number, stepMs = 10): Promise<boolean> {
    const end = this.now + maxMs
    while (this.now < end) {
      if (cond()) return true
      await this.runUntil(Math.min(end, this.now + stepMs))
    }
    return cond()
  }

  private push(ev: SimEvent): void {
    const h = this.heap
    h.push(ev)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (less(h[p]!, ev)) break
      h[i] = h[p]!
      i = p
    }
    h[i] = ev
  }

  private pop(): SimEvent | undefined {
    const h = this.heap
    const top = h[0]
    const last = h.pop()
    if (!h.length || !last) return top
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= h.length) break
      const r = l + 1
      const c = r < h.length && less(h[r]!, h[l]!) ? r : l
      if (less(last, h[c]!)) break
      h[i] = h[c]!
      i = c
    }
    h[i] = last
    return top
  }
}

/**
 * The clock of one simulated node process, modelled on a monotonic clock (`performance.now()`):
 * it reads `offset` at creation, then advances at `rate` times simulated time. {@link setRate}
 * changes how fast it runs from now on (the oscillator drifts) without a jump in the reading.
 * Timers are measured on this clock: one set for `ms` fires once this clock has advanced `ms`
 * (late if the rate dropped meanwhile, never early).
 */
export class SimClock implements Clock {
  private base: number
  private since: number
  private r: number
  private readonly alive: () => boolean
  private frozenUntil = 0

  constructor(
    private readonly sched: SimScheduler,
    opts: { offset?: number; rate?: number; alive?: () => boolean } = {},
  ) {
    this.base = opts.offset ?? 0
    this.since = sched.now
    this.r = opts.rate ?? 1
    if (!(this.r > 0)) throw new RangeError('SimClock: rate must be positive')
    this.alive = opts.alive ?? (() => true)
  }

  /** Clock ms per simulated ms. */
  get rate(): number {
    return this.r
  }

  /** Run at `rate` from now on; the reading stays continuous. */
  setRate(rate: number): void {
    if (!(rate > 0)) throw new RangeError('SimClock: rate must be positive')
    this.base = this.now()
    this.since = this.sched.now
    this.r = rate
  }

  now(): number {
    return this.base + (this.sched.now - this.since) * this.r
  }

  /**
   * Stall the process for `ms` of simulated time (a GC pause, SIGSTOP, a long synchronous task):
   * the clock keeps running, but no timer of this clock fires until the stall ends; those due
   * meanwhile fire right after it, in order. Pair it with {@link SimNetwork.stall} so inbound
   * messages wait too.
   */
  stall(ms: number): void {
    this.frozenUntil = Math.max(this.frozenUntil, this.sched.now + Math.max(0, ms))
  }

  /** Whether the process is stalled now (see {@link SimClock.stall}). */
  get stalled(): boolean {
    return this.sched.now < this.frozenUntil
  }

  /** Simulated ms left until the stall ends (0 when not stalled). */
  stallLeft(): number {
    return Math.max(0, this.frozenUntil - this.sched.now)
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const h: { cancelled: boolean; ev: SimEvent | undefined } = { cancelled: false, ev: undefined }
    const due = this.now() + Math.max(0, ms)
    const fire = (): void => {
      if (h.cancelled || !this.alive()) return
      if (this.stalled) {
        h.ev = this.sched.schedule(this.stallLeft(), fire)
        return
      }
      const rest = due - this.now()
      if (rest > 1e-6) arm(rest)
      else fn()
    }
    const arm = (left: number): void => {
      h.ev = this.sched.schedule(left / this.r, fire)
    }
    arm(Math.max(0, ms))
    return h
  }

  clearTimeout(handle: unknown): void {
    if (!handle || typeof handle !== 'object' || !('cancelled' in handle)) return
    const h = handle as { cancelled: boolean; ev: SimEvent | undefined }
    h.cancelled = true
    if (h.ev) h.ev.cancelled = true
  }
}

function less(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq)
}

/** Fault settings of a {@link SimNetwork}. */
export interface NetworkFaults {
  /** Probability a message is lost. */
  drop: number
  /** Probability a message is delivered twice. */
  duplicate: number
  /** Delivery delay range in ms; a spread reorders messages. */
  minDelay: number
  maxDelay: number
  /**
   * Probability that a snapshot chunk (a Raft `snap` message) arrives with one bit of its data
   * flipped, as a faulty link or buffer would deliver it. Default 0.
   */
  corruptChunks?: number
}

/** An in-process network of {@link Transport}s with seeded faults. */
export class SimNetwork {
  private readonly handlers = new Map<NodeId, (from: NodeId, msg: unknown) => void>()
  private readonly blocked = new Set<string>()
  /** Links on which some messages are lost (see {@link SimNetwork.lose}). */
  private readonly losing = new Map<string, (msg: unknown) => boolean>()
  /** Nodes whose process is stalled, until when (simulated time). */
  private readonly stalledUntil = new Map<NodeId, number>()
  faults: NetworkFaults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
  delivered = 0
  dropped = 0
  /** Snapshot chunks delivered with a flipped bit ({@link NetworkFaults.corruptChunks}). */
  corrupted = 0

  constructor(private readonly sched: SimScheduler) {}

  /**
   * A transport endpoint for node `id` on `channel` (replaces an earlier one, e.g. after a
   * restart). Blocks apply to every channel between two nodes.
   */
  endpoint(id: NodeId, channel = ''): Transport & { detach(): void } {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const net = this
    let handler: ((from: NodeId, msg: unknown) => void) | undefined
    const deliver = (from: NodeId, msg: unknown): void => handler?.(from, msg)
    const key = `${channel}\u0000${id}`
    this.handlers.set(key, deliver)
    return {
      self: id,
      send: (to, msg) => net.send(id, to, msg, channel),
      onMessage: (h) => {
        handler = h
      },
      setPeers: () => {},
      close: async () => {
        if (net.handlers.get(key) === deliver) net.handlers.delete(key)
      },
      detach: () => {
        handler = undefined
        if (net.handlers.get(key) === deliver) net.handlers.delete(key)
      },
    }
  }

  /** Deliver `msg` to `to` as if `from` had sent it (tests of hostile or buggy peers). */
  inject(from: NodeId, to: NodeId, msg: unknown, channel = ''): void {
    this.send(from, to, msg, channel)
  }

  /** Block traffic from `a` to `b` (one direction). */
  block(a: NodeId, b: NodeId): void {
    this.blocked.add(a + '>' + b)
  }

  /** Whether traffic from `a` to `b` is blocked (see {@link SimNetwork.block}). */
  isBlocked(a: NodeId, b: NodeId): boolean {
    return this.blocked.has(a + '>' + b)
  }

  /**
   * Lose the messages from `a` to `b` (one direction) for which `what` holds, until
   * {@link SimNetwork.heal} (as a congested sender's queue drops some and sends the next).
   */
  lose(a: NodeId, b: NodeId, what: (msg: unknown) => boolean): void {
    this.losing.set(a + '>' + b, what)
  }

  /** Cut the cluster into groups: nodes in different groups cannot talk. */
  partition(groups: NodeId[][]): void {
    this.heal()
    for (const g of groups) for (const h of groups) if (g !== h) for (const a of g) for (const b of h) this.block(a, b)
  }

  /**
   * Stall node `id` for `ms` of simulated time: messages to it wait in its socket buffers and are
   * handled right after the stall ends (see {@link SimClock.stall}, for its timers).
   */
  stall(id: NodeId, ms: number): void {
    this.stalledUntil.set(id, Math.max(this.stalledUntil.get(id) ?? 0, this.sched.now + Math.max(0, ms)))
  }

  /** Remove every block (and every {@link SimNetwork.lose}). */
  heal(): void {
    this.blocked.clear()
    this.losing.clear()
  }

  /** Whether any block is in place. */
  get partitioned(): boolean {
    return this.blocked.size > 0 || this.losing.size > 0
  }

  private send(from: NodeId, to: NodeId, msg: unknown, channel: string): void {
    const link = from + '>' + to
    if (this.blocked.has(link) || (this.losing.size > 0 && this.losing.get(link)?.(msg) === true)) {
      this.dropped++
      return
    }
    const r = this.sched.random
    if (r() < this.faults.drop) {
      this.dropped++
      return
    }
    // Encode now, as the wire would: later mutation by the sender cannot leak.
    const bytes = pack(msg)
    const corrupt = this.faults.corruptChunks ? isChunk(msg) && r() < this.faults.corruptChunks : false
    const copies = r() < this.faults.duplicate ? 2 : 1
    for (let i = 0; i < copies; i++) {
      const delay = this.faults.minDelay + r() * (this.faults.maxDelay - this.faults.minDelay)
      const deliver = (): void => {
        const until = this.stalledUntil.get(to)
        if (until !== undefined && this.sched.now < until) {
          // it arrived; the process reads it once it runs again, after the timers that came due
          // meanwhile (an event loop runs expired timers before it polls for I/O)
          this.sched.schedule(until - this.sched.now + 0.001, deliver)
          return
        }
        const h = this.handlers.get(`${channel}\u0000${to}`)
        if (!h) return
        this.delivered++
        const m: unknown = unpack(bytes)
        if (corrupt) {
          flipBit(m as { data: Uint8Array }, r)
          this.corrupted++
        }
        h(from, m)
      }
      this.sched.schedule(delay, () => {
        if (this.blocked.has(from + '>' + to)) {
          this.dropped++
          return
        }
        deliver()
      })
    }
  }
}

function isChunk(msg: unknown): boolean {
  if (typeof msg !== 'object' || msg === null) return false
  const m = msg as { t?: unknown; data?: unknown }
  return m.t === 'snap' && m.data instanceof Uint8Array && m.data.length > 0
}

/** Flip one bit of `m.data` (a copy of it: the decoded bytes may share memory). */
function flipBit(m: { data: Uint8Array }, r: () => number): void {
  const data = new Uint8Array(m.data)
  const at = Math.floor(r() * data.length)
  data[at]! ^= 1 << Math.floor(r() * 8)
  m.data = data
}
