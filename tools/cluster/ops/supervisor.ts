/**
 * Supervisor operations of the Sworm node process: supervised registrations, where supervised
 * workers run, leases, drain and node removal.
 * @module
 */
import { internals } from '../../../src/internal.js'
import { performance } from 'node:perf_hooks'
import type { WorkerRef } from '../../../src/index.js'
import { errorInfo } from '../node-process.js'
import { nowEpoch, percentile, runConcurrently } from '../stats.js'
import type { AwaitAnswersResult, CallLoopResult, CallRefsResult, RegisterSupervisedManyResult, SwormRequest, WhereisOrRegisterManyResult } from '../sworm-protocol.js'
import { factoryRuns, life } from '../workers.js'
import type { SwormNodeContext, SwormOpTable } from './context.js'

type Req<K extends SwormRequest['op']> = Extract<SwormRequest, { op: K }>

/** The supervisor operations of a node. */
export function supervisorOps(ctx: SwormNodeContext) {
  const { sworm } = ctx
  let leaseWatch: { timer: NodeJS.Timeout; losses: number[]; held: boolean } | undefined
  return {
    registerSupervisedMany: (req) => registerSupervisedMany(ctx, req),
    runsRefs: async (req) => {
      const res = await Promise.all(req.refs.map(async ([n, ref]) => [n, await runsLocally(ctx, ref)] as const))
      return res.filter(([, ok]) => !ok).map(([n]) => n)
    },
    aliveCounters: (req) => {
      // from the counter fixture's life log of this process: started and not stopped
      const alive = new Map<string, number>()
      for (const e of life) {
        if (!e.name.startsWith(req.prefix)) continue
        alive.set(e.name, (alive.get(e.name) ?? 0) + (e.event === 'start' ? 1 : -1))
      }
      return [...alive].filter(([, k]) => k > 0).map(([n, k]) => (k > 1 ? `${n}*${k}` : n))
    },
    watchLease: (req) => {
      if (leaseWatch) clearInterval(leaseWatch.timer)
      const w: { timer?: NodeJS.Timeout; losses: number[]; held: boolean } = { losses: [], held: sworm.leaseOk() }
      w.timer = setInterval(() => {
        const ok = sworm.leaseOk()
        if (w.held && !ok) w.losses.push(nowEpoch())
        w.held = ok
      }, Math.max(1, req.everyMs ?? 10))
      w.timer.unref()
      leaseWatch = w as typeof leaseWatch
      return null
    },
    leaseLosses: () => ({ losses: [...(leaseWatch?.losses ?? [])], lease: sworm.leaseOk() }),
    whereisOrRegisterMany: (req) => whereisOrRegisterMany(ctx, req),
    factoryRuns: (req) => {
      const out: Record<string, number> = {}
      for (const [n, k] of factoryRuns) if (n.startsWith(req.prefix)) out[n] = k
      return out
    },
    callRefs: (req) => callRefs(ctx, req),
    awaitAnswers: (req) => awaitAnswers(ctx, req),
    drain: async (req) => {
      const t0 = performance.now()
      await sworm.drain(req.timeoutMs !== undefined ? { timeoutMs: req.timeoutMs } : {})
      return { ms: performance.now() - t0 }
    },
    undrain: async () => void (await sworm.undrain()),
    rebalance: async () => void (await sworm.rebalance()),
    callLoopStart: (req) => {
      if (callLoop) throw new Error('a call loop runs already')
      callLoop = startCallLoop(ctx, req)
      return null
    },
    callLoopStop: async () => {
      const loop = callLoop
      if (!loop) throw new Error('no call loop runs')
      callLoop = undefined
      return loop.stop()
    },
    removeNode: async (req) => void (await sworm.removeNode(req.node, req.timeoutMs !== undefined ? { timeoutMs: req.timeoutMs } : {})),
  } satisfies Partial<SwormOpTable>
}

let callLoop: { stop(): Promise<CallLoopResult> } | undefined

/** Call names round robin, `concurrency` at a time, until stopped; count what failed and how. */
function startCallLoop({ sworm }: SwormNodeContext, req: Req<'callLoopStart'>): { stop(): Promise<CallLoopResult> } {
  const res: CallLoopResult = { ok: 0, failed: {}, samples: [], slowestMs: 0 }
  let next = 0
  let running = true
  const lane = async (): Promise<void> => {
    while (running && req.names.length > 0) {
      // yield to I/O between calls, as a real client does: calls to workers of this node resolve
      // in microtasks alone, and a loop of them would starve the node (its lease, its sockets)
      await new Promise<void>((r) => setImmediate(r))
      const name = req.names[next++ % req.names.length]!
      const t0 = performance.now()
      try {
        await sworm.call(name, req.msg, { timeout: req.timeoutMs })
        res.ok++
        res.slowestMs = Math.max(res.slowestMs, performance.now() - t0)
      } catch (err) {
        const { code, message } = errorInfo(err)
        res.failed[code] = (res.failed[code] ?? 0) + 1
        if (res.samples.length < 10) res.samples.push(`${name}: ${code}: ${message} (at ${Math.round(nowEpoch())}, after ${Math.round(performance.now() - t0)} ms)`)
      }
    }
  }
  const lanes = Array.from({ length: Math.max(1, req.concurrency ?? 4) }, () => lane())
  return {
    stop: async () => {
      running = false
      await Promise.all(lanes)
      return res
    },
  }
}

async function registerSupervisedMany({ sworm }: SwormNodeContext, req: Req<'registerSupervisedMany'>): Promise<RegisterSupervisedManyResult> {
  const count = Math.max(0, Math.floor(req.count))
  const start = req.start ?? 0
  const lat: number[] = []
  const errorSamples: string[] = []
  const perNode: Record<string, number> = {}
  let ok = 0
  let errors = 0
  // with wait: 'placed', the names whose start the log has not shown yet (the 'registered' event
  // of a fixed ref's start: see Registration.fx), counted down by the event, not polled
  const { state } = internals(sworm)
  const unreported = new Set<string>()
  let allReported = (): void => {}
  const onRegistered = ({ name }: { name: string }): void => {
    if (unreported.has(name) && state.peek(name)?.fx !== 1 && unreported.delete(name) && unreported.size === 0) allReported()
  }
  if (req.wait === 'placed') sworm.on('registered', onRegistered)
  const t0 = performance.now()
  await runConcurrently(count, req.concurrency, async (i) => {
    const name = `${req.prefix}${start + i}`
    const s = performance.now()
    try {
      const spec = { module: req.module, fn: req.fn, args: [name] }
      if (req.wait === 'placed') unreported.add(name)
      const ref = await (req.wait === 'placed' ? sworm.registerName(name, spec, { wait: 'placed' }) : sworm.registerName(name, spec))
      if (req.wait === 'placed' && state.peek(name)?.fx !== 1) unreported.delete(name) // (reported already)
      lat.push(performance.now() - s)
      perNode[ref.node] = (perNode[ref.node] ?? 0) + 1
      ok++
    } catch (err) {
      if (req.wait === 'placed') unreported.delete(name)
      errors++
      if (errorSamples.length < 5) errorSamples.push(`${name}: ${errorInfo(err).message}`)
    }
  })
  lat.sort((a, b) => a - b)
  if (req.wait !== 'placed') return { ok, errors, errorSamples, ms: performance.now() - t0, p50: percentile(lat, 50), p99: percentile(lat, 99), perNode }
  // every start reported (the workers run): the end of the starts
  const placedMs = performance.now() - t0
  try {
    if (unreported.size > 0) {
      const reported = new Promise<boolean>((resolve) => {
        allReported = () => resolve(true)
        setTimeout(() => resolve(false), 120_000).unref()
      })
      if (!(await reported)) throw new Error(`${unreported.size} starts not reported within 120 s`)
    }
  } finally {
    sworm.off('registered', onRegistered)
  }
  return { ok, errors, errorSamples, ms: performance.now() - t0, placedMs, p50: percentile(lat, 50), p99: percentile(lat, 99), perNode }
}

/** Whether `ref` is a worker of this node incarnation that answers a (local) call. */
async function runsLocally({ sworm, node }: SwormNodeContext, ref: WorkerRef): Promise<boolean> {
  if (ref.node !== node || ref.inc !== sworm.incarnation) return false
  try {
    await sworm.call(ref, 'get', { timeout: 1000 })
    return true
  } catch {
    return false
  }
}

async function whereisOrRegisterMany({ sworm }: SwormNodeContext, req: Req<'whereisOrRegisterMany'>): Promise<WhereisOrRegisterManyResult> {
  const t0 = performance.now()
  const seen = new Map<string, Set<string>>()
  const errorSamples: string[] = []
  let errors = 0
  const spec = (name: string) => ({ module: req.module, fn: req.fn, args: [name] })
  const calls: Array<Promise<void>> = []
  // interleave: every name's first caller, then every name's second caller, ...
  for (let k = 0; k < req.perName; k++) {
    for (const name of req.names) {
      calls.push(
        sworm.whereisOrRegisterName(name, spec(name)).then(
          (ref) => {
            let s = seen.get(name)
            if (!s) seen.set(name, (s = new Set()))
            s.add(JSON.stringify({ sworm: ref.sworm, node: ref.node, inc: ref.inc, id: ref.id }))
          },
          (err: unknown) => {
            errors++
            if (errorSamples.length < 5) errorSamples.push(`${name}: ${errorInfo(err).code}: ${errorInfo(err).message}`)
          },
        ),
      )
    }
  }
  await Promise.all(calls)
  const refs: Record<string, string[]> = {}
  for (const [n, s] of seen) refs[n] = [...s]
  return { calls: calls.length, refs, errors, errorSamples, ms: performance.now() - t0 }
}

async function callRefs({ sworm }: SwormNodeContext, req: Req<'callRefs'>): Promise<CallRefsResult> {
  const t0 = performance.now()
  const answered: string[] = []
  const codes: Record<string, number> = {}
  await Promise.all(
    req.refs.map(async ([n, ref]) => {
      try {
        await sworm.call(ref, req.msg, { timeout: req.timeoutMs ?? 2000 })
        answered.push(n)
      } catch (err) {
        const code = errorInfo(err).code
        codes[code] = (codes[code] ?? 0) + 1
      }
    }),
  )
  return { answered, codes, ms: performance.now() - t0 }
}

async function awaitAnswers(ctx: SwormNodeContext, req: Req<'awaitAnswers'>): Promise<AwaitAnswersResult> {
  if (req.ride) return rideAnswers(ctx, req)
  const { sworm } = ctx
  const t0 = performance.now()
  const deadline = t0 + (req.timeoutMs ?? 30_000)
  const skip = new Set(req.skipNodes ?? [])
  let doneAt = nowEpoch()
  let rounds = 0
  // This runs on a node that takes part in the failover it measures, and should cost it little:
  // a name with no live ref yet waits for its `registered` event (a lookup of every waiting name
  // every 10 ms took a third of a survivor's CPU at 100k names); a round calls only the names
  // that got one since, and looks again at those whose call failed.
  const waiting = new Set(req.names)
  let ready: string[] = []
  const onRegistered = ({ name, ref }: { name: string; ref: WorkerRef }): void => {
    if (waiting.delete(name)) {
      if (skip.has(ref.node)) waiting.add(name)
      else ready.push(name)
    }
  }
  sworm.on('registered', onRegistered)
  try {
    let retry = [...req.names] // every name is looked up once, then as its call fails
    while ((waiting.size > 0 || ready.length > 0) && performance.now() < deadline) {
      rounds++
      const calls: Array<Promise<void>> = []
      const failed: string[] = []
      // and every 50 rounds, every waiting name: a node that caught up from a snapshot saw no
      // event for the names it installed
      for (const n of rounds % 50 === 0 ? [...waiting] : retry) {
        const ref = sworm.whereisName(n)
        if (ref && !skip.has(ref.node) && waiting.delete(n)) ready.push(n)
      }
      const now = ready
      ready = []
      for (const n of now) {
        calls.push(
          sworm.call(n, req.msg, { timeout: req.callTimeoutMs ?? 1000 }).then(
            () => void (doneAt = nowEpoch()),
            () => {
              waiting.add(n)
              failed.push(n)
            },
          ),
        )
      }
      await Promise.all(calls)
      retry = failed
      if (waiting.size > 0 || ready.length > 0) await new Promise((r) => setTimeout(r, req.everyMs ?? 10))
    }
  } finally {
    sworm.off('registered', onRegistered)
  }
  const missing = [...waiting, ...ready]
  return { answered: req.names.length - missing.length, missing, doneAt, rounds, ms: performance.now() - t0 }
}

/**
 * `awaitAnswers` with `ride`: every name called by name at once, each call waiting inside the
 * sworm while its worker moves (location transparency), and called again when it fails (a call
 * that reached the dead node: OUTCOME_UNKNOWN) or times out, after `everyMs`.
 */
async function rideAnswers({ sworm }: SwormNodeContext, req: Req<'awaitAnswers'>): Promise<AwaitAnswersResult> {
  const t0 = performance.now()
  const deadline = t0 + (req.timeoutMs ?? 30_000)
  let doneAt = nowEpoch()
  let rounds = 0
  const missing = new Set(req.names)
  const at: number[] = []
  const ride = async (name: string): Promise<void> => {
    while (performance.now() < deadline) {
      rounds++
      try {
        await sworm.call(name, req.msg, { timeout: Math.max(1, Math.min(req.callTimeoutMs ?? 1000, deadline - performance.now())) })
        doneAt = nowEpoch()
        at.push(doneAt)
        missing.delete(name)
        return
      } catch {
        await new Promise((r) => setTimeout(r, req.everyMs ?? 10))
      }
    }
  }
  await Promise.all(req.names.map(ride))
  const quantile = (q: number): number | undefined => at[Math.ceil(q * req.names.length) - 1]
  return {
    answered: req.names.length - missing.size,
    missing: [...missing],
    doneAt,
    ...(quantile(0.5) !== undefined ? { halfAt: quantile(0.5) } : {}),
    ...(quantile(0.9) !== undefined ? { nineTenthsAt: quantile(0.9) } : {}),
    rounds,
    ms: performance.now() - t0,
  }
}
