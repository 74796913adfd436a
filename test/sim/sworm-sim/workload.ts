/**
 * What a scenario run asks of the cluster: supervised names (`w<k>`, counter workers), static
 * names in bulk before the faults (large state), and clients of static registrations whose
 * history goes to the linearizability checker.
 * @module
 */
import type { KvOperation } from '../../../src/testkit/linearizability.js'
import { seededRandom } from '../../../src/testkit/sim.js'
import { STATIC_KEYS, type SimWorld } from './world.js'

/** Register a supervised name through a running node: the next new one, or (once all are) one again. */
export function registerSupervised(w: SimWorld): void {
  const m = w.alive()
  if (!m.length) return
  const name = `w${w.nextName < (w.opts.names ?? 20) ? w.nextName++ : Math.floor(w.r() * w.nextName)}`
  const via = w.pick(m).sworm!
  const spec = { module: 'sim-workers', fn: 'counter', args: [w.prefix + name] }
  if (w.r() < 0.5) {
    void via.whereisOrRegisterName(name, spec).catch(() => {})
    return
  }
  // its ref fixed at its placement, and a call to it before the worker runs (it waits for it)
  w.count('register-placed')
  void via
    .registerName(name, spec, { wait: 'placed' })
    .then((ref) => via.call(ref, 'get', { timeout: 2000 }))
    .then(() => w.count('placed-call-answered'))
    .catch(() => {})
}

/** Register `count` static names (of one long-lived worker per node), 64 in flight, before the faults. */
export async function loadLargeState(w: SimWorld, count: number): Promise<void> {
  const hosts = w.alive()
  const refs = hosts.map((m) => m.sworm!.spawn({ handleCall: () => 'ok' }))
  let next = 0
  let done = 0
  const loop = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      const k = i % hosts.length
      const res = await w.within(hosts[k]!.sworm!.registerName(`bulk:${i}`, refs[k]!), 20_000)
      if (res.ok) done++
    }
  }
  const loops = Array.from({ length: 64 }, loop)
  let finished = false
  void Promise.all(loops).finally(() => (finished = true))
  await w.sched.runUntilTrue(() => finished, 600_000, 50)
  w.count(`large-state:${done}`)
}

/**
 * Clients of static registrations. Each node has its own key space ("s:<node>:<k>"), bound only
 * to workers of that node, so when a node is cut off, crashes or is removed, the system may drop
 * exactly those names (nodeDown, a new incarnation): modelled as deletes that may happen at any
 * time from then on (`SimWorld.maybeDropped`, pending operations for the checker).
 */
export class Clients {
  private on = true
  private readonly loops: Array<Promise<void>> = []

  constructor(private readonly w: SimWorld) {}

  /** Start `n` clients, each running one operation after another until {@link stop}. */
  start(n: number): void {
    const { sched, r } = this.w
    for (let i = 0; i < n; i++) {
      this.loops.push(
        (async () => {
          while (this.on) {
            let done = false
            void this.op().finally(() => (done = true))
            // an operation on a node that crashes never settles: move on after a while
            for (let k = 0; k < 80 && !done; k++) await sched.sleep(50)
            await sched.sleep(r() * 50)
          }
        })(),
      )
    }
  }

  /** No new operations from now on. */
  stop(): void {
    this.on = false
  }

  /** Let simulated time run until every client has ended (at most 10 s). */
  async finished(): Promise<void> {
    let clientsDone = false
    void Promise.all(this.loops).finally(() => (clientsDone = true))
    await this.w.sched.runUntilTrue(() => clientsDone, 10_000)
  }

  /** One operation through a random running node: register a fresh worker of the key's owner, unregister, or read. */
  private async op(): Promise<void> {
    const w = this.w
    const { sched, r, history } = w
    const nodes = w.alive()
    if (!nodes.length) return
    const via = w.pick(nodes)
    const owner = w.pick([...w.members.keys()])
    const key = `s:${owner}:${Math.floor(r() * STATIC_KEYS)}`
    const x = r()
    const op: KvOperation = { client: w.clientSeq++, input: { op: 'get', key }, call: sched.now, ret: Infinity, output: undefined }
    try {
      if (x < 0.45) {
        // register a fresh static worker of the owner node (only the owner can spawn it)
        const host = w.members.get(owner)
        if (!host?.alive || !host.ready || !host.sworm || host.stopping) return
        const ref = host.sworm.spawn({ handleCall: () => 'ok' })
        const value = `v${ref.inc}.${ref.id}`
        op.input = { op: 'putIfAbsent', key, value }
        history.push(op)
        const ok = await via.sworm!.registerName(key, ref)
        op.output = { ok }
      } else if (x < 0.7) {
        op.input = { op: 'delete', key }
        history.push(op)
        op.output = { ok: await via.sworm!.unregisterName(key) }
      } else {
        op.input = { op: 'get', key }
        history.push(op)
        const ref = await via.sworm!.whereisName(key, { consistent: true })
        op.output = { value: ref ? `v${ref.inc}.${ref.id}` : undefined }
      }
      op.ret = sched.now
    } catch (err) {
      const code = (err as { code?: string }).code
      // a read that failed, or a write that surely did not happen, leaves no trace
      if (op.input.op === 'get' || code === 'NOT_LEADER' || code === 'PROPOSAL_DROPPED' || code === 'INVALID_ARGUMENT' || code === 'NO_WORKER' || code === 'SHUTTING_DOWN') {
        const i = history.indexOf(op)
        if (i >= 0 && (code !== 'SHUTTING_DOWN' || op.input.op === 'get')) history.splice(i, 1)
      }
    }
  }
}

/**
 * Calls by name to the supervised names, through random running nodes, all through the faults:
 * they wait inside the sworm while a name moves, restarts or its node cannot be reached, and go to
 * its next worker (rpc/messaging.ts). Each asks the worker for its incarnation: a worker of another
 * name answering is a problem of the run (a call handed to the wrong worker). Every call a worker
 * handles is also an act the overlap check sees: an incarnation that acted while frozen past its
 * lease loses the excuse of a late stop. Before session 28 no call by name was made in the
 * simulation, only calls to refs fixed at their placement. The callers pick names, nodes and
 * times from a random stream of their own, but their messages draw from the network's, as every
 * message does: since they exist every seed runs another schedule than before (`callers: 0`
 * replays the older one, as the regression seeds, found without them, do).
 */
export class Callers {
  private on = true
  private readonly r: () => number
  /** Calls not settled yet (each ends within its 2 s timeout, by its node's clock, or never if its node crashed). */
  private readonly inFlight = new Set<Promise<void>>()

  constructor(private readonly w: SimWorld) {
    this.r = seededRandom(w.seed ^ 0x5ca11ed)
  }

  /** Start `n` callers. */
  start(n: number): void {
    const { sched } = this.w
    for (let i = 0; i < n; i++) {
      void (async () => {
        while (this.on) {
          await sched.sleep(20 + this.r() * 180)
          if (!this.on) break
          const p = this.call()
          this.inFlight.add(p)
          void p.finally(() => this.inFlight.delete(p))
        }
      })()
    }
  }

  /** No new calls from now on. */
  stop(): void {
    this.on = false
  }

  /** Let simulated time run until the calls in flight have settled (at most 10 s: one on a node that crashed never does). */
  async finished(): Promise<void> {
    await this.w.sched.runUntilTrue(() => this.inFlight.size === 0, 10_000)
  }

  private async call(): Promise<void> {
    const w = this.w
    const nodes = w.alive().filter((m) => m.ready && m.sworm)
    if (!nodes.length || w.nextName === 0) return
    const via = nodes[Math.floor(this.r() * nodes.length)]!.sworm!
    const name = `w${Math.floor(this.r() * w.nextName)}`
    w.count('call-by-name')
    let inc: unknown
    try {
      inc = await via.call(name, 'incarnation', { timeout: 2000 })
    } catch {
      return // (not registered, timed out, outcome unknown, node stopped: none of them is checked here)
    }
    w.count('call-by-name-answered')
    const started = w.lifeNow().find((e) => e.event === 'start' && e.incarnation === inc)
    if (!started || started.name !== w.prefix + name) {
      w.faultProblems.push(`a call by name to ${name} was answered by incarnation ${String(inc)} of ${started ? started.name : 'no worker of this run'}`)
    }
  }
}

/**
 * Bursts of supervised registrations (counters), each small, but of many small objects (`spec.args`
 * carries 130 empty objects, about 140 bytes): each entry fits what a follower decodes of one append, many of
 * them together do not (its slack counts once an append), so a follower takes the longest prefix
 * that fits and the leader sends it the rest next (session 29: the followers took none of them,
 * and the log stopped for good). Replication then runs in those pieces through the run's faults.
 * On a stream of their own; what they send draws from the network's.
 */
export class CostlyBursts {
  private readonly r: () => number

  constructor(private readonly w: SimWorld) {
    this.r = seededRandom(w.seed ^ 0xc0571e5)
  }

  /** `n` bursts of 40 registrations at random times in the next `withinMs`. */
  start(n: number, withinMs: number): void {
    const { sched } = this.w
    // (counters, as every supervised name of a run is: a third argument, unused, carries the parts)
    const parts = Array.from({ length: 130 }, () => ({}))
    for (let b = 0; b < n; b++) {
      const at = this.r() * withinMs
      const pick = this.r()
      void (async () => {
        await sched.sleep(at)
        const nodes = this.w.alive().filter((m) => m.ready && m.sworm)
        if (!nodes.length) return
        const via = nodes[Math.floor(pick * nodes.length)]!.sworm!
        this.w.count('costly-burst')
        for (let k = 0; k < 40; k++) {
          const name = `cost${b}:${k}`
          void via.registerName(name, { module: 'sim-workers', fn: 'counter', args: [this.w.prefix + name, 0, parts] }).catch(() => {})
        }
      })()
    }
  }
}
