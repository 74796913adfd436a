/**
 * Autopilot's decision (cluster/autopilot.ts planVoters) on its own: the cases by hand, then a
 * seeded fuzz (FC_SEED replays) that runs it step by step to a fixed point over random clusters
 * and checks what it promises: one voter more or less per step, never the leader, never a step
 * that leaves a configuration with a quorum of healthy voters without one, and at the end the
 * wanted number of voters when there are enough candidates.
 */
import fc from 'fast-check'
import t from 'tap'
import { idealVoters, planVoters, quorumOf, type AutopilotView, type MemberHealth } from '../src/cluster/autopilot.js'

interface Cluster {
  self: string
  voters: string[]
  learners: string[]
  health: Record<string, MemberHealth>
  unstable?: string[]
  dead?: string[]
  zones?: Record<string, string>
  target: number
}

const view = (c: Cluster): AutopilotView => ({
  self: c.self,
  voters: c.voters,
  learners: c.learners,
  health: new Map(Object.entries(c.health)),
  stable: new Set(c.learners.filter((n) => !(c.unstable ?? []).includes(n))),
  dead: new Set(c.dead ?? []),
  zones: new Map(Object.entries(c.zones ?? {})),
  target: c.target,
})

const healthy = (ids: string[]): Record<string, MemberHealth> => Object.fromEntries(ids.map((n) => [n, 'healthy' as const]))
const ids = (prefix: string, n: number, from = 1): string[] => Array.from({ length: n }, (_, i) => `${prefix}${String(i + from).padStart(2, '0')}`)

/** Apply steps until none is due; returns the steps and the final cluster. */
function converge(c: Cluster, max = 100): { steps: string[]; end: Cluster } {
  const cur: Cluster = { ...c, voters: [...c.voters], learners: [...c.learners] }
  const steps: string[] = []
  for (let i = 0; i < max; i++) {
    const s = planVoters(view(cur))
    if (!s) return { steps, end: cur }
    steps.push(`${s.action} ${s.node}`)
    if (s.action === 'promote') {
      cur.learners = cur.learners.filter((n) => n !== s.node)
      cur.voters = [...cur.voters, s.node]
    } else if (s.action === 'demote') {
      cur.voters = cur.voters.filter((n) => n !== s.node)
      cur.learners = [...cur.learners, s.node]
    } else {
      cur.voters = cur.voters.filter((n) => n !== s.node)
      cur.learners = cur.learners.filter((n) => n !== s.node)
    }
  }
  throw new Error(`no fixed point after ${max} steps: ${steps.join(', ')}`)
}

t.test('a small cluster: every node votes up to the target; the rest stay learners', async (t) => {
  const all = ids('n', 7)
  const r = converge({ self: 'n01', voters: all.slice(0, 3), learners: all.slice(3), health: healthy(all), target: 5 })
  t.same(r.steps, ['promote n04', 'promote n05'])
  t.same(r.end.voters, ['n01', 'n02', 'n03', 'n04', 'n05'])
  const four = converge({ self: 'n01', voters: ['n01', 'n02', 'n03'], learners: ['n04'], health: healthy(all.slice(0, 4)), target: 5 })
  t.same(four.end.voters.length, 4, 'fewer nodes than the target: every node votes')
})

t.test('too many voters: the extra ones are demoted, never the leader', async (t) => {
  const all = ids('n', 9)
  const r = converge({ self: 'n09', voters: all, learners: [], health: healthy(all), target: 3 })
  t.same(r.steps, ['demote n03', 'demote n04', 'demote n05', 'demote n06', 'demote n07', 'demote n08'])
  t.same(r.end.voters, ['n01', 'n02', 'n09'])
})

t.test('voters declared gone are replaced by stable learners first, then demoted', async (t) => {
  const all = ids('n', 10)
  const health = { ...healthy(all), n02: 'down' as const, n03: 'down' as const }
  const r = converge({ self: 'n01', voters: all.slice(0, 5), learners: all.slice(5), health, target: 5 })
  t.same(r.steps, ['promote n06', 'promote n07', 'demote n02', 'demote n03'])
  t.same(r.end.voters.sort(), ['n01', 'n04', 'n05', 'n06', 'n07'])
})

t.test('a voter declared gone with no learner to replace it: kept among 3, dropped among 4', async (t) => {
  const health = { ...healthy(['n01', 'n02', 'n03', 'n04']), n02: 'down' as const }
  // 2 voters would be no stronger than 3 with one gone, and could not use it again when it is back
  t.equal(planVoters(view({ self: 'n01', voters: ['n01', 'n02', 'n03'], learners: [], health, target: 5 })), undefined)
  // 3 voters need 2 votes where 4 need 3
  t.same(converge({ self: 'n01', voters: ['n01', 'n02', 'n03', 'n04'], learners: [], health, target: 5 }).steps, ['demote n02'])
})

t.test('learners not stable yet, or not healthy, are not promoted', async (t) => {
  const all = ids('n', 6)
  const health = { ...healthy(all), n05: 'up' as const, n06: 'unknown' as const }
  t.equal(planVoters(view({ self: 'n01', voters: ['n01', 'n02', 'n03'], learners: ['n04', 'n05', 'n06'], unstable: ['n04'], health, target: 5 })), undefined)
})

t.test('voters not yet judged (no registry record) are kept, and voters merely silent are kept', async (t) => {
  const health = { n01: 'healthy' as const, n02: 'unknown' as const, n03: 'up' as const, n04: 'healthy' as const }
  t.equal(planVoters(view({ self: 'n01', voters: ['n01', 'n02', 'n03'], learners: ['n04'], unstable: ['n04'], health, target: 3 })), undefined)
  // a stable learner does not take the place of a voter that is only silent
  t.equal(planVoters(view({ self: 'n01', voters: ['n01', 'n02', 'n03'], learners: ['n04'], health, target: 3 })), undefined)
})

t.test('no step that could leave the new configuration without a quorum of healthy voters', async (t) => {
  const all = ids('n', 8)
  // 5 voters, 3 down: no quorum now; neither promoting (2+1 < 4 of 6) nor demoting a down voter (2 < 3 of 4) helps safely
  const health = { ...healthy(all), n02: 'down' as const, n03: 'down' as const, n04: 'down' as const }
  t.equal(planVoters(view({ self: 'n01', voters: all.slice(0, 5), learners: all.slice(5), health, target: 5 })), undefined)
  // demoting a voter (healthy, or only silent) when the others are silent would leave too few healthy ones
  const h2 = { n01: 'healthy' as const, n02: 'healthy' as const, n03: 'up' as const, n04: 'up' as const, n05: 'up' as const }
  t.equal(planVoters(view({ self: 'n01', voters: ['n01', 'n02', 'n03', 'n04', 'n05'], learners: [], health: h2, target: 1 })), undefined)
  // silent voters beyond the target go first, while a healthy quorum remains
  const h3 = { ...h2, n05: 'healthy' as const }
  t.same(converge({ self: 'n01', voters: ['n01', 'n02', 'n03', 'n04', 'n05'], learners: [], health: h3, target: 3 }).steps, ['demote n03', 'demote n04'])
})

t.test('zones: voters spread over as many zones as there are', async (t) => {
  const all = ids('n', 6)
  const zones = { n01: 'a', n02: 'a', n03: 'a', n04: 'b', n05: 'c', n06: 'c' }
  const r = converge({ self: 'n01', voters: ['n01', 'n02', 'n03'], learners: ['n04', 'n05', 'n06'], health: healthy(all), zones, target: 3 })
  t.same(r.steps, ['promote n04', 'promote n05', 'demote n02', 'demote n03'])
  t.same(new Set(r.end.voters.map((n) => zones[n as keyof typeof zones])), new Set(['a', 'b', 'c']))
  // already spread: nothing to do
  t.equal(converge(r.end).steps.length, 0)
})

t.test('nodes gone for longer than deadNodeTimeoutMs are removed (learners, and voters when it is safe)', async (t) => {
  const all = ids('n', 6)
  const health = { ...healthy(all), n06: 'down' as const, n03: 'down' as const }
  const r = converge({ self: 'n01', voters: ['n01', 'n02', 'n03'], learners: ['n04', 'n05', 'n06'], health, dead: ['n03', 'n06'], target: 3 })
  t.same(r.steps, ['promote n04', 'remove n06', 'remove n03'])
  t.same(r.end.voters.sort(), ['n01', 'n02', 'n04'])
  t.same(r.end.learners, ['n05'])
})

const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : Date.now() % 1e9
t.comment(`fast-check seed ${seed} (replay: FC_SEED=${seed})`)

t.test('fuzz: one change a step, never the leader, never losing a healthy quorum, and a fixed point with the wanted voters', async (t) => {
  const healthArb = fc.constantFrom<MemberHealth>('healthy', 'healthy', 'healthy', 'up', 'down', 'unknown')
  const arb = fc
    .record({
      n: fc.integer({ min: 1, max: 30 }),
      voters: fc.integer({ min: 1, max: 9 }),
      target: fc.constantFrom(1, 3, 5, 7),
      health: fc.array(healthArb, { minLength: 30, maxLength: 30 }),
      stable: fc.array(fc.boolean(), { minLength: 30, maxLength: 30 }),
      dead: fc.array(fc.boolean(), { minLength: 30, maxLength: 30 }),
      zones: fc.array(fc.constantFrom('a', 'b', 'c', undefined), { minLength: 30, maxLength: 30 }),
      self: fc.nat(),
    })
  fc.assert(
    fc.property(arb, (x) => {
      const all = ids('n', x.n)
      const nv = Math.min(x.voters, x.n)
      const voters = all.slice(0, nv)
      const self = voters[x.self % nv]!
      const health: Record<string, MemberHealth> = {}
      all.forEach((n, i) => (health[n] = n === self ? 'healthy' : x.health[i]!))
      const c: Cluster = {
        self,
        voters,
        learners: all.slice(nv),
        health,
        unstable: all.filter((_, i) => !x.stable[i]),
        dead: all.filter((n, i) => x.dead[i] && health[n] === 'down'),
        zones: Object.fromEntries(all.flatMap((n, i) => (x.zones[i] ? [[n, x.zones[i]!]] : []))),
        target: x.target,
      }
      const healthyVoters = (cl: Cluster): number => cl.voters.filter((n) => cl.health[n] === 'healthy').length
      const cur: Cluster = { ...c, voters: [...c.voters], learners: [...c.learners] }
      for (let i = 0; i < 200; i++) {
        const s = planVoters(view(cur))
        if (!s) {
          // fixed point: with every voter healthy, exactly the ideal voters (the target, or every
          // candidate when there are fewer)
          const ideal = idealVoters(view(cur))
          if (new Set(ideal).size !== ideal.length) return false
          if (cur.voters.every((n) => cur.health[n] === 'healthy') && [...cur.voters].sort().join() !== [...ideal].sort().join()) return false
          return cur.voters.includes(self)
        }
        if (s.node === self) return false
        const before = healthyVoters(cur) >= quorumOf(cur.voters.length)
        if (s.action === 'promote') {
          if (!cur.learners.includes(s.node) || cur.health[s.node] !== 'healthy') return false
          cur.learners = cur.learners.filter((n) => n !== s.node)
          cur.voters = [...cur.voters, s.node]
        } else if (s.action === 'demote') {
          if (!cur.voters.includes(s.node)) return false
          cur.voters = cur.voters.filter((n) => n !== s.node)
          cur.learners = [...cur.learners, s.node]
        } else {
          if (!(cur.dead ?? []).includes(s.node)) return false
          cur.voters = cur.voters.filter((n) => n !== s.node)
          cur.learners = cur.learners.filter((n) => n !== s.node)
        }
        const after = healthyVoters(cur) >= quorumOf(cur.voters.length)
        if (before && !after) return false
        if (cur.voters.length === 0) return false
      }
      return false // no fixed point
    }),
    { seed, numRuns: 2000 },
  )
  t.pass('held')
})
