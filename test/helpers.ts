/** Small helpers shared by tests: temp dirs, free ports, waiting for a condition with a deadline. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePorts } from '../tools/cluster/processes.js'

/** A fresh temporary directory; removed by the returned cleanup. */
export function tempDir(prefix = 'sworm-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

export { freePorts }

/** Resolve once `cond()` is true; reject with `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    if (await cond()) return
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** The cluster secret of in-process test clusters. */
export const TEST_SECRET = '3f9a1c7e5b2d8046a1e9c3b7d5f20846' // 16 random bytes, hex

/**
 * `n` sworms named `name` in this process (real ws on loopback, LevelDB in a temp dir) that have
 * elected a leader; `stop()` stops them and removes the data.
 */
export async function startSworms(n: number, name: string, opts: Partial<import('../src/sworm.js').SwormOptions> = {}) {
  const { Sworm } = await import('../src/sworm.js')
  const { silentLogger } = await import('../src/raft/types.js')
  const { dir, cleanup } = tempDir()
  const ports = await freePorts(n)
  const peers = Object.fromEntries(ports.map((p, i) => [`n${i + 1}`, `ws://127.0.0.1:${p}`]))
  const nodes = await Promise.all(
    Object.entries(peers).map(([nodeId, listen]) =>
      Sworm.start({ name, nodeId, listen, peers, dataDir: `${dir}/${nodeId}`, secret: TEST_SECRET, logger: silentLogger, ...opts }),
    ),
  )
  await waitFor(() => nodes.some((s) => s.status().role === 'leader'), 10_000, 'a leader')
  return {
    nodes,
    peers,
    dir,
    async stop() {
      await Promise.all(nodes.map((s) => s.stop().catch(() => {})))
      cleanup()
    },
  }
}
