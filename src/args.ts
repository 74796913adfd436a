/**
 * Checks of the arguments the public API takes (names, refs, messages, start specs, timeouts,
 * workers). Each throws an {@link InvalidArgumentError} that says what is wrong.
 * @module
 */
import { encodingProblem } from './util/encodable.js'
import { pack } from 'msgpackr'
import { InvalidArgumentError } from './errors.js'
import type { StartSpec, WorkerRef } from './registry/types.js'
import type { Worker } from './supervisor/local-workers.js'

/** Whether `v` is a plain object (not null, not an array). */
export const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** The longest node id or incarnation a ref may carry (both are short: ids of the configuration, random hex). */
const MAX_REF_FIELD = 1024

/** The argument checks of one sworm (its name and size limits). */
export class ArgChecks {
  constructor(
    private readonly sworm: string,
    private readonly maxNameBytes: number,
    private readonly maxMessageBytes: number,
  ) {}

  /** A name (or group: `what`) no longer than `maxNameBytes` in UTF-8. */
  name(name: unknown, what = 'name'): string {
    if (typeof name !== 'string') throw new InvalidArgumentError(`${what} must be a string, got ${typeof name}`)
    // a UTF-16 code unit takes at most 3 bytes in UTF-8: short names need no count
    if (name.length * 3 > this.maxNameBytes && Buffer.byteLength(name) > this.maxNameBytes) {
      throw new InvalidArgumentError(`${what} is longer than ${this.maxNameBytes} bytes`)
    }
    return name
  }

  /** A worker ref of this sworm (a copy with only the ref's fields; node ids and incarnations are short). */
  ref(ref: unknown): WorkerRef {
    if (
      !isObj(ref) ||
      typeof ref.node !== 'string' ||
      ref.node.length === 0 ||
      ref.node.length > MAX_REF_FIELD ||
      typeof ref.inc !== 'string' ||
      ref.inc.length === 0 ||
      ref.inc.length > MAX_REF_FIELD ||
      typeof ref.id !== 'number' ||
      !Number.isSafeInteger(ref.id) ||
      ref.id === 0 || // (a node's own workers count from 1; a ref fixed at a placement is negative)
      typeof ref.sworm !== 'string'
    ) {
      throw new InvalidArgumentError('not a WorkerRef')
    }
    if (ref.sworm !== this.sworm) throw new InvalidArgumentError(`the ref belongs to sworm ${JSON.stringify(ref.sworm)}, not ${JSON.stringify(this.sworm)}`)
    return { sworm: ref.sworm, node: ref.node, inc: ref.inc, id: ref.id }
  }

  /** A message for `send` or `call`: encodable, and at most `maxMessageBytes` encoded. */
  message(msg: unknown): void {
    this.encodable(msg, 'the message', 'the message')
  }

  /** A string name or a ref, checked; for `send` and `call`. */
  target(target: unknown): string | WorkerRef {
    return typeof target === 'string' ? this.name(target) : this.ref(target)
  }

  /** A start spec, normalized (`args` and `restart` filled in), and at most `maxMessageBytes` encoded. */
  spec(spec: unknown): StartSpec {
    if (!isObj(spec)) throw new InvalidArgumentError('a start spec must be an object { module, fn, args }')
    if (typeof spec.module !== 'string' || spec.module.length === 0) throw new InvalidArgumentError('spec.module must be a non-empty string')
    if (typeof spec.fn !== 'string' || spec.fn.length === 0) throw new InvalidArgumentError('spec.fn must be a non-empty string')
    const args = spec.args ?? []
    if (!Array.isArray(args)) throw new InvalidArgumentError('spec.args must be an array')
    const restart = spec.restart ?? 'transient'
    if (restart !== 'transient' && restart !== 'permanent' && restart !== 'temporary') {
      throw new InvalidArgumentError("spec.restart must be 'transient', 'permanent' or 'temporary'")
    }
    for (const k of ['maxRestarts', 'maxSeconds'] as const) {
      const v = spec[k]
      if (v !== undefined && (typeof v !== 'number' || !(v >= 0))) throw new InvalidArgumentError(`spec.${k} must be a non-negative number`)
    }
    const out: StartSpec = { module: spec.module, fn: spec.fn, args, restart }
    if (typeof spec.maxRestarts === 'number') out.maxRestarts = spec.maxRestarts
    if (typeof spec.maxSeconds === 'number') out.maxSeconds = spec.maxSeconds
    this.encodable(out.args, 'spec.args', 'the start spec')
    this.encodable(out, 'the start spec', 'the start spec')
    return out
  }

  /** `opts.signal`: undefined, or an AbortSignal. */
  signal(opts: unknown): AbortSignal | undefined {
    if (opts === undefined || opts === null) return undefined
    if (!isObj(opts)) throw new InvalidArgumentError('options must be an object')
    const v = opts.signal
    if (v === undefined) return undefined
    if (!(v instanceof AbortSignal)) throw new InvalidArgumentError('signal must be an AbortSignal')
    return v
  }

  /** `wait` of a supervised registration: `'running'` (also when absent) or `'placed'`. */
  wait(wait: unknown): 'running' | 'placed' {
    if (wait === undefined || wait === 'running') return 'running'
    if (wait === 'placed') return 'placed'
    throw new InvalidArgumentError(`wait must be 'running' or 'placed', got ${typeof wait === 'string' ? JSON.stringify(wait) : typeof wait}`)
  }

  /** `opts[key]` as a timeout: undefined, or a positive finite number of milliseconds. */
  timeout(opts: unknown, key: string): number | undefined {
    if (opts === undefined) return undefined
    if (!isObj(opts)) throw new InvalidArgumentError('options must be an object')
    const v = opts[key]
    if (v === undefined) return undefined
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidArgumentError(`${key} must be a positive number of milliseconds`)
    return v
  }

  /** A worker object for `spawn`: its callbacks, where given, are functions. */
  worker(worker: unknown): Worker {
    if (!isObj(worker)) throw new InvalidArgumentError('a worker must be an object with optional handleCall/handleCast/terminate methods')
    for (const k of ['init', 'handleCall', 'handleCast', 'terminate', 'beginHandoff', 'endHandoff']) {
      const f = worker[k]
      if (f !== undefined && typeof f !== 'function') throw new InvalidArgumentError(`worker.${k} must be a function`)
    }
    return worker as Worker
  }

  /**
   * `value` arrives unchanged on another node (see util/encodable.ts; `what` names it) and takes
   * at most `maxMessageBytes` (`sized` names it): the same check on 1 node and on N.
   */
  private encodable(value: unknown, what: string, sized: string): void {
    const problem = encodingProblem(value, what, this.maxMessageBytes)
    if (problem !== undefined) {
      throw new InvalidArgumentError(/ is too large: /.test(problem) ? `${problem} (maxMessageBytes is ${this.maxMessageBytes})` : `${problem}: it would not arrive unchanged on another node (see "Values" in the README)`)
    }
    let size: number
    try {
      size = pack(value).length
    } catch (err) {
      throw new InvalidArgumentError(`${what} cannot be encoded: ${String(err)}`)
    }
    if (size > this.maxMessageBytes) throw new InvalidArgumentError(`${sized} is ${size} bytes, more than ${this.maxMessageBytes}`)
  }
}
