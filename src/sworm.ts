/**
 * The public API: a sworm is a named registry and supervisor of workers, replicated by Raft
 * across the nodes that start it. Every change goes through the log; reads are local. This class
 * checks arguments and hands each call to the module that does the job (see the README's
 * architecture section).
 * @module
 */
import { EventEmitter } from 'node:events'
import { assemble, start, type SwormDeps, type SwormParts } from './bootstrap.js'
import { ArgChecks, isObj } from './args.js'
import { FailureDetector } from './cluster/failure-detector.js'
import { Autopilot } from './cluster/autopilot.js'
import { stopOnSignals } from './cluster/signals.js'
import { Membership } from './cluster/membership.js'
import { AbortError, AlreadyRegisteredError, InvalidArgumentError, NoNodeError, NotFoundError, NoWorkerError, ShuttingDownError, StartError, SwormError, TimeoutError, WorkerCrashedError } from './errors.js'
import { emitSafely, RegistryEvents, type SwormEvents } from './events.js'
import { setInternals } from './internal-hooks.js'
import { NodeStatus, type SwormReadiness, type SwormStatus, type SwormStatusReport } from './observability/status.js'
import type { SwormMetrics } from './observability/metrics.js'
import { RateLimitedLog } from './observability/rate-limited-log.js'
import { resolveOptions, type ResolvedOptions, type SwormOptions } from './options.js'
import type { RaftNode, RaftNodeEvents } from './raft/node.js'
import type { Clock, Logger } from './raft/types.js'
import { RegistryClient } from './registry/client.js'
import type { RegistryChange, RegistryState } from './registry/state.js'
import { runningRef, sameRef, type RegistryCommand, type RegistryResult, type StartSpec, type SuperviseResult, type WorkerRef } from './registry/types.js'
import { Messaging } from './rpc/messaging.js'
import { PendingRequests } from './rpc/pending.js'
import { WireRouter } from './rpc/router.js'
import { LeaseFence } from './supervisor/fencing.js'
import { LazyAbort, type ExitReason, type LocalWorkers, type Worker } from './supervisor/local-workers.js'
import { EarlyStarts } from './supervisor/early-starts.js'
import { Supervisor, type StartOutcome } from './supervisor/supervisor.js'
import { sleep, withDeadline } from './util/retry.js'

export type { SwormEvents, WorkerStopReason } from './events.js'
export type { SwormOptions } from './options.js'

/** Per signal, the callbacks of the operations waiting on it: one listener per signal, however many wait. */
const abortWaiters = new WeakMap<AbortSignal, Set<() => void>>()

/** Call `fn` when `signal` aborts; returns the function that cancels that. */
function onAbort(signal: AbortSignal, fn: () => void): () => void {
  let set = abortWaiters.get(signal)
  if (!set) {
    const fresh = new Set<() => void>()
    set = fresh
    abortWaiters.set(signal, fresh)
    signal.addEventListener(
      'abort',
      () => {
        abortWaiters.delete(signal)
        for (const f of fresh) f()
      },
      { once: true },
    )
  }
  const waiters = set
  waiters.add(fn)
  return () => {
    waiters.delete(fn)
  }
}

/**
 * The options every async method takes: `signal` ends the wait for the operation with an
 * {@link AbortError} when aborted (the operation itself may still take effect, as after a timeout).
 */
export interface Abortable {
  signal?: AbortSignal
}

/** Options of a supervised registration ({@link Sworm.registerName} with a {@link StartSpec}). */
export interface SuperviseOptions extends Abortable {
  /**
   * When the promise resolves. `'running'` (the default): once the worker runs (a start that
   * fails rejects it with a `StartError`). `'placed'`: once the registration is in the log and
   * placed on a node, with the ref its worker will run under (fixed then: the caller is back as
   * soon as after a static registration); the node starts the worker at once. Calls and casts to
   * that ref, or to the name, sent before the worker runs wait for it, from any node, and reach it
   * in the order they were sent: a call up to its timeout (then it is never sent), a cast as
   * casts by name are held (`callTimeoutMs`, at most `castBufferSize` per ref, the oldest
   * dropped). If its start fails, the name is removed (the node logs why) and they fail with
   * `NoWorkerError`, as for any worker that ended; if the name moves before its worker ran, the
   * ref ends the same way and the name runs on under a new one. Every node of the sworm must run
   * a version that knows it (protocol version 9).
   */
  wait?: 'running' | 'placed'
}

/** One member's outcome in {@link Sworm.multiCall}: its reply, or the error of its call. */
export type MultiCallResult<R = unknown> = { ref: WorkerRef; ok: true; value: R } | { ref: WorkerRef; ok: false; error: SwormError }
export type { SwormReadiness, SwormStatus, SwormStatusReport } from './observability/status.js'

/**
 * A sworm running on this node. Start one with {@link Sworm.start} on every node of the cluster.
 *
 * @example
 * ```ts
 * const sworm = await Sworm.start({ name: 'users', nodeId: 'n1', listen: 'ws://127.0.0.1:4001',
 *   peers: { n1: 'ws://127.0.0.1:4001', n2: 'ws://127.0.0.1:4002', n3: 'ws://127.0.0.1:4003' },
 *   dataDir: '/var/lib/app/sworm/n1', secret: process.env.SWORM_SECRET! })
 * const ref = sworm.spawn({ handleCall: (msg) => ({ echo: msg }) })
 * await sworm.registerName('user:42', ref)          // true, or false if the name is taken
 * await sworm.call('user:42', 'hi')                  // { echo: 'hi' }, from any node
 * ```
 */
export class Sworm extends EventEmitter<SwormEvents> {
  /** Name of this sworm. */
  readonly name: string
  /** Id of this node. */
  readonly nodeId: string
  /** Incarnation of this node: changes on every start. */
  readonly incarnation: string

  private readonly opts: ResolvedOptions
  private readonly raft: RaftNode<RegistryCommand, RegistryResult>
  private readonly state: RegistryState
  private readonly workers: LocalWorkers
  private readonly clock: Clock
  private readonly log: Logger
  private readonly release: () => Promise<void>
  private readonly args: ArgChecks
  private readonly requests: PendingRequests
  private stopping: Promise<void> | undefined
  private readonly client: RegistryClient
  private readonly supervisor: Supervisor
  private readonly early: EarlyStarts
  private readonly fence: LeaseFence
  private readonly messaging: Messaging
  private readonly membership: Membership
  private readonly detector: FailureDetector
  private readonly autopilot: Autopilot
  private readonly events: RegistryEvents
  private readonly observe: NodeStatus
  private readonly metricsObj: SwormMetrics
  private readonly timers: unknown[] = []
  private stopped = false
  private unlistenSignals: (() => void) | undefined
  private lastLeaderTerm = 0
  private lastLeader: string | undefined
  private lastRole = 'follower'
  private lastTerm = 0

  /** Made by {@link Sworm.start} (through bootstrap.ts), from the parts it built. */
  private constructor(p: SwormParts) {
    super()
    const o = p.options
    const stopped = (): boolean => this.stopped
    this.opts = o
    this.name = o.name
    this.nodeId = o.nodeId
    this.incarnation = p.inc
    this.raft = p.raft
    this.state = p.state
    this.workers = p.workers
    this.clock = p.clock
    this.log = p.log
    this.release = p.release
    this.metricsObj = p.metrics
    const { raft, state, workers, clock, log, metrics } = p
    const node = { raft, state, clock, log, nodeId: o.nodeId, incarnation: p.inc, stopped }
    this.args = new ArgChecks(o.name, o.maxNameBytes, o.maxMessageBytes)
    const peerLog = new RateLimitedLog(log, () => clock.now())
    const router = new WireRouter(p.msgs, peerLog)
    this.requests = new PendingRequests(clock)
    this.client = new RegistryClient({ ...node, requestTimeoutMs: o.requestTimeoutMs })
    this.early = new EarlyStarts({ sworm: o.name, nodeId: o.nodeId, inc: p.inc, state, router, maxNameBytes: o.maxNameBytes, woken: (name) => this.messaging.nameChanged(name) })
    this.supervisor = new Supervisor({
      sworm: o.name,
      nodeId: o.nodeId,
      inc: p.inc,
      state,
      workers,
      log,
      moduleBase: o.moduleBase,
      maxStateBytes: o.maxMessageBytes,
      // Idempotent: every report names its epoch, and epochs are never reused (a registration's
      // epochs are log indexes), so a second copy applied finds it took effect already (`started`
      // of the same ref answers true) or matches nothing. A copy whose leader is gone then goes to
      // the next leader at once, rather than wait out its deadline.
      propose: (cmd) => raft.propose(cmd, { idempotent: true }),
      read: () => raft.read(),
      leaseOk: () => this.fence.leaseOk(),
      leaseLapses: () => raft.leaseLapses(),
      leaseTimeoutMs: o.leaseTimeoutMs,
      stopped,
      clock,
      ...(p.loadModule ? { loadModule: p.loadModule } : {}),
      events: {
        workerStopped: (name, ref, reason) => {
          if (reason === 'lease') metrics.fencedWorkers.inc()
          this.fire('workerStopped', { name, ref, reason })
        },
        restarting: () => metrics.restarts.inc(),
        handedOff: () => metrics.handoffs.inc(),
        leaseLost: (n) => {
          metrics.leaseExpiries.inc()
          this.fire('leaseLost', { node: o.nodeId, workers: n })
        },
        leaseRenewed: () => this.fire('leaseRenewed', { node: o.nodeId }),
        running: (name, epoch, ref, by) => this.early.running(name, epoch, ref, by),
      },
    }, p.reconcileSlice, p.reconcileRecheckMs)
    this.fence = new LeaseFence({ clock, leaseTimeoutMs: o.leaseTimeoutMs, leaseRenewedAt: () => raft.leaseRenewedAt(), stopped }, this.supervisor)
    const isLocal = (ref: WorkerRef): boolean => this.isLocal(ref)
    const msgs = p.msgs
    this.messaging = new Messaging({
      raft,
      state,
      whereis: (name) => this.whereis(name),
      workers,
      router,
      clock,
      isLocal,
      gate: (id) => this.fence.gate(id),
      guard: () => this.guard(),
      castBufferSize: o.castBufferSize,
      maxMessageBytes: o.maxMessageBytes,
      castHoldMs: o.callTimeoutMs,
      count: {
        castDropped: (n) => metrics.castsDropped.inc(n),
        callRedirected: () => metrics.callsRedirected.inc(),
        callOutcomeUnknown: (n) => metrics.callsOutcomeUnknown.inc(n),
      },
    })
    msgs.onConnection?.((peer, up) => this.messaging.onConnection(peer, up))
    this.membership = new Membership({
      ...node,
      peerLog,
      router,
      requests: this.requests,
      disk: p.disk,
      zone: o.zone,
      rejoinTargets: p.rejoinTargets,
      addPeers: p.addPeers,
      listen: o.listen,
      requestTimeoutMs: o.requestTimeoutMs,
      nodeDownAfterMs: o.nodeDownAfterMs,
      onUp: () => {
        if (o.rebalance) void this.rebalance().catch((err: unknown) => log.warn('rebalance failed', { err: String(err) }))
      },
    })
    this.detector = new FailureDetector({ ...node, nodeDownAfterMs: o.nodeDownAfterMs, silentAfterMs: o.leaseTimeoutMs + o.maxClockDriftMs, ...(p.moveSlice !== undefined ? { moveSlice: p.moveSlice } : {}), ...(p.nodeDownDecided ? { decided: p.nodeDownDecided } : {}) })
    this.autopilot = new Autopilot({
      ...node,
      voters: o.voters,
      stabilizationMs: o.autopilot.stabilizationMs,
      maxTrailingEntries: o.autopilot.maxTrailingEntries,
      deadNodeTimeoutMs: o.deadNodeTimeoutMs,
      heardWithinMs: o.leaseTimeoutMs,
      settleMs: o.nodeDownAfterMs,
      remove: (n) => this.membership.removeAsLeader(n),
      changed: (step) => {
        metrics.autopilotChanges.inc({ action: step.action })
        this.fire('autopilot', { action: step.action, node: step.node, reason: step.reason })
      },
    })
    this.events = new RegistryEvents({
      nodeId: o.nodeId,
      incarnation: p.inc,
      log,
      metrics,
      isLocal,
      draining: (node) => state.nodeRecord(node)?.draining === true,
      fire: (event, ...a) => this.fire(event, ...a),
    })
    this.observe = new NodeStatus({
      ...node,
      name: o.name,
      workers,
      supervisor: this.supervisor,
      metrics,
      router,
      leaseOk: () => this.fence.leaseOk(),
      up: () => this.membership.up,
      stopping: () => this.stopping !== undefined,
    })
    p.hooks.change = (ch) => this.onRegistryChange(ch)
    p.hooks.exit = (id, reason) => this.onWorkerExit(id, reason)
    p.hooks.snapshot = () => this.observe.snapshot()
    setInternals(this, {
      raft,
      state: this.state,
      hub: p.hub,
      faults: p.faults,
      crash: () => this.crash(),
      hasWorker: (id) => workers.has(id),
      queues: () => ({ requestsOut: this.requests.size + this.messaging.size, mailboxQueued: workers.queued() }),
    })
  }

  /**
   * Start this node's part of the sworm: open its data, connect to its peers, and announce the
   * node. Resolves once the node is running, without waiting for a quorum (start the nodes in any
   * order); operations wait for the cluster as needed.
   * @throws TypeError naming the option when an option is invalid
   */
  static async start(options: SwormOptions): Promise<Sworm> {
    const o = resolveOptions(options)
    const sworm = await start(o, (parts) => new Sworm(parts), (sworm, host, port) => sworm.observe.serve(host, port))
    if (o.stopOnSignals.length > 0 && !sworm.stopped) {
      sworm.unlistenSignals = stopOnSignals(o.stopOnSignals, (signal) => {
        sworm.log.info('signal received: stopping gracefully (handing supervised workers over first)', { signal })
        return sworm.stop().catch((err: unknown) => sworm.log.error('stop on signal failed', { signal, err: String(err) }))
      })
    }
    return sworm
  }

  /**
   * Build a sworm from its parts; the simulation's way in (see `src/internal.ts`).
   * @internal
   */
  static assembleFrom(options: SwormOptions, deps: SwormDeps, created?: (sworm: Sworm) => void): Promise<Sworm> {
    return assemble(resolveOptions(options), deps, (parts) => new Sworm(parts), created)
  }

  /** Start the timers and announce this node (see bootstrap.ts). @internal */
  begin(): void {
    this.raft.on('role', (s) => this.onRole(s))
    this.membership.begin()
    this.every(100, () => {
      this.membership.comeBackIfDeclaredGone()
      this.autopilot.check()
    })
    // at least every 100 ms, and when a silent node's wait ends (+1 ms: past it, by this clock)
    this.every(100, () => Math.min(100, Math.max(1, this.detector.check() + 1)))
    this.every(Math.max(50, Math.min(250, this.opts.leaseTimeoutMs / 8)), () => {
      void this.supervisor.tick().catch((err: unknown) => this.log.error('supervisor tick failed', { err: String(err) }))
      this.fence.arm()
      this.messaging.recheck() // (a restored snapshot wakes what waits for a worker)
    })
  }

  /** Ask the cluster to add this node (see cluster/membership.ts). @internal */
  askToJoin(via: string, url: string): Promise<void> {
    return this.membership.askToJoin(via, url)
  }

  // ------------------------------------------------------------------ registry API

  /**
   * Host `worker` on this node and return its ref. Its messages are handled one at a time, in
   * order; a handler that throws or rejects ends it (and its names are removed everywhere).
   */
  spawn(worker: Worker): WorkerRef {
    this.guard()
    const w = this.args.worker(worker)
    // Only `init` is given the context, and so its signal: without it, nothing can see an abort
    // (a `LazyAbort` for each of a million workers was a million objects for the collector).
    if (typeof w.init !== 'function') return this.refOf(this.workers.add(w))
    const abort = new LazyAbort()
    const id = this.workers.add(w, abort, {
      name: undefined,
      fencingToken: undefined,
      get signal() {
        return abort.signal
      },
    })
    return this.refOf(id)
  }

  /**
   * Stop a worker of this node (its `terminate` runs) and remove its names and group memberships
   * everywhere.
   * @throws InvalidArgumentError (not a ref of this node), NoWorkerError (no such worker runs here)
   */
  exit(ref: WorkerRef, opts?: Abortable): Promise<void> {
    return this.abortable(opts, async () => {
      this.guard()
      const r = this.args.ref(ref)
      if (!this.isLocal(r)) throw new InvalidArgumentError('exit() takes a worker of this node')
      if (!this.workers.has(r.id)) throw new NoWorkerError('no such worker on this node (it has ended, or never was)')
      await this.workers.stop(r.id, 'normal')
    })
  }

  /**
   * Bind `name` to `ref` (a worker spawned by the app) in the whole cluster. Resolves `true`, or
   * `false` when the name is taken (or the ref's node is gone). Linearizable; the name is visible
   * to local reads on this node as soon as the promise resolves. Registering a supervised
   * worker's ref under another name adds an alias that follows the worker.
   * @throws NoWorkerError (the worker ended, or its node is gone), TimeoutError (a supervised
   *   worker's ref whose start the log does not have yet after `requestTimeoutMs`)
   */
  registerName(name: string, ref: WorkerRef, opts?: Abortable): Promise<boolean>
  /**
   * Register a supervised worker: the registry places it on a node, which starts it with
   * `(await import(spec.module))[spec.fn](...spec.args)`, restarts it per `spec.restart`, and
   * moves it when the node is gone. Resolves with the ref once it runs: the node running it
   * tells this node directly, before the log has the start, so this node sees it at once
   * (`whereisName`, calls by name); the other nodes see it once the log has it, a round later.
   * Its ref can be used in `join`, `leave` and `registerName` (an alias) on this node and on
   * the node running it at once (they wait for the log, a `TimeoutError` after
   * `requestTimeoutMs`); another node given the ref within that round finds it not registered
   * (`join`) or registers a static name for it, not an alias (the name goes when the worker ends).
   * With `{ wait: 'placed' }`: resolves as soon as the registration is placed, with the ref
   * the worker will run under (see {@link SuperviseOptions.wait}).
   * @throws AlreadyRegisteredError (with the existing ref), StartError (the cause attached), NoNodeError
   */
  registerName(name: string, spec: StartSpec, opts?: SuperviseOptions): Promise<WorkerRef>
  registerName(name: string, target: WorkerRef | StartSpec, opts?: SuperviseOptions): Promise<boolean | WorkerRef> {
    if (isObj(target) && 'module' in target) {
      return this.abortable(opts, () => this.registerSupervised(name, target as StartSpec, false, opts?.wait))
    }
    return this.abortable(opts, () => this.registerStatic(name, target as WorkerRef))
  }

  /**
   * The ref of the worker registered as `name`; if there is none, register a supervised worker
   * from `spec` and return its ref. Called from many nodes at once, the factory runs once and
   * every caller gets the same ref.
   */
  whereisOrRegisterName(name: string, spec: StartSpec, opts?: Abortable): Promise<WorkerRef> {
    return this.abortable(opts, () => this.registerSupervised(name, spec, true))
  }

  private async registerSupervised(name: string, spec: StartSpec, orExisting: boolean, wait?: unknown): Promise<WorkerRef> {
    this.guard()
    const n = this.args.name(name)
    const sp = this.args.spec(spec)
    const placed = this.args.wait(wait) === 'placed'
    if (orExisting) {
      const ref = this.whereis(n)
      if (ref) return ref
    }
    await this.membership.ready()
    if (placed) {
      // the ref is fixed by the entry that places the name (see Registration.fx)
      const res = (await this.client.propose({ c: 'supervise', name: n, spec: sp, ue: 1, fx: this.name })) as SuperviseResult
      if (res.placed) {
        // (an entry with `fx` places the name under the ref it fixes: its result always carries it)
        if (res.ref) return res.ref
        throw new SwormError('INTERNAL', `the log placed ${JSON.stringify(n)} without the ref its entry fixes (a bug: please report it)`)
      }
      if (!res.exists) throw new NoNodeError()
      // (lost to a registration still starting: its ref once it runs, as the default path gives)
      if (!res.ref && res.kind === 'supervised' && this.startingHere(n)) {
        const winner = await this.startOf(n)
        throw new AlreadyRegisteredError(n, winner.ok ? winner.ref : undefined)
      }
      throw new AlreadyRegisteredError(n, res.ref)
    }
    // its host tells this node when the worker runs (see supervisor/early-starts.ts)
    const expecting = this.early.expect(n)
    try {
      return await this.superviseAndStart(n, sp, orExisting)
    } finally {
      expecting.done()
    }
  }

  private async superviseAndStart(n: string, sp: StartSpec, orExisting: boolean): Promise<WorkerRef> {
    const res = (await this.client.propose({ c: 'supervise', name: n, spec: sp, ue: 1 })) as SuperviseResult
    if (!res.placed) {
      if (!res.exists) throw new NoNodeError()
      if (!orExisting) {
        // lost the race to a supervised worker still starting: wait for it (as the winner's caller
        // does), so the error carries its ref and whereisName shows it right after
        if (res.ref || res.kind !== 'supervised' || !this.startingHere(n)) throw new AlreadyRegisteredError(n, res.ref ?? this.whereis(n))
        const winner = await this.startOf(n)
        throw new AlreadyRegisteredError(n, winner.ok ? winner.ref : undefined)
      }
      if (res.ref) return res.ref
    }
    const outcome = await this.startOf(n)
    if (outcome.ok) return outcome.ref
    throw new StartError(`could not start ${JSON.stringify(n)}: ${outcome.error}`, { cause: new Error(outcome.error) })
  }

  /** Whether supervised name `n` is registered, not being unregistered, and its worker not running yet. */
  private startingHere(n: string): boolean {
    const r = this.state.registration(n)
    return r !== undefined && r.kind === 'supervised' && !r.retiring && runningRef(r) === undefined
  }

  /**
   * The start of supervised name `n` (here or on another node), waited for up to `startTimeoutMs`:
   * told by the node it is placed on as soon as the worker runs there (see
   * supervisor/early-starts.ts), or seen in the log, whichever comes first.
   */
  private async startOf(n: string): Promise<StartOutcome> {
    const startTimeoutMs = this.opts.startTimeoutMs
    let timer: unknown
    const logged = this.supervisor.waitForStart(n)
    const waits: Array<Promise<StartOutcome>> = [
      logged.outcome,
      new Promise<StartOutcome>((resolve) => {
        timer = this.clock.setTimeout(() => resolve({ ok: false, error: `the worker did not start within ${startTimeoutMs} ms` }), startTimeoutMs)
      }),
    ]
    const r = this.state.peek(n)
    const early = r?.kind === 'supervised' && runningRef(r) === undefined && r.epoch !== undefined && !r.retiring ? this.early.wait(n, r.epoch) : undefined
    if (early) waits.push(early.ref.then((ref): StartOutcome => ({ ok: true, ref })))
    try {
      return await Promise.race(waits)
    } finally {
      this.clock.clearTimeout(timer)
      early?.cancel()
      logged.cancel()
    }
  }

  /** Wait (up to `ms`) until the log shows a start of supervised `n` (or its start failed, or it went). */
  private async logged(n: string, ms: number): Promise<void> {
    const logged = this.supervisor.waitForStart(n)
    // (late or not, the caller looks at the registry afterwards)
    await withDeadline(this.clock, logged.outcome, ms, () => new Error('late'))
      .catch(() => undefined)
      .finally(logged.cancel)
    this.guard()
  }

  /**
   * Before a registration or a group change with `ref`: if `ref` is a supervised worker that this
   * node knows runs while the log does not have its start yet (its host told this node, or it runs
   * here), wait until the log has it, up to `requestTimeoutMs`. Until then the registry does not
   * know it as its name's worker: a join would find it not registered, an alias would be taken for
   * a static name.
   * @throws TimeoutError when the log still does not have it
   */
  private async untilLogged(ref: WorkerRef, what: string): Promise<void> {
    const pending = (): string | undefined => {
      const name = this.early.pendingName(ref) ?? (this.isLocal(ref) ? this.supervisor.nameOf(ref.id) : undefined)
      if (name === undefined) return undefined
      const logged = this.state.peek(name)?.ref
      return logged !== undefined && sameRef(logged, ref) ? undefined : name
    }
    const name = pending()
    if (name === undefined) return
    const ms = this.opts.requestTimeoutMs
    await this.logged(name, ms)
    if (pending() !== undefined) throw new TimeoutError(`${what}: the worker runs, but the log does not have its start yet after ${ms} ms; try again`)
  }

  /** The ref answering to `name` here: the registry's, or the one its host just said runs (see supervisor/early-starts.ts). */
  private whereis(name: string): WorkerRef | undefined {
    return this.state.whereis(name) ?? this.early.whereis(name)
  }

  private async registerStatic(name: string, ref: WorkerRef): Promise<boolean> {
    this.guard()
    const n = this.args.name(name)
    const r = this.args.ref(ref)
    // (a ref fixed at its placement whose worker is starting here: an alias, as on any other node)
    if (this.isLocal(r) && !this.workers.has(r.id) && this.state.startingName(r) === undefined) throw new NoWorkerError('the worker has ended')
    await this.membership.ready()
    // a supervised worker this node knows runs before the log does: an alias only once it does
    await this.untilLogged(r, `registerName(${JSON.stringify(n)})`)
    const res = await this.client.propose({ c: 'register', name: n, ref: r })
    if (res === 'node-down') throw new NoWorkerError(`the worker's node (${r.node}) is not up in the cluster: declared gone, or restarted since`)
    // taken by a supervised worker still starting: wait for it, so whereisName shows the winner
    if (res !== true && this.startingHere(n)) await this.startOf(n)
    return res === true
  }

  /** Remove `name` everywhere. Resolves `false` when the name was not registered. */
  unregisterName(name: string, opts?: Abortable): Promise<boolean> {
    return this.abortable(opts, async () => {
      this.guard()
      const n = this.args.name(name)
      await this.membership.ready()
      return (await this.client.propose({ c: 'unregister', name: n })) === true
    })
  }

  /**
   * The ref bound to `name`, read from this node's copy (no round trip; may lag the leader by the
   * replication delay). With `{ consistent: true }`, a linearizable read: a Promise that sees every
   * registration acknowledged before the call.
   * @throws InvalidArgumentError (not a string, too long), ShuttingDownError (after `stop()`)
   */
  whereisName(name: string): WorkerRef | undefined
  whereisName(name: string, opts: { consistent: true } & Abortable): Promise<WorkerRef | undefined>
  whereisName(name: string, opts?: { consistent?: boolean } & Abortable): WorkerRef | undefined | Promise<WorkerRef | undefined>
  whereisName(name: string, opts?: { consistent?: boolean } & Abortable): WorkerRef | undefined | Promise<WorkerRef | undefined> {
    if (opts?.consistent) return this.whereisNameConsistent(name, opts)
    this.guard()
    return this.whereis(this.args.name(name))
  }

  /**
   * The ref bound to `name`, by a linearizable read: it sees every registration acknowledged
   * before the call (one shape: always a Promise; the same as `whereisName(name, { consistent: true })`).
   * A supervised worker whose start is not in the log yet is not seen (as while it restarts or
   * moves), except on the node that registered it, which waits for the log (up to
   * `requestTimeoutMs`) and sees it either way.
   * @throws InvalidArgumentError, NotLeaderError / TimeoutError (no leader to confirm the read),
   * AbortError, ShuttingDownError
   */
  whereisNameConsistent(name: string, opts?: Abortable): Promise<WorkerRef | undefined> {
    return this.abortable(opts, async () => {
      this.guard()
      const n = this.args.name(name)
      await this.raft.read()
      // a worker this node registered and knows runs from its host's word: the log's ref once
      // it has the start (read your writes either way)
      if (this.state.whereis(n) === undefined && this.early.whereis(n) !== undefined) await this.logged(n, this.opts.requestTimeoutMs)
      return this.whereis(n)
    })
  }

  /** Every name of the sworm with its ref (local read). @throws ShuttingDownError after `stop()` */
  registered(): Array<[string, WorkerRef]> {
    this.guard()
    return this.state.registered()
  }

  /**
   * Add `ref` to `group`.
   * @throws NotFoundError when `ref` holds no name in this sworm; TimeoutError when `ref` is a
   *   supervised worker this node knows runs but the log does not have its start yet after
   *   `requestTimeoutMs` (see `registerName`)
   */
  join(group: string, ref: WorkerRef, opts?: Abortable): Promise<void> {
    return this.abortable(opts, () => this.groupOp('join', group, ref))
  }

  /**
   * Remove `ref` from `group`.
   * @throws NotFoundError when `ref` holds no name in this sworm; TimeoutError as for {@link Sworm.join}
   */
  leave(group: string, ref: WorkerRef, opts?: Abortable): Promise<void> {
    return this.abortable(opts, () => this.groupOp('leave', group, ref))
  }

  private async groupOp(c: 'join' | 'leave', group: string, ref: WorkerRef): Promise<void> {
    this.guard()
    const g = this.args.name(group, 'group')
    const r = this.args.ref(ref)
    await this.membership.ready()
    await this.untilLogged(r, `${c}(${JSON.stringify(g)})`)
    const res = await this.client.propose({ c, group: g, ref: r })
    if (res === 'not-found') throw new NotFoundError('the ref is not registered in this sworm')
  }

  /** Names of the groups that have at least one member (local read). @throws ShuttingDownError after `stop()` */
  groups(): string[] {
    this.guard()
    return this.state.groupNames()
  }

  /**
   * Members of `group` (local read).
   * @throws InvalidArgumentError (not a string, too long), ShuttingDownError (after `stop()`)
   */
  members(group: string): WorkerRef[] {
    this.guard()
    return this.state.members(this.args.name(group, 'group'))
  }

  // ------------------------------------------------------------------ messaging

  /**
   * Deliver `msg` to the worker registered as `name` (or to `ref`), wherever it runs. Fire and
   * forget: resolves once sent.
   * @throws InvalidArgumentError (bad target, message too large or not encodable), NoWorkerError
   * (the name is not registered, the local worker has ended, or the ref's node is not in the sworm),
   * NotLeaderError / TimeoutError (the name is not known here and no leader could say whether it
   * is registered), AbortError
   */
  send(target: string | WorkerRef, msg: unknown, opts?: Abortable): Promise<void> {
    return this.abortable(opts, async () => {
      this.guard()
      const t = this.args.target(target)
      this.args.message(msg)
      await this.messaging.send(t, msg)
    })
  }

  /**
   * Send `msg` to the worker registered as `name` (or to `ref`) and resolve with its reply.
   * By name, the call follows the worker through moves and restarts, within its timeout, and is
   * sent at most once (see the README, "Calls and casts by name").
   * @throws InvalidArgumentError (bad target, message or timeout), NoWorkerError (no such name or
   * worker), TimeoutError, WorkerCrashedError (the worker threw, or its reply cannot travel),
   * OutcomeUnknownError (the node it went to died, restarted or lost its connection before it
   * answered), NotLeaderError (the name is not known here and no leader could say whether it is
   * registered)
   */
  call<R = unknown>(target: string | WorkerRef, msg: unknown, opts: { timeout?: number } & Abortable = {}): Promise<R> {
    return this.abortable(opts, async () => {
      this.guard()
      const t = this.args.target(target)
      this.args.message(msg)
      const timeout = this.args.timeout(opts, 'timeout') ?? this.opts.callTimeoutMs
      return this.messaging.call<R>(t, msg, timeout)
    })
  }

  /**
   * Cast `msg` to every member of `group` (local read of the members), as Swarm's `publish`.
   * Fire and forget: resolves with the number of members it was sent to (a local member that has
   * ended is skipped).
   * @throws InvalidArgumentError (bad group name, message too large or not encodable)
   */
  publish(group: string, msg: unknown, opts?: Abortable): Promise<number> {
    return this.abortable(opts, async () => {
      this.guard()
      const g = this.args.name(group, 'group')
      this.args.message(msg)
      const members = this.state.members(g)
      // a member that ended meanwhile is skipped, as a cast to it would be lost anyway
      const sent = await Promise.all(members.map((ref) => this.messaging.send(ref, msg).then(() => 1, () => 0)))
      return sent.reduce<number>((a, b) => a + b, 0)
    })
  }

  /**
   * Call every member of `group` (local read of the members) at once and wait for them all, as
   * Swarm's `multi_call`: one result per member, in the order of {@link Sworm.members}, each the
   * reply or the error of that call (no call fails the others).
   * @param opts.timeout - per call, default `callTimeoutMs`
   * @throws InvalidArgumentError (bad group name, message or timeout)
   */
  multiCall<R = unknown>(group: string, msg: unknown, opts: { timeout?: number } & Abortable = {}): Promise<Array<MultiCallResult<R>>> {
    return this.abortable(opts, async () => {
      this.guard()
      const g = this.args.name(group, 'group')
      this.args.message(msg)
      const timeout = this.args.timeout(opts, 'timeout') ?? this.opts.callTimeoutMs
      return Promise.all(
        this.state.members(g).map((ref) =>
          this.messaging.call<R>(ref, msg, timeout).then(
            (value): MultiCallResult<R> => ({ ref, ok: true, value }),
            (err: unknown): MultiCallResult<R> => ({ ref, ok: false, error: err instanceof SwormError ? err : new WorkerCrashedError(String(err)) }),
          ),
        ),
      )
    })
  }

  /**
   * The Raft node behind this sworm: for membership changes (`addNode`, `removeNode`,
   * `replaceNode`, `transferLeadership`, on the leader) and for its status.
   */
  get raftNode(): RaftNode<RegistryCommand, RegistryResult> {
    return this.raft
  }

  /** Whether this node's lease holds (see {@link SwormOptions.leaseTimeoutMs}). */
  leaseOk(): boolean {
    return this.fence.leaseOk()
  }

  // ------------------------------------------------------------------ status

  /** Role, term, leader and indexes of this node's Raft replica, plus registry counts. */
  status(): SwormStatus {
    return this.observe.status()
  }

  /**
   * What `GET /status` serves: {@link Sworm.status} plus the sworm's name, the Raft configuration,
   * the log and snapshot indexes, the nodes the registry holds, uptime in seconds, and the metrics
   * addresses of this node and of the peers that told theirs.
   */
  statusReport(): SwormStatusReport {
    return this.observe.report()
  }

  /**
   * Whether this node serves the sworm now, and if not why: ready once this incarnation is up in
   * the registry (what {@link Sworm.ready} waits for), while it holds its lease (not cut off from
   * a quorum), and not from the moment it starts stopping, nor while its disk fails. A draining
   * node is ready (it serves calls; the reason says it drains). `GET /ready` of the metrics server (option `metricsPort`) answers it, 200 or 503:
   * point a readiness probe there, so that a rolling restart waits for each restarted node to be
   * back before it stops the next (a node that stops while no other is up has nowhere to hand its
   * supervised workers to). Call it from an application's own health endpoint otherwise.
   */
  readiness(): SwormReadiness {
    return this.observe.readiness()
  }

  /** This sworm's metrics on this node, in the Prometheus text format (see the README for the list). */
  metrics(): Promise<string> {
    return this.metricsObj.text()
  }

  /** The prom-client `Registry` holding this sworm's metrics (to merge into an application's registry). */
  get metricsRegistry(): SwormMetrics['registry'] {
    return this.metricsObj.registry
  }

  /** `http://host:port` of this sworm's metrics server (option `metricsPort`), if it runs. */
  get metricsAddress(): string | undefined {
    return this.observe.address
  }

  // ------------------------------------------------------------------ operations

  /**
   * Resolves once this node is up in the sworm: a leader was seen and this incarnation's
   * announcement is applied, so registry operations from here go through. Every registry
   * operation waits for this anyway; call it to know at start-up that the cluster is reachable.
   * @throws NotLeaderError (no leader seen within `requestTimeoutMs`: check that a majority of the
   * peers are up and reachable and that every node uses the same secret), TimeoutError (a leader
   * is known but this node is not up yet), ShuttingDownError
   */
  ready(opts?: Abortable): Promise<void> {
    return this.abortable(opts, async () => {
      this.guard()
      await this.membership.ready()
    })
  }

  /**
   * Move this node's supervised workers to other nodes, with state handoff, and take no new ones.
   * Resolves when every worker that was here runs on another node (or no other node can take them).
   */
  drain(opts: { timeoutMs?: number } & Abortable = {}): Promise<void> {
    return this.abortable(opts, async () => {
      this.guard()
      const timeoutMs = this.args.timeout(opts, 'timeoutMs')
      await this.membership.ready()
      const moving = this.state.supervisedOn(this.nodeId).map((r) => r.name)
      await this.client.propose({ c: 'drain', node: this.nodeId, on: true })
      const deadline = this.clock.now() + (timeoutMs ?? this.opts.startTimeoutMs * 3)
      for (;;) {
        const left = this.state.supervisedOn(this.nodeId).length
        const elsewhere = this.state.nodeRecords().some((n) => n.up && !n.draining && n.node !== this.nodeId)
        if (!elsewhere) return
        // done when none is placed here and every moved name runs on its new node (or is gone)
        const settling = moving.filter((name) => {
          const r = this.state.registration(name)
          return r !== undefined && r.kind === 'supervised' && !r.retiring && (runningRef(r) === undefined || r.ref!.node === this.nodeId)
        }).length
        if (left === 0 && settling === 0) return
        if (this.clock.now() > deadline) throw new TimeoutError(`drain: ${left} workers still on this node, ${settling} not yet running elsewhere`)
        await sleep(this.clock, 20)
      }
    })
  }

  /** Take supervised workers again after {@link Sworm.drain}. */
  undrain(opts?: Abortable): Promise<void> {
    return this.abortable(opts, async () => {
      this.guard()
      await this.membership.ready()
      await this.client.propose({ c: 'drain', node: this.nodeId, on: false, pu: 1 })
    })
  }

  /** Even out supervised workers over the nodes (moves with handoff). */
  rebalance(opts?: Abortable): Promise<void> {
    return this.abortable(opts, async () => {
      this.guard()
      await this.membership.ready()
      await this.client.propose({ c: 'rebalance' })
    })
  }

  /**
   * Remove node `nodeId` from the cluster (an admin operation; call it on any node). The node is
   * taken out of the Raft configuration by the leader, so it votes and replicates no more and no
   * leader renews its lease: it stops its supervised workers when the lease runs out. The leader
   * then declares it gone in the registry once it has been out of the configuration for
   * `leaseTimeoutMs + maxClockDriftMs + (electionTicks - 1) * tickMs`: its static names are dropped and its supervised workers start elsewhere. Resolves once
   * this node sees it gone (on the removed node itself: once the configuration change is
   * committed). Idempotent: removing a node that is out already resolves.
   *
   * A removed node comes back only under a new `nodeId`, on a fresh `dataDir`, with `join`: a
   * node that was removed (or still runs, cut off) may hold an old configuration that counts the
   * old id as a voter, and Raft is safe only if no voter forgets its votes and log. The leader
   * refuses a join from an id the registry knows but the configuration no longer lists.
   *
   * @param opts.timeoutMs - default `requestTimeoutMs` + the node-down wait
   * @throws InvalidArgumentError when `nodeId` is not a non-empty string
   * @throws NotFoundError when no such node is a member or known to the registry (so also when a
   *   node that never came up in the registry was removed already)
   * @throws ConfigChangeError when the configuration cannot lose it (it is the last voter)
   * @throws TimeoutError when it did not finish in time (no quorum, say); it may still happen, and
   *   calling again is safe
   * @throws ShuttingDownError when this sworm stops meanwhile
   */
  removeNode(nodeId: string, opts: { timeoutMs?: number } & Abortable = {}): Promise<void> {
    return this.abortable(opts, async () => {
      this.guard()
      if (typeof nodeId !== 'string' || nodeId.length === 0) throw new InvalidArgumentError('nodeId must be a non-empty string')
      const timeoutMs = opts.timeoutMs ?? this.opts.requestTimeoutMs + this.opts.nodeDownAfterMs
      if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) throw new InvalidArgumentError('timeoutMs must be a positive number')
      await this.membership.removeNode(nodeId, timeoutMs, () => this.guard())
    })
  }

  /**
   * Leave gracefully: this node's workers stop (their `terminate` runs) and their names are
   * removed everywhere, leadership is handed over, and the node's resources are released.
   * @param opts.drain - default true: first move this node's supervised workers to other nodes,
   *   with handoff (up to `startTimeoutMs`), and remove its static names right away. `false`: stop
   *   at once (the whole cluster is stopping, or a fast exit); the other nodes then treat this
   *   node as gone once its lease has run out, and restart its supervised workers without state.
   */
  stop(opts: { drain?: boolean } = {}): Promise<void> {
    if (opts === null || typeof opts !== 'object' || (opts.drain !== undefined && typeof opts.drain !== 'boolean')) {
      return Promise.reject(new InvalidArgumentError('stop options must be { drain?: boolean }'))
    }
    // one stop at a time: a second call (a signal handler, `await using`) waits for the first
    this.stopping ??= this.stopOnce(opts.drain !== false)
    return this.stopping
  }

  private async stopOnce(graceful: boolean): Promise<void> {
    if (this.stopped) return
    // Hand supervised workers over to other nodes before leaving.
    if (graceful && this.membership.up && this.state.supervisedOn(this.nodeId).length > 0) {
      await this.drain({ timeoutMs: this.opts.startTimeoutMs }).catch((err: unknown) => this.log.warn('drain before stop did not finish', { err: String(err) }))
    }
    this.halt()
    await this.observe.close()
    await this.workers.stopAll('shutdown')
    // best effort: drop our names now rather than waiting for the leader to declare us gone, and
    // say we are leaving (draining), so the others log our going as a graceful stop
    if (graceful && this.membership.up) {
      const leaving = this.state.nodeRecord(this.nodeId)?.draining ? [] : [this.raft.propose({ c: 'drain', node: this.nodeId, on: true })]
      // every static name of this incarnation in one entry (one proposal per worker held the
      // event loop for 4.3 s at 100k workers, and most missed the 2 s below)
      const drop = this.raft.propose({ c: 'workersDown', node: this.nodeId, inc: this.incarnation })
      await Promise.race([Promise.allSettled([...leaving, drop]), sleep(this.clock, 2000)])
    }
    this.requests.failAll(new ShuttingDownError('the sworm is stopped'))
    this.early.close()
    this.messaging.close(new ShuttingDownError('the sworm is stopped'))
    await this.raft.stop({ transfer: graceful })
    await this.release()
    this.log.info('sworm stopped', { drained: graceful })
  }

  /** `await using sworm = await Sworm.start(...)`: {@link Sworm.stop} when the scope ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop()
  }

  // ------------------------------------------------------------------ reactions

  private onRole(s: RaftNodeEvents['role'][0]): void {
    if (s.role === 'leader') {
      this.detector.onLeader()
      this.autopilot.onLeader()
    }
    if (s.role === 'candidate' && (this.lastRole !== 'candidate' || s.term !== this.lastTerm)) this.metricsObj.electionsStarted.inc()
    this.lastRole = s.role
    this.lastTerm = s.term
    if (s.leader !== undefined && (s.leader !== this.lastLeader || s.term !== this.lastLeaderTerm)) {
      this.lastLeader = s.leader
      this.lastLeaderTerm = s.term
      this.metricsObj.leaderChanges.inc()
      this.fire('leaderChanged', { leader: s.leader, term: s.term })
    }
  }

  private onRegistryChange(ch: RegistryChange): void {
    this.supervisor.onChange(ch)
    this.early.onChange(ch)
    this.detector.onChange(ch)
    this.events.onChange(ch)
    this.messaging.onChange(ch)
    // A name for a worker of this node that is not (or no longer) here: it ended while the
    // registration was in flight, or the ref never existed. Drop the name everywhere.
    if (ch.type === 'registered' && this.isLocal(ch.ref) && !this.workers.has(ch.ref.id) && !this.stopped) void this.client.proposeUntilDone({ c: 'workerDown', ref: ch.ref })
    this.observe.onChange(ch)
    this.membership.onChange(ch)
  }

  private onWorkerExit(id: number, reason: ExitReason): void {
    if (this.supervisor.onExit(id, reason)) {
      // a static name, or a group membership by ref, given to a supervised worker's ref (another
      // node registered it within the round in which only this node and its caller knew the
      // worker) goes with the worker
      const ref = this.refOf(id)
      if (!this.stopped && (this.state.namesOfRef(ref).some((n) => this.state.peek(n)?.kind === 'static') || this.state.isMemberByRef(ref))) {
        void this.client.proposeUntilDone({ c: 'workerDown', ref })
      }
      return
    }
    if (reason.kind === 'crash') this.log.warn('worker crashed', { worker: id, err: String(reason.error) })
    // Stopping, the node drops all its static names in one entry (workersDown, in stopOnce), or
    // leaves them to the failure detector: a proposal per worker held its event loop for seconds.
    if (this.stopped) return
    const ref = this.refOf(id)
    if (this.state.namesOfRef(ref).length === 0) return
    void this.client.proposeUntilDone({ c: 'workerDown', ref })
  }

  // ------------------------------------------------------------------ helpers

  /**
   * Run `op`, ending the caller's wait with an {@link AbortError} when `opts.signal` is aborted
   * (at once if it already is). The operation is not undone: like a timeout, it may take effect.
   */
  private abortable<T>(opts: unknown, op: () => Promise<T>): Promise<T> {
    let signal: AbortSignal | undefined
    try {
      signal = this.args.signal(opts)
    } catch (err) {
      return Promise.reject(err)
    }
    if (!signal) return op()
    const s = signal
    const aborted = (): AbortError => new AbortError('the operation was aborted (it may still take effect)', { cause: s.reason })
    if (s.aborted) return Promise.reject(aborted()) // nothing is done
    let cancel: (() => void) | undefined
    return Promise.race([
      op(),
      new Promise<never>((_, reject) => {
        cancel = onAbort(s, () => reject(aborted()))
      }),
    ]).finally(() => cancel?.())
  }

  private fire<K extends keyof SwormEvents>(event: K, ...args: SwormEvents[K]): void {
    emitSafely(this, this.log, event, ...args)
  }

  private guard(): void {
    if (this.stopped) throw new ShuttingDownError('the sworm is stopped')
  }

  private isLocal(ref: WorkerRef): boolean {
    return ref.node === this.nodeId && ref.inc === this.incarnation
  }

  private refOf(id: number): WorkerRef {
    return { sworm: this.name, node: this.nodeId, inc: this.incarnation, id }
  }

  /** Run `fn` every `ms`, or after the delay it returns (in ms), until the node stops. */
  private every(ms: number, fn: () => number | void): void {
    const slot = this.timers.length
    const loop = (): void => {
      if (this.stopped) return
      let next = ms
      try {
        const asked = fn()
        if (typeof asked === 'number' && Number.isFinite(asked)) next = asked
      } catch (err) {
        this.log.error('periodic task failed', { err: String(err) })
      }
      this.timers[slot] = this.clock.setTimeout(loop, next)
    }
    this.timers[slot] = this.clock.setTimeout(loop, ms)
  }

  /** Stop every activity: no more timers, no fence. */
  private halt(): void {
    this.stopped = true
    this.unlistenSignals?.()
    for (const t of this.timers) this.clock.clearTimeout(t)
    this.fence.clear()
  }

  /** See {@link SwormInternals.crash}. */
  private crash(): Worker[] {
    const alive = this.workers.objects()
    this.halt()
    return alive
  }
}
