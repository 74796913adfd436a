/**
 * What a real-process nemesis run puts on the cluster besides its clients: the supervised names,
 * the large state (static names in bulk before the faults), and hostile connections from outside
 * the cluster until the heal.
 * @module
 */
import { fileURLToPath } from 'node:url'
import { seededRandom } from '../../../src/testkit/sim.js'
import type { RegisterManyResult, RegisterSupervisedManyResult } from '../../../tools/cluster/sworm-protocol.js'
import { HOSTILE_KINDS, hostileAttack } from '../hostile-peers.js'
import { BIG, sleep, wall, type NemesisRun } from './state.js'

const WORKERS = fileURLToPath(new URL('../../../tools/cluster/workers.js', import.meta.url))
/** Hostile attacks per run, at most. */
const MAX_HOSTILE = 30

/** Register the supervised counters `w0`..: the same names from two nodes at once (one wins each; one of them with `wait: 'placed'`). */
export async function registerSupervised(run: NemesisRun, names: number): Promise<void> {
  // (the second with its refs fixed at their placement: `wait: 'placed'`)
  const registering = [0, 1].map((k) =>
    run.cl
      .request(run.pick(run.usable()), { op: 'registerSupervisedMany', prefix: 'w', count: names, concurrency: 8, module: WORKERS, fn: 'counter', ...(k === 1 ? { wait: 'placed' as const } : {}) }, 60_000)
      .catch(() => undefined),
  )
  await Promise.all(registering)
}

/**
 * Values too large for one frame of the transport (and so for one Raft log entry): two supervised
 * workers `xl0`, `xl1` whose `beginHandoff` returns 65 MiB (a drain of their node must move them
 * without it: see `drainOversized` in faults.ts), and one registration whose `init` throws a
 * 65 MiB message, which must fail with its cause cut. Before session 29 either stopped every
 * write of the cluster for good. Their names are outside the checked `w` prefix (no life log),
 * but in every registry digest, and the clients' operations go on through the faults.
 */
export async function registerOversized(run: NemesisRun): Promise<void> {
  const { cl, found } = run
  found.count('oversizedValues')
  const via = run.pick(run.usable())
  await cl.request(via, { op: 'registerSupervisedMany', prefix: 'xl', count: 2, concurrency: 2, module: WORKERS, fn: 'hugeHandoff' }, 60_000).catch(() => undefined)
  const failed = await cl
    .request<RegisterSupervisedManyResult>(via, { op: 'registerSupervisedMany', prefix: 'xlfail', count: 1, concurrency: 1, module: WORKERS, fn: 'hugeStartError' }, 60_000)
    .catch((err: unknown) => ({ ok: 0, errors: 1, errorSamples: [`request failed: ${String(err)}`] }))
  const sample = failed.errorSamples[0] ?? ''
  if (sample.startsWith('request failed:')) {
    // (the harness's request failed, not the registration: a busy machine, not a finding)
    found.note(`oversized values: the failing registration's request failed: ${sample.slice(0, 200)}`)
  } else if (failed.ok !== 0 || !/x{100}… \(\d+ more characters\)/.test(sample)) {
    found.problems.push(`a start error larger than a frame: expected the registration to fail with its cause cut, got ${failed.ok} ok, ${sample.slice(0, 200)}`)
  }
}

/**
 * Register `large` static names (echo workers) through 3 nodes, 64 in flight. One node sits the
 * load out (killed before, started again as the faults begin: returned): it is then behind the
 * leader's latest snapshot and catches up by installing it, during the faults.
 */
export async function loadLargeState(run: NemesisRun, large: number): Promise<string | undefined> {
  const { cl, found } = run
  found.faults.largeState = 1
  const vias = run.usable().slice(0, 3)
  const sitOut = run.usable().length > 3 ? run.pick(run.usable().slice(3)) : undefined
  if (sitOut !== undefined) await run.kill(sitOut)
  const per = Math.ceil(large / vias.length)
  found.note(`large state: registering ${large} static names through ${vias.join(',')}, 64 in flight${sitOut !== undefined ? `, while ${sitOut} is down` : ''}`)
  const t = performance.now()
  const res = await Promise.all(
    vias.map((via, i) =>
      cl
        .request<RegisterManyResult>(
          via,
          { op: 'registerMany', prefix: BIG, start: i * per, count: Math.max(0, Math.min(per, large - i * per)), concurrency: Math.floor(64 / vias.length) + (i < 64 % vias.length ? 1 : 0) },
          600_000,
        )
        .catch((err: unknown) => ({ ok: 0, errors: 1, errorSamples: [String(err)] })),
    ),
  )
  const ok = res.reduce((a, x) => a + x.ok, 0)
  found.note(`large state: ${ok} registered in ${((performance.now() - t) / 1000).toFixed(1)} s${ok < large ? ` (errors: ${res.flatMap((x) => x.errorSamples).slice(0, 3).join('; ')})` : ''}`)
  return sitOut
}

/**
 * Hostile connections from outside the cluster (see `hostile-peers.ts`), to random running nodes,
 * one at a time, on their own seeded stream, in the background. Returns the call that ends them
 * (resolves once the last one has).
 */
export function startHostile(run: NemesisRun, seed: number): () => Promise<void> {
  const { cl, ids, found } = run
  let on = true
  const loop = (async () => {
    const hr = seededRandom(seed * 13 + 5)
    for (let k = 0; k < MAX_HOSTILE && on; k++) {
      await sleep(300 + hr() * 1500)
      const targets = ids.filter((id) => cl.isAlive(id))
      if (!on || !targets.length) break
      const id = targets[Math.floor(hr() * targets.length)]!
      const kind = HOSTILE_KINDS[Math.floor(hr() * HOSTILE_KINDS.length)]!
      found.count(`hostile:${kind}`)
      const what = await hostileAttack(kind, { url: cl.urls[id]!, nodeId: id, memberIds: [...ids] }, hr)
      found.trail.push({ at: wall(), what: `hostile: ${id}: ${what}` })
    }
  })()
  return () => {
    on = false
    return loop
  }
}
