/**
 * A wiped disk in a real-process nemesis run: a voter is SIGKILLed, its dataDir deleted and it is
 * started again under the same id (it must refuse, or keep waiting); then, as the README tells an
 * operator, the old id is removed and the machine joins under a new id on a fresh dataDir. One at
 * a time, in the background (`NemesisRun.membership`).
 * @module
 */
import { rm } from 'node:fs/promises'
import { sleep, type NemesisRun } from './state.js'

/** How long a node restarted on a wiped dataDir may keep starting before the nemesis ends it. */
const WIPED_START_WAIT_MS = 10_000

const codeOf = (err: unknown): string => String((err as { code?: unknown }).code ?? 'ERROR')
const firstLine = (err: unknown): string => String((err as Error).message).split('\n')[0]!

/** Wipe `victim`'s disk and replace it (see the module); sets and clears `run.membership`. */
export function wipe(run: NemesisRun, victim: string): void {
  const { busy } = run
  busy.add(victim)
  let successor: string | undefined
  run.membership = (async () => {
    await restartWiped(run, victim)
    if (!(await removeWiped(run, victim))) return
    successor = `n${run.nextId++}`
    await joinSuccessor(run, victim, successor)
  })()
    .catch((err: unknown) => void run.found.problems.push(`the wipe of ${victim} failed: ${(err as Error).stack ?? String(err)}`))
    .finally(() => {
      busy.delete(victim)
      if (successor) busy.delete(successor)
      run.membership = undefined
    })
}

/** Kill `victim`, delete its dataDir and start it under its old id: it must be refused (or wait). */
async function restartWiped(run: NemesisRun, victim: string): Promise<void> {
  const { cl, found } = run
  await run.kill(victim)
  await rm(cl.dataDir(victim), { recursive: true, force: true })
  // with its `peers` as before, or (half the time, since session 28) with `join` through a live
  // member, as an operator who took the machine for a new one might start it: the cluster must
  // refuse the join request of an id it binds to another data directory
  // (usable() leaves out the victim: it is busy with its wipe)
  const vias = run.usable()
  const via = vias.length && run.r() < 0.5 ? run.pick(vias) : undefined
  found.note(`wipe: ${victim} killed and its dataDir deleted; starting it again under the same id, ${via ? `joining through ${via}` : 'with the peers'}`)
  found.count(via ? 'wipe:with-join' : 'wipe:with-peers')
  run.starts.set(victim, (run.starts.get(victim) ?? 1) + 1)
  let outcome: string
  try {
    await cl.restart(victim, { mayBeRefused: true, startTimeoutMs: WIPED_START_WAIT_MS, startWith: via ? { join: cl.urls[via]! } : 'peers' })
    outcome = 'resolved'
  } catch (err) {
    const code = codeOf(err)
    outcome = code === 'DATA_LOST' ? 'refused' : code === 'START_TIMEOUT' ? 'waited' : 'failed'
    if (outcome === 'failed') found.problems.push(`${victim} restarted on a wiped dataDir: start failed with ${code}, not DATA_LOST: ${firstLine(err)}`)
  }
  found.count(`wipe:${outcome}`)
  found.note(`wipe: ${victim} on the empty dataDir: ${outcome}`)
  if (outcome === 'resolved') {
    found.problems.push(`a node with a wiped dataDir rejoined under its old id (${victim})`)
    await sleep(2000) // let it do what it does, for the other checks to see
  }
  await endProcess(run, victim)
}

/** Kill `id`'s process if it runs; else note that it exited. */
async function endProcess(run: NemesisRun, id: string): Promise<void> {
  if (run.cl.isAlive(id)) await run.kill(id)
  else run.noteExit(id)
}

/** Remove the old id through a live member, retried while there is no quorum (60 s at most). Whether it was removed. */
async function removeWiped(run: NemesisRun, victim: string): Promise<boolean> {
  const removeBy = performance.now() + 60_000
  for (;;) {
    const vias = run.usable()
    if (vias.length) {
      const via = run.pick(vias)
      try {
        await run.cl.request(via, { op: 'removeNode', node: victim, timeoutMs: 5000 }, 10_000)
        run.found.note(`wipe: ${victim} removed through ${via}`)
        return true
      } catch (err) {
        if (codeOf(err) === 'NOT_FOUND') return true
      }
    }
    if (performance.now() > removeBy) {
      run.found.problems.push(`could not remove ${victim} (wiped) within 60 s`)
      return false
    }
    await sleep(300)
  }
}

/** The machine of `victim` joins as `id` on a fresh dataDir (on the old address or a new one), retried for 90 s. */
async function joinSuccessor(run: NemesisRun, victim: string, id: string): Promise<void> {
  const { cl, busy, ids, found } = run
  busy.add(id)
  busy.delete(victim)
  ids[ids.indexOf(victim)] = id
  run.retired.push(victim)
  cl.retire(victim)
  run.starts.set(id, 1)
  const url = run.r() < 0.5 ? cl.urls[victim] : undefined
  const joinBy = performance.now() + 90_000
  for (let attempt = 0; ; attempt++) {
    const via = run.pick(run.usable().length ? run.usable() : ids.filter((x) => x !== id))
    found.note(`wipe: ${victim}'s machine joins as ${id} through ${via}${url ? ' on the old address' : ''}${attempt ? ` (attempt ${attempt + 1})` : ''}`)
    try {
      const o = { mayBeRefused: true, startTimeoutMs: 70_000, join: cl.urls[via]! }
      if (attempt === 0) await cl.startJoining(id, o.join, { ...o, ...(url ? { url } : {}) })
      else {
        run.starts.set(id, (run.starts.get(id) ?? 1) + 1)
        await cl.restart(id, o)
      }
      break
    } catch (err) {
      found.note(`wipe: ${id} did not join: ${codeOf(err)}`)
      await endProcess(run, id)
      if (performance.now() > joinBy) {
        found.problems.push(`${id} (the machine of ${victim}, wiped) could not join within 90 s: ${firstLine(err)}`)
        return
      }
      await sleep(500)
    }
  }
  busy.delete(id)
  await run.subscribe(id)
  await run.applyCuts()
  found.count('wipe:rejoined')
  found.note(`wipe: ${id} joined (the machine of ${victim})`)
}
