/**
 * Issue #12 on real node processes (WebSockets, LevelDB): a node that fell behind a compacted log
 * catches up from a snapshot sent in many small chunks (512 B), and gets all of it, intact,
 * through what a real cluster does to a transfer:
 * - a link that loses messages and flips bits in the chunks it carries;
 * - a cut link in the middle of the transfer (which then resumes where it was);
 * - the leader killed in the middle of the transfer (the new leader sends its own);
 * - the receiving node killed in the middle of the transfer (it starts over after its restart).
 * Each time, the node ends up holding exactly the registry the others hold.
 */
import t from 'tap'
import { pollUntil, startSwormCluster, type SwormCluster } from '../tools/cluster/sworm-cluster.js'

type Stats = {
  snapshotIndex: number
  receiving: { index: number; received: number; total: number } | undefined
  corrupted: number
  sending: Array<{ to: string; index: number; acked: number; total: number }>
}

const stats = (c: SwormCluster, id: string): Promise<Stats> => c.request<Stats>(id, { op: 'snapshotStats' }, 30_000)

t.test('snapshots in chunks between real processes, through lost, corrupt and cut links, a dead leader and a dead receiver', { timeout: 600_000 }, async (t) => {
  const c = await startSwormCluster({ n: 5, name: 'snapx', snapshotEvery: 500, maxLogEntries: 1000, snapshotChunkBytes: 512, requestTimeoutMs: 20_000, ipcTimeoutMs: 60_000 })
  t.teardown(() => c.stopAll())
  let leader = await c.waitForLeader(20_000)
  const others = c.ids.filter((id) => id !== leader)
  const from = others[0]! // registers every name (its workers stay up: it is never killed)
  const victim = others[others.length - 1]!
  let batch = 0
  const register = async (count: number): Promise<void> => {
    const r = await c.request<{ ok: number }>(from, { op: 'registerMany', prefix: `b${batch++}-`, count, concurrency: 64 }, 120_000)
    t.equal(r.ok, count, `${count} names registered`)
  }
  /** The victim holds what `from` holds, from a snapshot at least as new as `since`. */
  const caughtUp = async (since: number, what: string): Promise<void> => {
    let seen = ''
    await pollUntil(
      async () => {
        const [v, f, s] = await Promise.all([c.status(victim, 30_000), c.status(from, 30_000), stats(c, victim)])
        seen = `names ${v.names} of ${f.names}, commit ${v.commit} of ${f.commit}, snapshot ${s.snapshotIndex} (at least ${since} wanted)`
        return v.names === f.names && v.commit >= f.commit - 5 && s.snapshotIndex >= since ? true : undefined
      },
      120_000,
      `${victim} catches up (${what})`,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; last seen: ${seen}`)
    })
    t.pass(`${victim} holds every name (${what})`)
  }
  /**
   * Kill the victim, let the others compact past it, restart it: it needs a snapshot. Returns the
   * oldest snapshot index among the others: whichever of them sends the victim a snapshot (the
   * leader, or another after the leader is killed), it is at least that new. (Members snapshot at
   * different indexes: a new leader's snapshot may be older than the old leader's, which this
   * test once waited for in vain.)
   */
  const behind = async (): Promise<number> => {
    await c.kill(victim)
    const before = (await stats(c, leader)).snapshotIndex
    // more than the appends the leader queued for it while it was down (they would catch it up)
    await register(8000)
    await pollUntil(async () => ((await stats(c, leader)).snapshotIndex > before + 1000 ? true : undefined), 60_000, 'the leader compacted past the victim')
    const held = await Promise.all(c.alive().filter((id) => id !== victim).map(async (id) => (await stats(c, id)).snapshotIndex))
    return Math.min(...held)
  }
  /**
   * Restart the victim and wait (up to 30 s) until it is receiving a snapshot: undefined if the
   * transfer was over before it could be seen. The first chunk may come a second or two after the
   * restart (the leader dials the victim again with backoff, and finds it behind after three
   * heartbeats): the wait is bounded in time, not in looks (3,000 looks took 0.3-0.5 s, and CI
   * missed four transfers in a row that had not yet begun).
   */
  const restartReceiving = async (since: number): Promise<Stats | undefined> => {
    await c.restart(victim, { startTimeoutMs: 60_000 })
    const started = Date.now()
    let s: Stats | undefined
    while (Date.now() - started < 30_000) {
      s = await stats(c, victim)
      if (s.receiving && s.receiving.received > 0 && s.receiving.received < s.receiving.total) return s
      if (s.snapshotIndex >= since) break // it holds a snapshot as new as any sender's: over already
      await new Promise((r) => setTimeout(r, 2))
    }
    const senders = await Promise.all(c.alive().filter((id) => id !== victim).map(async (id) => ({ id, sending: (await stats(c, id)).sending })))
    t.comment(`the transfer was not seen in progress after ${Date.now() - started} ms (the victim: ${JSON.stringify(s)}, since ${since}; the others sending: ${JSON.stringify(senders)}); trying again`)
    return undefined
  }

  await register(10_000)

  // 1. a lossy link that corrupts chunks
  await c.kill(victim)
  await register(8000)
  for (const id of c.alive()) await c.request(id, { op: 'degradeLink', peer: victim, loss: 0.1, corruptChunks: 0.2 })
  await c.restart(victim, { startTimeoutMs: 60_000 })
  await caughtUp(0, 'a link losing 10% of messages and corrupting 20% of chunks')
  let corrupted = 0
  for (const id of c.alive()) if (id !== victim) corrupted += (await c.request<{ corrupted: number }>(id, { op: 'degradeLink', peer: victim, loss: 0, corruptChunks: 0 })).corrupted
  t.ok(corrupted > 0, `${corrupted} chunks arrived corrupt, and were sent again`)

  /**
   * Put the victim behind, restart it, and run `fault` while it receives the snapshot, then wait
   * until it caught up. A transfer over before it could be seen is tried again (three times).
   */
  const duringTransfer = async (what: string, fault: (receiving: Stats) => Promise<void>): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      const since = await behind()
      // a slow link (each chunk 5 ms late, 4 in flight: about 0.7 s for the ~260 KB): without it a
      // transfer on a quiet machine can end between two looks, and the fault would miss it
      await slowChunks(5)
      const s = await restartReceiving(since)
      if (!s) {
        if (attempt < 3) continue
        t.fail(`never saw the transfer in progress (${what})`)
        return
      }
      await fault(s)
      await caughtUp(since, what)
      await slowChunks(0)
      return
    }
  }
  /** Delay every snapshot chunk the live nodes send the victim by `ms`. */
  const slowChunks = async (ms: number): Promise<void> => {
    for (const id of c.alive()) if (id !== victim) await c.request(id, { op: 'degradeLink', peer: victim, loss: 0, corruptChunks: 0, chunkDelayMs: ms })
  }

  // 2. the link cut in the middle of the transfer
  await duringTransfer('a link cut mid-transfer', async () => {
    await c.isolate(victim)
    const held = (await stats(c, victim)).receiving
    await new Promise((r) => setTimeout(r, 600)) // the cut lasts two election timeouts
    await c.heal(victim)
    // until that transfer ends, the victim never holds less of it than at the cut
    let least = Infinity
    for (;;) {
      const now = (await stats(c, victim)).receiving
      if (!held || !now || now.index !== held.index || now.total !== held.total) break
      least = Math.min(least, now.received)
    }
    if (held && least !== Infinity) t.ok(least >= held.received, `the transfer resumed where it was cut (${held.received} of ${held.total} bytes), not from the start (least seen after: ${least})`)
  })

  // 3. the leader killed in the middle of the transfer
  let dead: string | undefined
  await duringTransfer('the leader killed mid-transfer', async () => {
    dead = leader
    await c.kill(dead)
    leader = await c.waitForLeader(30_000, { exclude: [dead] })
    t.not(leader, dead, `a new leader, ${leader}`)
  })
  if (dead) await c.restart(dead, { startTimeoutMs: 60_000 })

  // 4. the receiver killed in the middle of the transfer
  await duringTransfer('the receiver killed mid-transfer, then restarted', async () => {
    await c.kill(victim)
    await c.restart(victim, { startTimeoutMs: 60_000 })
  })
  t.same(c.unexpectedExits(), [], 'no process crashed')
})
