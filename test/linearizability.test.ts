import t from 'tap'
import fc from 'fast-check'
import {
  checkLinearizable,
  kvModel,
  type KvInput,
  type KvOperation,
  type KvOutput,
  type KvState,
  type Model,
  type Operation,
} from '../src/testkit/linearizability.js'

/** Fixed seed (override with FC_SEED); fast-check prints seed and path on failure. */
const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x5eed
const RUNS = process.env.FC_RUNS !== undefined ? Number(process.env.FC_RUNS) : 500

// --- helpers ---------------------------------------------------------------

let nextClient = 0
function op(input: KvInput, call: number, ret: number, output?: KvOutput, client?: number): KvOperation {
  return { client: client ?? nextClient++, input, call, ret, output: ret === Infinity ? undefined : output }
}
const get = (key: string, value: string | undefined, call: number, ret: number): KvOperation =>
  op({ op: 'get', key }, call, ret, { value })
const put = (key: string, value: string, call: number, ret: number): KvOperation =>
  op({ op: 'put', key, value }, call, ret, { ok: true })
const pia = (key: string, value: string, ok: boolean, call: number, ret: number): KvOperation =>
  op({ op: 'putIfAbsent', key, value }, call, ret, { ok })
const del = (key: string, ok: boolean, call: number, ret: number): KvOperation =>
  op({ op: 'delete', key }, call, ret, { ok })

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** Run one input against a plain sequential KV (a Map), returning the output. */
function apply(kv: Map<string, string>, input: KvInput): KvOutput {
  const cur = kv.get(input.key)
  switch (input.op) {
    case 'get':
      return { value: cur }
    case 'put':
      kv.set(input.key, input.value)
      return { ok: true }
    case 'putIfAbsent':
      if (cur !== undefined) return { ok: false }
      kv.set(input.key, input.value)
      return { ok: true }
    case 'delete':
      return { ok: kv.delete(input.key) }
  }
}

/**
 * Brute-force reference: for every subset of the pending ops, try every order
 * of (completed ops + that subset) that respects real-time precedence
 * (a before b whenever a.ret < b.call), replaying it on the model.
 * No partitioning, no memoization.
 */
function bruteForce<S, I, O>(model: Model<S, I, O>, history: Operation<I, O>[]): boolean {
  const completed = history.filter((o) => o.ret !== Infinity)
  const pending = history.filter((o) => o.ret === Infinity)
  const tryOrders = (remaining: Operation<I, O>[], state: S): boolean => {
    if (remaining.length === 0) return true
    for (let i = 0; i < remaining.length; i++) {
      const x = remaining[i]!
      if (remaining.some((y) => y !== x && y.ret < x.call)) continue // y must come first
      const r = model.step(state, x.input, x.ret === Infinity ? undefined : x.output)
      if (!r.ok) continue
      if (tryOrders([...remaining.slice(0, i), ...remaining.slice(i + 1)], r.state)) return true
    }
    return false
  }
  for (let mask = 0; mask < 1 << pending.length; mask++) {
    const included = [...completed, ...pending.filter((_, i) => (mask >> i) & 1)]
    if (tryOrders(included, model.init())) return true
  }
  return false
}

interface GenSpec {
  key: number
  kind: number
  value: number
  lead: number
  lag: number
  pending: boolean
  applied: boolean
}

/**
 * Build a linearizable history: `specs` in array order is the linearization;
 * op i takes effect at time 10*i, its interval [10*i - lead, 10*i + lag]
 * contains that point. Pending ops get ret = Infinity and take effect only
 * when `applied`.
 */
function buildLinearizable(specs: GenSpec[], keys: string[]): KvOperation[] {
  const kv = new Map<string, string>()
  return specs.map((s, i) => {
    const key = keys[s.key % keys.length]!
    const value = `v${s.value}`
    const input: KvInput =
      s.kind === 0
        ? { op: 'get', key }
        : s.kind === 1
          ? { op: 'put', key, value }
          : s.kind === 2
            ? { op: 'putIfAbsent', key, value }
            : { op: 'delete', key }
    const at = 10 * i
    if (s.pending) {
      if (s.applied) apply(kv, input)
      return { client: i, input, call: at - s.lead, ret: Infinity, output: undefined }
    }
    return { client: i, input, call: at - s.lead, ret: at + s.lag, output: apply(kv, input) }
  })
}

/**
 * A realistic large history: `clients` sequential clients, each op taking
 * effect at a random instant inside its interval; outputs come from replaying
 * all ops in the order of those instants. Some ops time out (ret Infinity)
 * and then took effect or not.
 */
function bigHistory(seed: number, nOps: number, clients: number, nKeys: number, pendingRate: number): KvOperation[] {
  const rnd = prng(seed)
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!
  const keys = Array.from({ length: nKeys }, (_, i) => `k${i}`)
  const clock = new Array<number>(clients).fill(0)
  type Draft = { op: KvOperation; at: number; applied: boolean }
  const drafts: Draft[] = []
  for (let i = 0; i < nOps; i++) {
    const c = i % clients
    const call = clock[c]! + rnd() * 3
    const at = call + rnd() * 5
    const ret = at + rnd() * 5
    clock[c] = ret
    const key = pick(keys)
    const value = `c${c}-${i}`
    const input: KvInput = pick<KvInput>([
      { op: 'get', key },
      { op: 'get', key },
      { op: 'put', key, value },
      { op: 'putIfAbsent', key, value },
      { op: 'delete', key },
    ])
    const pending = rnd() < pendingRate
    drafts.push({ op: { client: c, input, call, ret: pending ? Infinity : ret, output: undefined }, at, applied: !pending || rnd() < 0.5 })
  }
  const kv = new Map<string, string>()
  for (const d of [...drafts].sort((a, b) => a.at - b.at)) {
    if (!d.applied) continue
    const out = apply(kv, d.op.input)
    if (d.op.ret !== Infinity) d.op.output = out
  }
  return drafts.map((d) => d.op)
}

// --- hand-written histories ------------------------------------------------

t.test('empty history is linearizable', async (t) => {
  t.same(checkLinearizable(kvModel, []), { ok: true })
})

t.test('sequential history', async (t) => {
  const h = [
    get('a', undefined, 0, 1),
    put('a', 'x', 2, 3),
    get('a', 'x', 4, 5),
    pia('a', 'y', false, 6, 7),
    del('a', true, 8, 9),
    del('a', false, 10, 11),
    pia('a', 'y', true, 12, 13),
    get('a', 'y', 14, 15),
  ]
  t.ok(checkLinearizable(kvModel, h).ok)
})

t.test('overlapping writes, a read may see either', async (t) => {
  for (const seen of ['x', 'y']) {
    const h = [put('a', 'x', 0, 10), put('a', 'y', 2, 12), get('a', seen, 15, 16)]
    t.ok(checkLinearizable(kvModel, h).ok, `read sees ${seen}`)
  }
  // A read concurrent with both writes may also see the initial absence.
  t.ok(checkLinearizable(kvModel, [put('a', 'x', 0, 10), put('a', 'y', 2, 12), get('a', undefined, 1, 3)]).ok)
})

t.test('stale read after a completed write', async (t) => {
  const h = [put('a', 'x', 0, 1), put('a', 'y', 2, 3), get('a', 'x', 4, 5)]
  const r = checkLinearizable(kvModel, h)
  t.equal(r.ok, false)
  t.notOk(r.timedOut)
  t.match(r.explanation, /Longest linearizable prefix/)
  t.match(r.explanation, /get\("a"\) -> "x"/)
})

t.test('two concurrent putIfAbsent both returning true', async (t) => {
  const h = [pia('a', 'x', true, 0, 10), pia('a', 'y', true, 1, 11)]
  t.equal(checkLinearizable(kvModel, h).ok, false)
  // One winner is fine.
  t.ok(checkLinearizable(kvModel, [pia('a', 'x', true, 0, 10), pia('a', 'y', false, 1, 11)]).ok)
  t.ok(checkLinearizable(kvModel, [pia('a', 'x', false, 0, 10), pia('a', 'y', true, 1, 11)]).ok)
})

t.test('pending put (ret = Infinity)', async (t) => {
  // Its value is seen later: it took effect.
  t.ok(checkLinearizable(kvModel, [put('a', 'x', 0, Infinity), get('a', 'x', 100, 101)]).ok)
  // Never seen: it never took effect (or not yet).
  t.ok(checkLinearizable(kvModel, [put('a', 'x', 0, Infinity), get('a', undefined, 100, 101)]).ok)
  // Seen, then not seen: it can take effect only once.
  t.ok(checkLinearizable(kvModel, [put('a', 'x', 0, Infinity), get('a', undefined, 10, 11), get('a', 'x', 20, 21)]).ok)
  t.equal(
    checkLinearizable(kvModel, [put('a', 'x', 0, Infinity), get('a', 'x', 10, 11), get('a', undefined, 20, 21)]).ok,
    false,
  )
  // But not before it was invoked.
  t.equal(checkLinearizable(kvModel, [get('a', 'x', 0, 1), put('a', 'x', 5, Infinity)]).ok, false)
  // A pending putIfAbsent explains a later failed putIfAbsent.
  t.ok(checkLinearizable(kvModel, [pia('a', 'x', true, 0, Infinity), pia('a', 'y', false, 5, 6), get('a', 'x', 7, 8)]).ok)
})

t.test('read of a value that was never written', async (t) => {
  const h = [put('a', 'x', 0, 10), get('a', 'zz', 5, 15)]
  const r = checkLinearizable(kvModel, h)
  t.equal(r.ok, false)
  t.notOk(r.timedOut)
})

t.test('keys are independent (partitioning)', async (t) => {
  t.ok(checkLinearizable(kvModel, [put('a', 'x', 0, 1), get('b', undefined, 2, 3), get('a', 'x', 4, 5)]).ok)
  const r = checkLinearizable(kvModel, [put('a', 'x', 0, 1), put('b', 'y', 0, 1), get('b', 'x', 4, 5)])
  t.equal(r.ok, false)
  t.match(r.explanation, /partition 2 of 2/)
})

t.test('intervals that touch are concurrent', async (t) => {
  t.ok(checkLinearizable(kvModel, [put('a', 'x', 0, 5), get('a', undefined, 5, 6)]).ok)
  t.equal(checkLinearizable(kvModel, [put('a', 'x', 0, 5), get('a', undefined, 6, 7)]).ok, false)
})

t.test('invalid times are rejected', async (t) => {
  t.throws(() => checkLinearizable(kvModel, [put('a', 'x', 5, 4)]), RangeError)
  t.throws(() => checkLinearizable(kvModel, [put('a', 'x', NaN, 4)]), RangeError)
})

t.test('a generic model without partition or describe', async (t) => {
  // A register of numbers: input is a number to add, output the new total.
  const counter: Model<number, number, number> = {
    init: () => 0,
    step: (s, inc, out) => ({ ok: out === undefined || out === s + inc, state: s + inc }),
    key: (s) => String(s),
  }
  const mk = (inc: number, out: number, call: number, ret: number): Operation<number, number> => ({
    client: 'c',
    input: inc,
    call,
    ret,
    output: out,
  })
  t.ok(checkLinearizable(counter, [mk(1, 3, 0, 10), mk(2, 2, 1, 11)]).ok)
  const r = checkLinearizable(counter, [mk(1, 1, 0, 1), mk(2, 2, 2, 3)])
  t.equal(r.ok, false)
  t.match(r.explanation, /\[client c @2\.\.3\] 2 -> 2/)
})

t.test('timeout is reported, not a verdict', async (t) => {
  // 40 fully concurrent puts followed by a read of an unwritten value: the
  // search must refute every subset of the puts, which takes forever.
  const h: KvOperation[] = []
  for (let i = 0; i < 40; i++) h.push(put('a', `v${i}`, 0, 100))
  h.push(get('a', 'never', 200, 201))
  const r = checkLinearizable(kvModel, h, { timeoutMs: 100 })
  t.equal(r.ok, false)
  t.equal(r.timedOut, true)
  t.match(r.explanation, /Timed out/)
})

// --- property tests --------------------------------------------------------

/** kvModel without the read-only reduction: exercises the plain search. */
const kvPlain: Model<KvState, KvInput, KvOutput> = { ...kvModel, readOnly: undefined }

const keysArb = fc.constantFrom<string[]>(['k0', 'k1'], ['k0', 'k1', 'k2'])
const specArb = fc.record({
  key: fc.nat(2),
  kind: fc.nat(3),
  value: fc.nat(2),
  lead: fc.nat(25),
  lag: fc.nat(25),
  pending: fc.nat(4).map((n) => n === 0),
  applied: fc.boolean(),
})

t.test('property: histories generated from a linearization are linearizable', async (t) => {
  fc.assert(
    fc.property(keysArb, fc.array(specArb, { minLength: 0, maxLength: 7 }), (keys, specs) => {
      const h = buildLinearizable(specs, keys)
      for (const model of [kvModel, kvPlain]) {
        const r = checkLinearizable(model, h)
        if (!r.ok) throw new Error(`expected linearizable:\n${r.explanation}`)
      }
    }),
    { seed: SEED, numRuns: RUNS },
  )
  t.pass('ok')
})

const randomOpArb = (keys: string[]): fc.Arbitrary<KvOperation> =>
  fc
    .record({
      key: fc.constantFrom(...keys),
      kind: fc.constantFrom('get', 'put', 'putIfAbsent', 'delete'),
      value: fc.constantFrom('a', 'b'),
      call: fc.nat(12),
      len: fc.nat(8),
      pending: fc.nat(6),
      seen: fc.constantFrom<string | undefined>(undefined, 'a', 'b'),
      ok: fc.boolean(),
      putOk: fc.nat(9),
    })
    .map((r): KvOperation => {
      const input: KvInput =
        r.kind === 'get' || r.kind === 'delete'
          ? { op: r.kind, key: r.key }
          : { op: r.kind as 'put' | 'putIfAbsent', key: r.key, value: r.value }
      const pending = r.pending === 0
      const output: KvOutput =
        input.op === 'get' ? { value: r.seen } : input.op === 'put' ? { ok: r.putOk !== 0 } : { ok: r.ok }
      return {
        client: 0,
        input,
        call: r.call,
        ret: pending ? Infinity : r.call + r.len,
        output: pending ? undefined : output,
      }
    })

t.test('property: random histories agree with a brute-force checker', async (t) => {
  let yes = 0
  let no = 0
  fc.assert(
    fc.property(
      keysArb.chain((keys) => fc.array(randomOpArb(keys), { minLength: 0, maxLength: 7 })),
      (h) => {
        const expected = bruteForce(kvModel, h)
        for (const model of [kvModel, kvPlain]) {
          const r = checkLinearizable(model, h)
          if (r.timedOut) throw new Error('timed out')
          if (r.ok !== expected) throw new Error(`checker says ${r.ok}, brute force says ${expected}\n${r.explanation ?? ''}`)
        }
        if (expected) yes++
        else no++
      },
    ),
    { seed: SEED, numRuns: RUNS * 2 },
  )
  // The generator must exercise both verdicts.
  t.ok(yes > RUNS / 20, `linearizable cases: ${yes}`)
  t.ok(no > RUNS / 20, `non-linearizable cases: ${no}`)
})

t.test('property: brute force agrees on generated linearizable histories with one mutated output', async (t) => {
  fc.assert(
    fc.property(
      keysArb,
      fc.array(specArb, { minLength: 1, maxLength: 7 }),
      fc.nat(),
      fc.constantFrom<string | undefined>(undefined, 'v0', 'v1', 'v2'),
      (keys, specs, which, seen) => {
        const h = buildLinearizable(specs, keys)
        const i = which % h.length
        const o = h[i]!
        if (o.ret !== Infinity) {
          o.output = o.input.op === 'get' ? { value: seen } : { ok: !(o.output as { ok: boolean }).ok }
        }
        const expected = bruteForce(kvModel, h)
        for (const model of [kvModel, kvPlain]) {
          const r = checkLinearizable(model, h)
          if (r.ok !== expected) throw new Error(`verdicts differ (checker ${r.ok})\n${r.explanation ?? ''}`)
        }
      },
    ),
    { seed: SEED, numRuns: RUNS },
  )
  t.pass('ok')
})

// --- scale -----------------------------------------------------------------

t.test('large generated history (5,000 ops, 20 clients, 50 keys) is linearizable', async (t) => {
  const h = bigHistory(12345, 5000, 20, 50, 0.01)
  const r = checkLinearizable(kvModel, h)
  t.ok(r.ok, r.explanation ?? 'linearizable')
})

t.test('large history with one stale read is not linearizable', async (t) => {
  const h = bigHistory(777, 5000, 20, 50, 0.01)
  // Make one completed read see a value nobody wrote.
  const idx = h.findIndex((o) => o.input.op === 'get' && o.ret !== Infinity && o.call > 1000)
  t.ok(idx >= 0)
  h[idx]!.output = { value: 'never-written' }
  const r = checkLinearizable(kvModel, h)
  t.equal(r.ok, false)
  t.notOk(r.timedOut)
  t.match(r.explanation, /never-written/)
})

t.test('10,000-op single-key history does not exhaust the stack', async (t) => {
  const h: KvOperation[] = []
  for (let i = 0; i < 10_000; i++) {
    // Pairs of overlapping ops, sequential between pairs.
    const base = Math.floor(i / 2) * 10
    h.push(i % 2 === 0 ? put('a', `v${i}`, base, base + 5) : get('a', `v${i - 1}`, base + 1, base + 6))
  }
  t.ok(checkLinearizable(kvModel, h).ok)
  h[9_999]!.output = { value: 'v0' }
  const r = checkLinearizable(kvModel, h)
  t.equal(r.ok, false)
  t.notOk(r.timedOut)
})

t.test('large single-key history with 20 clients is linearizable', async (t) => {
  const h = bigHistory(99, 3000, 20, 1, 0.01)
  const r = checkLinearizable(kvModel, h)
  t.ok(r.ok, r.explanation ?? 'linearizable')
})

t.test('kvModel.readOnly', async (t) => {
  const ro = kvModel.readOnly!
  t.equal(ro({ op: 'get', key: 'a' }, { value: 'x' }), true)
  t.equal(ro({ op: 'get', key: 'a' }, undefined), true)
  t.equal(ro({ op: 'put', key: 'a', value: 'x' }, { ok: true }), false)
  t.equal(ro({ op: 'putIfAbsent', key: 'a', value: 'x' }, { ok: false }), true)
  t.equal(ro({ op: 'putIfAbsent', key: 'a', value: 'x' }, { ok: true }), false)
  t.equal(ro({ op: 'putIfAbsent', key: 'a', value: 'x' }, undefined), false)
  t.equal(ro({ op: 'delete', key: 'a' }, { ok: false }), true)
  t.equal(ro({ op: 'delete', key: 'a' }, { ok: true }), false)
  t.equal(ro({ op: 'delete', key: 'a' }, undefined), false)
})

t.test('kvModel does not mutate its state', async (t) => {
  const s0: KvState = kvModel.init()
  const s1 = kvModel.step(s0, { op: 'put', key: 'a', value: 'x' }, { ok: true }).state
  const s2 = kvModel.step(s1, { op: 'delete', key: 'a' }, { ok: true }).state
  t.equal(s0.size, 0)
  t.equal(s1.get('a'), 'x')
  t.equal(s2.size, 0)
  t.equal(kvModel.key(s0), kvModel.key(s2))
  t.not(kvModel.key(s0), kvModel.key(s1))
})
