/**
 * Load operations of the Sworm node process, for the benches: many registrations at once, the
 * soak mix, and latency samples of local lookups and calls.
 * @module
 */
import { performance } from 'node:perf_hooks'
import type { WorkerRef } from '../../../src/index.js'
import { errorInfo } from '../node-process.js'
import { measureLoad, numberedNames, percentile } from '../stats.js'
import type { CallLatency, RegisterManyResult, SoakResult, SwormRequest, WhereisLatency } from '../sworm-protocol.js'
import { echoWorker, type SwormNodeContext, type SwormOpTable } from './context.js'

type Req<K extends SwormRequest['op']> = Extract<SwormRequest, { op: K }>

/** The load operations of a node. */
export function loadOps(ctx: SwormNodeContext) {
  /** The soak's name slots, kept between `soak` requests. */
  const soakSlots = new Map<string, WorkerRef | undefined>()
  return {
    registerMany: (req) => registerMany(ctx, req),
    soak: (req) => soak(ctx, soakSlots, req),
    whereisLatency: (req) => whereisLatency(ctx, req),
    callLatency: (req) => callLatency(ctx, req),
  } satisfies Partial<SwormOpTable>
}

async function registerMany({ sworm, node }: SwormNodeContext, req: Req<'registerMany'>): Promise<RegisterManyResult> {
  const start = req.start ?? 0
  let ok = 0
  let taken = 0
  let lastAckAt = 0
  const stats = await measureLoad(req.count, req.concurrency, req.maxMs, async (i) => {
    const name = `${req.prefix}${start + i}`
    const s = performance.now()
    const ref = sworm.spawn(echoWorker(name, node))
    const won = await sworm.registerName(name, ref)
    const e = performance.now()
    lastAckAt = performance.timeOrigin + e
    if (won) ok++
    else {
      taken++
      await sworm.exit(ref).catch(() => {})
    }
    return e - s
  })
  return { ok, taken, ...stats, lastAckAt }
}

async function soak({ sworm, node }: SwormNodeContext, soakSlots: Map<string, WorkerRef | undefined>, req: Req<'soak'>): Promise<SoakResult> {
  const lat = new Map<string, number[]>()
  const errors: Record<string, number> = {}
  const t0 = performance.now()
  const stopAt = t0 + req.ms
  const nodes = [node, ...req.peers]
  const record = (kind: string, ms: number): void => {
    const list = lat.get(kind) ?? []
    list.push(ms)
    lat.set(kind, list)
  }
  const time = async (kind: string, fn: () => Promise<unknown>): Promise<void> => {
    const s0 = performance.now()
    try {
      await fn()
      record(kind, performance.now() - s0)
    } catch (err) {
      const code = `${kind}:${errorInfo(err).code}`
      errors[code] = (errors[code] ?? 0) + 1
    }
  }
  const client = async (c: number): Promise<void> => {
    while (performance.now() < stopAt) {
      const slot = `soak:${node}:${c}:${Math.floor(Math.random() * req.slots)}`
      const ref = soakSlots.get(slot)
      const x = Math.random()
      if (x < 0.2) {
        if (ref) continue
        await time('register', async () => {
          const r = sworm.spawn(echoWorker(slot, node))
          if (await sworm.registerName(slot, r)) soakSlots.set(slot, r)
          else await sworm.exit(r)
        })
      } else if (x < 0.35) {
        if (!ref) continue
        soakSlots.delete(slot)
        await time('exit', () => sworm.exit(ref))
      } else if (x < 0.4) {
        if (!ref) continue
        await time('join', () => sworm.join(`g${c % 10}`, ref))
      } else if (x < 0.55) {
        await time('whereisConsistent', () => sworm.whereisName(slot, { consistent: true }) as Promise<unknown>)
      } else if (x < 0.75) {
        const s0 = performance.now()
        for (let i = 0; i < 100; i++) sworm.whereisName(`soak:${nodes[i % nodes.length]}:${c}:${i % req.slots}`)
        record('whereisLocal x100', performance.now() - s0)
        await new Promise((r) => setImmediate(r))
      } else {
        const target = `soak:${nodes[Math.floor(Math.random() * nodes.length)]}:${Math.floor(Math.random() * req.clients)}:${Math.floor(Math.random() * req.slots)}`
        await time('call', () => sworm.call(target, 'ping'))
      }
    }
  }
  await Promise.all(Array.from({ length: req.clients }, (_, c) => client(c)))
  const kinds: SoakResult['kinds'] = {}
  for (const [k, l] of lat) {
    l.sort((a, b) => a - b)
    kinds[k] = { n: l.length, p50: percentile(l, 50), p99: percentile(l, 99), max: l[l.length - 1] ?? 0 }
  }
  return { ms: performance.now() - t0, kinds, errors }
}

function whereisLatency({ sworm }: SwormNodeContext, req: Req<'whereisLatency'>): WhereisLatency {
  const list = numberedNames(req.prefix, req.count, req.start)
  if (!list.length) throw new Error('whereisLatency needs count > 0')
  // visit the names in a scrambled order (a fixed stride coprime with the count)
  let stride = Math.max(1, Math.floor(list.length * 0.618)) | 1
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))
  while (gcd(stride, list.length) !== 1) stride += 2
  const order = list.map((_, k) => list[(k * stride) % list.length]!)
  const BATCH = 1000
  const samples = Math.max(1, Math.ceil(req.iterations / BATCH))
  const per: number[] = []
  let found = 0
  let pos = 0
  // warm up (JIT)
  for (let k = 0; k < Math.min(20_000, order.length * 2); k++) if (sworm.whereisName(order[k % order.length]!)) found++
  for (let s = 0; s < samples; s++) {
    const t0 = process.hrtime.bigint()
    for (let k = 0; k < BATCH; k++) {
      if (sworm.whereisName(order[pos]!) !== undefined) found++
      if (++pos === order.length) pos = 0
    }
    per.push(Number(process.hrtime.bigint() - t0) / BATCH)
  }
  if (found === 0) throw new Error('whereisLatency: none of the names is registered here')
  const mean = per.reduce((a, b) => a + b, 0) / per.length
  per.sort((a, b) => a - b)
  return { p50Ns: percentile(per, 50), p99Ns: percentile(per, 99), meanNs: mean, calls: samples * BATCH }
}

async function callLatency({ sworm }: SwormNodeContext, req: Req<'callLatency'>): Promise<CallLatency> {
  const lat: number[] = []
  for (let i = 0; i < Math.min(50, req.iterations); i++) await sworm.call(req.name, i) // warm up
  for (let i = 0; i < req.iterations; i++) {
    const s = performance.now()
    await sworm.call(req.name, i)
    lat.push(performance.now() - s)
  }
  const mean = lat.reduce((a, b) => a + b, 0) / Math.max(1, lat.length)
  lat.sort((a, b) => a - b)
  return { p50: percentile(lat, 50), p99: percentile(lat, 99), mean, calls: lat.length }
}
