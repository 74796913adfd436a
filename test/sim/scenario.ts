/**
 * One randomized simulation run of the Raft engine: clients issue KV operations while a seeded
 * nemesis partitions, crashes, restarts, changes membership and degrades the network; then the
 * faults stop and the run checks convergence, Raft safety and linearizability.
 */
import type { ClusterConfig, NodeId } from '../../src/raft/types.js'
import { checkLinearizable, kvModel, type KvInput } from '../../src/testkit/linearizability.js'
import { SimCluster } from './raft-cluster.js'

export interface ScenarioOptions {
  seed: number
  /** Simulated duration of the faulty phase, ms. Default 20,000. */
  durationMs?: number
  /** Initial voters: 3 or 5. Default: chosen by the seed. */
  voters?: number
  clients?: number
  keys?: number
  membership?: boolean
  /** What the cluster replicates. Default 'kv'. */
  machine?: 'kv' | 'registry'
}

export interface ScenarioResult {
  seed: number
  ok: boolean
  problems: string[]
  ops: number
  completed: number
  faults: Record<string, number>
  convergedAfterMs: number
  commit: number
}

export async function runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const c = new SimCluster({
    seed: o.seed,
    snapshotEvery: 100 + Math.floor((o.seed % 7) * 50),
    // snapshots in chunks of 16 B to 1 MiB: the small ones make every transfer many chunks
    snapshotChunkBytes: [16, 128, 4096, 1024 * 1024][o.seed % 4],
    machine: o.machine ?? 'kv',
    leaseRead: o.seed % 3 === 0,
  })
  const r = c.random
  const nVoters = o.voters ?? (r() < 0.5 ? 3 : 5)
  const ids: NodeId[] = Array.from({ length: nVoters }, (_, i) => `n${i + 1}`)
  const cfg: ClusterConfig = { voters: Object.fromEntries(ids.map((id) => [id, `sim://${id}`])), learners: {} }
  await c.start(ids, cfg)
  let nextId = nVoters + 1
  const faults: Record<string, number> = {}
  const count = (k: string): void => {
    faults[k] = (faults[k] ?? 0) + 1
  }
  const duration = o.durationMs ?? 20_000
  const nKeys = o.keys ?? 3
  const end = c.sched.now + duration
  let stopClients = false

  // clients
  const clientLoops: Promise<void>[] = []
  for (let i = 0; i < (o.clients ?? 4); i++) {
    clientLoops.push(
      (async () => {
        while (!stopClients) {
          const alive = c.alive()
          if (alive.length) {
            const via = alive[Math.floor(r() * alive.length)]!
            const key = `k${Math.floor(r() * nKeys)}`
            const x = r()
            const value = `v${Math.floor(r() * 1e6)}`
            const input: KvInput =
              x < 0.35 ? { op: 'get', key } : x < 0.6 ? { op: 'put', key, value } : x < 0.85 ? { op: 'putIfAbsent', key, value } : { op: 'delete', key }
            // do not await forever: an op on a crashed node never settles
            await Promise.race([c.clientOp(via, input), c.sched.sleep(4000)])
          }
          await c.sched.sleep(r() * 30)
        }
      })(),
    )
  }

  // nemesis
  while (c.sched.now < end) {
    await c.sched.runUntil(c.sched.now + 100 + r() * 700)
    const x = r()
    if (process.env.SIM_TRACE) console.error(`t=${c.sched.now.toFixed(0)} x=${x.toFixed(2)} faults=${JSON.stringify(faults)}`)
    const members = [...c.members.keys()]
    const dead = [...c.members.values()].filter((m) => !m.alive).map((m) => m.id)
    if (x < 0.15) {
      // partition into two sides
      const shuffled = members.slice().sort(() => r() - 0.5)
      const k = 1 + Math.floor(r() * (shuffled.length - 1))
      c.net.partition([shuffled.slice(0, k), shuffled.slice(k)])
      count('partition')
    } else if (x < 0.22) {
      // bridge: one node sees both sides, the sides do not see each other
      if (members.length >= 3) {
        const s = members.slice().sort(() => r() - 0.5)
        const bridge = s[0]!
        const half = Math.ceil((s.length - 1) / 2)
        const a = s.slice(1, 1 + half)
        const b = s.slice(1 + half)
        c.net.heal()
        for (const x1 of a) {
          for (const y of b) {
            c.net.block(x1, y)
            c.net.block(y, x1)
          }
        }
        void bridge
        count('bridge')
      }
    } else if (x < 0.27) {
      const a = members[Math.floor(r() * members.length)]!
      const b = members[Math.floor(r() * members.length)]!
      if (a !== b) c.net.block(a, b)
      count('asymmetric')
    } else if (x < 0.4) {
      c.net.heal()
      count('heal')
    } else if (x < 0.5) {
      const alive = c.alive()
      if (alive.length) {
        await c.crash(alive[Math.floor(r() * alive.length)]!.id)
        count('crash')
      }
    } else if (x < 0.55) {
      const l = c.leader()
      if (l) {
        await c.crash(l.id)
        count('crash-leader')
      }
    } else if (x < 0.68) {
      if (dead.length) {
        await c.restart(dead[Math.floor(r() * dead.length)]!)
        count('restart')
      }
    } else if (x < 0.76) {
      c.net.faults = { drop: r() * 0.2, duplicate: r() * 0.1, minDelay: 1, maxDelay: 1 + r() * 30, corruptChunks: o.seed % 2 ? 0.2 : 0 }
      count('net-degrade')
    } else if (x < 0.8) {
      c.net.faults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
      count('net-restore')
    } else if (x < 0.85) {
      const l = c.leader()
      if (l) {
        void l.node!.transferLeadership().catch(() => {})
        count('transfer')
      }
    } else if (x < 0.93 && (o.membership ?? true)) {
      const l = c.leader()
      if (l) {
        const cfgNow = l.node!.status().config
        const voters = Object.keys(cfgNow.voters)
        if (voters.length > 3 && r() < 0.5) {
          const victim = voters[Math.floor(r() * voters.length)]!
          const node = l.node!
          void node
            .removeNode(victim)
            .then(async () => {
              // gone from the configuration: destroy it so its id is never reused
              if (!Object.prototype.hasOwnProperty.call(node.status().config.voters, victim)) await c.destroy(victim)
            })
            .catch(() => {})
          count('remove-node')
        } else if (voters.length < 5) {
          const id = `n${nextId++}`
          await c.start([id], undefined)
          void l.node!.addNode(id, `sim://${id}`).catch(() => {})
          count('add-node')
        }
      }
    } else {
      // clock skew within bound (only affects timeouts of requests here)
      const alive = c.alive()
      if (alive.length) alive[Math.floor(r() * alive.length)]!.skew = Math.floor(r() * 100)
      count('skew')
    }
  }

  if (process.env.SIM_TRACE) console.error('healing')
  // heal everything and let the cluster converge
  c.net.heal()
  c.net.faults = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 3 }
  for (const m of [...c.members.values()]) if (!m.alive) await c.restart(m.id)
  const healedAt = c.sched.now
  stopClients = true
  const problems: string[] = []
  const settled = await c.sched.runUntilTrue(() => c.leader() !== undefined, 10_000)
  // converged: every member of the configuration applied the leader's commit index, same data
  let converged = await c.sched.runUntilTrue(() => c.converged(), 30_000, 5)
  const convergedAfterMs = c.sched.now - healedAt
  let clientsDone = false
  void Promise.all(clientLoops).finally(() => (clientsDone = true))
  await c.sched.runUntilTrue(() => clientsDone, 10_000)
  // and still converged once the last client operations have settled
  converged = converged && (await c.sched.runUntilTrue(() => c.converged(), 30_000))
  if (!settled) problems.push('no leader after healing')
  if (!converged) {
    const st = [...c.members.values()].map((m) => {
      const s = m.node?.status()
      return s
        ? `${m.id}:${s.role} t${s.term} c${s.commit} a${s.applied} l${s.lastIndex} s${s.snapshotIndex} v[${Object.keys(s.config.voters)}] L[${Object.keys(s.config.learners)}]`
        : `${m.id}:down`
    })
    problems.push(`members did not converge after healing: ${st.join(' | ')}`)
  }
  problems.push(...c.violations)
  const lin = checkLinearizable(kvModel, c.history, { timeoutMs: 30_000 })
  if (!lin.ok) problems.push(`not linearizable${lin.timedOut ? ' (checker timed out)' : ''}: ${lin.explanation ?? ''}`)
  const commit = c.leader()?.node?.status().commit ?? 0
  await c.stopAll()
  return {
    seed: o.seed,
    ok: problems.length === 0,
    problems,
    ops: c.history.length,
    completed: c.history.filter((h) => h.ret !== Infinity).length,
    faults,
    convergedAfterMs,
    commit,
  }
}
