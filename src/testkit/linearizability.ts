/**
 * Linearizability checker for histories of concurrent operations.
 *
 * The search is the one of Wing & Gong (1993): repeatedly pick an operation
 * that may be linearized next (its invocation is not after the earliest
 * response among the completed operations not yet linearized), apply it to a
 * sequential model, and backtrack when the model rejects the recorded output.
 * Configurations already explored are memoized as (set of linearized
 * operations, model state), after Lowe (2017), which makes the search
 * practical on long histories. Histories are first split into independent
 * sub-histories (P-compositionality, Horn & Kroening 2015) when the model
 * provides {@link Model.partition}.
 *
 * The search is iterative (explicit stack), so histories of tens of thousands
 * of operations do not exhaust the JavaScript call stack. Models may declare
 * read-only operations ({@link Model.readOnly}), which are then linearized
 * greedily without branching (a sound partial-order reduction).
 *
 * Cost: proving a history linearizable is usually fast. Refuting one needs an
 * exhaustive search of the configurations before the violation, which is
 * exponential in the number of concurrent operations on one partition; on a
 * single hot key with many clients and thousands of operations this can hit
 * the time budget, which is then reported as `timedOut` (never as a verdict).
 *
 * @module
 */

/**
 * One completed or pending operation of a history.
 *
 * All times come from one clock (simulated or real, in ms). Operation `a`
 * precedes operation `b` in real time iff `a.ret < b.call`; operations whose
 * intervals touch (`a.ret === b.call`) are treated as concurrent, so that
 * coarse clocks never produce false alarms.
 */
export interface Operation<I, O> {
  /** Who issued the operation (informational only). */
  client: number | string
  /** The operation and its arguments, as understood by the model. */
  input: I
  /** Invocation time. */
  call: number
  /**
   * Response time; `Infinity` when the caller never learned the outcome
   * (timeout, crash): the operation may or may not have taken effect, at any
   * time after `call`.
   */
  ret: number
  /** The observed result; `undefined` (and ignored) when `ret === Infinity`. */
  output: O | undefined
}

/**
 * A sequential specification of an object, used to decide whether a history
 * of concurrent operations on that object is linearizable.
 *
 * @typeParam S - model state (treated as immutable)
 * @typeParam I - operation inputs
 * @typeParam O - operation outputs
 */
export interface Model<S, I, O> {
  /** The initial state. */
  init(): S
  /**
   * Apply `input` to `state`; return whether `output` is a legal result and
   * the new state. `output` is `undefined` for operations whose outcome is
   * unknown: any result is then legal. Must not mutate `state`.
   */
  step(state: S, input: I, output: O | undefined): { ok: boolean; state: S }
  /** A string key for memoization: equal keys iff equal states. */
  key(state: S): string
  /**
   * Optional: split a history into independent sub-histories (for example by
   * key), each checked on its own starting from {@link Model.init}.
   */
  partition?(ops: Operation<I, O>[]): Operation<I, O>[][]
  /**
   * Optional, for speed: true if this operation, with this output, leaves the
   * state unchanged in every state where that output is legal (a read, a
   * failed conditional write; never an unconditional write, since writing
   * the current value is a no-op only in some states). `output` is
   * `undefined` for pending operations. The checker then linearizes such an
   * operation as soon as it is legal without trying alternatives, and drops
   * pending ones. Answering false is always safe; answering true wrongly
   * makes the checker unsound.
   */
  readOnly?(input: I, output: O | undefined): boolean
  /** Optional: a short human-readable rendering of an operation, for explanations. */
  describe?(op: Operation<I, O>): string
}

/** The verdict of {@link checkLinearizable}. */
export interface CheckResult {
  /** True iff the history was proven linearizable. False on violations and on timeouts. */
  ok: boolean
  /** True when the time budget ran out before a verdict: `ok` is then false but nothing was proven. */
  timedOut?: boolean
  /**
   * On failure: a human-readable explanation (the failing partition, the
   * longest linearizable prefix found, and the operations that could not be
   * placed after it). On timeout: what was being checked.
   */
  explanation?: string
}

/** Options of {@link checkLinearizable}. */
export interface CheckOptions {
  /** Time budget for the whole check, in ms (default 60,000). */
  timeoutMs?: number
}

const DEFAULT_TIMEOUT_MS = 60_000
/** How many search steps between two looks at the clock. */
const CLOCK_EVERY = 512
/** How many operations an explanation lists at most, per list. */
const EXPLAIN_MAX = 40

/**
 * Decide whether `history` is linearizable with respect to `model`.
 *
 * Completed operations (finite `ret`) must all be linearized, each at some
 * point between its `call` and `ret`; pending operations (`ret === Infinity`)
 * may be linearized at any point after their `call`, or not at all.
 *
 * Returns `{ ok: true }` when a linearization exists, `{ ok: false,
 * explanation }` when none does, and `{ ok: false, timedOut: true,
 * explanation }` when the time budget ran out first (never a guess).
 *
 * @throws RangeError if an operation has a non-numeric time or `ret < call`.
 */
export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  opts?: CheckOptions,
): CheckResult {
  for (const op of history) {
    if (typeof op.call !== 'number' || Number.isNaN(op.call) || op.call === Infinity) {
      throw new RangeError(`operation has an invalid call time: ${describeWith(model, op)}`)
    }
    if (typeof op.ret !== 'number' || Number.isNaN(op.ret) || op.ret < op.call) {
      throw new RangeError(`operation has an invalid return time: ${describeWith(model, op)}`)
    }
  }
  const deadline = Date.now() + (opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS)
  const parts = model.partition ? model.partition(history) : [history]
  for (let p = 0; p < parts.length; p++) {
    const part = parts[p]!
    if (part.length === 0) continue
    const r = searchPartition(model, part, deadline)
    if (r.kind === 'fail') {
      const where = parts.length > 1 ? `partition ${p + 1} of ${parts.length} (${part.length} ops)` : `history (${part.length} ops)`
      return { ok: false, explanation: `Not linearizable: ${where}.\n${r.explanation}` }
    }
    if (r.kind === 'timeout') {
      const t = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS
      return {
        ok: false,
        timedOut: true,
        explanation: `Timed out after ${t} ms while checking partition ${p + 1} of ${parts.length} (${part.length} ops); no verdict.`,
      }
    }
  }
  return { ok: true }
}

type SearchResult = { kind: 'ok' } | { kind: 'fail'; explanation: string } | { kind: 'timeout' }

/** One level of the explicit search stack: the op linearized there and what to restore. */
interface Frame<S> {
  op: number
  prevState: S
  prevKey: string
  prevMax: number
  /** Linearized by the read-only reduction: no alternative needs trying. */
  forced: boolean
}

function searchPartition<S, I, O>(model: Model<S, I, O>, part: Operation<I, O>[], deadline: number): SearchResult {
  const readOnly = model.readOnly?.bind(model)
  // Pending read-only operations never matter: leave them out.
  if (readOnly) part = part.filter((op) => op.ret !== Infinity || !readOnly(op.input, undefined))
  // Index operations by invocation time (stable on ties).
  const ops = part.map((op, i) => ({ op, i })).sort((a, b) => a.op.call - b.op.call || a.i - b.i).map((x) => x.op)
  const n = ops.length
  const call = new Float64Array(n)
  const ret = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    call[i] = ops[i]!.call
    ret[i] = ops[i]!.ret
  }

  // Doubly-linked list, in call order, of the ops not yet linearized ("U").
  // Node n is the sentinel. Removal and restoration happen in LIFO order
  // (dancing links), so restoring is exact.
  const END = n
  const cNext = new Int32Array(n + 1)
  const cPrev = new Int32Array(n + 1)
  for (let i = 0; i <= n; i++) {
    cNext[i] = i === n ? (n > 0 ? 0 : n) : i + 1
    cPrev[i] = i === 0 ? n : i - 1
  }
  cPrev[END] = n > 0 ? n - 1 : END

  // Doubly-linked list, in return order, of the completed ops not yet
  // linearized: its head gives the earliest pending response.
  const completed: number[] = []
  for (let i = 0; i < n; i++) if (ret[i] !== Infinity) completed.push(i)
  completed.sort((a, b) => ret[a]! - ret[b]! || a - b)
  const rNext = new Int32Array(n + 1).fill(-1)
  const rPrev = new Int32Array(n + 1).fill(-1)
  {
    let prev = END
    for (const i of completed) {
      rNext[prev] = i
      rPrev[i] = prev
      prev = i
    }
    rNext[prev] = END
    rPrev[END] = prev
  }
  const isCompleted = (i: number): boolean => ret[i] !== Infinity

  const unlink = (i: number): void => {
    cNext[cPrev[i]!] = cNext[i]!
    cPrev[cNext[i]!] = cPrev[i]!
    if (isCompleted(i)) {
      rNext[rPrev[i]!] = rNext[i]!
      rPrev[rNext[i]!] = rPrev[i]!
    }
  }
  const relink = (i: number): void => {
    cNext[cPrev[i]!] = i
    cPrev[cNext[i]!] = i
    if (isCompleted(i)) {
      rNext[rPrev[i]!] = i
      rPrev[rNext[i]!] = i
    }
  }

  // Memo of explored configurations. The linearized set L is encoded exactly
  // and compactly as: m = 1 + the largest linearized index (everything from m
  // on is unlinearized) and the unlinearized indices below m (a prefix of U).
  const seen = new Set<string>()
  const configKey = (stateKey: string, m: number): string => {
    let s = `${m}`
    for (let i = cNext[END]!; i !== END && i < m; i = cNext[i]!) s += `,${i}`
    return `${s}|${stateKey}`
  }

  const stack: Frame<S>[] = []
  let state = model.init()
  let stateKey = model.key(state)
  let maxIdx = 0 // 1 + largest linearized index
  let cur = cNext[END]!
  let steps = 0
  let completedDepth = 0 // completed ops on the stack

  // Best (deepest) point reached, for the explanation.
  let bestDepth = -1
  let bestPrefix: number[] = []
  let bestState = state
  let bestCandidates: number[] = []
  let bestUnplaced: number[] = []
  const recordBest = (): void => {
    if (completedDepth <= bestDepth) return
    bestDepth = completedDepth
    bestPrefix = stack.map((f) => f.op)
    bestState = state
    const minRet = ret[rNext[END]!]!
    bestCandidates = []
    for (let i = cNext[END]!; i !== END && call[i]! <= minRet; i = cNext[i]!) bestCandidates.push(i)
    bestUnplaced = []
    for (let i = rNext[END]!; i !== END; i = rNext[i]!) bestUnplaced.push(i)
  }

  /** Try to linearize `i` next, in state `next` (whose key is `nextKey`); false if that configuration was seen. */
  const push = (i: number, next: S, nextKey: string, forced: boolean): boolean => {
    const newMax = Math.max(maxIdx, i + 1)
    unlink(i)
    const k = configKey(nextKey, newMax)
    if (seen.has(k)) {
      relink(i)
      return false
    }
    seen.add(k)
    stack.push({ op: i, prevState: state, prevKey: stateKey, prevMax: maxIdx, forced })
    state = next
    stateKey = nextKey
    maxIdx = newMax
    if (isCompleted(i)) completedDepth++
    return true
  }

  // `fresh`: the current configuration was just reached and its candidates
  // not yet examined.
  let fresh = true
  for (;;) {
    if (++steps % CLOCK_EVERY === 0 && Date.now() > deadline) return { kind: 'timeout' }
    const head = rNext[END]!
    if (head === END) return { kind: 'ok' } // every completed op is linearized
    const minRet = ret[head]!
    if (fresh) {
      fresh = false
      // Reduction: a candidate that is read-only (see Model.readOnly) and
      // legal now can always be linearized right here: in any successful
      // completion it could be moved to this point without changing any
      // state or breaking real-time order (no unlinearized op has to precede
      // it). So take it without branching; if that fails, this
      // configuration fails too.
      let forced = -1
      let forcedState = state
      for (let i = readOnly ? cNext[END]! : END; i !== END && call[i]! <= minRet; i = cNext[i]!) {
        const op = ops[i]!
        const out = isCompleted(i) ? op.output : undefined
        if (!readOnly!(op.input, out)) continue
        const r = model.step(state, op.input, out)
        if (r.ok && model.key(r.state) === stateKey) {
          forced = i
          forcedState = r.state
          break
        }
      }
      if (forced >= 0) {
        if (push(forced, forcedState, stateKey, true)) {
          fresh = true
          cur = cNext[END]!
          continue
        }
        cur = END // already refuted: backtrack
      }
    }
    if (cur !== END && call[cur]! <= minRet) {
      const op = ops[cur]!
      const r = model.step(state, op.input, isCompleted(cur) ? op.output : undefined)
      if (r.ok && push(cur, r.state, model.key(r.state), false)) {
        fresh = true
        cur = cNext[END]!
        continue
      }
      cur = cNext[cur]!
      continue
    }
    // No op can extend this configuration: backtrack.
    recordBest()
    const f = stack.pop()
    if (f === undefined) {
      return { kind: 'fail', explanation: explain(model, ops, bestPrefix, bestState, bestCandidates, bestUnplaced) }
    }
    relink(f.op)
    if (isCompleted(f.op)) completedDepth--
    state = f.prevState
    stateKey = f.prevKey
    maxIdx = f.prevMax
    // After a forced step fails, no sibling can succeed either.
    cur = f.forced ? END : cNext[f.op]!
  }
}

function explain<S, I, O>(
  model: Model<S, I, O>,
  ops: Operation<I, O>[],
  prefix: number[],
  state: S,
  candidates: number[],
  unplaced: number[],
): string {
  const lines: string[] = []
  const completedTotal = ops.filter((o) => o.ret !== Infinity).length
  const completedInPrefix = prefix.filter((i) => ops[i]!.ret !== Infinity).length
  lines.push(
    `Longest linearizable prefix found: ${prefix.length} ops (${completedInPrefix} of ${completedTotal} completed ops):`,
  )
  lines.push(...listOps(model, ops, prefix, '  '))
  lines.push(`Model state after it: ${model.key(state)}`)
  lines.push(
    `None of these ops can come next (their output is illegal in that state, or the configuration was already refuted):`,
  )
  lines.push(...listOps(model, ops, candidates, '  '))
  lines.push(`Completed ops that could not be placed: ${unplaced.length}:`)
  lines.push(...listOps(model, ops, unplaced, '  '))
  return lines.join('\n')
}

function listOps<S, I, O>(model: Model<S, I, O>, ops: Operation<I, O>[], idx: number[], indent: string): string[] {
  const shown = idx.length > EXPLAIN_MAX ? [...idx.slice(0, EXPLAIN_MAX / 2), -1, ...idx.slice(-EXPLAIN_MAX / 2)] : idx
  return shown.map((i) =>
    i < 0 ? `${indent}... (${idx.length - EXPLAIN_MAX} more)` : `${indent}${describeWith(model, ops[i]!)}`,
  )
}

function describeWith<S, I, O>(model: Model<S, I, O>, op: Operation<I, O>): string {
  const body = model.describe ? model.describe(op) : `${json(op.input)} -> ${op.ret === Infinity ? '?' : json(op.output)}`
  return `[client ${String(op.client)} @${op.call}..${op.ret === Infinity ? 'inf' : op.ret}] ${body}`
}

function json(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x: unknown) => (x === undefined ? null : x)) ?? String(v)
  } catch {
    return String(v)
  }
}

// ---------------------------------------------------------------------------
// Key-value store model
// ---------------------------------------------------------------------------

/** An operation on a key-value store with put-if-absent, as checked by {@link kvModel}. */
export type KvInput =
  | { op: 'get'; key: string }
  | { op: 'put'; key: string; value: string }
  | { op: 'putIfAbsent'; key: string; value: string }
  | { op: 'delete'; key: string }

/** Result of a `get`: the value, or `undefined` when the key is absent. */
export interface KvGetOutput {
  value: string | undefined
}

/**
 * Result of `put` (always `{ ok: true }`), `putIfAbsent` (true iff the key
 * was absent and now holds the value) and `delete` (true iff the key existed).
 */
export interface KvOkOutput {
  ok: boolean
}

/** Any output of a {@link KvInput}. */
export type KvOutput = KvGetOutput | KvOkOutput

/** State of {@link kvModel}: key to value (never mutated). */
export type KvState = ReadonlyMap<string, string>

/** One operation of a key-value history. */
export type KvOperation = Operation<KvInput, KvOutput>

function okOf(output: KvOutput): boolean | undefined {
  return 'ok' in output && typeof output.ok === 'boolean' ? output.ok : undefined
}

/**
 * Sequential model of a key-value store with `get`, `put`, `putIfAbsent` and
 * `delete`, partitioned by key (so each key is checked independently).
 */
export const kvModel: Model<KvState, KvInput, KvOutput> = {
  init(): KvState {
    return new Map()
  },
  step(state, input, output) {
    const cur = state.get(input.key)
    const known = output !== undefined
    switch (input.op) {
      case 'get': {
        const ok = !known || ('value' in output && output.value === cur)
        return { ok, state }
      }
      case 'put': {
        const next = new Map(state)
        next.set(input.key, input.value)
        return { ok: !known || okOf(output) === true, state: next }
      }
      case 'putIfAbsent': {
        const applies = cur === undefined
        const ok = !known || okOf(output) === applies
        if (!applies) return { ok, state }
        const next = new Map(state)
        next.set(input.key, input.value)
        return { ok, state: next }
      }
      case 'delete': {
        const existed = cur !== undefined
        const ok = !known || okOf(output) === existed
        if (!existed) return { ok, state }
        const next = new Map(state)
        next.delete(input.key)
        return { ok, state: next }
      }
      default: {
        const never: never = input
        throw new TypeError(`unknown kv operation: ${json(never)}`)
      }
    }
  },
  key(state) {
    if (state.size === 0) return '{}'
    if (state.size === 1) {
      const [[k, v]] = state
      return json([[k, v]])
    }
    return json([...state].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)))
  },
  readOnly(input, output) {
    if (input.op === 'get') return true
    if (output === undefined || input.op === 'put') return false
    // A failed putIfAbsent (key present) or delete (key absent) changes nothing.
    return okOf(output) === false
  },
  partition(ops) {
    const byKey = new Map<string, KvOperation[]>()
    for (const op of ops) {
      let list = byKey.get(op.input.key)
      if (list === undefined) byKey.set(op.input.key, (list = []))
      list.push(op)
    }
    return [...byKey.values()]
  },
  describe(op) {
    const i = op.input
    const args = i.op === 'get' || i.op === 'delete' ? json(i.key) : `${json(i.key)}, ${json(i.value)}`
    let out: string
    if (op.ret === Infinity || op.output === undefined) out = '? (outcome unknown)'
    else if ('value' in op.output) out = op.output.value === undefined ? 'absent' : json(op.output.value)
    else out = json(op.output)
    return `${i.op}(${args}) -> ${out}`
  },
}
