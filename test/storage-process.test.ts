/**
 * Storage faults on real processes, real LevelDB and a real filesystem:
 * - a full disk (a small tmpfs holding one node's data directory, filled up): the node stops
 *   serving with one log line while the others go on; once space is freed it reloads its disk and
 *   catches up, without a restart;
 * - a corrupt entry in the middle of a follower's log, and a corrupt snapshot: found at restart,
 *   repaired (one log line), and the node catches up from the leader.
 * - a full disk under a sworm node with supervised workers: they move to the other nodes, and the
 *   node takes work again once space is freed.
 * The full-disk cases need root (to mount the tmpfs) and skips with the reason otherwise.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { levelStorageKeys } from '../src/raft/storage/level-storage.js'
import type { KvOutput } from '../src/testkit/linearizability.js'
import { fileURLToPath } from 'node:url'
import type { AwaitAnswersResult, DashStatus, RegisterSupervisedManyResult } from '../tools/cluster/sworm-protocol.js'
import { pollUntil, startCluster, type Cluster } from '../tools/cluster/raft-cluster.js'
import { startSwormCluster } from '../tools/cluster/sworm-cluster.js'

const WORKERS = fileURLToPath(new URL('../tools/cluster/workers.js', import.meta.url))

/** Write keys `${prefix}0..n-1` through whichever of `nodes` answers; returns them. */
async function writeKeys(c: Cluster, nodes: string[], prefix: string, n: number, conc = 8): Promise<Map<string, string>> {
  const acked = new Map<string, string>()
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++
      const key = `${prefix}${i}`
      for (let attempt = 0; ; attempt++) {
        const node = nodes[(i + attempt) % nodes.length]!
        try {
          const r = await c.request<KvOutput>(node, { op: 'propose', input: { op: 'put', key, value: `v${i}` } }, 10_000)
          if ('ok' in r && r.ok) acked.set(key, `v${i}`)
          break
        } catch (err) {
          if (attempt > 20) throw err
          await new Promise((r) => setTimeout(r, 100))
        }
      }
    }
  }
  await Promise.all(Array.from({ length: conc }, worker))
  return acked
}

async function holdsAll(c: Cluster, node: string, acked: Map<string, string>, timeoutMs: number): Promise<void> {
  const keys = [...acked.keys()]
  await pollUntil(
    async () => {
      const vals = await c.request<Array<string | null>>(node, { op: 'localGetMany', keys }, 5000).catch(() => undefined)
      return vals && keys.every((k, i) => vals[i] === acked.get(k)) ? true : undefined
    },
    timeoutMs,
    `${node} to hold all ${keys.length} acknowledged keys`,
    50,
  )
}

/**
 * A small tmpfs, unmounted and removed at the end of `t`; undefined (with a comment saying why)
 * where it cannot be mounted (not Linux, not root, no permission).
 */
async function smallDisk(t: Test, size: string): Promise<string | undefined> {
  const mnt = await mkdtemp(join(tmpdir(), 'sworm-fulldisk-'))
  t.teardown(() => rm(mnt, { recursive: true, force: true }))
  let why: string | undefined
  if (process.platform !== 'linux') why = 'not Linux'
  else if (process.getuid?.() !== 0) why = 'mounting a tmpfs needs root'
  else {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt], { stdio: 'pipe' })
    } catch (err) {
      why = `cannot mount a tmpfs here: ${String(err).split('\n')[0]}`
    }
  }
  if (why) {
    t.comment(`skipped: ${why}`)
    return undefined
  }
  t.teardown(() => {
    try {
      execFileSync('umount', ['-l', mnt], { stdio: 'pipe' })
    } catch {
      // already gone
    }
  })
  return mnt
}

/** Fill the filesystem of `dir` with one file; returns its path. */
async function fill(dir: string): Promise<string> {
  const filler = join(dir, 'filler')
  await writeFile(filler, Buffer.alloc(32 * 1024 * 1024)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOSPC') throw err
  })
  return filler
}

t.test('a full disk: the node stops serving, the cluster goes on, and the node rejoins once space is freed', { timeout: 120_000 }, async (t) => {
  const mnt = await smallDisk(t, '24m')
  if (!mnt) return
  const c = await startCluster({ n: 3, logLevel: 'info', dataDirs: { n3: join(mnt, 'n3') } })
  t.teardown(() => c.stopAll())
  await c.waitForLeader(15_000)
  if ((await c.status('n3')).role === 'leader') await c.request('n3', { op: 'transfer', to: 'n1' })
  const before = await writeKeys(c, ['n1', 'n2'], 'before', 200)
  await holdsAll(c, 'n3', before, 15_000)

  // fill the filesystem
  const filler = await fill(mnt)
  const during = await writeKeys(c, ['n1', 'n2'], 'during', 3000, 16)
  t.equal(during.size, 3000, 'the cluster kept committing through the healthy nodes')
  await pollUntil(async () => ((await c.status('n3')).failed ? true : undefined), 30_000, 'n3 to report its storage failure', 50)
  const st = await c.status('n3')
  t.match(st.failed, /No space left|ENOSPC|IO error/i, `n3 says why: ${st.failed}`)
  await t.rejects(c.request('n3', { op: 'propose', input: { op: 'put', key: 'refused', value: '1' } }, 5000), { code: 'STORAGE' }, 'and refuses to serve')
  const stopLines = c.logs('n3').filter((l) => /stopped serving/.test(l))
  t.equal(stopLines.length, 1, 'one log line about it')

  await rm(filler)
  await pollUntil(async () => ((await c.status('n3')).failed === undefined ? true : undefined), 60_000, 'n3 to serve again', 100)
  t.ok(c.logs('n3').some((l) => /storage works again/.test(l)), 'n3 says it serves again')
  const after = await writeKeys(c, ['n1', 'n2', 'n3'], 'after', 100)
  for (const m of [before, during, after]) await holdsAll(c, 'n3', m, 30_000)
  t.pass('n3 caught up: it holds everything acknowledged before, during and after the fault')
  t.ok(c.isAlive('n3'), 'without a restart')
})

/** Flip one byte of the record at `key` in a stopped node's LevelDB. */
async function flipByte(dataDir: string, key: (db: Level<Uint8Array, Uint8Array>) => Promise<Uint8Array>): Promise<string> {
  const db = new Level<Uint8Array, Uint8Array>(dataDir, { keyEncoding: 'view', valueEncoding: 'view' })
  await db.open()
  try {
    const k = await key(db)
    const v = (await db.get(k))!.slice()
    v[v.length - 1]! ^= 0x40
    await db.put(k, v, { sync: true })
    return Buffer.from(k).toString('hex')
  } finally {
    await db.close()
  }
}

/** The key of an entry in the middle of the stored log. */
async function middleEntry(db: Level<Uint8Array, Uint8Array>): Promise<Uint8Array> {
  const keys = await db.keys({ gte: levelStorageKeys.entry(0), lt: Uint8Array.of(0x66) }).all()
  if (keys.length < 3) throw new Error(`only ${keys.length} entries stored`)
  return keys[Math.floor(keys.length / 2)]!
}

for (const what of ['an entry in the middle of the log', 'the snapshot'] as const) {
  t.test(`corrupt ${what} on a follower: repaired at restart, caught up from the leader`, { timeout: 120_000 }, async (t) => {
    const c = await startCluster({ n: 3, logLevel: 'info', snapshotEvery: 200 })
    t.teardown(() => c.stopAll())
    const leader = await c.waitForLeader(15_000)
    const victim = c.ids.find((id) => id !== leader)!
    const acked = await writeKeys(c, c.ids.filter((id) => id !== victim), 'k', what === 'the snapshot' ? 700 : 300)
    await holdsAll(c, victim, acked, 15_000)
    if (what === 'the snapshot') {
      await pollUntil(async () => ((await c.status(victim)).snapshotIndex > 0 ? true : undefined), 10_000, 'a snapshot on the victim', 50)
    }
    await c.kill(victim)
    const dataDir = join(c.dir, victim)
    const k = await flipByte(dataDir, what === 'the snapshot' ? async () => levelStorageKeys.snapshot() : middleEntry)
    t.comment(`flipped a byte of record ${k} on ${victim}`)
    const more = await writeKeys(c, c.ids.filter((id) => id !== victim), 'm', 100)
    await c.restart(victim)
    const repaired = c.logs(victim).filter((l) => /repaired corrupt raft storage/.test(l))
    t.equal(repaired.length, 1, 'one log line says what was repaired')
    await holdsAll(c, victim, acked, 30_000)
    await holdsAll(c, victim, more, 30_000)
    await pollUntil(async () => ((await c.status(victim)).recoveringUpTo === undefined ? true : undefined), 15_000, 'the victim to vote again', 50)
    t.ok(c.logs(victim).some((l) => /caught up past the log entries lost/.test(l)), 'it says when it votes again')
    const after = await writeKeys(c, [victim], 'after', 50)
    t.equal(after.size, 50, 'and it serves writes')
  })
}

t.test('a full disk under a sworm node: its workers move away, and it takes work again once space is freed', { timeout: 180_000 }, async (t) => {
  const mnt = await smallDisk(t, '24m')
  if (!mnt) return
  const c = await startSwormCluster({ n: 3, logLevel: 'info', dataDirs: { n3: join(mnt, 'n3') }, leaseTimeoutMs: 1000, maxClockDriftMs: 250 })
  t.teardown(() => c.stopAll())
  await c.waitForLeader(15_000)
  const names = Array.from({ length: 60 }, (_, i) => `d${i}`)
  const reg = await c.request<RegisterSupervisedManyResult>('n1', { op: 'registerSupervisedMany', prefix: 'd', count: 60, concurrency: 8, module: WORKERS, fn: 'counter' }, 60_000)
  t.equal(reg.ok, 60, `60 supervised workers: ${JSON.stringify(reg.perNode)}`)
  t.ok((reg.perNode.n3 ?? 0) > 0, 'some on n3')

  const filler = await fill(mnt)
  // writes go on through n1 and n2; n3 fails at its next write
  await c.request('n1', { op: 'registerMany', prefix: 'fill', count: 2000, concurrency: 32 }, 60_000)
  await pollUntil(async () => ((await c.status('n3')).storageFailure ? true : undefined), 30_000, 'n3 to report its storage failure', 50)
  t.pass(`n3 stopped serving: ${(await c.status('n3')).storageFailure}`)
  await pollUntil(
    async () => ((await c.request<string[]>('n3', { op: 'aliveCounters', prefix: 'd' })).length === 0 ? true : undefined),
    30_000,
    'n3 to fence its workers',
    50,
  )
  t.pass('n3 fenced its workers (its lease ran out)')
  const moved = await c.request<AwaitAnswersResult>('n1', { op: 'awaitAnswers', names, msg: 'get', callTimeoutMs: 500, everyMs: 20, timeoutMs: 30_000, skipNodes: ['n3'] }, 40_000)
  t.same(moved.missing, [], 'every worker answers from n1 or n2')

  await rm(filler)
  await pollUntil(async () => ((await c.status('n3')).storageFailure === undefined ? true : undefined), 60_000, 'n3 to serve again', 100)
  t.pass('n3 serves again, without a restart')
  // it was declared gone meanwhile: it comes back up in the registry once it has caught up
  await pollUntil(
    async () => ((await c.request<DashStatus>('n1', { op: 'dashStatus' })).nodes.some((n) => n.node === 'n3' && n.up) ? true : undefined),
    30_000,
    'n3 to be up in the registry again',
    100,
  )
  const more = await c.request<RegisterSupervisedManyResult>('n1', { op: 'registerSupervisedMany', prefix: 'e', count: 30, concurrency: 8, module: WORKERS, fn: 'counter' }, 60_000)
  t.equal(more.ok, 30)
  t.ok((more.perNode.n3 ?? 0) > 0, `n3 takes new workers: ${JSON.stringify(more.perNode)}`)
  await pollUntil(
    async () => {
      const dumps = await Promise.all(c.ids.map((id) => c.request(id, { op: 'dump' })))
      return dumps.every((d) => JSON.stringify(d) === JSON.stringify(dumps[0])) ? true : undefined
    },
    30_000,
    'every node to hold the same registry',
    100,
  )
  const alive = (await Promise.all(c.ids.map((id) => c.request<string[]>(id, { op: 'aliveCounters', prefix: 'd' })))).flat()
  t.same(alive.filter((n) => n.includes('*')), [], 'no worker runs twice in a process')
  t.equal(new Set(alive).size, alive.length, 'nor in two processes')
  t.equal(alive.length, 60, 'every one of the first 60 runs once')
  t.same(c.unexpectedExits(), [], 'no process crashed')
})
