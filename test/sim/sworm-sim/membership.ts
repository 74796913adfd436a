/**
 * Membership changes of a scenario run, one at a time, each in the background until it is done
 * (`SimWorld.membership`): a member removed through a running member (or itself), and a node
 * added with `join` (fresh, or a removed node's machine on a wiped disk under a new id).
 * @module
 */
import { internals } from '../../../src/internal.js'
import type { Member, SimWorld } from './world.js'

/** Remove `x` from the cluster (`Sworm.removeNode`), retried until it is out. */
export function removeMember(w: SimWorld, x: Member): void {
  const { sched, r } = w
  x.role = 'leaving'
  w.maybeDropped(x.id) // its static names go when it is declared gone
  w.membership = (async () => {
    for (let tries = 0; ; tries++) {
      // through a running member; at the first try, at times the leaving node itself (once out
      // of the configuration it hears of no leader: later tries through it would time out)
      const nodes = w.alive().filter((m) => m.role === 'active')
      const self = w.alive().includes(x) && ((tries === 0 && r() < 0.3) || !nodes.length)
      if (self || nodes.length) {
        const via = self ? x : w.pick(nodes)
        const gen = via.gen
        const res = await w.within(via.sworm!.removeNode(x.id), 10_000, () => via.alive && via.gen === gen)
        // NOT_FOUND: out of the configuration, and never came up in the registry (an earlier try
        // removed it and timed out, say)
        if (res.ok || (res.err as { code?: string } | undefined)?.code === 'NOT_FOUND') break
      }
      await sched.sleep(100 + r() * 400)
    }
    // A removed node that never came up in the registry can join again under its id when its
    // process, alive, asks again, if its removal found it out of the configuration already (its
    // add never committed: NOT_FOUND above), so that no configuration remembers it as removed
    // (session 26, seed 5711634: it was a learner again 2 s later; since session 27 a node removed
    // from the configuration is refused). Its process ends, as an operator's would.
    // (no replica that runs, itself included, knows it: a removed node's registry stops where it
    // was removed, so one replica alone could miss a node that came up later: found by review)
    const known = [x, ...w.alive()].some((m) => m.sworm !== undefined && internals(m.sworm).state.nodeRecord(x.id) !== undefined)
    if (x.alive && !known) await w.crash(x)
    x.role = 'retired'
    w.membership = undefined
  })()
}

/**
 * Add a node that starts with `join`: half the time (if there is one) the machine of a removed
 * node, on a wiped disk under a new id (Raft is safe only if no voter forgets its state, and an
 * old configuration somewhere may count the old id), else a fresh node.
 */
export async function addMember(w: SimWorld): Promise<void> {
  const { sched, r } = w
  const retired = w.all().filter((m) => m.role === 'retired' && !w.members.has(`${m.id}r`))
  let m: Member
  if (retired.length && r() < 0.5) {
    const old = w.pick(retired)
    await w.crash(old) // its old process ends first
    m = w.newMember(`${old.id}r`, true)
    w.members.set(m.id, m)
    w.count('member-rejoin')
  } else {
    m = w.newMember(`n${w.nextId++}`, true)
    w.members.set(m.id, m)
    w.count('member-join')
  }
  await w.boot(m)
  w.membership = (async () => {
    while (!(m.ready && m.alive)) await sched.sleep(100)
    w.membership = undefined
  })()
}
