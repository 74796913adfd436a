/**
 * The supervisor of one node: runs the supervised workers the registry placed on this node,
 * restarts them per their policy, hands them over when they move, and fences them (stops them)
 * when this node's lease runs out, so that no two incarnations of a name ever run at once.
 *
 * Every start, restart, move and give-up is a registry command; this class only carries out
 * what the log decided for this node, and reports what happened back into the log.
 * @module
 */
import { pack } from 'msgpackr'
import { InvalidArgumentError } from '../errors.js'
import { encodingProblem } from '../util/encodable.js'
import { isAbsolute, resolve as resolvePath } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Clock, Logger } from '../raft/types.js'
import { retry } from '../util/retry.js'
import type { RegistryChange, RegistryState } from '../registry/state.js'
import { runningRef, type RegistryCommand, type RegistryResult, type StartSpec, type WorkerRef } from '../registry/types.js'
import { LazyAbort, type ExitReason, type LocalWorkers, type Worker } from './local-workers.js'
import { WaiterLists } from '../util/waiters.js'
import { StartReports, StopReports } from './reports.js'
import { TurnPacer } from '../util/turn-pacer.js'
import { SliceScan } from '../util/slice-scan.js'

/**
 * How often reconcile() looks through this node's names and workers while nothing it could act
 * on has changed (see {@link Supervisor.touch}): the safety net under the safety net.
 */
export const RECONCILE_RECHECK_MS = 10_000

/**
 * A registry change about a supervised name (placed, started, moved, removed...) makes
 * reconcile() go through everything again at most this often. Such a change is acted on where it
 * is applied (a start, a stop, a handoff, a retire), and a start or a retire that does not end
 * as it should wakes reconcile() at once (see {@link Supervisor.touch}); what else is left (a
 * start that found an older worker of the name still running, the end of a move whose worker
 * was fenced already) the next pass finishes, within this long. While supervised registrations
 * poured in, a pass every tick on every node (each change woke them) cost about a tenth of the
 * cluster's CPU per start. A node's change (up, down), and a handoff asked of this node, still
 * wake them at once.
 */
export const NAME_CHANGES_PASS_MS = 1000

/** What the supervisor reports to its sworm (events and metrics); every hook is optional and must not throw. */
export interface SupervisorEvents {
  /** A supervised worker of this node ended (`reason` is its exit kind). */
  workerStopped?(name: string, ref: WorkerRef, reason: ExitReason['kind']): void
  /** A supervised worker of this node ended and will be restarted per its policy. */
  restarting?(name: string): void
  /** A supervised worker of this node handed its state over (it moves away). */
  handedOff?(name: string): void
  /** This node's lease ran out: its supervised workers are being stopped. */
  leaseLost?(workers: number): void
  /** This node's lease holds again after it was lost. */
  leaseRenewed?(): void
  /**
   * The worker of supervised `name` for `epoch` runs here (before the log has its start), and
   * node `by` registered the name and waits to hear it (see supervisor/early-starts.ts).
   */
  running?(name: string, epoch: number, ref: WorkerRef, by: string): void
}

/** What the supervisor needs from its sworm. */
export interface SupervisorHost {
  readonly sworm: string
  readonly nodeId: string
  readonly inc: string
  readonly state: RegistryState
  readonly workers: LocalWorkers
  readonly log: Logger
  /** Directory relative module specifiers are resolved against. */
  readonly moduleBase: string
  propose(cmd: RegistryCommand): Promise<RegistryResult>
  /** Linearizable barrier: the local registry reflects every committed command after it. */
  read(): Promise<void>
  /** Whether this node's lease is valid now (it may run supervised workers). */
  leaseOk(): boolean
  /** How many times the lease started anew (held first, or renewed after running out). */
  leaseLapses(): number
  readonly leaseTimeoutMs: number
  stopped(): boolean
  readonly clock: Clock
  /** Loads a module (default: dynamic `import()`); the simulation passes its own. */
  readonly loadModule?: (specifier: string) => Promise<Record<string, unknown>>
  /** Hooks for events and metrics. */
  readonly events?: SupervisorEvents
  /**
   * The largest handoff state, encoded (`maxMessageBytes`): a larger one is logged and dropped,
   * and the worker moves without it (its report goes into the log, and the Raft node refuses an
   * entry too large to replicate: the report would be refused at every retry).
   */
  readonly maxStateBytes: number
}

/** The longest start error kept in the log (`startFailed`): longer ones are cut there. */
export const MAX_START_ERROR_CHARS = 4096

interface Running {
  id: number
  epoch: number
}

/** Outcome of a start, for callers waiting on a supervised registration. */
export type StartOutcome = { ok: true; ref: WorkerRef } | { ok: false; error: string }

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null

/** Runs this node's share of the supervised workers. */
export class Supervisor {
  private readonly running = new Map<string, Running>()
  private readonly byId = new Map<number, string>()
  private readonly starting = new Set<string>()
  /** Names whose start waits for its turn (see startSoon), and for which epoch. */
  private readonly queued = new Map<string, number>()
  /** Names placed here again while their start was under way: started again when it ends. */
  private readonly startAgain = new Set<string>()
  /** Local workers whose exit we caused (move, fence, handoff, unregister): no restart. */
  private readonly expectedExit = new Set<number>()
  private readonly handingOff = new Set<string>()
  private readonly retiring = new Set<string>()
  /** State taken from workers that moved, until the log has it (name -> epoch and state). */
  private readonly handedOff = new Map<string, { epoch: number; state: unknown }>()
  private readonly restarts = new Map<string, number[]>()
  /** name -> callers waiting for its worker to start (or fail). */
  private readonly waiters = new WaiterLists<string, (o: StartOutcome) => void>()
  /** name -> the node that registered it and waits to hear its worker runs, for the epoch placed here. */
  private readonly announce = new Map<string, { epoch: number; by: string }>()
  /** Whether the lease held at the last tick, and whether it ever did. */
  private leaseHeld = false
  /** Modules of start specs, loaded once. */
  private readonly modules = new Map<string, Promise<Record<string, unknown>>>()
  /** A start spec's `module` -> what to import (resolved once: a file URL per start cost about 3 µs). */
  private readonly specifiers = new Map<string, string>()
  /** A read barrier is needed before trusting the local registry (at start, or after a lease gap). */
  private needBarrier = true
  private barrier: Promise<void> | undefined
  /** The gap count `barrier` was asked for under. */
  private barrierGaps = -1
  private lastLapses = -1
  private gaps = 0
  private leaseEverHeld = false
  private reconciling = false

  /** Starts and handoffs, a batch per turn of the event loop. */
  private readonly paced: TurnPacer
  /** Starts reported to the log, batched. */
  private readonly reports: StartReports
  /** Ends of workers (to restart or not) reported to the log, batched. */
  private readonly stops: StopReports
  /** reconcile()'s scans, a slice per tick: the names placed here, and the workers running here. */
  private readonly scanPlaced = new SliceScan<string>(() => this.host.state.supervisedNamesOn(this.host.nodeId))
  private readonly scanRunning = new SliceScan<[string, Running]>(() => this.running.entries())
  /**
   * Bumped by whatever may change what reconcile() finds (see {@link Supervisor.touch}); each scan
   * goes on while it has not been through everything since the last bump.
   */
  private gen = 1
  /** The generation each scan last went through everything from. */
  private placedSeen = 0
  private runningSeen = 0
  /** When both scans last went through everything with nothing new (this clock). */
  private quietAt = 0
  /** The registry's count of installed snapshots, as reconcile() last saw it. */
  private restoresSeen = 0
  /**
   * A registry change about a supervised name came since the scans last went through everything
   * for one (see {@link NAME_CHANGES_PASS_MS}).
   */
  private nameChanged = false
  /** When a change about a name last made the scans go through everything (this clock). */
  private nameChangesPassAt = -Infinity

  /**
   * @param host - what the supervisor needs from its sworm
   * @param reconcileSlice - names (and workers) reconcile() looks at per tick, at most
   * @param recheckMs - how often reconcile() looks through everything again while nothing changed
   */
  constructor(
    private readonly host: SupervisorHost,
    private readonly reconcileSlice = 10_000,
    private readonly recheckMs = RECONCILE_RECHECK_MS,
  ) {
    if (!(recheckMs > 0)) this.recheckMs = RECONCILE_RECHECK_MS // (NaN or less: the default, never no recheck)
    const reportsHost = { sworm: host.sworm, nodeId: host.nodeId, inc: host.inc, propose: (cmd: RegistryCommand) => this.proposeQuietly(cmd) }
    this.reports = new StartReports(reportsHost)
    this.stops = new StopReports(reportsHost)
    this.paced = new TurnPacer(host.clock)
  }

  /** Number of supervised workers running here. */
  get size(): number {
    return this.running.size
  }

  /** Whether local worker `id` is a supervised one. */
  isSupervised(id: number): boolean {
    return this.byId.has(id)
  }

  /** The supervised name local worker `id` runs for, if it is a supervised one. */
  nameOf(id: number): string | undefined {
    return this.byId.get(id)
  }

  /**
   * Resolves when the log shows the supervised `name` with a running worker (or its start failed /
   * it was removed); `cancel()` stops waiting (the promise then never settles).
   */
  waitForStart(name: string): { outcome: Promise<StartOutcome>; cancel(): void } {
    const reg = this.host.state.peek(name)
    const ref = reg && runningRef(reg) !== undefined ? this.host.state.whereis(name) : undefined
    if (ref) return { outcome: Promise.resolve({ ok: true, ref }), cancel: () => {} }
    let cancel = (): void => {}
    const outcome = new Promise<StartOutcome>((resolve) => (cancel = this.waiters.add(name, resolve)))
    return { outcome, cancel }
  }

  /** Whether starts wait for their turn or are under way (for tests). */
  startsQueued(): boolean {
    return this.queued.size > 0 || this.starting.size > 0 || this.paced.waiting > 0
  }

  /** How many callers wait for the start of `name` to be in the log (for tests and status). */
  waitingFor(name: string): number {
    return this.waiters.count(name)
  }

  private settle(name: string, o: StartOutcome): void {
    for (const f of this.waiters.take(name)) f(o)
  }

  /** Called for every registry change (synchronously, during apply). */
  onChange(ch: RegistryChange): void {
    const me = this.host.nodeId
    // new static names, group changes and aliases gone are none of reconcile()'s business; anything
    // else may be (a static name's removal is told apart from a supervised one's by nothing here:
    // it makes it look again, at a pass's cost)
    if (ch.type === 'nodeUp' || ch.type === 'nodeDown' || (ch.type === 'handoff' && ch.node === me)) this.touch()
    else if (ch.type !== 'registered' && ch.type !== 'joined' && ch.type !== 'left' && !(ch.type === 'unregistered' && ch.node === undefined)) this.nameChanged = true
    switch (ch.type) {
      case 'placed':
        if (ch.node === me && ch.by !== undefined && this.host.events?.running) this.announce.set(ch.name, { epoch: ch.epoch, by: ch.by })
        else this.announce.delete(ch.name)
        if (ch.node === me) this.startSoon(ch.name, ch.epoch)
        return
      case 'started':
        this.settle(ch.name, { ok: true, ref: ch.ref })
        return
      case 'startFailed':
        this.announce.delete(ch.name)
        this.settle(ch.name, { ok: false, error: ch.error })
        return
      case 'unregistered':
        this.announce.delete(ch.name)
        this.settle(ch.name, { ok: false, error: 'the name was unregistered before its worker started' })
        return
      case 'stopWorker':
        if (ch.ref.node === me && ch.ref.inc === this.host.inc) {
          const r = this.running.get(ch.name)
          if (r && r.id === ch.ref.id) void this.stopLocal(ch.name, 'moved')
        }
        return
      case 'handoff':
        this.announce.delete(ch.name)
        if (ch.node === me) this.paced.run(() => this.handoff(ch.name, ch.epoch))
        return
      case 'retire':
        this.announce.delete(ch.name)
        if (ch.node === me) queueMicrotask(() => void this.retire(ch.name, ch.epoch))
        return
      case 'unplaced':
        this.announce.delete(ch.name)
        return
      default:
        return
    }
  }

  /** A local worker ended. Returns false when it was not a supervised one. */
  onExit(id: number, reason: ExitReason): boolean {
    const name = this.byId.get(id)
    if (name === undefined) return false
    this.byId.delete(id)
    this.touch()
    const r = this.running.get(name)
    if (r && r.id === id) this.running.delete(name)
    this.host.events?.workerStopped?.(name, { sworm: this.host.sworm, node: this.host.nodeId, inc: this.host.inc, id }, reason.kind)
    if (this.expectedExit.delete(id) || !r || this.host.stopped()) return true
    const reg = this.host.state.registration(name)
    if (!reg || reg.kind !== 'supervised' || reg.epoch !== r.epoch) return true
    const policy = reg.spec?.restart ?? 'transient'
    const crashed = reason.kind === 'crash'
    let restart = policy === 'permanent' || (policy === 'transient' && crashed)
    if (restart && this.tooManyRestarts(name, reg.spec!)) {
      this.host.log.error('supervised worker restarts too often; giving up on its name', {
        name,
        maxRestarts: reg.spec!.maxRestarts ?? 3,
        maxSeconds: reg.spec!.maxSeconds ?? 5,
      })
      restart = false
    }
    if (crashed) this.host.log.warn('supervised worker crashed', { name, restart, err: String((reason as { error: unknown }).error) })
    if (restart) this.host.events?.restarting?.(name)
    void this.stops.report(name, r.epoch, restart)
    return true
  }

  private tooManyRestarts(name: string, spec: StartSpec): boolean {
    const max = spec.maxRestarts ?? 3
    const window = (spec.maxSeconds ?? 5) * 1000
    const now = this.host.clock.now()
    const list = (this.restarts.get(name) ?? []).filter((t) => now - t < window)
    list.push(now)
    this.restarts.set(name, list)
    return list.length > max
  }

  /** Propose `cmd`, trying again for about half a minute; undefined if it never went through. */
  private async proposeQuietly(cmd: RegistryCommand): Promise<RegistryResult | undefined> {
    if (this.host.stopped()) return undefined
    const policy = { minMs: 100, maxMs: 2000, maxAttempts: 20, stopped: () => this.host.stopped() }
    return retry(this.host.clock, policy, () => this.host.propose(cmd)).catch(() => undefined)
  }

  /**
   * Start the worker of `name` for `epoch` in its turn: starts (and handoffs) run a batch per turn
   * of the event loop, so that the tens of thousands a node's failure places here at once cannot
   * hold the loop (and the lease with it) while they all run in microtasks.
   */
  private startSoon(name: string, epoch: number): void {
    if (this.queued.get(name) === epoch) return
    this.queued.set(name, epoch)
    // (the task ends once the worker runs or the start gave up, not when its report is in the
    // log: the pacer measures what a batch costs this event loop, not the log's round trip)
    this.paced.run(
      () =>
        new Promise<void>((launched) => {
          if (this.queued.get(name) === epoch) this.queued.delete(name)
          void this.start(name, epoch, launched).finally(launched)
        }),
    )
  }

  /** Start the worker of `name` for `epoch` here, if the (fresh) registry still says so. */
  private async start(name: string, epoch: number, launched?: () => void): Promise<void> {
    // what ends this start's pacer task: the first one's, or the one it takes after a barrier
    let launchedNow = launched
    if (this.starting.has(name)) {
      // placed here again while an earlier start (or its report) is under way: look again when
      // it ends, rather than wait for reconcile() to come round to the name
      this.startAgain.add(name)
      return
    }
    if (this.running.has(name) || this.host.stopped()) return
    if (!this.host.leaseOk()) return // reconcile() retries once the lease is back
    this.starting.add(name)
    try {
      // Act only on an up-to-date registry. While this node's lease has held without a gap, no
      // name placed here can have moved without this node taking part (handoff, retire) or its
      // lease running out, so the local copy is enough; after a gap (or at start), one read
      // barrier first: entries this node has not applied yet may have moved it.
      let fresh = await this.freshEnough()
      while (fresh?.waited) {
        // waited for a barrier, with every start asked for meanwhile: take a turn again, so that
        // they do not all go on in one burst of microtasks when it resolves (and look again if a
        // gap came meanwhile)
        launchedNow?.() // (its first task: it waited, so its time says nothing of its cost)
        await new Promise<void>((turn) =>
          this.paced.run(
            () =>
              new Promise<void>((done) => {
                launchedNow = done
                turn()
              }),
          ),
        )
        this.noteLease()
        fresh = this.gaps === fresh.gaps ? { gaps: fresh.gaps, waited: false } : await this.freshEnough()
      }
      if (fresh === undefined) return // no lease: reconcile() retries once it is back
      if (!this.isMine(name, epoch)) return
      // The factory runs only under a lease, and its worker is kept only if that lease held,
      // without a gap, until the factory (and endHandoff) resolved: during a gap the name may
      // have moved, and this node may not have applied that yet.
      if (!this.host.leaseOk() || this.host.stopped()) return
      // (the gap count the registry was read fresh for: a gap since then, and the worker is dropped)
      const gapsBefore = fresh.gaps
      const reg = this.host.state.registration(name)!
      let worker: Worker
      // made only if the worker asks for its signal (an AbortController per start cost about 3%
      // of a node's CPU under starts, as it did for spawned workers)
      const abort = new LazyAbort()
      try {
        worker = await this.instantiate(reg.spec!)
        // its epoch is a fencing token only where epochs are never reused (registrations with `ue`)
        if (typeof worker.init === 'function') {
          await worker.init({
            name,
            fencingToken: reg.ue === 1 ? epoch : undefined,
            get signal() {
              return abort.signal
            },
          })
        }
        if (reg.handoffState !== undefined && typeof worker.endHandoff === 'function') await worker.endHandoff(reg.handoffState)
      } catch (err) {
        abort.abort('crash')
        // (the cause goes into the log, and to the caller: cut, so that no message is too large
        // for an entry, and no registry or log line keeps a long one)
        const full = err instanceof Error ? err.message : String(err)
        const message = full.length > MAX_START_ERROR_CHARS ? `${full.slice(0, MAX_START_ERROR_CHARS)}… (${full.length - MAX_START_ERROR_CHARS} more characters)` : full
        this.host.log.warn('supervised worker failed to start', { name, err: message })
        launchedNow?.()
        await this.proposeQuietly({ c: 'startFailed', name, epoch, error: message })
        return
      }
      this.noteLease()
      if (this.gaps !== gapsBefore || !this.isMine(name, epoch) || !this.host.leaseOk() || this.host.stopped()) {
        if (this.gaps !== gapsBefore) this.host.log.info('a worker factory outlived the lease: its worker is dropped, and the start is tried again', { name })
        launchedNow?.()
        abort.abort('moved')
        await Promise.resolve(worker.terminate?.('moved')).catch(() => {})
        // its init saw this epoch as its fencing token: the next start must not get the same one
        // (reported before the name stops `starting`: meanwhile no start may repeat this epoch)
        if (this.placedHere(name, epoch)) await this.stops.report(name, epoch, true)
        return
      }
      // (a ref fixed at its placement names the worker's id: it takes that one. No worker of
      // this name holds it now: one start per name at a time, and a worker that ends leaves the
      // table before this name may start again; `add` refuses a taken id all the same)
      const now = this.host.state.peek(name)
      const fixed = now?.fx === 1 && now.ref?.node === this.host.nodeId && now.ref.inc === this.host.inc ? now.ref.id : undefined
      const id = this.host.workers.add(worker, abort, undefined, fixed)
      this.host.log.debug('supervised worker started', { name, epoch, worker: id })
      this.running.set(name, { id, epoch })
      this.byId.set(id, name)
      const a = this.announce.get(name)
      if (a) {
        this.announce.delete(name)
        if (a.epoch === epoch) this.host.events?.running?.(name, epoch, { sworm: this.host.sworm, node: this.host.nodeId, inc: this.host.inc, id }, a.by)
      }
      launchedNow?.()
      const ok = await this.reports.report(name, epoch, id)
      if (ok !== true && this.running.get(name)?.id === id) {
        await this.stopLocal(name, 'moved')
        // as above: a next start under this epoch would repeat the fencing token this worker had
        if (ok === undefined && this.placedHere(name, epoch)) await this.stops.report(name, epoch, true)
      }
    } catch (err) {
      this.host.log.warn('could not start a supervised worker; will retry', { name, err: String(err) })
    } finally {
      launchedNow?.()
      this.starting.delete(name)
      // (a start that did not end with its worker running: whatever stopped it, look again)
      if (this.running.get(name)?.epoch !== epoch) this.touch()
      // a start that will not run this epoch here has no one to tell (the log tells the caller)
      if (this.announce.get(name)?.epoch === epoch && this.running.get(name)?.epoch !== epoch && !this.isMine(name, epoch)) this.announce.delete(name)
      if (this.startAgain.delete(name)) this.startIfPlacedHere(name)
    }
  }

  /** Start `name` if the registry places it here and it has no worker yet. */
  private startIfPlacedHere(name: string): void {
    const reg = this.host.state.peek(name)
    if (reg && reg.kind === 'supervised' && reg.node === this.host.nodeId && runningRef(reg) === undefined && reg.epoch !== undefined) this.startSoon(name, reg.epoch)
  }

  /** Track lease gaps; after one, the next start waits for a linearizable read barrier. */
  private noteLease(): void {
    const lapses = this.host.leaseLapses()
    if (!this.host.leaseOk() || lapses !== this.lastLapses) {
      this.needBarrier = true
      this.gaps++
      this.touch()
    }
    this.lastLapses = lapses
  }

  /**
   * Wait until the local registry can be trusted (see start()): at once while the lease held
   * without a gap since the last barrier; else a read barrier asked for after the last gap, and
   * again if another gap came while it was under way (a barrier asked for before a gap does not
   * cover the entries of the gap: a `nodeDown` appended then). Resolves with the gap count the
   * registry is fresh for, and whether it waited for a barrier; undefined while the lease is out.
   */
  private async freshEnough(): Promise<{ gaps: number; waited: boolean } | undefined> {
    this.noteLease()
    if (!this.needBarrier) return { gaps: this.gaps, waited: false }
    for (;;) {
      if (!this.host.leaseOk()) return undefined
      const gaps = this.gaps
      if (!this.barrier || this.barrierGaps !== gaps) {
        this.barrierGaps = gaps
        const barrier: Promise<void> = this.host.read().then(
          () => {
            if (this.barrier === barrier) this.barrier = undefined
            this.noteLease()
            if (this.gaps === gaps && this.host.leaseOk()) this.needBarrier = false
          },
          (err: unknown) => {
            if (this.barrier === barrier) this.barrier = undefined
            throw err
          },
        )
        this.barrier = barrier
      }
      await this.barrier
      this.noteLease()
      if (this.gaps === gaps) return { gaps, waited: true }
    }
  }

  /**
   * Whether the registry places `name` here for `epoch`, to be started, and this incarnation is up
   * in it. (A node declared gone keeps the names its leader has not moved yet, a slice an entry:
   * `moveOff`; it must not start them, even with its lease back, until its registry shows it up
   * again: after that, no `moveOff` takes effect on it.)
   */
  private isMine(name: string, epoch: number): boolean {
    return this.host.state.isUp(this.host.nodeId, this.host.inc) && this.placedHere(name, epoch)
  }

  /**
   * Whether the registry places `name` here for `epoch`, to be started (this node up or not: a
   * start dropped after its `init` saw the epoch asks for a new one even while this node is down;
   * the name is placed here again, under a new epoch, and moved on or started when it is up).
   */
  private placedHere(name: string, epoch: number): boolean {
    const reg = this.host.state.peek(name)
    return (
      !!reg &&
      reg.kind === 'supervised' &&
      reg.node === this.host.nodeId &&
      reg.epoch === epoch &&
      runningRef(reg) === undefined &&
      reg.handoffTo === undefined &&
      !reg.retiring
    )
  }

  private async instantiate(spec: StartSpec): Promise<Worker> {
    let specifier = this.specifiers.get(spec.module)
    if (specifier === undefined) {
      specifier = spec.module.startsWith('.') || isAbsolute(spec.module) ? pathToFileURL(resolvePath(this.host.moduleBase, spec.module)).href : spec.module
      if (this.specifiers.size >= 1024) this.specifiers.clear() // (a few modules in practice)
      this.specifiers.set(spec.module, specifier)
    }
    let mod: Record<string, unknown>
    try {
      let loading = this.modules.get(specifier)
      if (!loading) {
        loading = this.host.loadModule ? this.host.loadModule(specifier) : (import(specifier) as Promise<Record<string, unknown>>)
        this.modules.set(specifier, loading)
        loading.catch(() => this.modules.delete(specifier)) // a module that failed to load is tried again next time
      }
      mod = await loading
    } catch (err) {
      throw new Error(`cannot import module ${JSON.stringify(spec.module)}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
    const factory = mod[spec.fn]
    if (typeof factory !== 'function') throw new Error(`module ${JSON.stringify(spec.module)} has no exported function ${JSON.stringify(spec.fn)}`)
    const worker = (await (factory as (...a: unknown[]) => unknown)(...spec.args)) as unknown
    if (!isObj(worker)) throw new Error(`factory ${spec.fn} returned ${worker === null ? 'null' : typeof worker}, not a worker object`)
    return worker as Worker
  }

  private async stopLocal(name: string, reason: 'moved' | 'lease' | 'normal'): Promise<void> {
    const r = this.running.get(name)
    if (!r) return
    this.host.log.debug('stopping supervised worker', { name, epoch: r.epoch, worker: r.id, reason })
    this.expectedExit.add(r.id)
    await this.host.workers.stop(r.id, reason)
  }

  /** The worker moves: take its state and report it to the log. */
  private async handoff(name: string, epoch: number): Promise<void> {
    const r = this.running.get(name)
    if (!r || r.epoch !== epoch || this.handingOff.has(name)) return
    // (paced: it may run after a pause in which the lease ran out and the name moved; the user's
    // beginHandoff must not run then, the fence stops the worker instead: once, not once for
    // every handoff waiting, each going through every worker)
    this.noteLease()
    if (!this.host.leaseOk()) {
      if (this.leaseHeld) void this.fenceForLease()
      return
    }
    this.handingOff.add(name)
    try {
      this.expectedExit.add(r.id)
      let state: unknown
      try {
        state = await this.host.workers.handoff(r.id)
      } catch (err) {
        this.host.log.warn('beginHandoff failed; the worker moves without state', { name, err: String(err) })
        state = undefined
      }
      const problem = encodingProblem(state, 'the state beginHandoff returned', this.host.maxStateBytes) ?? this.stateSizeProblem(state)
      if (problem !== undefined) {
        // it travels in the Raft log: refused here, rather than changed on the way, or proposed
        // in an entry too large to replicate (its report would be retried for ever)
        this.host.log.error('handoff state cannot travel; the worker moves without state', { name, problem })
        state = undefined
      }
      this.handedOff.set(name, { epoch, state })
      this.host.events?.handedOff?.(name)
      await this.proposeHandedOff(name, epoch)
    } finally {
      this.handingOff.delete(name)
    }
  }

  /** The name was unregistered: stop the worker, then confirm so the name is released. */
  private async retire(name: string, epoch: number): Promise<void> {
    if (this.retiring.has(name)) return
    this.retiring.add(name)
    try {
      const r = this.running.get(name)
      if (r) await this.stopLocal(name, 'normal')
      if (this.starting.has(name)) return // the start sees the name retiring and backs off; reconcile() confirms
      await this.stops.report(name, epoch, false)
    } finally {
      this.retiring.delete(name)
      this.touch()
    }
  }

  /** Why `state` is too large to hand over (see {@link SupervisorHost.maxStateBytes}), if it is. */
  private stateSizeProblem(state: unknown): string | undefined {
    const max = this.host.maxStateBytes
    if (state === undefined) return undefined
    let size: number
    try {
      size = pack(state).length
    } catch (err) {
      return `the state beginHandoff returned cannot be encoded: ${String(err)}`
    }
    return size > max ? `the state beginHandoff returned is ${size} bytes encoded, more than maxMessageBytes (${max})` : undefined
  }

  /** Report a finished handoff (reconcile() repeats it until the log has it). */
  private async proposeHandedOff(name: string, epoch: number): Promise<void> {
    const h = this.handedOff.get(name)
    const state = h && h.epoch === epoch ? h.state : undefined
    try {
      await this.host.propose({ c: 'handedOff', name, epoch, state })
      if (this.handedOff.get(name)?.epoch === epoch) this.handedOff.delete(name)
    } catch (err) {
      if (err instanceof InvalidArgumentError && state !== undefined && this.handedOff.get(name)?.epoch === epoch) {
        // refused by the Raft node (a state within maxMessageBytes, but of so many small parts that
        // a follower would not decode its entry): the worker moves without it rather than never
        this.host.log.error('handoff state cannot travel; the worker moves without state', { name, problem: err.message })
        this.handedOff.set(name, { epoch, state: undefined })
      }
      // retried by reconcile()
      this.touch()
    }
  }

  /**
   * Periodic duty: fence when the lease is gone; otherwise bring reality in line with the
   * registry (start what is placed here and not running, stop what runs here but moved).
   */
  async tick(): Promise<void> {
    if (this.host.stopped()) return
    this.noteRestore()
    this.noteLease()
    if (!this.host.leaseOk()) {
      await this.fenceForLease()
      return
    }
    if (!this.leaseHeld) {
      this.leaseHeld = true
      this.touch()
      if (this.leaseEverHeld) {
        this.host.log.info('lease renewed')
        this.host.events?.leaseRenewed?.()
      }
      this.leaseEverHeld = true
    }
    if (this.reconciling) return
    this.reconciling = true
    try {
      await this.reconcile()
    } finally {
      this.reconciling = false
    }
  }

  /** Stop every supervised worker at once (this node may be cut off from the cluster). */
  /**
   * The lease ran out (seen by the tick, the lease-end timer, or the check before a message): say
   * so once (log line, `leaseLost` with the number of workers stopped), then fence.
   */
  fenceForLease(): Promise<void> {
    if (this.leaseHeld) {
      this.leaseHeld = false
      this.host.log.warn('lease lost: stopping supervised workers until the cluster is reachable', { workers: this.running.size })
      this.host.events?.leaseLost?.(this.running.size)
    }
    return this.fence()
  }

  /** Stop every supervised worker of this node (reason `lease`). */
  fence(): Promise<void> {
    const names = [...this.running.keys()]
    return Promise.all(names.map((n) => this.stopLocal(n, 'lease'))).then(() => undefined)
  }

  /**
   * A snapshot replaced the registry's tables (no change says what it brought): reconcile() goes
   * through the new ones from the start, and the callers waiting for a start the snapshot holds
   * are answered (found in CI: a node that caught up by a snapshot during a burst of supervised
   * registrations left its callers waiting until their deadline, then failing, for workers that ran).
   */
  private noteRestore(): void {
    const { state } = this.host
    if (state.restores === this.restoresSeen) return
    this.restoresSeen = state.restores
    this.scanPlaced.restart()
    this.touch()
    for (const name of this.waiters.keys()) {
      const reg = state.peek(name)
      const ref = reg?.kind === 'supervised' ? runningRef(reg) : undefined
      if (ref && !reg!.retiring) this.settle(name, { ok: true, ref })
    }
  }

  /**
   * Something that may change what reconcile() finds happened (a registry change about a
   * supervised name or a node, a worker that ended, a start that did not end running, a lease
   * gap, a report that failed): its scans go through everything again.
   */
  private touch(): void {
    this.gen++
  }

  private async reconcile(): Promise<void> {
    const me = this.host.nodeId
    const { state } = this.host
    const needStart: Array<[string, number]> = []
    const needRestart: Array<[string, number]> = []
    const retire: Array<[string, number]> = []
    const handoff: Array<[string, number]> = []
    const finishHandoff: Array<[string, number]> = []
    // Go on through this node's names where the last tick stopped, at most reconcileSlice of them
    // (and as many of the workers running here): a node running 100k workers then spends a few
    // ms a tick here, not 150 ms, and goes through them all every few ticks. Once both scans went
    // through everything with nothing new since (see touch()), they rest: an idle node holding
    // 10k workers spent 7-10% of a core here (a pass every tick). They look again every
    // RECONCILE_RECHECK_MS all the same. (A snapshot installed: tick() saw it, see noteRestore().)
    const now = this.host.clock.now()
    if (this.nameChanged && now - this.nameChangesPassAt >= NAME_CHANGES_PASS_MS) {
      this.nameChanged = false
      this.nameChangesPassAt = now
      this.touch()
    }
    if (this.placedSeen === this.gen && this.runningSeen === this.gen && now - this.quietAt >= this.recheckMs) this.touch()
    const gen = this.gen
    const scanning = this.placedSeen !== gen || this.runningSeen !== gen
    let placed: string[] = []
    if (this.placedSeen !== gen) {
      const slice = this.scanPlaced.take(this.reconcileSlice, gen)
      placed = slice.items
      if (slice.passFrom !== undefined) this.placedSeen = slice.passFrom
    }
    const up = state.isUp(me, this.host.inc)
    for (const name of placed) {
      const reg = state.peek(name)
      if (!reg || reg.kind !== 'supervised' || reg.node !== me) continue
      const local = this.running.get(reg.name)
      if (reg.retiring) {
        if (!this.starting.has(reg.name)) retire.push([reg.name, reg.epoch!])
        continue
      }
      if (reg.handoffTo !== undefined) {
        if (local && local.epoch === reg.epoch) handoff.push([reg.name, reg.epoch!])
        else if (!local && !this.handingOff.has(reg.name)) finishHandoff.push([reg.name, reg.epoch!])
        continue
      }
      // (nothing to start while this node is down in the registry: names left on it wait to be
      // moved, or for it to be up again; see isMine)
      if (!up) continue
      if (runningRef(reg) === undefined) {
        if (!local && !this.starting.has(reg.name) && this.queued.get(reg.name) !== reg.epoch) needStart.push([reg.name, reg.epoch!])
      } else if (reg.ref!.inc === this.host.inc && (!local || local.id !== reg.ref!.id)) {
        // the registry names a worker of ours that is gone (fenced): start a new incarnation
        if (!this.starting.has(reg.name)) needRestart.push([reg.name, reg.epoch!])
      }
    }
    // state taken from a worker that moved, every tick (not only in this tick's slice): until the
    // log has it, the name runs nowhere
    const finishing = new Set(finishHandoff.map(([name]) => name))
    for (const [name, h] of this.handedOff) {
      const reg = state.peek(name)
      if (!reg || reg.epoch !== h.epoch || reg.handoffTo === undefined) this.handedOff.delete(name)
      else if (reg.kind === 'supervised' && reg.node === me && !reg.retiring && !finishing.has(name) && !this.running.has(name) && !this.handingOff.has(name)) {
        finishHandoff.push([name, h.epoch])
      }
    }
    // workers running here that the registry no longer places here
    const moved: string[] = []
    let running: Array<[string, Running]> = []
    if (this.runningSeen !== gen) {
      const slice = this.scanRunning.take(this.reconcileSlice, gen)
      running = slice.items
      if (slice.passFrom !== undefined) this.runningSeen = slice.passFrom
    }
    if (scanning && this.placedSeen === gen && this.runningSeen === gen) this.quietAt = now
    for (const [name, r] of running) {
      const reg = state.peek(name)
      if (!reg || reg.kind !== 'supervised' || reg.node !== me || reg.epoch !== r.epoch) moved.push(name)
    }
    // act after both passes: what they start may change the registry and the maps they went through
    for (const [name, epoch] of retire) void this.retire(name, epoch)
    for (const [name, epoch] of handoff) void this.handoff(name, epoch)
    for (const [name, epoch] of finishHandoff) {
      // the worker is gone already (handed over, or fenced): finish the move, with the state
      // if we took it, so the name runs again on its target
      this.handingOff.add(name)
      void this.proposeHandedOff(name, epoch).finally(() => this.handingOff.delete(name))
    }
    for (const name of moved) void this.stopLocal(name, 'moved')
    for (const [name, epoch] of needStart) this.startSoon(name, epoch)
    for (const [name, epoch] of needRestart) {
      this.starting.add(name)
      // (one entry for many: after a lease gap, every worker of this node is here at once)
      void this.stops.report(name, epoch, true).finally(() => {
        // placed here anew meanwhile (its start found it still restarting): start it now, not at
        // reconcile()'s next pass over it
        this.starting.delete(name)
        this.touch()
        if (this.startAgain.delete(name)) this.startIfPlacedHere(name)
      })
    }
  }
}
