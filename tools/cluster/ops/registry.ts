/**
 * Registry operations of the Sworm node process: register, look up, call, groups, and whole-
 * registry reads (dump, digest).
 * @module
 */
import { createHash } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { errorInfo } from '../node-process.js'
import { nowEpoch, numberedNames } from '../stats.js'
import type { CallEachResult, RegistryDigest, SwormRequest } from '../sworm-protocol.js'
import { echoWorker, refOf, registerEcho, type SwormNodeContext, type SwormOpTable } from './context.js'

type Req<K extends SwormRequest['op']> = Extract<SwormRequest, { op: K }>

/** The registry operations of a node. */
export function registryOps(ctx: SwormNodeContext) {
  const { sworm, node } = ctx
  return {
    spawnRegister: async (req) => (await registerEcho(ctx, req.name, req.tag)).won,
    registerStatic: (req) => registerEcho(ctx, req.name, req.name),
    spawnEcho: (req) => sworm.spawn(echoWorker(req.tag, node)),
    registerRef: (req) => sworm.registerName(req.name, req.ref),
    dump: () =>
      sworm
        .registered()
        .map(([n, r]) => [n, r.node, r.id])
        .sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1)),
    whereis: async (req) => (req.consistent ? await sworm.whereisName(req.name, { consistent: true }) : sworm.whereisName(req.name)) ?? null,
    whereisMany: async (req) => {
      if (req.consistent) return (await Promise.all(req.names.map((n) => sworm.whereisName(n, { consistent: true })))).map((r) => r ?? null)
      return req.names.map((n) => sworm.whereisName(n) ?? null)
    },
    missing: (req) => req.names.filter((n) => sworm.whereisName(n) === undefined),
    registeredCount: () => sworm.status().names,
    hasAll: (req) => numberedNames(req.prefix, req.count, req.start).every((n) => sworm.whereisName(n) !== undefined),
    whenHasAll: (req) => whenHasAll(ctx, req),
    unregister: (req) => sworm.unregisterName(req.name),
    call: (req) => sworm.call(req.name, req.msg),
    join: async (req) => void (await sworm.join(req.group, refOf(ctx, req.name))),
    leave: async (req) => void (await sworm.leave(req.group, refOf(ctx, req.name))),
    members: (req) => sworm.members(req.group),
    exitWorker: async (req) => void (await sworm.exit(refOf(ctx, req.name))),
    whereisAll: async (req) => {
      const list = numberedNames(req.prefix, req.count, req.start)
      if (req.consistent && list.length > 0) await sworm.whereisName(list[0]!, { consistent: true })
      return list.map((n) => sworm.whereisName(n) ?? null)
    },
    callEach: (req) => callEach(ctx, req),
    registryDigest: (req) => registryDigest(ctx, req),
  } satisfies Partial<SwormOpTable>
}

/** Poll local reads until every name is present; resolves with the wall-clock time it was first seen. */
function whenHasAll({ sworm, node }: SwormNodeContext, req: Req<'whenHasAll'>): Promise<{ at: number }> {
  const list = numberedNames(req.prefix, req.count, req.start)
  const deadline = performance.now() + (req.timeoutMs ?? 30_000)
  let i = 0
  return new Promise((resolve, reject) => {
    const check = (): void => {
      while (i < list.length && sworm.whereisName(list[i]!) !== undefined) i++
      if (i === list.length) return resolve({ at: nowEpoch() })
      if (performance.now() > deadline) {
        return reject(Object.assign(new Error(`${list.length - i}+ of ${list.length} names still missing on ${node}`), { code: 'TIMEOUT' }))
      }
      setTimeout(check, 1)
    }
    check()
  })
}

async function callEach({ sworm }: SwormNodeContext, req: Req<'callEach'>): Promise<CallEachResult> {
  const t0 = performance.now()
  const failed: string[] = []
  const errorSamples: string[] = []
  const values: Record<string, number> = {}
  let ok = 0
  const timeout = req.timeoutMs ?? 2000
  // one read barrier: the local registry then reflects every registration committed before it
  if (req.consistent && req.names.length > 0) await sworm.whereisName(req.names[0]!, { consistent: true })
  await Promise.all(
    req.names.map(async (n) => {
      try {
        const v = await sworm.call(n, req.msg, { timeout })
        const k = JSON.stringify(v) ?? 'undefined'
        values[k] = (values[k] ?? 0) + 1
        ok++
      } catch (err) {
        failed.push(n)
        if (errorSamples.length < 5) errorSamples.push(`${n}: ${errorInfo(err).message}`)
      }
    }),
  )
  return { ok, failed, errorSamples, values, ms: performance.now() - t0 }
}

function registryDigest({ sworm }: SwormNodeContext, req: Req<'registryDigest'>): RegistryDigest {
  const all = sworm
    .registered()
    .map(([n, r]): [string, string, number] => [n, r.node, r.id])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
  const hash = createHash('sha1')
  const perNode: Record<string, number> = {}
  for (const e of all) {
    hash.update(JSON.stringify(e))
    perNode[e[1]] = (perNode[e[1]] ?? 0) + 1
  }
  const listed = all.filter(([n]) => req.listPrefixes.some((p) => n.startsWith(p)))
  return { hash: hash.digest('hex'), count: all.length, perNode, listed }
}
