/**
 * A node's own reports to the registry (its `nodeUp` announcement, and its supervisor's
 * `startedMany` / `stopped` / `startFailed` / `handedOff`) are proposed as idempotent, so a copy whose
 * leader is gone without an answer goes to the next leader at once instead of waiting out its
 * deadline. Found beside a CPU burner (failed on fa01ce6, and on a41c90f): with leaders changing,
 * announcements and starts waited 30 s, and callers failed with "this node is not up in the
 * cluster yet". A second copy applied is harmless: see registry-reports.test.ts; the resend itself
 * is tested in raft-node.test.ts.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { RaftNode } from '../src/raft/node.js'
import { startSworms } from './helpers.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))

t.test("a node's announcement and its supervisor's reports are proposed as idempotent, with their checks", async (t) => {
  const proposed: Array<{ c: string; idempotent: boolean; cmd: Record<string, unknown> }> = []
  const original = RaftNode.prototype.propose
  RaftNode.prototype.propose = function (this: RaftNode, cmd: unknown, opts?: { idempotent?: boolean }) {
    const c = (cmd as { c?: unknown } | null)?.c
    if (typeof c === 'string') proposed.push({ c, idempotent: opts?.idempotent === true, cmd: cmd as Record<string, unknown> })
    return original.call(this, cmd, opts) as never
  } as typeof original
  t.teardown(() => {
    RaftNode.prototype.propose = original
  })
  const c = await startSworms(1, 'idem')
  t.teardown(() => c.stop())
  const s = c.nodes[0]!
  const ref = await s.registerName('w', { module: WORKERS, fn: 'counter', args: ['idem/w'] })
  t.ok(ref, 'the supervised worker runs')
  const of = (cmd: string): boolean[] => proposed.filter((p) => p.c === cmd).map((p) => p.idempotent)
  t.ok(of('nodeUp').length >= 1 && of('nodeUp').every(Boolean), `nodeUp: ${JSON.stringify(of('nodeUp'))}`)
  t.equal(proposed.find((p) => p.c === 'nodeUp')?.cmd.prev, '', 'nodeUp names the incarnation it replaces (none)')
  t.equal(proposed.find((p) => p.c === 'supervise')?.cmd.ue, 1, 'supervise asks for epochs never reused')
  t.ok(of('startedMany').length >= 1 && of('startedMany').every(Boolean), `startedMany: ${JSON.stringify(of('startedMany'))}`)
})
