/**
 * The dashboard's charts: per second, registrations and the commit latency (mean and p99, from the
 * nodes' latency histograms), for the last minute.
 * @module
 */
import type { DashStatus } from '../tools/cluster/sworm-protocol.js'
import { epoch } from './dashboard-log.js'

/** One second of the charts. */
export interface Second {
  /** Epoch second. */
  t: number
  /** `registered` events (new names, restarts and moves). */
  registered: number
  latSum: number
  latCount: number
  /** Commit latency histogram deltas, per bucket (non-cumulative). */
  latBuckets: number[]
}

/** A point of the charts, as the page gets it. */
export interface ChartPoint {
  t: number
  reg: number
  latMean: number | null
  latP99: number | null
  commits: number
}

/** The charts' seconds (the last 180). */
export class Charts {
  private readonly seconds: Second[] = []
  /** Last latency histogram per node (to take deltas). */
  private readonly lastLat = new Map<string, { pid: number; sum: number; count: number; buckets: number[] }>()

  /** The second of epoch time `at` (seconds without data before it are filled in). */
  second(at: number): Second {
    const t = Math.floor(at / 1000)
    let s = this.seconds[this.seconds.length - 1]
    if (!s || s.t < t) {
      // fill gaps so the chart's x axis is continuous
      let from = s ? s.t + 1 : t
      if (t - from > 120) from = t - 120
      for (let k = from; k <= t; k++) this.seconds.push((s = { t: k, registered: 0, latSum: 0, latCount: 0, latBuckets: [] }))
      if (this.seconds.length > 180) this.seconds.splice(0, this.seconds.length - 180)
      return s!
    }
    return this.seconds.find((x) => x.t === t) ?? s
  }

  /** Add the commits node `id` made since its previous status to this second. */
  latency(id: string, st: DashStatus): void {
    const cur = { pid: st.pid, sum: st.commitLatency.sum, count: st.commitLatency.count, buckets: st.commitLatency.buckets.map(([, c]) => c) }
    const prev = this.lastLat.get(id)
    this.lastLat.set(id, cur)
    if (!prev || prev.pid !== cur.pid || cur.count < prev.count) return
    const dc = cur.count - prev.count
    if (dc <= 0) return
    const s = this.second(epoch())
    s.latSum += cur.sum - prev.sum
    s.latCount += dc
    for (let i = 0; i < cur.buckets.length; i++) {
      const now = cur.buckets[i]! - (i > 0 ? cur.buckets[i - 1]! : 0)
      const before = (prev.buckets[i] ?? 0) - (i > 0 ? (prev.buckets[i - 1] ?? 0) : 0)
      s.latBuckets[i] = (s.latBuckets[i] ?? 0) + (now - before)
    }
  }

  /** The last minute, with the p99 from the histogram buckets bounded by `bounds` (seconds). */
  series(bounds: number[]): ChartPoint[] {
    const nowT = Math.floor(epoch() / 1000)
    return this.seconds
      .filter((s) => s.t > nowT - 61 && s.t < nowT)
      .map((s) => {
        let p99: number | null = null
        const tot = s.latBuckets.reduce((a, b) => a + (b ?? 0), 0)
        if (tot > 0) {
          let acc = 0
          for (let i = 0; i < s.latBuckets.length; i++) {
            acc += s.latBuckets[i] ?? 0
            if (acc >= 0.99 * tot) {
              p99 = (bounds[i] ?? 5) * 1000
              break
            }
          }
        }
        return { t: s.t, reg: s.registered, latMean: s.latCount ? (s.latSum / s.latCount) * 1000 : null, latP99: p99, commits: s.latCount }
      })
  }
}
