/**
 * The faults of a real-process nemesis run: `steps` seeded steps, each one fault (drawn from the
 * run's random stream, in the order it always was, so a seed replays the same schedule), then
 * {@link healEverything}.
 * @module
 */
import { MAX_RATE_SKEW, N, linkKey, sleep, type NemesisRun } from './state.js'
import { wipe } from './wipe.js'

/** At most this many nodes unavailable (down, frozen, or busy with a wipe) before a step takes another one. */
const MAX_DOWN = 2

/** What one step sees: its number, the usable nodes, and how many are not. */
interface Step {
  s: number
  healthy: string[]
  unavailable: number
}

/** A kind of fault; `names` supervised names exist. */
type Fault = (run: NemesisRun, step: Step, names: number) => void | Promise<void>

/** Run `steps` fault steps, 0.5-2.5 s apart. */
export async function runFaults(run: NemesisRun, steps: number, names: number): Promise<void> {
  for (let s = 0; s < steps; s++) {
    const x = run.r()
    const healthy = run.usable()
    const step: Step = { s, healthy, unavailable: run.ids.length - healthy.length }
    await SCHEDULE.find((f) => x < f.below && (f.when?.(run, step) ?? true))?.fault(run, step, names)
    await sleep(500 + run.r() * 2000)
  }
}

/** Every fault ends: stalls and freezes thawed, links back, every node running and undrained, a wipe under way done. */
export async function healEverything(run: NemesisRun, stopHostile: () => Promise<void>): Promise<number> {
  const { cl, ids, found } = run
  found.note('heal everything')
  const hostileDone = stopHostile()
  for (const t of run.stallTimers) clearTimeout(t)
  run.stallTimers.clear()
  for (const id of [...run.frozen]) run.thawNode(id)
  run.cut.clear()
  await run.applyCuts()
  for (const id of ids) if (!cl.isAlive(id) && !run.busy.has(id)) await run.restart(id)
  if (run.membership) {
    found.note('heal: waiting for the wiped node to be replaced')
    await run.membership
  }
  await hostileDone
  const healedAt = performance.now()
  for (const id of ids) if (!cl.isAlive(id)) await run.restart(id)
  await run.applyCuts()
  for (const id of ids) await cl.request(id, { op: 'undrain' }, 5000).catch(() => {})
  return healedAt
}

const kill: Fault = async (run, { s, healthy }) => {
  const id = run.pick(healthy)
  run.found.count('kill')
  run.found.note(`step ${s}: SIGKILL ${id}`)
  await run.kill(id)
}

const stop: Fault = async (run, { s, healthy }) => {
  const id = run.pick(healthy)
  run.found.count('stop')
  run.found.note(`step ${s}: graceful stop ${id}`)
  run.maybeDropped(id)
  await run.cl.stop(id)
  run.down.add(id)
  run.noteExit(id)
}

const freeze: Fault = (run, { s, healthy }) => {
  const id = run.pick(healthy)
  run.found.count('freeze')
  run.found.note(`step ${s}: SIGSTOP ${id}`)
  run.maybeDropped(id)
  run.freezeNode(id)
}

const wipeDisk: Fault = (run, { s, healthy }) => {
  const id = run.pick(healthy)
  run.found.count('wipe')
  run.found.note(`step ${s}: wipe ${id}'s disk`)
  wipe(run, id)
}

/** Cut links (a new partition, replacing the last): one node isolated, a minority of 2, or a bridge. */
function cutLinks(run: NemesisRun): string {
  const { ids, cut } = run
  cut.clear()
  const shuffled = [...ids].sort(() => run.r() - 0.5)
  const kind = run.pick(['isolate', 'minority', 'bridge'] as const)
  run.found.count(`partition:${kind}`)
  if (kind === 'isolate') {
    const [a] = shuffled
    for (const o of ids) if (o !== a) cut.add(linkKey(a!, o))
    run.maybeDropped(a!)
  } else if (kind === 'minority') {
    const minority = shuffled.slice(0, 2)
    for (const a of minority) for (const b of shuffled.slice(2)) cut.add(linkKey(a, b))
    for (const a of minority) run.maybeDropped(a)
  } else {
    // a, b | c | d, e, with c reaching both sides
    const [a, b, , d, e] = shuffled
    for (const p of [a, b]) for (const q of [d, e]) cut.add(linkKey(p!, q!))
    for (const p of [a, b, d, e]) run.maybeDropped(p!)
  }
  return kind
}

/** A partition; at times a stall at the worst moment: the leader (or a follower) stops right after the cuts, for 0.5-3 s. */
const partition: Fault = async (run, { s }) => {
  const kind = cutLinks(run)
  const y = run.r()
  const ms = 500 + run.r() * 2500
  const leader = y < 0.7 ? await run.leaderNow() : undefined
  run.found.note(`step ${s}: partition ${kind} ${[...run.cut].join(' ')}`)
  await run.applyCuts()
  const followers = run.usable().filter((id) => id !== leader)
  const stalled = y < 0.5 ? leader : y < 0.7 && followers.length ? run.pick(followers) : undefined
  if (stalled !== undefined && run.usable().includes(stalled)) {
    run.found.count(stalled === leader ? 'stall:leader' : 'stall:follower')
    run.found.note(`step ${s}: SIGSTOP ${stalled} (${stalled === leader ? 'the leader' : 'a follower'}) for ${ms.toFixed(0)} ms`)
    run.stall(stalled, ms)
  }
}

const healNetwork: Fault = async (run, { s }) => {
  run.found.count('heal')
  run.found.note(`step ${s}: heal the network`)
  run.cut.clear()
  await run.applyCuts()
}

/** A node down or frozen (not busy with a wipe) runs again. */
const revive: Fault = async (run, { s }) => {
  const revivable = run.ids.filter((i) => (!run.cl.isAlive(i) || run.frozen.has(i)) && !run.busy.has(i))
  if (revivable.length) {
    const id = run.pick(revivable)
    run.found.count('revive')
    run.found.note(`step ${s}: revive ${id}`)
    if (run.frozen.has(id)) run.thawNode(id)
    else await run.restart(id)
  }
}

const skewClock: Fault = async (run, { s, healthy }) => {
  const id = run.pick(healthy)
  const rate = 1 + (run.r() * 2 - 1) * MAX_RATE_SKEW
  run.found.count('clockSkew')
  run.found.note(`step ${s}: clock of ${id} now runs at ${rate.toFixed(3)}x`)
  await run.cl.request(id, { op: 'clockRate', rate }, 3000).catch(() => {})
}

/** Three supervised workers crash. */
const crashWorkers: Fault = async (run, { s, healthy }, names) => {
  run.found.count('workerCrash')
  const via = run.pick(healthy)
  const victims = Array.from({ length: 3 }, () => `w${Math.floor(run.r() * names)}`)
  run.found.note(`step ${s}: crash workers ${victims.join(',')} via ${via}`)
  await Promise.all(victims.map((w) => run.cl.request(via, { op: 'call', name: w, msg: 'crash' }, 3000).catch(() => {})))
}

/**
 * Drain a node; half the time undrain it right after. Half the drains go to the node of a worker
 * whose handoff state is larger than a frame (`xl0`/`xl1`, see `registerOversized`), when it is
 * healthy: it must move without that state, and every write go on.
 */
const drain: Fault = async (run, { s, healthy }) => {
  let id = run.pick(healthy)
  if (run.r() < 0.5) {
    const refs = await run.cl.request<Array<{ node: string } | null>>(id, { op: 'whereisAll', prefix: 'xl', count: 2 }, 3000).catch(() => [])
    const host = refs.map((x) => x?.node).find((n) => n !== undefined && healthy.includes(n))
    if (host !== undefined) {
      id = host
      run.found.count('drainOversized')
    }
  }
  run.found.count('drain')
  run.found.note(`step ${s}: drain ${id}`)
  await run.cl.request(id, { op: 'drain', timeoutMs: 3000 }, 6000).catch(() => {})
  if (run.r() < 0.5) await run.cl.request(id, { op: 'undrain' }, 3000).catch(() => {})
}

const fewDown = (_: NemesisRun, { unavailable }: Step): boolean => unavailable < MAX_DOWN

/** The faults, by the step's draw `x`: the first whose bound is above it and whose condition holds (none: the step does nothing). */
const SCHEDULE: Array<{ below: number; when?: (run: NemesisRun, step: Step) => boolean; fault: Fault }> = [
  { below: 0.16, when: fewDown, fault: kill },
  { below: 0.24, when: fewDown, fault: stop },
  { below: 0.32, when: fewDown, fault: freeze },
  { below: 0.42, when: (run, step) => fewDown(run, step) && !run.membership && run.ids.length === N && step.healthy.length > 0, fault: wipeDisk },
  { below: 0.57, fault: partition },
  { below: 0.65, fault: healNetwork },
  { below: 0.77, fault: revive },
  { below: 0.83, fault: skewClock },
  { below: 0.91, fault: crashWorkers },
  { below: Infinity, fault: drain },
]
