/**
 * The judges of a real-process nemesis run: the life files read back into incarnations, whether
 * the cluster settled after the heal, overlapping incarnations, nodes declared gone with no fault
 * of ours, linearizability of the clients' history, crashed processes; and the dump of a failed run.
 * @module
 */
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkLinearizable, kvModel, type KvOperation } from '../../../src/testkit/linearizability.js'
import type { RegistryDigest } from '../../../tools/cluster/sworm-protocol.js'
import { STATIC_KEYS, sleep, type Findings, type NemesisRun } from './state.js'

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

/** Every incarnation in the life files of `lifeDir` (one file per process), and those still running by name. */
export async function readLives(run: NemesisRun, lifeDir: string): Promise<{ incs: Incarnation[]; open: Map<string, Incarnation[]> }> {
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
    const exited = run.exitedAt.get(node)?.[Number(k) - 1]
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

/** Why the cluster has not settled yet (undefined once it has): a node down or silent, registries that differ, names on removed nodes, a supervised name not running exactly once where registered. */
async function unsettled(run: NemesisRun, lifeDir: string): Promise<string | undefined> {
  const { cl, ids } = run
  if (ids.some((id) => !cl.isAlive(id))) return 'a node is down'
  const digests = await Promise.all(ids.map((id) => cl.request<RegistryDigest>(id, { op: 'registryDigest', listPrefixes: ['w'] }, 5000).catch(() => undefined)))
  if (digests.some((d) => d === undefined)) return 'a node does not answer'
  const differ = ids.filter((_, i) => digests[i]!.hash !== digests[0]!.hash)
  if (differ.length) return `registries differ on ${differ.join(',')}`
  for (const old of run.retired) if (digests[0]!.perNode[old]) return `${digests[0]!.perNode[old]} names still on ${old}, removed`
  const supervised = digests[0]!.listed
  const { open } = await readLives(run, lifeDir)
  for (const [name, node] of supervised) {
    const o = open.get(name) ?? []
    if (o.length !== 1) return `${name}: ${o.length} incarnations running`
    if (o[0]!.node !== node) return `${name}: runs on ${o[0]!.node}, registered on ${node}`
  }
  const names = new Set(supervised.map(([n]) => n))
  for (const [name, o] of open) if (!names.has(name) && o.length) return `${name}: runs but is not registered`
  return undefined
}

/** Wait (60 s at most) until the cluster has settled; a problem if it does not. */
export async function waitSettled(run: NemesisRun, lifeDir: string): Promise<void> {
  let why: string | undefined = 'not checked'
  const deadline = performance.now() + 60_000
  while (performance.now() < deadline) {
    why = await unsettled(run, lifeDir).catch((err: unknown) => `check failed: ${String(err)}`)
    if (why === undefined) break
    await sleep(100)
  }
  if (why !== undefined) run.found.problems.push(`did not settle within 60 s after healing: ${why}`)
}

/**
 * Nodes declared gone (nodeDown), once per node and 5 s. A node can also be declared gone with no
 * fault of ours (the leader did not hear from it for lease + drift: a loaded machine, a long GC):
 * `unexplained`. Its static names go then too: a delete that may happen from a little before the
 * first node applied it, added to the history.
 */
export function nodeDowns(run: NemesisRun): { total: number; unexplained: number } {
  const downs = new Map<string, number>()
  for (const e of run.found.events) {
    if (e.event !== 'nodeDown') continue
    const node = String(e.data.node)
    const key = `${node}@${Math.round(e.at / 5000)}`
    downs.set(key, Math.min(downs.get(key) ?? Infinity, e.at))
  }
  let unexplained = 0
  for (const [key, at] of downs) {
    const node = key.split('@')[0]!
    const fault = run.lastFault.get(node)
    if (fault === undefined || at - fault > 30_000) unexplained++
    for (let k = 0; k < STATIC_KEYS; k++) run.history.push({ client: `system-${run.clientSeq++}`, input: { op: 'delete', key: `s:${node}:${k}` }, call: at - 1000, ret: Infinity, output: undefined })
  }
  return { total: downs.size, unexplained }
}

/** The clients' history is linearizable, no node crashed on its own or logged an unhandled error. Returns the checker's explanation, if any. */
export function checkHistoryAndNodes(run: NemesisRun): string | undefined {
  const { cl, found } = run
  const lin = checkLinearizable(kvModel, run.history, { timeoutMs: 60_000 })
  if (!lin.ok) found.problems.push(`registry history not linearizable${lin.timedOut ? ' (checker timed out)' : ''}: ${(lin.explanation ?? '').slice(0, 1500)}`)
  for (const e of cl.unexpectedExits()) found.problems.push(`a node crashed: ${e}`)
  for (const id of run.ids) {
    const bad = cl.logs(id).filter((l) => /unhandled rejection|uncaught exception/.test(l))
    if (bad.length) found.problems.push(`${id}: ${bad[0]}`)
  }
  return lin.explanation
}

/** Write a failed run's faults, trail, and the history and events of the keys the checker named (or all), to a JSON file; its path. */
export async function writeDump(seed: number, found: Findings, history: KvOperation[], explanation: string | undefined): Promise<string> {
  const named = new Set([...(explanation ?? '').matchAll(/"(s:[^"]+)"/g)].map((m) => m[1]!))
  const keyOf = (o: KvOperation): string => o.input.key
  const dump = join(tmpdir(), `sworm-nemesis-${seed}.json`)
  await writeFile(
    dump,
    JSON.stringify(
      {
        seed,
        problems: found.problems,
        faults: found.faults,
        trail: found.trail,
        history: history.filter((o) => !named.size || named.has(keyOf(o))).map((o) => ({ ...o, ret: Number.isFinite(o.ret) ? o.ret : null })),
        events: found.events.filter((e) => !named.size || !('name' in e.data) || named.has(String(e.data.name))),
      },
      null,
      1,
    ),
  )
  return dump
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
