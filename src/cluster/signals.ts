/**
 * A graceful stop on the signals a process manager sends (Kubernetes, systemd and Docker send
 * SIGTERM, then SIGKILL after a grace period): every sworm of the process that asked for it stops
 * with a drain (its supervised workers handed over to other nodes, its names dropped at once).
 *
 * One listener per signal for the whole process, however many sworms run in it. When the signal
 * comes, the listener stops the sworms, then removes itself and, if nothing else in the process
 * listened for that signal when it came, raises it again, so the process ends as it would have
 * without Sworm. A second signal while they stop acts as if Sworm were not there. An app that has its own handler keeps control of
 * when it exits: it should `await sworm.stop()` (which waits for the stop already under way).
 * @module
 */

/**
 * Listeners of the `signal-exit` package (used by many tools to run exit hooks), which it counts
 * on the process: they end the process on a signal only when no other listener is there, so they
 * are not a handler that will end it (they will, once Sworm's listener is gone and the signal is
 * raised again).
 */
function signalExitListeners(): number {
  const v4 = (globalThis as Record<symbol, unknown>)[Symbol.for('signal-exit emitter')] as { count?: unknown } | undefined
  const v3 = (process as unknown as { __signal_exit_emitter__?: { count?: unknown } }).__signal_exit_emitter__
  const n = (x: { count?: unknown } | undefined): number => (typeof x?.count === 'number' ? x.count : 0)
  return n(v4) + (v3 !== v4 ? n(v3) : 0)
}

/** What a signal stops: resolves once the sworm is stopped (never rejects). */
type Stopper = (signal: NodeJS.Signals) => Promise<void>

const stoppers = new Map<NodeJS.Signals, Set<Stopper>>()
const listeners = new Map<NodeJS.Signals, () => void>()

function listen(signal: NodeJS.Signals): void {
  if (listeners.has(signal)) return
  let stopping = false
  const remove = (): void => {
    process.removeListener(signal, fn)
    if (listeners.get(signal) === fn) listeners.delete(signal)
  }
  const fn = (): void => {
    if (stopping) {
      // a second signal while stopping: as if Sworm were not there
      remove()
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
      return
    }
    stopping = true
    // Counted now: a listener added with `once` is already gone by the time the stop ends.
    const others = process.listenerCount(signal) - 1 - signalExitListeners()
    const list = [...(stoppers.get(signal) ?? [])]
    stoppers.delete(signal)
    // The listener stays until the stop ends: signal-exit's listeners, called after this one in
    // the same dispatch, end the process at once when they find themselves alone.
    void Promise.allSettled(list.map((stop) => stop(signal))).then(() => {
      const still = listeners.get(signal) === fn
      remove()
      // nobody else handles it: end the process as the signal would have (signal-exit's
      // listeners, now alone, end it the same way)
      if (still && others <= 0) process.kill(process.pid, signal)
    })
  }
  listeners.set(signal, fn)
  process.on(signal, fn)
}

/**
 * Stop through `stop` when one of `signals` reaches the process. Returns the function that undoes
 * it (called when the sworm stops by itself).
 */
export function stopOnSignals(signals: readonly NodeJS.Signals[], stop: Stopper): () => void {
  for (const sig of signals) {
    let set = stoppers.get(sig)
    if (!set) stoppers.set(sig, (set = new Set()))
    set.add(stop)
    listen(sig)
  }
  return () => {
    for (const sig of signals) {
      const set = stoppers.get(sig)
      set?.delete(stop)
      if (set && set.size === 0) {
        stoppers.delete(sig)
        const l = listeners.get(sig)
        if (l) process.removeListener(sig, l)
        listeners.delete(sig)
      }
    }
  }
}
