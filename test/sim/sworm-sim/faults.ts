/**
 * The nemesis of a scenario run: one fault drawn from the run's random stream ({@link injectFault},
 * every 200-1000 simulated ms), each kind of fault, and the end of the faults ({@link healFaults}).
 *
 * Replay. The faults draw from the same stream as everything else in the run, and promise chains
 * that a fault starts (a call through a node, a removal) draw from it too as they run. So a fault
 * runs at once and returns nothing, or returns a promise to wait for and what to do right after
 * it ({@link FaultEnd}), which the caller runs in its own frame, as in `await wait; after()`:
 * wrapping that in one more `async` function would let those chains run (and draw) before the
 * caller goes on, and every seed would replay another run.
 * @module
 */
import { internals } from '../../../src/internal.js'
import { addMember, removeMember } from './membership.js'
import { registerSupervised } from './workload.js'
import type { Member, SimWorld } from './world.js'

/** What one step of the schedule sees: the members' ids, and the active members that are down. */
interface Step {
  ids: string[]
  down: Member[]
}

/**
 * How a fault ends: at once (nothing), or once `wait` resolves, with `after` run right then, in
 * the caller's frame: `await end.wait; end.after?.()` (see the module's notes on replay).
 */
export type FaultEnd = void | { wait: Promise<unknown>; after?: () => void }

/** A kind of fault. */
type Fault = (w: SimWorld, step: Step) => FaultEnd

const trace = (w: SimWorld, what: string): void => {
  if (process.env.SIM_TRACE) console.error(`${w.sched.now.toFixed(1)} nemesis ${what}`)
}

/**
 * Inject one fault: with the faults of issue #10 (`opts.newFaults`, default on), a process stall
 * (6%), a wiped disk (2%), hostile messages (2%), a failing disk (2%) or a new leader elected
 * inside the old one's lease (2%, {@link bridgeRestart}), a graceful stop (2%, {@link stopNode}) or
 * a leadership transfer away from a node only the old leader hears (2%, {@link transferCut}) or a
 * leader that leads on, woken from a stall, with the one follower a lasting partition leaves it
 * (1%, {@link oldLeaderLeadsOn}); else one of the classic faults ({@link SCHEDULE}).
 */
export function injectFault(w: SimWorld): FaultEnd {
  // (a draw only in runs that ask for it: the other runs replay as before)
  if (w.opts.voterCrashes && w.r() < 0.05) return crashVoters(w)
  const y = (w.opts.newFaults ?? true) ? w.r() : 1
  if (y < 0.06) return stallFault(w)
  if (y < 0.08) return wipeDisk(w)
  if (y < 0.1) return hostileMessages(w)
  if (y < 0.12) return diskFault(w)
  if (y < 0.14) return bridgeRestart(w)
  if (y < 0.16) return stopNode(w)
  if (y < 0.18) return transferCut(w)
  if (y < 0.19) return oldLeaderLeadsOn(w)
  const x = w.r()
  trace(w, `x=${x.toFixed(2)}`)
  const step: Step = { ids: [...w.members.keys()], down: w.active().filter((m) => !m.alive) }
  return SCHEDULE.find((f) => x < f.below && (f.when?.(step) ?? true))!.fault(w, step)
}

/** When the last stall ends (now if none runs on). */
export function stallsEnd(w: SimWorld): number {
  return Math.max(w.sched.now, ...w.stalls.map((st) => st.to))
}

/** The network heals: every link back, no loss, no duplicates, short delays; every disk works. */
export function healFaults(w: SimWorld): void {
  w.net.heal()
  setReliable(w)
  for (const m of w.all()) {
    m.diskFailsUntil = 0
    m.snapshotFailsUntil = 0
  }
}

function setReliable(w: SimWorld): void {
  w.net.faults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
}

/** Freeze `m`'s process for `ms`: its timers, inbound messages and disk (a GC pause, SIGSTOP, a long synchronous task). */
function stall(w: SimWorld, m: Member, ms: number): void {
  const { sched, stalls } = w
  // one stall interval per freeze: a stall of a node already stalled extends it
  const cur = stalls.find((st) => st.node === m.id && st.from <= sched.now && st.to > sched.now)
  if (cur) cur.to = Math.max(cur.to, sched.now + ms)
  else {
    // when its lease ends, on the true time (its clock runs at its rate; a frozen node renews nothing)
    const renewed = m.sworm ? internals(m.sworm).raft.leaseRenewedAt() : undefined
    const leaseEnd = renewed === undefined ? -Infinity : sched.now + (renewed + w.lease - m.clock!.now()) / m.clock!.rate
    stalls.push({ node: m.id, from: sched.now, to: sched.now + ms, leaseEnd })
  }
  trace(w, `stall ${m.id} ${ms.toFixed(0)} ms (${m.sworm?.status().role})`)
  m.clock!.stall(ms)
  w.net.stall(m.id, ms)
  w.maybeDropped(m.id) // it may be declared gone meanwhile
  w.count(`stall${m.sworm?.status().role === 'leader' ? '-leader' : ''}`)
}

/** A process stall: half the time the leader, right after a partition cuts it off with a minority. */
const stallFault = (w: SimWorld): FaultEnd => {
  const { r } = w
  const ids = [...w.members.keys()]
  const leader = w.alive().find((m) => m.sworm!.status().role === 'leader')
  if (leader && r() < 0.5) {
    const others = ids.filter((id) => id !== leader.id).sort(() => r() - 0.5)
    const k = Math.floor(r() * 2)
    w.net.partition([[leader.id, ...others.slice(0, k)], others.slice(k)])
    trace(w, `partition ${JSON.stringify([[leader.id, ...others.slice(0, k)], others.slice(k)])}`)
    for (const id of ids) w.maybeDropped(id)
    w.count('partition')
    stall(w, leader, r() * 3000)
  } else {
    const m = w.alive()
    if (m.length) stall(w, w.pick(m), r() * 3000)
  }
}

/**
 * The leader stalls for 0.8 to 2.5 s right as a partition cuts it off with one follower, and the
 * partition holds (no other fault meanwhile) until the others' new leader has had time to declare
 * that follower gone: lease + drift after its election, and 3 s more. Woken, the old leader leads
 * on for up to an election timeout, its ticks having stopped with it, reaching that follower
 * only, and whatever it acknowledges must renew no lease past the new leader's election
 * (`RaftCore.renewalAck`), or that follower's workers run past the new leader's decision (the
 * check at every node-down). {@link stallFault} makes this shape too, but the next fault, 0.2 to
 * 1 s later, mostly heals or moves the partition before any decision: a leader that acknowledged
 * every latest answer as renewing passed 150 runs (session 26). Then the network heals.
 */
const oldLeaderLeadsOn = (w: SimWorld): FaultEnd => {
  const leader = w.alive().find((m) => m.sworm!.status().role === 'leader')
  const followers = w.alive().filter((m) => m !== leader)
  if (!leader || !followers.length) return
  const f = w.pick(followers)
  const ids = [...w.members.keys()]
  const sides = [[leader.id, f.id], ids.filter((id) => id !== leader.id && id !== f.id)]
  w.net.partition(sides)
  trace(w, `partition ${JSON.stringify(sides)} (the leader leads on with one follower)`)
  for (const id of ids) w.maybeDropped(id)
  stall(w, leader, 800 + w.r() * 1700)
  return {
    wait: w.sched.runUntil(w.sched.now + w.lease + w.drift + 3000),
    after: () => {
      w.net.heal()
      w.count('old-leader-leads-on')
    },
  }
}

/**
 * A node's disk fails for 0.1 to 2.5 s (an I/O error, a full disk): every write fails, so the
 * node stops serving (it answers nothing, its lease runs out) and retries its disk with backoff,
 * then reloads what the disk holds and rejoins. Half the time the leader's, whose last appends
 * may then be on its followers only. Found untried by the nemesis in session 15: before, only
 * the Raft simulation (`storage-faults.test.ts`) failed disks, never under the registry and the
 * supervisor. Three times in ten (session 16), only its snapshot writes fail, for 0.3 to 7.5 s:
 * its own snapshots and the installs its leader sends fail while its log writes work, so the
 * node fails when a snapshot comes due, and its retries (whose probe is a log write) succeed.
 */
const diskFault = (w: SimWorld): FaultEnd => {
  const { r } = w
  // (not a node whose disk fails already: its retries back off, and a fault on top of one would
  // stretch that past what a run leaves to settle)
  const up = w.alive().filter((m) => internals(m.sworm!).raft.storageFailure() === undefined)
  if (!up.length) return
  const leader = up.find((m) => m.sworm!.status().role === 'leader')
  const m = leader && r() < 0.5 ? leader : w.pick(up)
  const ms = 100 + r() * 2400
  if (r() < 0.3) {
    // only its snapshot writes fail, for longer (its log writes keep working until a snapshot
    // comes due, taken or installed)
    const snapMs = ms * 3
    m.snapshotFailsUntil = Math.max(m.snapshotFailsUntil, w.sched.now + snapMs)
    w.maybeDropped(m.id)
    trace(w, `snapshot writes of ${m.id} fail for ${snapMs.toFixed(0)} ms (${m.sworm?.status().role})`)
    w.count('snapshot-fault')
    return
  }
  m.diskFailsUntil = Math.max(m.diskFailsUntil, w.sched.now + ms)
  w.maybeDropped(m.id) // it may be declared gone meanwhile
  trace(w, `disk of ${m.id} fails for ${ms.toFixed(0)} ms (${m.sworm?.status().role})`)
  w.count(`disk-fault${m === leader ? '-leader' : ''}`)
}

/**
 * A new leader elected while the old one still holds its lease, and still renews its followers'.
 *
 * The leader L and some voters X stay together; the other voters (one short of a quorum) are cut
 * from them (both ways) with every learner, except one voter B that bridges the two sides, and
 * L's appends to B are lost (a congested sender's queue drops them; its heartbeats get through).
 * So L keeps its lease through B's answers, B refuses the cut-off side's candidates (it heard L
 * within an election timeout: stickiness), and B's log stays no longer than the cut-off side's (L
 * commits nothing). After 0.5 to 2 election timeouts (the cut-off side campaigns meanwhile), L's
 * messages to B are lost and B restarts. A restarted voter has followed no one: before session 24
 * it granted the next candidate at once, and the cut-off side elected a leader while L held its
 * lease, and L declared gone nodes the new leader had just renewed (the check at each decision,
 * `SimWorld.leaseOverAt`, found it); now it waits an election timeout from its start
 * (`leaderLease`). The new leader may then declare L and X gone. Only with an odd number of
 * voters, 5 or more (L, X and B a quorum, and B with the cut-off side one), no membership change
 * under way, and every voter up.
 */
const bridgeRestart = (w: SimWorld): FaultEnd => {
  const leader = w.alive().find((m) => m.sworm!.status().role === 'leader')
  if (!leader || w.membership) return
  const voters = Object.keys(internals(leader.sworm!).raft.status().config.voters)
  if (voters.length < 5 || voters.length % 2 === 0 || !voters.every((id) => w.members.get(id)?.alive)) return
  const quorum = Math.floor(voters.length / 2) + 1
  const others = voters.filter((id) => id !== leader.id).sort(() => w.r() - 0.5)
  const b = others.find((id) => !w.members.get(id)!.joins)
  if (b === undefined) return
  const rest = others.filter((id) => id !== b)
  const xs = rest.slice(0, voters.length - quorum - 1) // L, X and B: a quorum
  const cut = [...w.members.keys()].filter((id) => id !== leader.id && id !== b && !xs.includes(id)) // B and the voters here: a quorum
  const side = [leader.id, ...xs]
  for (const a of side)
    for (const c of cut) {
      w.net.block(a, c)
      w.net.block(c, a)
    }
  w.net.lose(leader.id, b, isAppend)
  for (const id of [...side, ...cut]) w.maybeDropped(id)
  const delay = w.electionMs * (0.5 + w.r() * 1.5)
  trace(w, `bridge ${b} between ${JSON.stringify(side)} and ${JSON.stringify(cut)}; restarts in ${delay.toFixed(0)} ms`)
  const bm = w.members.get(b)!
  return {
    wait: (async () => {
      await w.sched.runUntil(w.sched.now + delay)
      w.net.block(leader.id, b)
      await w.crash(bm)
      await w.boot(bm)
      // no other fault until a leader elected now could have declared L's side gone (B waits an
      // election timeout, a candidate's timeout, then the new leader waits lease + drift): a
      // heal or a new partition would end the case before its decision
      await w.sched.runUntil(w.sched.now + w.lease + w.drift + 5 * w.electionMs)
    })(),
    after: () => w.count('bridge-restart'),
  }
}

/**
 * A node stops gracefully (SIGTERM, a rolling restart: `Sworm.stop()`), to be started again from
 * its disk by {@link restartNode} later; under the other faults, its drain and its leadership
 * transfer may not finish (the stop then goes on without them). Only a node whose loss leaves the
 * voters a quorum, with no other member down. Before session 24 the nemesis only ever crashed
 * nodes: graceful stops (drain with handoff, leadership transfer, dropping static names) ran in
 * the real-process tests alone.
 */
const stopNode = (w: SimWorld): FaultEnd => {
  const survivable = lossLeavesQuorum(w)
  if (!survivable || w.active().some((m) => !m.alive)) return
  const up = w.alive().filter((m) => m.role === 'active' && survivable(m))
  if (!up.length) return
  const m = w.pick(up)
  trace(w, `stop ${m.id} (${m.sworm?.status().role})`)
  return { wait: w.stop(m), after: () => w.count('stop') }
}

/**
 * A node X that only the leader L can reach (cut both ways from every other member), then L hands
 * its leadership to another voter N. L renewed X's lease until the transfer began; N never hears
 * X, so it declares X gone as soon as it may: `lease + drift` after its election, which follows the
 * transfer's start by a few ms. The closest a node-down decision comes to the end of a lease it
 * rests on, on purpose: with 20 ms of drift allowed (`SimWorld.drift`), a detector that waited
 * 100 ms too little after its election fails here (session 25: the nemesis's other faults left
 * every such decision hundreds of ms after the lease, and passed such a detector). Only with 3
 * voters or more, all up, and no membership change under way.
 */
const transferCut = (w: SimWorld): FaultEnd => {
  // (the leader of the latest term: one replaced while it was cut off may still think it leads)
  const leaders = w.alive().filter((m) => m.sworm!.status().role === 'leader')
  const term = (m: Member): number => internals(m.sworm!).raft.status().term
  const leader = leaders.sort((a, b) => term(b) - term(a))[0]
  if (!leader || w.membership) return
  const raft = internals(leader.sworm!).raft
  const voters = Object.keys(raft.status().config.voters)
  if (voters.length < 3 || !voters.every((id) => w.members.get(id)?.alive)) return
  // N: a voter L reaches both ways (an earlier fault may have cut some off)
  const ns = voters.filter((id) => id !== leader.id && !w.net.isBlocked(leader.id, id) && !w.net.isBlocked(id, leader.id))
  if (!ns.length) return
  const n = w.pick(ns)
  // X: any other member up (with 3 voters or more, those without X are a quorum: N, L and the rest)
  const xs = w.alive().filter((m) => m.id !== leader.id && m.id !== n)
  if (!xs.length) return
  const x = w.pick(xs)
  for (const id of w.members.keys()) {
    if (id === x.id || id === leader.id) continue
    w.net.block(x.id, id)
    w.net.block(id, x.id)
  }
  // (X's static names may now be dropped: the history allows it at every node-down decision,
  // `SimWorld.leaseOverAt`)
  trace(w, `transfer from ${leader.id} to ${n}; ${x.id} reaches ${leader.id} only`)
  const from = term(leader)
  raft.transferLeadership(n).catch(() => {})
  const nm = w.members.get(n)!
  return {
    wait: w.sched.runUntil(w.sched.now + w.lease + w.drift + 5 * w.electionMs),
    // (counted as such only if N leads now, in the term right after L's: a transfer that failed,
    // an ordinary election later, or another leader since, is not this case)
    after: () => w.count(nm.alive && nm.sworm?.status().role === 'leader' && term(nm) === from + 1 ? 'transfer-cut' : 'transfer-cut-missed'),
  }
}

/** A Raft append or snapshot chunk (what carries log entries). */
const isAppend = (msg: unknown): boolean => {
  const t = (msg as { t?: unknown } | null)?.t
  return t === 'app' || t === 'snap'
}

/**
 * Which members the cluster can lose for good (a wiped disk, a removal of a node that is down, a
 * crash of a node being removed, which the scenario never restarts) and still have a quorum of
 * its voters up: a learner, or a voter whose peers that are up are a quorum without it. Undefined
 * when there is no leader to ask the configuration of.
 */
function lossLeavesQuorum(w: SimWorld): ((m: Member) => boolean) | undefined {
  const leader = w.alive().find((m) => m.sworm!.status().role === 'leader')
  if (!leader) return undefined
  const voters = Object.keys(internals(leader.sworm!).raft.status().config.voters)
  const quorum = Math.floor(voters.length / 2) + 1
  return (m) => !voters.includes(m.id) || voters.filter((id) => id !== m.id && w.members.get(id)?.alive).length >= quorum
}

/**
 * A voter loses its disk and is restarted under the same id: it must refuse to start; the
 * operator then removes it (and its machine may come back later under a new id). Only with no
 * membership change under way, more than 3 members, all of them up, and only a node whose loss
 * leaves a quorum of the voters: a learner, or a voter among 3 or more that are all up (with
 * autopilot's demotions and the scenario's removals the voters can be 2 of 4 members, and
 * wiping one of them leaves a cluster that can never elect a leader again, rightly: seed
 * 232485819 "did not settle"). The process starts again with its `peers` a third of the time (it
 * finds out before it serves), else with `join` (it serves Raft messages while its join waits
 * for an answer), half of those times beside a stale leader ({@link staleLeaderWhileWiped}).
 */
const wipeDisk = (w: SimWorld): FaultEnd => {
  const act = w.active()
  const survivable = lossLeavesQuorum(w)
  if (!survivable) return
  const victims = act.filter((m) => m.alive && m.ready && !m.joins && survivable(m))
  if (!w.membership && act.length > 3 && act.every((m) => m.alive) && victims.length) {
    const m = w.pick(victims)
    const x = w.r()
    return { wait: restartWiped(w, m, x < 1 / 3 ? 'peers' : x < 2 / 3 ? 'join' : 'stale'), after: () => removeWiped(w, m) }
  }
}

async function restartWiped(w: SimWorld, m: Member, how: 'peers' | 'join' | 'stale'): Promise<void> {
  const stale = how === 'stale' ? await staleLeaderWhileWiped(w, m) : undefined
  await w.crash(m)
  m.storage = w.wipedStorage(m)
  m.joinVia = stale?.()
  m.joins = how !== 'peers'
  w.count(`wipe-${how}`)
  await w.boot(m)
  m.joinVia = undefined
  await w.sched.runUntilTrue(() => !m.alive || m.ready, 5000)
  if (stale) w.net.heal()
}

/**
 * The leader stalls for 3 to 4 s, cut off with one follower E; the others elect a leader, `m`
 * among them. Returns what to do once `m`'s disk is wiped (undefined, the plain `join` case, when
 * there is no such leader): the partition then puts `m` with the stalled leader and E, so that,
 * woken, the old leader leads on with E and the wiped `m`, a quorum of 3 of 5 if `m` answered as
 * the voter it was (session 27, found by review: it did, in the time its join waited for a
 * refusal; two leaders then held their leases at once, and the old one committed entries with
 * it). That step returns the member `m` joins through, on the other side.
 */
async function staleLeaderWhileWiped(w: SimWorld, m: Member): Promise<(() => string) | undefined> {
  const leader = w.alive().find((x) => x.sworm!.status().role === 'leader')
  const others = w.alive().filter((x) => x !== leader && x !== m)
  if (!leader || leader === m || others.length < 2) return undefined
  const e = w.pick(others)
  const ids = [...w.members.keys()]
  const rest = ids.filter((id) => id !== leader.id && id !== e.id)
  w.net.partition([[leader.id, e.id], rest])
  for (const id of ids) w.maybeDropped(id)
  stall(w, leader, 3000 + w.r() * 1000)
  await w.sched.runUntilTrue(() => w.alive().some((x) => x !== leader && x.sworm?.status().role === 'leader'), 2000)
  return () => {
    const sides = [[leader.id, e.id, m.id], rest.filter((id) => id !== m.id)]
    w.net.partition(sides)
    trace(w, `${m.id} wiped, restarts with join beside the stalled leader: ${JSON.stringify(sides)}`)
    for (const id of ids) w.maybeDropped(id)
    // (it joins through a node on the other side, which cannot refuse it: only the old leader can,
    // once it wakes and its next request reaches it)
    return w.pick(sides[1]!)
  }
}

function removeWiped(w: SimWorld, m: Member): void {
  if (m.ready && m.alive) w.faultProblems.push(`${m.id} restarted on a wiped disk under its old id and was let in`)
  w.count('wipe')
  removeMember(w, m)
}

/**
 * A burst of hostile messages: malformed or impossible Raft and wire messages, from an outsider
 * and from a member's id with another cluster's id.
 */
const hostileMessages = (w: SimWorld): FaultEnd => {
  const { r } = w
  const targets = w.alive()
  if (!targets.length) return
  const to = w.pick(targets).id
  const from = r() < 0.5 ? 'intruder' : w.pick([...w.members.keys()])
  // early word of starts (supervisor/early-starts.ts) from the sender's id, with its real
  // incarnation where it has one: bad fields, too many starts, epochs no placement has, names the
  // target may be registering (a notice is taken only for those)
  const inc = quietly(() => w.members.get(from)?.sworm?.statusReport().incarnation) ?? 'x'
  // (supervised names without a running worker there: those it may be registering right now)
  const target = w.members.get(to)?.sworm
  const names = Array.from({ length: w.nextName }, (_, k) => `w${k}`)
    .filter((n) => quietly(() => target?.whereisName(n)) === undefined)
    .slice(0, 8)
  const starts = names.map((n, i) => [n, i % 2 === 0 ? 1e9 : -1, 7])
  for (let k = 0; k < 20; k++) {
    const junk = w.pick<unknown>([
      null,
      42,
      'x'.repeat(1 + Math.floor(r() * 100)),
      { t: 'app', from, to, term: 1e9, prevIndex: -1, prevTerm: 0, entries: [{}], commit: 1e9 },
      { t: 'vote', from, to, term: 1e6, pre: false, lastIndex: 1e9, lastTerm: 1e6, transfer: true, cid: 'another-cluster' },
      { t: 'hb', from, to, term: 1e6, commit: 1e9, seq: 1, lease: true, ack: 1e9, cid: 'another-cluster' },
      { t: 'fwd', from, to, boot: 'x', reqs: [[1, { c: 'unregister', name: 'w1' }]], cid: 'another-cluster' },
      { t: 'snap', from, to, term: 1e6, meta: { index: 1e9, term: 1, config: { voters: {}, learners: {} } }, total: 3, offset: 0, data: new Uint8Array(3), crc: 0 },
      { t: 'call', id: 1, to: { sworm: 'sim', node: to, inc: 'x', id: 1 }, msg: 'crash' },
      { t: 'joinReq', node: 'n1', url: 'ws://n1.sim:1', disk: 'forged' },
      { t: 'probeResp', member: true, config: { voters: { [to]: 'x' }, learners: {} } },
      { t: 'startedAt', inc, starts: [...starts, ['w1', 1.5, 1], [42], 'x', null, ['x'.repeat(100_000), 1, 1]] },
      { t: 'startedAt', inc: 'y'.repeat(1 + Math.floor(r() * 1000)), starts },
      { t: 'startedAt', inc, starts: new Array(5000).fill(['w1', 1, 1]) },
      { t: 'startedAt', inc: 7, starts: {} },
    ])
    w.net.inject(from, to, junk, r() < 0.5 ? 'raft' : 'msg')
  }
  w.count('hostile')
}

/** What `f` returns, or undefined when it throws (a sworm that is stopped or crashed). */
function quietly<T>(f: () => T | undefined): T | undefined {
  try {
    return f()
  } catch {
    return undefined
  }
}

/** Membership: one change at a time, 3 to 6 members by default (a member removed, live or down, or a node added). */
const changeMembership: Fault = (w) => {
  const act = w.active()
  const [lo, hi] = w.opts.members ?? [3, 6]
  // a node that is down is never restarted once it is being removed: only one the voters can do
  // without (with 2 voters, removing a dead one can never commit: seed 1195479 "did not settle")
  const survivable = lossLeavesQuorum(w)
  const removable = act.filter((m) => m.alive || survivable?.(m) === true)
  if (!w.membership && act.length > lo && removable.length && (act.length >= hi || w.r() < 0.5)) {
    const victim = w.pick(removable)
    w.count(victim.alive ? 'member-remove' : 'member-remove-down')
    removeMember(w, victim)
  } else if (!w.membership && act.length < hi && act.some((m) => m.alive && !m.joins)) {
    return { wait: addMember(w) }
  }
}

/** A node's clock runs at another rate (within the bound). */
const skewClock: Fault = (w) => {
  const m = w.all().filter((m) => m.alive && m.clock)
  if (m.length) {
    w.pick(m).clock!.setRate(w.randomRate())
    w.count('skew')
  }
}

const partition: Fault = (w, { ids }) => {
  const s = ids.slice().sort(() => w.r() - 0.5)
  const k = 1 + Math.floor(w.r() * 2)
  w.net.partition([s.slice(0, k), s.slice(k)])
  for (const id of ids) w.maybeDropped(id)
  w.count('partition')
}

const oneWayCut: Fault = (w, { ids }) => {
  const a = w.pick(ids)
  const b = w.pick(ids)
  if (a !== b) {
    w.net.block(a, b)
    w.maybeDropped(a)
    w.maybeDropped(b)
  }
  w.count('one-way')
}

const healNetwork: Fault = (w) => {
  w.net.heal()
  w.count('heal')
}

const crashNode: Fault = (w) => {
  // a node being removed is not restarted: crashed only where the voters can do without it
  const survivable = lossLeavesQuorum(w)
  const m = w.all().filter((m) => m.alive && (m.role !== 'leaving' || survivable?.(m) === true))
  if (m.length) {
    return { wait: w.crash(w.pick(m)), after: () => w.count('crash') }
  }
}

/** Two voters die at once (the leader may be one): autopilot promotes learners in their place. */
function crashVoters(w: SimWorld): FaultEnd {
  const leader = w.alive().find((m) => m.sworm!.status().role === 'leader')
  if (!leader) return
  const voters = Object.keys(internals(leader.sworm!).raft.status().config.voters)
  const victims = w.all().filter((m) => m.alive && voters.includes(m.id))
  if (victims.length < 2) return
  const a = w.pick(victims)
  const b = w.pick(victims.filter((m) => m !== a))
  trace(w, `crash voters ${a.id} ${b.id}`)
  return {
    wait: (async () => {
      await w.crash(a)
      await w.crash(b)
    })(),
    after: () => w.count('crash-voters'),
  }
}

/**
 * A node that is down starts again. One restart in eight (session 16), on a disk that fails for
 * its first 0.1 to 1.5 s (every write, or, one time in three, its snapshot writes only): the node
 * must either refuse to start (`Sworm.start` throws, and the process ends) or start and recover
 * its disk in place; before, a node met a failing disk at boot only by chance.
 */
const restartNode: Fault = (w, { down }) => {
  const m = w.pick(down)
  let bad = ''
  if (w.r() < 1 / 8) {
    const until = w.sched.now + 100 + w.r() * 1400
    if (w.r() < 1 / 3) m.snapshotFailsUntil = Math.max(m.snapshotFailsUntil, until)
    else m.diskFailsUntil = Math.max(m.diskFailsUntil, until)
    bad = m.diskFailsUntil >= until ? 'disk' : 'snapshot writes'
    trace(w, `${m.id} restarts with its ${bad} failing for ${(until - w.sched.now).toFixed(0)} ms`)
  }
  return { wait: w.boot(m), after: () => w.count(bad ? `restart-failing-${bad === 'disk' ? 'disk' : 'snapshots'}` : 'restart') }
}

/** A worker crashes. */
const crashWorker: Fault = (w) => {
  const m = w.alive()
  if (m.length) {
    void w
      .pick(m)
      .sworm!.call(`w${Math.floor(w.r() * Math.max(1, w.nextName))}`, 'crash', { timeout: 500 })
      .catch(() => {})
    w.count('worker-crash')
  }
}

const drainNode: Fault = (w) => {
  const m = w.alive()
  if (m.length) {
    const s = w.pick(m).sworm!
    void (w.r() < 0.6 ? s.drain({ timeoutMs: 2000 }) : s.undrain()).catch(() => {})
    w.count('drain')
  }
}

/**
 * The network loses, duplicates and delays messages; one time in three, in runs of 5 nodes,
 * every message takes 100-200 ms more each way (a slow link, or event loops waiting for a core):
 * heartbeat rounds then come back later than the leader's lease, and only answers a later quorum
 * round confirmed renew leases (session 26; much slower, and the leases lapse anyway). The
 * delays last until the network is restored or degraded again (a healed partition keeps them).
 */
const degradeNetwork: Fault = (w) => {
  const corruptChunks = w.seed % 2 ? 0.1 : 0
  // (in the runs of 5 nodes only, as tried in session 26: the many-node runs, not tried with it,
  // replay as before without the draw)
  if ((w.opts.nodes ?? 5) <= 5 && w.r() < 1 / 3) {
    const minDelay = 100 + w.r() * 75
    w.net.faults = { drop: w.r() * 0.05, duplicate: w.r() * 0.05, minDelay, maxDelay: minDelay + w.r() * 25, corruptChunks }
    w.count('net-slow')
    return
  }
  w.net.faults = { drop: w.r() * 0.1, duplicate: w.r() * 0.05, minDelay: 1, maxDelay: 1 + w.r() * 20, corruptChunks }
  w.count('net-degrade')
}

const restoreNetwork: Fault = (w) => {
  setReliable(w)
  w.count('net-restore')
}

const registerName: Fault = (w) => {
  registerSupervised(w)
  w.count('register')
}

const rebalance: Fault = (w) => {
  const m = w.alive()
  if (m.length) {
    void w.pick(m).sworm!.rebalance().catch(() => {})
    w.count('rebalance')
  }
}

/** The whole cluster dies and comes back from its disks. */
const crashAll: Fault = (w) => ({ wait: crashAndRestartAll(w), after: () => w.count('crash-all') })

async function crashAndRestartAll(w: SimWorld): Promise<void> {
  for (const m of w.all()) await w.crash(m)
  await w.sched.runUntil(w.sched.now + 100 + w.r() * 2000)
  for (const m of w.active()) await w.boot(m)
}

const unregisterName: Fault = (w) => {
  const m = w.alive()
  if (m.length && w.nextName > 0) {
    void w
      .pick(m)
      .sworm!.unregisterName(`w${Math.floor(w.r() * w.nextName)}`)
      .catch(() => {})
    w.count('unregister')
  }
}

/** The classic faults, by the draw `x`: the first whose bound is above it and whose condition holds. */
const SCHEDULE: Array<{ below: number; when?: (s: Step) => boolean; fault: Fault }> = [
  { below: 0.1, fault: changeMembership },
  { below: 0.18, fault: skewClock },
  { below: 0.3, fault: partition },
  { below: 0.34, fault: oneWayCut },
  { below: 0.44, fault: healNetwork },
  { below: 0.52, when: (s) => s.down.length < 2, fault: crashNode },
  { below: 0.62, when: (s) => s.down.length > 0, fault: restartNode },
  { below: 0.72, fault: crashWorker },
  { below: 0.78, fault: drainNode },
  { below: 0.84, fault: degradeNetwork },
  { below: 0.87, fault: restoreNetwork },
  { below: 0.91, fault: registerName },
  { below: 0.93, fault: rebalance },
  { below: 0.94, fault: crashAll },
  { below: Infinity, fault: unregisterName },
]
