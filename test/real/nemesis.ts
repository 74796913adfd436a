/**
 * The nemesis on real processes: 5 sworm node processes (`tools/cluster/sworm-node.ts`) over
 * real WebSockets and LevelDB, driven by a seed. Clients register, unregister and read static
 * names from several nodes while supervised counter workers run; the nemesis SIGKILLs and restarts
 * nodes, stops them gracefully, freezes them (SIGSTOP), partitions the cluster (isolated node,
 * majority/minority, bridge; messages dropped at the transport by `PeerFaults`), crashes workers,
 * drains nodes, and skews clocks (every process runs its own clock at a rate within the bound);
 * and these (counted in `faults` by kind):
 * - Stalls at the worst moment (`stall:leader`, `stall:follower`): in the step that applies a
 *   partition, right after the cuts, the leader of that moment (or a follower) is SIGSTOPped for
 *   0.5-3 s, then SIGCONTed. (The `freeze` step SIGSTOPs any node, leader or follower, until a
 *   later `revive` or the heal.) Stalls are pauses like freezes for the overlap check.
 * - A wiped disk (`wipe`): a voter is SIGKILLed, its dataDir deleted, and it is started again under
 *   the same id with the same `peers`. `Sworm.start` must refuse (`DATA_LOST`: `wipe:refused`) or
 *   keep waiting (`wipe:waited`, ended after 10 s); if it resolves (`wipe:resolved`) that is a
 *   violation. Then, as the README tells an operator, the old id is removed (`removeNode` through
 *   a live member, retried) and the machine joins under a new id on a fresh dataDir (`join`
 *   through a live member; on the old address or a new one): `wipe:rejoined`. One at a time, only
 *   while at most one other node is unavailable, so a majority of voters always keeps its disk;
 *   the membership stays at 5.
 * - Hostile connections from outside the cluster (`hostile:<kind>`, see `hostile-peers.ts`):
 *   oversized frames before the handshake, an array of many empty maps, truncated handshakes,
 *   wrong-secret handshakes, many idle connections, to random nodes, one at a time, bounded.
 * - Large state (`largeState`, option `largeState`; by default 50,000 in 1 run of 10, by the
 *   seed): that many static names (echo workers: cheap, and a node's names go with it when it is
 *   declared gone, a large delete) registered in bulk before the faults, 64 in flight through 3
 *   nodes. `snapshotEvery` is 300, but the library also waits for size/32 entries between
 *   snapshots, so with 50,000 names (~4 MiB) they are taken during the load, not during the
 *   faults; so a 4th node sits the load out (SIGKILLed before it, started again as the faults
 *   begin) and installs the leader's snapshot during the faults, as does a wiped node's
 *   successor (`snapshots` in the result). The checks compare registries by digest, and only the
 *   client operations go to the linearizability checker.
 *
 * Then it heals everything and checks:
 * 1. the clients' history is linearizable (acknowledged writes are never lost);
 * 2. two incarnations of a supervised name never overlap in time (every process appends starts and
 *    stops to a file with the wall clock; a killed process's workers end when it does);
 * 3. after healing, every supervised name runs exactly once, where the registry says, and every
 *    node holds the same registry, within a bounded time;
 * 4. no node process exited unless the nemesis killed or stopped it (a start refused as
 *    `DATA_LOST` on a wiped disk is expected);
 * 5. a node on a wiped disk never started under its old id.
 *
 * The seed picks the faults and the clients' operations; the processes' timing is real, so a rerun
 * with the same seed replays the same schedule of faults, not the same interleaving. (The
 * simulation mode, `sim/sworm-sim.ts`, replays exactly; it also covers message loss, duplication
 * and reordering, which this mode does not inject.)
 * @module
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { WorkerRef } from '../../src/index.js'
import { checkLinearizable, kvModel, type KvOperation } from '../../src/testkit/linearizability.js'
import { seededRandom } from '../../src/testkit/sim.js'
import type { RegisterManyResult, RegistryDigest, SwormProcessEvent, SwormProcessStatus } from '../../tools/cluster/sworm-protocol.js'
import { HOSTILE_KINDS, hostileAttack } from './hostile-peers.js'
import { startSwormCluster, type SwormCluster } from '../../tools/cluster/sworm-cluster.js'

const WORKERS = fileURLToPath(new URL('../../tools/cluster/workers.js', import.meta.url))

/** Options of {@link runRealNemesis}. */
export interface RealNemesisOptions {
  seed: number
  /** Fault steps (default 6). */
  steps?: number
  /** Supervised names (default 20). */
  names?: number
  /** Concurrent clients (default 4). */
  clients?: number
  /** Progress lines (default: none). */
  log?: (line: string) => void
  /**
   * Static names registered in bulk before the faults (default: 50,000 in 1 run of 10, chosen by
   * the seed; 0: none).
   */
  largeState?: number
}

/** What one run found. */
export interface RealNemesisResult {
  seed: number
  ok: boolean
  problems: string[]
  /** Faults injected, by kind. */
  faults: Record<string, number>
  /** Client operations in the checked history. */
  ops: number
  /** Worker starts seen in the life files. */
  starts: number
  /** Static names registered in bulk before the faults. */
  largeState?: number
  /** Raft snapshots taken and installed (from a leader) by the node processes, as they reported them. */
  snapshots?: { taken: number; installed: number; maxBytes: number }
  /** Overlaps in which neither incarnation handled a message (the old one's stop ran late), ms. */
  lateStops?: number[]
  /** Nodes declared gone (nodeDown), and how many of those had no fault of ours in the 30 s before. */
  nodeDowns?: { total: number; unexplained: number }
  /** From the end of the faults until every check of "settled" held (ms). */
  settledAfterMs: number
  wallMs: number
  /** On a failure: a JSON file with the fault log, the nodes' events and the history of the keys concerned. */
  dump?: string
}

interface LifeLine {
  name: string
  event: 'start' | 'stop' | 'act'
  at: number
  incarnation: string
}

/** One incarnation of a supervised name, from its process's life file. */
export interface Incarnation {
  name: string
  inc: string
  /** `<node>.<k>`: the k-th process started for the node. */
  proc: string
  node: string
  start: number
  /** When it stopped (or its process exited); undefined while it runs. */
  stop: number | undefined
  /** When it handled messages. */
  acts: number[]
}

const N = 5
const STATIC_KEYS = 3
const LEASE_MS = 1000
const DRIFT_MS = 250
/**
 * Each process's clock runs at a rate within 1 ± this, and reads up to ±5 s off. Two rates then
 * differ by up to 6%: 60 ms over the lease, inside what the drift bound leaves once the fence check
 * interval (lease / 8 = 125 ms) is taken off: 250 - 125 = 125 ms.
 */
const MAX_RATE_SKEW = 0.03
/** Prefix of the names of the large state. */
const BIG = 'big:'
/** How long a node restarted on a wiped dataDir may keep starting before the nemesis ends it. */
const WIPED_START_WAIT_MS = 10_000
/** Hostile attacks per run, at most. */
const MAX_HOSTILE = 30

/** The default of {@link RealNemesisOptions.largeState} for a seed: 50,000 in 1 run of 10. */
export function defaultLargeState(seed: number): number {
  return seededRandom(seed * 31 + 7)() < 0.1 ? 50_000 : 0
}

/** Run one seeded real-process nemesis run. Never throws for a broken invariant: see `problems`. */
export async function runRealNemesis(opts: RealNemesisOptions): Promise<RealNemesisResult> {
  const t0 = performance.now()
  const r = seededRandom(opts.seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!
  const log = opts.log ?? (() => {})
  const lifeDir = await mkdtemp(join(tmpdir(), 'sworm-nemesis-life-'))
  const faults: Record<string, number> = {}
  const count = (k: string): void => void (faults[k] = (faults[k] ?? 0) + 1)
  const problems: string[] = []
  /** What happened, with wall-clock times, for the dump of a failed run. */
  const trail: Array<{ at: number; what: string }> = []
  const note = (what: string): void => {
    trail.push({ at: performance.timeOrigin + performance.now(), what })
    log(what)
  }
  const events: Array<{ node: string } & SwormProcessEvent> = []
  let history: KvOperation[] = []
  let c: SwormCluster | undefined
  try {
    const skew = (): { rate: number; offsetMs: number } => ({ rate: 1 + (r() * 2 - 1) * MAX_RATE_SKEW, offsetMs: (r() * 2 - 1) * 5000 })
    c = await startSwormCluster({ n: N, lifeDir, leaseTimeoutMs: LEASE_MS, maxClockDriftMs: DRIFT_MS, requestTimeoutMs: 3000, snapshotEvery: 300, ipcTimeoutMs: 8000, clockOf: skew })
    const cl = c
    /** The members: 5 ids, a wiped node's replaced by its new one once it is removed. */
    const ids = [...cl.ids]
    /** Members removed from the cluster (wiped). */
    const retired: string[] = []
    cl.onEvents((node, evs) => {
      for (const e of evs) events.push({ node, ...e })
    })
    const subscribe = (id: string): Promise<unknown> =>
      cl
        .request(
          id,
          {
            op: 'subscribe',
            events: ['registered', 'unregistered', 'nodeUp', 'nodeDown', 'leaderChanged', 'snapshotTaken', 'snapshotInstalled'],
            flushMs: 50,
            skipNamePrefixes: [BIG],
          },
          5000,
        )
        .catch(() => undefined)
    await Promise.all(ids.map(subscribe))
    await cl.waitForLeader(15_000)

    // ------------------------------------------------------------------ state of the nemesis
    const frozen = new Set<string>()
    /** Pauses (SIGSTOP .. SIGCONT, or .. SIGKILL) of each process `<node>.<k>`. */
    const pauses = new Map<string, Array<[number, number]>>()
    const procOf = (id: string): string => `${id}.${starts.get(id) ?? 1}`
    const freezeNode = (id: string): [number, number] => {
      cl.freeze(id)
      frozen.add(id)
      const list = pauses.get(procOf(id)) ?? []
      const pause: [number, number] = [mono(), Infinity]
      list.push(pause)
      pauses.set(procOf(id), list)
      return pause
    }
    const thawNode = (id: string): void => {
      // a frozen process may have been ended meanwhile (killed, or its start failed): nothing to thaw
      if (cl.isAlive(id)) cl.thaw(id)
      frozen.delete(id)
      const last = pauses.get(procOf(id))?.at(-1)
      if (last) last[1] = mono()
    }
    const down = new Set<string>()
    /** Links cut, as "a|b" with a < b. */
    const cut = new Set<string>()
    const exitedAt = new Map<string, number[]>() // node -> monotonic time of each exit, by process start
    const starts = new Map<string, number>(ids.map((id) => [id, 1]))
    /** A wiped node until it is removed, then its successor until it has joined: no faults, no clients. */
    const busy = new Set<string>()
    const usable = (): string[] => ids.filter((id) => cl.isAlive(id) && !frozen.has(id) && !busy.has(id))
    const wall = (): number => performance.timeOrigin + performance.now()
    /** The machine's monotonic clock, as the life files use it (the same in every process). */
    const mono = (): number => Number(process.hrtime.bigint()) / 1e6

    // ---------------------------------------------------------------- clients (static names)
    const nNames = opts.names ?? 20
    history = []
    let clientSeq = 0
    /** When each node last suffered a fault of ours (a kill, a stop, a freeze, a cut link). */
    const lastFault = new Map<string, number>()
    const maybeDropped = (node: string): void => {
      const at = wall()
      lastFault.set(node, at)
      for (let k = 0; k < STATIC_KEYS; k++) history.push({ client: `system-${clientSeq++}`, input: { op: 'delete', key: `s:${node}:${k}` }, call: at, ret: Infinity, output: undefined })
    }
    const valueOf = (ref: WorkerRef): string => `v${ref.inc}.${ref.id}`
    let clientsOn = true
    const clientOp = async (): Promise<void> => {
      const nodes = usable()
      if (!nodes.length) return
      const via = pick(nodes)
      const owner = pick(ids)
      const key = `s:${owner}:${Math.floor(r() * STATIC_KEYS)}`
      if (r() < 0.3) {
        // a call to a supervised worker: not in the history; its handling is logged as the
        // worker's activity, which the overlap check looks at
        await cl.request(via, { op: 'call', name: `w${Math.floor(r() * nNames)}`, msg: 'inc' }, 3000).catch(() => {})
        return
      }
      const x = r()
      if (x < 0.45) {
        if (!usable().includes(owner)) return
        let ref: WorkerRef
        const ownerProc = procOf(owner)
        try {
          ref = await cl.request<WorkerRef>(owner, { op: 'spawnEcho', tag: key }, 3000)
        } catch {
          return
        }
        const op: KvOperation = { client: clientSeq++, input: { op: 'putIfAbsent', key, value: valueOf(ref) }, call: wall(), ret: Infinity, output: undefined }
        history.push(op)
        await settleOp(op, () => cl.request<boolean>(via, { op: 'registerRef', name: key, ref }).then((ok) => ({ ok })))
        if (procOf(owner) !== ownerProc || !cl.isAlive(owner)) {
          // the worker's process died meanwhile: its node drops the name whenever it learns of it
          history.push({ client: `system-${clientSeq++}`, input: { op: 'delete', key }, call: op.call, ret: Infinity, output: undefined })
        }
      } else if (x < 0.7) {
        const op: KvOperation = { client: clientSeq++, input: { op: 'delete', key }, call: wall(), ret: Infinity, output: undefined }
        history.push(op)
        await settleOp(op, () => cl.request<boolean>(via, { op: 'unregister', name: key }).then((ok) => ({ ok })))
      } else {
        const op: KvOperation = { client: clientSeq++, input: { op: 'get', key }, call: wall(), ret: Infinity, output: undefined }
        history.push(op)
        await settleOp(op, () =>
          cl.request<WorkerRef | null>(via, { op: 'whereis', name: key, consistent: true }).then((ref) => ({ value: ref ? valueOf(ref) : undefined })),
        )
      }
    }
    const settleOp = async (op: KvOperation, run: () => Promise<KvOperation['output']>): Promise<void> => {
      try {
        op.output = await run()
        op.ret = wall()
      } catch (err) {
        const code = (err as { code?: string }).code
        // a failed read, or a write that surely did not happen, leaves no trace; anything else
        // (a timeout, a process gone) has an unknown outcome and stays pending
        const notDone = ['NOT_LEADER', 'PROPOSAL_DROPPED', 'INVALID_ARGUMENT', 'NO_WORKER', 'DOWN']
        if (op.input.op === 'get' || (code !== undefined && notDone.includes(code))) history.splice(history.indexOf(op), 1)
      }
    }
    const clientLoops = Array.from({ length: opts.clients ?? 4 }, async () => {
      while (clientsOn) {
        await clientOp()
        await sleep(5 + r() * 20)
      }
    })

    // --------------------------------------------------------------- supervised registrations
    const registering = [0, 1].map(() =>
      cl
        .request(pick(usable()), { op: 'registerSupervisedMany', prefix: 'w', count: nNames, concurrency: 8, module: WORKERS, fn: 'counter' }, 60_000)
        .catch(() => undefined),
    )
    await Promise.all(registering) // the same names from two nodes at once: one wins each

    // ------------------------------------------------------------------------------ faults
    const applyCuts = async (): Promise<void> => {
      for (const id of usable()) {
        const peersCut = ids.filter((o) => o !== id && cut.has(linkKey(id, o)))
        const peersOk = ids.filter((o) => o !== id && !cut.has(linkKey(id, o)))
        await cl.request(id, { op: 'blockPeers', peers: peersCut, blocked: true }, 3000).catch(() => {})
        await cl.request(id, { op: 'blockPeers', peers: peersOk, blocked: false }, 3000).catch(() => {})
      }
    }
    const kill = async (id: string): Promise<void> => {
      maybeDropped(id)
      frozen.delete(id)
      await cl.kill(id)
      down.add(id)
      noteExit(id)
    }
    const noteExit = (id: string): void => {
      const list = exitedAt.get(id) ?? []
      list[(starts.get(id) ?? 1) - 1] = mono()
      exitedAt.set(id, list)
    }
    const restart = async (id: string): Promise<void> => {
      if (cl.isAlive(id)) return
      starts.set(id, (starts.get(id) ?? 1) + 1)
      await cl.restart(id)
      await subscribe(id)
      down.delete(id)
      await applyCuts()
    }
    /** The leader of the highest term among the usable nodes (undefined if none answers as one). */
    const leaderNow = async (): Promise<string | undefined> => {
      const sts = await Promise.all(usable().map((id) => cl.request<SwormProcessStatus>(id, { op: 'status' }, 1000).catch(() => undefined)))
      const leaders = sts.filter((st): st is SwormProcessStatus => st?.role === 'leader')
      return leaders.length ? leaders.reduce((a, b) => (b.term > a.term ? b : a)).node : undefined
    }
    /** Timers that end stalls. */
    const stallTimers = new Set<NodeJS.Timeout>()
    /** SIGSTOP `id` now and SIGCONT it after `ms` (unless something else thawed or killed it first). */
    const stall = (id: string, ms: number): void => {
      maybeDropped(id)
      const pause = freezeNode(id)
      const proc = procOf(id)
      const t = setTimeout(() => {
        stallTimers.delete(t)
        if (frozen.has(id) && procOf(id) === proc && cl.isAlive(id) && pauses.get(proc)?.at(-1) === pause) thawNode(id)
      }, ms)
      stallTimers.add(t)
    }

    // A wiped disk: one at a time, in the background (the removal waits for a quorum).
    let membership: Promise<void> | undefined
    let nextId = N + 1
    const codeOf = (err: unknown): string => String((err as { code?: unknown }).code ?? 'ERROR')
    const wipe = (victim: string): Promise<void> => {
      busy.add(victim)
      let successor: string | undefined
      return (async () => {
        await kill(victim)
        await rm(cl.dataDir(victim), { recursive: true, force: true })
        note(`wipe: ${victim} killed and its dataDir deleted; starting it again under the same id and peers`)
        // 1. under its old id on the empty dataDir: must be refused (or wait)
        starts.set(victim, (starts.get(victim) ?? 1) + 1)
        let outcome: string
        try {
          await cl.restart(victim, { mayBeRefused: true, startTimeoutMs: WIPED_START_WAIT_MS })
          outcome = 'resolved'
        } catch (err) {
          const code = codeOf(err)
          outcome = code === 'DATA_LOST' ? 'refused' : code === 'START_TIMEOUT' ? 'waited' : 'failed'
          if (outcome === 'failed') problems.push(`${victim} restarted on a wiped dataDir: start failed with ${code}, not DATA_LOST: ${String((err as Error).message).split('\n')[0]}`)
        }
        count(`wipe:${outcome}`)
        note(`wipe: ${victim} on the empty dataDir: ${outcome}`)
        if (outcome === 'resolved') {
          problems.push(`a node with a wiped dataDir rejoined under its old id (${victim})`)
          await sleep(2000) // let it do what it does, for the other checks to see
        }
        if (cl.isAlive(victim)) await kill(victim)
        else noteExit(victim)
        // 2. remove the old id, through a live member (retried while there is no quorum)
        const removeBy = performance.now() + 60_000
        for (;;) {
          const vias = usable()
          if (vias.length) {
            const via = pick(vias)
            try {
              await cl.request(via, { op: 'removeNode', node: victim, timeoutMs: 5000 }, 10_000)
              note(`wipe: ${victim} removed through ${via}`)
              break
            } catch (err) {
              if (codeOf(err) === 'NOT_FOUND') break
            }
          }
          if (performance.now() > removeBy) {
            problems.push(`could not remove ${victim} (wiped) within 60 s`)
            return
          }
          await sleep(300)
        }
        // 3. the machine joins under a new id, on a fresh dataDir
        const id = `n${nextId++}`
        successor = id
        busy.add(id)
        busy.delete(victim)
        ids[ids.indexOf(victim)] = id
        retired.push(victim)
        cl.retire(victim)
        starts.set(id, 1)
        const url = r() < 0.5 ? cl.urls[victim] : undefined
        const joinBy = performance.now() + 90_000
        for (let attempt = 0; ; attempt++) {
          const via = pick(usable().length ? usable() : ids.filter((x) => x !== id))
          note(`wipe: ${victim}'s machine joins as ${id} through ${via}${url ? ' on the old address' : ''}${attempt ? ` (attempt ${attempt + 1})` : ''}`)
          try {
            const o = { mayBeRefused: true, startTimeoutMs: 70_000, join: cl.urls[via]! }
            if (attempt === 0) await cl.startJoining(id, o.join, { ...o, ...(url ? { url } : {}) })
            else {
              starts.set(id, (starts.get(id) ?? 1) + 1)
              await cl.restart(id, o)
            }
            break
          } catch (err) {
            note(`wipe: ${id} did not join: ${codeOf(err)}`)
            if (cl.isAlive(id)) await kill(id)
            else noteExit(id)
            if (performance.now() > joinBy) {
              problems.push(`${id} (the machine of ${victim}, wiped) could not join within 90 s: ${String((err as Error).message).split('\n')[0]}`)
              return
            }
            await sleep(500)
          }
        }
        busy.delete(id)
        await subscribe(id)
        await applyCuts()
        count('wipe:rejoined')
        note(`wipe: ${id} joined (the machine of ${victim})`)
      })()
        .catch((err: unknown) => void problems.push(`the wipe of ${victim} failed: ${(err as Error).stack ?? String(err)}`))
        .finally(() => {
          busy.delete(victim)
          if (successor) busy.delete(successor)
          membership = undefined
        })
    }

    // ---------------------------------------------------------------------------- large state
    const large = Math.max(0, Math.floor(opts.largeState ?? defaultLargeState(opts.seed)))
    // One node sits the load out (killed before, started again as the faults begin): it is then
    // behind the leader's latest snapshot and catches up by installing it, during the faults.
    let sitOut: string | undefined
    if (large > 0) {
      faults.largeState = 1
      const vias = usable().slice(0, 3)
      sitOut = usable().length > 3 ? pick(usable().slice(3)) : undefined
      if (sitOut !== undefined) await kill(sitOut)
      const per = Math.ceil(large / vias.length)
      note(`large state: registering ${large} static names through ${vias.join(',')}, 64 in flight${sitOut !== undefined ? `, while ${sitOut} is down` : ''}`)
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
      note(`large state: ${ok} registered in ${((performance.now() - t) / 1000).toFixed(1)} s${ok < large ? ` (errors: ${res.flatMap((x) => x.errorSamples).slice(0, 3).join('; ')})` : ''}`)
    }

    // Hostile connections from outside the cluster, in the background until the heal.
    let hostileOn = true
    const hostileLoop = (async () => {
      const hr = seededRandom(opts.seed * 13 + 5)
      for (let k = 0; k < MAX_HOSTILE && hostileOn; k++) {
        await sleep(300 + hr() * 1500)
        const targets = ids.filter((id) => cl.isAlive(id))
        if (!hostileOn || !targets.length) break
        const id = targets[Math.floor(hr() * targets.length)]!
        const kind = HOSTILE_KINDS[Math.floor(hr() * HOSTILE_KINDS.length)]!
        count(`hostile:${kind}`)
        const what = await hostileAttack(kind, { url: cl.urls[id]!, nodeId: id, memberIds: [...ids] }, hr)
        trail.push({ at: wall(), what: `hostile: ${id}: ${what}` })
      }
    })()

    if (sitOut !== undefined) {
      note(`large state: ${sitOut} starts again (it catches up by snapshot)`)
      await restart(sitOut)
    }
    const maxDown = 2
    const steps = opts.steps ?? 6
    for (let s = 0; s < steps; s++) {
      const x = r()
      const healthy = usable()
      const unavailable = ids.length - healthy.length
      if (x < 0.16 && unavailable < maxDown) {
        const id = pick(healthy)
        count('kill')
        note(`step ${s}: SIGKILL ${id}`)
        await kill(id)
      } else if (x < 0.24 && unavailable < maxDown) {
        const id = pick(healthy)
        count('stop')
        note(`step ${s}: graceful stop ${id}`)
        maybeDropped(id)
        await cl.stop(id)
        down.add(id)
        noteExit(id)
      } else if (x < 0.32 && unavailable < maxDown) {
        const id = pick(healthy)
        count('freeze')
        note(`step ${s}: SIGSTOP ${id}`)
        maybeDropped(id)
        freezeNode(id)
      } else if (x < 0.42 && unavailable < maxDown && !membership && ids.length === N && healthy.length) {
        const id = pick(healthy)
        count('wipe')
        note(`step ${s}: wipe ${id}'s disk`)
        membership = wipe(id)
      } else if (x < 0.57) {
        cut.clear()
        const shuffled = [...ids].sort(() => r() - 0.5)
        const kind = pick(['isolate', 'minority', 'bridge'] as const)
        count(`partition:${kind}`)
        if (kind === 'isolate') {
          const [a] = shuffled
          for (const o of ids) if (o !== a) cut.add(linkKey(a!, o))
          maybeDropped(a!)
        } else if (kind === 'minority') {
          const minority = shuffled.slice(0, 2)
          for (const a of minority) for (const b of shuffled.slice(2)) cut.add(linkKey(a, b))
          for (const a of minority) maybeDropped(a)
        } else {
          // a, b | c | d, e, with c reaching both sides
          const [a, b, , d, e] = shuffled
          for (const p of [a, b]) for (const q of [d, e]) cut.add(linkKey(p!, q!))
          for (const p of [a, b, d, e]) maybeDropped(p!)
        }
        // at times, a stall at the worst moment: the leader (or a follower) stops right after the cuts
        const y = r()
        const ms = 500 + r() * 2500
        const leader = y < 0.7 ? await leaderNow() : undefined
        note(`step ${s}: partition ${kind} ${[...cut].join(' ')}`)
        await applyCuts()
        const followers = usable().filter((id) => id !== leader)
        const stalled = y < 0.5 ? leader : y < 0.7 && followers.length ? pick(followers) : undefined
        if (stalled !== undefined && usable().includes(stalled)) {
          count(stalled === leader ? 'stall:leader' : 'stall:follower')
          note(`step ${s}: SIGSTOP ${stalled} (${stalled === leader ? 'the leader' : 'a follower'}) for ${ms.toFixed(0)} ms`)
          stall(stalled, ms)
        }
      } else if (x < 0.65) {
        count('heal')
        note(`step ${s}: heal the network`)
        cut.clear()
        await applyCuts()
      } else if (x < 0.77) {
        const revivable = ids.filter((i) => (!cl.isAlive(i) || frozen.has(i)) && !busy.has(i))
        if (revivable.length) {
          const id = pick(revivable)
          count('revive')
          note(`step ${s}: revive ${id}`)
          if (frozen.has(id)) thawNode(id)
          else await restart(id)
        }
      } else if (x < 0.83) {
        const id = pick(healthy)
        const rate = 1 + (r() * 2 - 1) * MAX_RATE_SKEW
        count('clockSkew')
        note(`step ${s}: clock of ${id} now runs at ${rate.toFixed(3)}x`)
        await cl.request(id, { op: 'clockRate', rate }, 3000).catch(() => {})
      } else if (x < 0.91) {
        count('workerCrash')
        const via = pick(healthy)
        const victims = Array.from({ length: 3 }, () => `w${Math.floor(r() * nNames)}`)
        note(`step ${s}: crash workers ${victims.join(',')} via ${via}`)
        await Promise.all(victims.map((w) => cl.request(via, { op: 'call', name: w, msg: 'crash' }, 3000).catch(() => {})))
      } else {
        const id = pick(healthy)
        count('drain')
        note(`step ${s}: drain ${id}`)
        await cl.request(id, { op: 'drain', timeoutMs: 3000 }, 6000).catch(() => {})
        if (r() < 0.5) await cl.request(id, { op: 'undrain' }, 3000).catch(() => {})
      }
      await sleep(500 + r() * 2000)
    }

    // ------------------------------------------------------------------------------- heal
    note('heal everything')
    hostileOn = false
    for (const t of stallTimers) clearTimeout(t)
    stallTimers.clear()
    for (const id of [...frozen]) thawNode(id)
    cut.clear()
    await applyCuts()
    for (const id of ids) if (!cl.isAlive(id) && !busy.has(id)) await restart(id)
    if (membership) {
      note('heal: waiting for the wiped node to be replaced')
      await membership
    }
    await hostileLoop
    const healedAt = performance.now()
    for (const id of ids) if (!cl.isAlive(id)) await restart(id)
    await applyCuts()
    for (const id of ids) await cl.request(id, { op: 'undrain' }, 5000).catch(() => {})
    clientsOn = false
    await Promise.all(clientLoops)

    // ------------------------------------------------------------------------ settled?
    const lifeNow = async (): Promise<{ incs: Incarnation[]; open: Map<string, Incarnation[]> }> => {
      const incs: Incarnation[] = []
      const open = new Map<string, Incarnation[]>()
      for (const f of await readdir(lifeDir)) {
        const [node, k] = f.split('.') as [string, string]
        const text = await readFile(join(lifeDir, f), 'utf8')
        const byInc = new Map<string, Incarnation>()
        for (const l of text.split('\n')) {
          if (!l.trim()) continue
          let e: LifeLine
          try {
            e = JSON.parse(l) as LifeLine
          } catch {
            continue // a line torn by SIGKILL
          }
          if (e.event === 'start') byInc.set(e.incarnation, { name: e.name, inc: e.incarnation, proc: `${node}.${k}`, node, start: e.at, stop: undefined, acts: [] })
          const inc = byInc.get(e.incarnation)
          if (!inc) continue
          if (e.event === 'stop') inc.stop = e.at
          else if (e.event === 'act') inc.acts.push(e.at)
        }
        const exited = exitedAt.get(node)?.[Number(k) - 1]
        for (const inc of byInc.values()) {
          if (inc.stop === undefined && exited !== undefined) inc.stop = exited
          incs.push(inc)
          if (inc.stop === undefined) {
            const list = open.get(inc.name) ?? []
            list.push(inc)
            open.set(inc.name, list)
          }
        }
      }
      return { incs, open }
    }
    const settledNow = async (): Promise<string | undefined> => {
      if (ids.some((id) => !cl.isAlive(id))) return 'a node is down'
      const digests = await Promise.all(ids.map((id) => cl.request<RegistryDigest>(id, { op: 'registryDigest', listPrefixes: ['w'] }, 5000).catch(() => undefined)))
      if (digests.some((d) => d === undefined)) return 'a node does not answer'
      const differ = ids.filter((_, i) => digests[i]!.hash !== digests[0]!.hash)
      if (differ.length) return `registries differ on ${differ.join(',')}`
      for (const old of retired) if (digests[0]!.perNode[old]) return `${digests[0]!.perNode[old]} names still on ${old}, removed`
      const supervised = digests[0]!.listed
      const { open } = await lifeNow()
      for (const [name, node] of supervised) {
        const o = open.get(name) ?? []
        if (o.length !== 1) return `${name}: ${o.length} incarnations running`
        if (o[0]!.node !== node) return `${name}: runs on ${o[0]!.node}, registered on ${node}`
      }
      const names = new Set(supervised.map(([n]) => n))
      for (const [name, o] of open) if (!names.has(name) && o.length) return `${name}: runs but is not registered`
      return undefined
    }
    let why: string | undefined = 'not checked'
    const deadline = performance.now() + 60_000
    while (performance.now() < deadline) {
      why = await settledNow().catch((err: unknown) => `check failed: ${String(err)}`)
      if (why === undefined) break
      await sleep(100)
    }
    const settledAfterMs = performance.now() - healedAt
    if (why !== undefined) problems.push(`did not settle within 60 s after healing: ${why}`)

    // --------------------------------------------------------------------------- checks
    const { incs } = await lifeNow()
    const ov = overlapsOf(incs, pauses)
    if (ov.violations.length) problems.push(`overlapping incarnations: ${ov.violations.slice(0, 5).join('; ')}`)
    // A node can also be declared gone with no fault of ours (the leader did not hear from it for
    // lease + drift: a loaded machine, a long GC). Its static names go then too: a delete that may
    // happen from a little before the first node applied it.
    const downs = new Map<string, number>()
    for (const e of events) {
      if (e.event !== 'nodeDown') continue
      const node = String(e.data.node)
      const key = `${node}@${Math.round(e.at / 5000)}`
      downs.set(key, Math.min(downs.get(key) ?? Infinity, e.at))
    }
    let unexplained = 0
    for (const [key, at] of downs) {
      const node = key.split('@')[0]!
      const fault = lastFault.get(node)
      if (fault === undefined || at - fault > 30_000) unexplained++
      for (let k = 0; k < STATIC_KEYS; k++) history.push({ client: `system-${clientSeq++}`, input: { op: 'delete', key: `s:${node}:${k}` }, call: at - 1000, ret: Infinity, output: undefined })
    }
    const lin = checkLinearizable(kvModel, history, { timeoutMs: 60_000 })
    if (!lin.ok) problems.push(`registry history not linearizable${lin.timedOut ? ' (checker timed out)' : ''}: ${(lin.explanation ?? '').slice(0, 1500)}`)
    for (const e of cl.unexpectedExits()) problems.push(`a node crashed: ${e}`)
    for (const id of ids) {
      const bad = cl.logs(id).filter((l) => /unhandled rejection|uncaught exception/.test(l))
      if (bad.length) problems.push(`${id}: ${bad[0]}`)
    }
    let dump: string | undefined
    if (problems.length) {
      // the keys the explanation names, or all of them
      const named = new Set([...(lin.explanation ?? '').matchAll(/"(s:[^"]+)"/g)].map((m) => m[1]!))
      const keyOf = (o: KvOperation): string => o.input.key
      dump = join(tmpdir(), `sworm-nemesis-${opts.seed}.json`)
      await writeFile(
        dump,
        JSON.stringify(
          {
            seed: opts.seed,
            problems,
            faults,
            trail,
            history: history.filter((o) => !named.size || named.has(keyOf(o))).map((o) => ({ ...o, ret: Number.isFinite(o.ret) ? o.ret : null })),
            events: events.filter((e) => !named.size || !('name' in e.data) || named.has(String(e.data.name))),
          },
          null,
          1,
        ),
      )
    }
    return {
      seed: opts.seed,
      ok: problems.length === 0,
      problems,
      faults,
      ...(dump ? { dump } : {}),
      nodeDowns: { total: downs.size, unexplained },
      lateStops: ov.lateStops,
      ops: history.filter((o) => typeof o.client === 'number').length,
      starts: incs.length,
      largeState: large,
      snapshots: {
        taken: events.filter((e) => e.event === 'snapshotTaken').length,
        installed: events.filter((e) => e.event === 'snapshotInstalled').length,
        maxBytes: Math.max(0, ...events.filter((e) => e.event === 'snapshotTaken').map((e) => Number(e.data.bytes) || 0)),
      },
      settledAfterMs,
      wallMs: performance.now() - t0,
    }
  } catch (err) {
    problems.push(`run failed: ${(err as Error).stack ?? String(err)}`)
    return { seed: opts.seed, ok: false, problems, faults, ops: 0, starts: 0, settledAfterMs: NaN, wallMs: performance.now() - t0 }
  } finally {
    await c?.stopAll().catch(() => {})
    await rm(lifeDir, { recursive: true, force: true })
  }
}

function linkKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** What {@link overlapsOf} finds. */
export interface Overlaps {
  /** Two incarnations live at once, and one of them handled a message meanwhile: never allowed. */
  violations: string[]
  /**
   * Two incarnations live at once while neither handled anything: the old one's stop came late
   * (its node fences when its lease ends, and checks the lease before every message, but the stop
   * itself runs when the event loop gets to it). Lengths in ms.
   */
  lateStops: number[]
}

/**
 * Incarnations of a name live at the same time (wall clock). An incarnation is live from its start
 * to its stop, except while its process was paused (SIGSTOP): a paused worker runs nothing, and after
 * the pause it counts as live again only if it handled a message before it stopped (Sworm checks
 * the lease before a worker handles anything). An overlap in which either incarnation handled a
 * message is a violation; one in which neither did is a late stop.
 */
export function overlapsOf(incs: Incarnation[], pauses: Map<string, Array<[number, number]>>): Overlaps {
  const intervals = new Map<string, Array<{ inc: string; from: number; to: number; acts: number[] }>>()
  for (const i of incs) {
    let to = i.stop ?? Infinity
    const spans: Array<[number, number]> = []
    let from = i.start
    for (const [f, t] of pauses.get(i.proc) ?? []) {
      if (f >= to || t <= from) continue
      spans.push([from, f])
      // after the pause: live again only if it acted
      const actedAfter = i.acts.some((a) => a >= t && a <= to)
      if (!actedAfter) {
        to = f
        from = f
        break
      }
      from = t
    }
    if (to > from) spans.push([from, to])
    const list = intervals.get(i.name) ?? []
    for (const [a, b] of spans) if (b > a) list.push({ inc: i.inc, from: a, to: b, acts: i.acts })
    intervals.set(i.name, list)
  }
  const out: Overlaps = { violations: [], lateStops: [] }
  for (const [name, list] of intervals) {
    list.sort((a, b) => a.from - b.from)
    for (let x = 0; x < list.length; x++) {
      const X = list[x]!
      for (let y = x + 1; y < list.length && list[y]!.from < X.to; y++) {
        const Y = list[y]!
        if (Y.inc === X.inc) continue
        const a = Y.from
        const b = Math.min(X.to, Y.to)
        const acted = [...X.acts, ...Y.acts].some((t) => t >= a && t <= b)
        if (acted) out.violations.push(`${name}: ${Y.inc} live from ${a.toFixed(1)} while ${X.inc} was (until ${X.to.toFixed(1)}), and one of them handled a message meanwhile`)
        else out.lateStops.push(b - a)
      }
    }
  }
  return out
}
