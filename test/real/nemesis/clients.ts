/**
 * The clients of a real-process nemesis run: static registrations ("s:<node>:<k>", echo workers of
 * that node) registered, unregistered and read through random usable nodes, into the history the
 * linearizability checker reads; and calls to the supervised workers, whose handling the overlap
 * check looks at.
 * @module
 */
import type { WorkerRef } from '../../../src/index.js'
import type { KvOperation } from '../../../src/testkit/linearizability.js'
import { STATIC_KEYS, sleep, wall, type NemesisRun } from './state.js'

const valueOf = (ref: WorkerRef): string => `v${ref.inc}.${ref.id}`

/** Concurrent clients, each running one operation after another until {@link stop}. */
export class Clients {
  private on = true
  private readonly loops: Array<Promise<void>>

  /** Start `n` clients; `names` supervised names (`w<k>`) exist to call. */
  constructor(
    private readonly run: NemesisRun,
    private readonly names: number,
    n: number,
  ) {
    this.loops = Array.from({ length: n }, async () => {
      while (this.on) {
        await this.op()
        await sleep(5 + run.r() * 20)
      }
    })
  }

  /** No new operations; resolves once every client has ended. */
  async stop(): Promise<void> {
    this.on = false
    await Promise.all(this.loops)
  }

  private async op(): Promise<void> {
    const { cl, r, history } = this.run
    const run = this.run
    const nodes = run.usable()
    if (!nodes.length) return
    const via = run.pick(nodes)
    const owner = run.pick(run.ids)
    const key = `s:${owner}:${Math.floor(r() * STATIC_KEYS)}`
    if (r() < 0.3) {
      // a call to a supervised worker: not in the history; its handling is logged as the
      // worker's activity, which the overlap check looks at
      await cl.request(via, { op: 'call', name: `w${Math.floor(r() * this.names)}`, msg: 'inc' }, 3000).catch(() => {})
      return
    }
    const x = r()
    if (x < 0.45) {
      if (!run.usable().includes(owner)) return
      let ref: WorkerRef
      const ownerProc = run.procOf(owner)
      try {
        ref = await cl.request<WorkerRef>(owner, { op: 'spawnEcho', tag: key }, 3000)
      } catch {
        return
      }
      const op: KvOperation = { client: run.clientSeq++, input: { op: 'putIfAbsent', key, value: valueOf(ref) }, call: wall(), ret: Infinity, output: undefined }
      history.push(op)
      await this.settle(op, () => cl.request<boolean>(via, { op: 'registerRef', name: key, ref }).then((ok) => ({ ok })))
      if (run.procOf(owner) !== ownerProc || !cl.isAlive(owner)) {
        // the worker's process died meanwhile: its node drops the name whenever it learns of it
        history.push({ client: `system-${run.clientSeq++}`, input: { op: 'delete', key }, call: op.call, ret: Infinity, output: undefined })
      }
    } else if (x < 0.7) {
      const op: KvOperation = { client: run.clientSeq++, input: { op: 'delete', key }, call: wall(), ret: Infinity, output: undefined }
      history.push(op)
      await this.settle(op, () => cl.request<boolean>(via, { op: 'unregister', name: key }).then((ok) => ({ ok })))
    } else {
      const op: KvOperation = { client: run.clientSeq++, input: { op: 'get', key }, call: wall(), ret: Infinity, output: undefined }
      history.push(op)
      await this.settle(op, () => cl.request<WorkerRef | null>(via, { op: 'whereis', name: key, consistent: true }).then((ref) => ({ value: ref ? valueOf(ref) : undefined })))
    }
  }

  /** Run `op` and note its outcome in the history. */
  private async settle(op: KvOperation, run: () => Promise<KvOperation['output']>): Promise<void> {
    const { history } = this.run
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
}
