import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Level } from 'level'
import { CorruptStorageError, StorageError } from '../src/errors.js'
import { crc32c, encodeRecord, LevelStorage, levelStorageKeys } from '../src/raft/storage/level-storage.js'
import type { Logger, RaftStorage } from '../src/raft/types.js'
import { makeEntries, storageContract } from './fixtures/storage-contract.js'
import { writerPayload } from './fixtures/storage-writer.js'

const roots: string[] = []
t.teardown(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true })
})

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'sworm-level-storage-'))
  roots.push(d)
  return d
}

/** A logger that records its lines. */
function recordingLogger(): Logger & { lines: { level: string; msg: string; fields: Record<string, unknown> | undefined }[] } {
  const lines: { level: string; msg: string; fields: Record<string, unknown> | undefined }[] = []
  const rec = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push({ level, msg, fields })
  }
  return { lines, debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') }
}

/** Open the LevelDB of a (closed) storage directly, apply `fn`, close it. */
async function tamper(dir: string, fn: (db: Level<Uint8Array, Uint8Array>) => Promise<void>): Promise<void> {
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' })
  await db.open()
  try {
    await fn(db)
  } finally {
    await db.close()
  }
}

const config = { voters: { n1: 'a' }, learners: {} }

t.test('crc32c', async (t) => {
  t.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283, 'standard check value')
  t.equal(crc32c(new Uint8Array(0)), 0)
  t.equal(crc32c(new Uint8Array(32)), 0x8a9136aa, '32 zero bytes')
  const data = new Uint8Array(1000).map((_, i) => (i * 31 + 7) & 0xff)
  for (const cut of [0, 1, 7, 8, 9, 500, 999]) {
    t.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), crc32c(data), `incremental at ${cut}`)
  }
})

t.test('round trip (LevelStorage)', async (t) => {
  const dirs = new Map<RaftStorage, string>()
  await storageContract(t, {
    fresh: async () => {
      const dir = join(await tempDir(), 'nested', 'raft')
      const s = await LevelStorage.open(dir)
      dirs.set(s, dir)
      return s
    },
    reopen: async (s) => {
      const dir = dirs.get(s)!
      await s.close()
      const s2 = await LevelStorage.open(dir)
      dirs.set(s2, dir)
      return s2
    },
  })
})

t.test('open creates the directory', async (t) => {
  const dir = join(await tempDir(), 'a', 'b', 'c')
  const s = await LevelStorage.open(dir)
  t.ok((await stat(dir)).isDirectory())
  await s.close()
  await s.close()
  t.pass('close is idempotent')
})

t.test('a second open of a locked directory fails with StorageError', async (t) => {
  const dir = await tempDir()
  const s = await LevelStorage.open(dir)
  await t.rejects(LevelStorage.open(dir), StorageError)
  await s.close()
})

/** A closed storage dir with hard state, a snapshot at 5 and entries 6..20. */
async function prepared(withSnapshot: boolean): Promise<string> {
  const dir = await tempDir()
  const s = await LevelStorage.open(dir)
  await s.write({ hardState: { term: 3, vote: 'n1', commit: 15 }, entries: makeEntries(1, 20, 3) })
  if (withSnapshot) await s.saveSnapshot({ meta: { index: 5, term: 3, config }, data: Uint8Array.from([9, 9, 9, 9, 9, 9]) })
  await s.close()
  return dir
}

const flip = (key: Uint8Array, at: (len: number) => number) => async (db: Level<Uint8Array, Uint8Array>) => {
  const v = (await db.get(key))!
  const c = v.slice()
  c[at(c.length)]! ^= 0x10
  await db.put(key, c)
}

t.test('corruption is detected and named (repair: false)', async (t) => {
  async function expectCorrupt(t: Test, dir: string, record: string, reason: RegExp): Promise<void> {
    const logger = recordingLogger()
    const s = await LevelStorage.open(dir, { logger, repair: false })
    const err = await s.load().then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(err instanceof CorruptStorageError, 'rejects with CorruptStorageError')
    if (err instanceof CorruptStorageError) {
      t.equal(err.record, record, `names the record: ${err.message}`)
      t.equal(err.code, 'CORRUPT_STORAGE')
      t.match(err.message, reason)
    }
    const errors = logger.lines.filter((l) => l.level === 'error')
    t.equal(errors.length, 1, 'one error line')
    t.equal(errors[0]?.fields?.record, record, 'the log line names the record')
    await s.close()
  }

  t.test('flipped byte in an entry in the middle of the log', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, flip(levelStorageKeys.entry(10), (n) => n - 3))
    await expectCorrupt(t, dir, 'entry 10', /checksum mismatch/)
  })

  t.test('flipped byte in an entry checksum', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, flip(levelStorageKeys.entry(11), () => 1))
    await expectCorrupt(t, dir, 'entry 11', /checksum mismatch/)
  })

  t.test('flipped byte in the hard state', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, flip(levelStorageKeys.hardState(), (n) => n - 1))
    await expectCorrupt(t, dir, 'hardState', /checksum mismatch/)
  })

  t.test('flipped byte in the snapshot', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, flip(levelStorageKeys.snapshot(), (n) => n - 2))
    await expectCorrupt(t, dir, 'snapshot', /checksum mismatch/)
  })

  t.test('torn (truncated) entry value', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, async (db) => {
      const k = levelStorageKeys.entry(12)
      const v = (await db.get(k))!
      await db.put(k, v.slice(0, Math.floor(v.length / 2)))
    })
    await expectCorrupt(t, dir, 'entry 12', /checksum mismatch/)
  })

  t.test('torn value shorter than the checksum', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, async (db) => {
      await db.put(levelStorageKeys.entry(13), Uint8Array.of(1, 2))
    })
    await expectCorrupt(t, dir, 'entry 13', /torn record/)
  })

  t.test('torn hard state', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, async (db) => {
      const v = (await db.get(levelStorageKeys.hardState()))!
      await db.put(levelStorageKeys.hardState(), v.slice(0, v.length - 1))
    })
    await expectCorrupt(t, dir, 'hardState', /checksum mismatch/)
  })

  t.test('valid checksum, undecodable payload', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, async (db) => {
      const payload = Uint8Array.of(0x93, 0x01) // an array of 3 holding only 1 element
      const rec = new Uint8Array(4 + payload.length)
      rec.set(payload, 4)
      new DataView(rec.buffer).setUint32(0, crc32c(payload))
      await db.put(levelStorageKeys.entry(7), rec)
    })
    await expectCorrupt(t, dir, 'entry 7', /undecodable/)
  })

  t.test('valid record of the wrong shape', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, async (db) => {
      await db.put(levelStorageKeys.hardState(), encodeRecord({ term: 'x' }))
    })
    await expectCorrupt(t, dir, 'hardState', /malformed/)
  })

  t.test("entry whose index differs from its key's", async (t) => {
    const dir = await prepared(false)
    await tamper(dir, async (db) => {
      await db.put(levelStorageKeys.entry(9), (await db.get(levelStorageKeys.entry(8)))!)
    })
    await expectCorrupt(t, dir, 'entry 9', /holds entry 8/)
  })

  t.test('gap in the log', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, (db) => db.del(levelStorageKeys.entry(10)))
    await expectCorrupt(t, dir, 'entry 11', /gap/)
  })

  t.test('log does not follow the snapshot', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, (db) => db.del(levelStorageKeys.entry(6)))
    await expectCorrupt(t, dir, 'entry 7', /does not follow the snapshot/)
  })

  t.test('an entry the snapshot covers is a leftover of a compaction a crash cut short, not a fault', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, async (db) => {
      await db.put(levelStorageKeys.entry(3), encodeRecord([3, 3, 'noop', null]))
    })
    const logger = recordingLogger()
    const s = await LevelStorage.open(dir, { logger, repair: false })
    const st = await s.load()
    t.equal(st.entries[0]?.index, 6, 'the log starts after the snapshot')
    t.notMatch(JSON.stringify(logger.lines), /entry 3|covered/, 'no warning about it')
    await s.close()
  })

  t.test('log without snapshot not starting at 1', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, (db) => db.del(levelStorageKeys.entry(1)))
    await expectCorrupt(t, dir, 'entry 2', /does not start at index 1/)
  })

  t.test('an untouched copy loads fine', async (t) => {
    const dir = await prepared(true)
    const s = await LevelStorage.open(dir)
    const st = await s.load()
    t.equal(st.entries.length, 15)
    t.equal(st.entries[0]!.index, 6)
    await s.close()
  })
})

t.test('repair at load (the default): what cannot be trusted is dropped, the loss is marked, one log line', async (t) => {
  /** Load `dir` with repair; return what loaded, the log lines, and a second load's result. */
  async function repaired(dir: string) {
    const logger = recordingLogger()
    const s = await LevelStorage.open(dir, { logger })
    const st = await s.load()
    await s.close()
    const s2 = await LevelStorage.open(dir)
    const again = await s2.load()
    return { st, again, logger, s2 }
  }

  t.test('torn last record: the log keeps what precedes it', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, async (db) => {
      const k = levelStorageKeys.entry(20)
      const v = (await db.get(k))!
      await db.put(k, v.slice(0, v.length - 3))
    })
    const { st, again, logger, s2 } = await repaired(dir)
    t.same(st.entries.map((e) => e.index), Array.from({ length: 14 }, (_, i) => 6 + i), 'entries 6..19 kept')
    t.same(st.recovery?.lostUpTo, 20, 'marked: this node held up to 20')
    t.same(st.hardState, { term: 3, vote: 'n1', commit: 15 }, 'hard state kept')
    const errors = logger.lines.filter((l) => l.level === 'error')
    t.equal(errors.length, 1, `one error line: ${errors[0]?.msg}`)
    t.match(String(errors[0]?.fields?.problems), /entry 20/, 'naming the record')
    t.same(again.entries.length, 14, 'the repair is durable')
    t.same(again.recovery?.lostUpTo, 20, 'and so is the marker, until cleared')
    await s2.write({ entries: makeEntries(20, 2, 4), recovered: true })
    await s2.close()
    const s3 = await LevelStorage.open(dir)
    const st3 = await s3.load()
    t.equal(st3.recovery, undefined, 'a write with recovered: true clears the marker')
    t.equal(st3.entries.at(-1)?.index, 21, 'and the log grows again')
    await s3.close()
  })

  t.test('corrupt entry in the middle: it and everything after it go', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, flip(levelStorageKeys.entry(10), (n) => n - 1))
    const { st, s2 } = await repaired(dir)
    t.same(st.entries.map((e) => e.index), [1, 2, 3, 4, 5, 6, 7, 8, 9])
    t.equal(st.recovery?.lostUpTo, 20)
    t.match(st.recovery?.reason, /entry 10.*checksum mismatch.*dropped entries 10\.\.20/)
    await s2.close()
  })

  t.test('gap in the log', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, (db) => db.del(levelStorageKeys.entry(11)))
    const { st, s2 } = await repaired(dir)
    t.equal(st.entries.at(-1)?.index, 10)
    t.equal(st.recovery?.lostUpTo, 20)
    await s2.close()
  })

  t.test('corrupt snapshot: dropped with the log after it; its index is known from its small record', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, flip(levelStorageKeys.snapshot(), (n) => n - 2))
    const { st, logger, s2 } = await repaired(dir)
    t.equal(st.snapshot, undefined, 'no snapshot')
    t.same(st.entries, [], 'no log')
    t.equal(st.recovery?.lostUpTo, 20, 'marked up to the last entry held')
    t.same(st.hardState, { term: 3, vote: 'n1', commit: 15 }, 'term and vote kept')
    t.equal(logger.lines.filter((l) => l.level === 'error').length, 1, 'one error line')
    await s2.close()
  })

  t.test('corrupt snapshot with no log after it: marked up to the snapshot', async (t) => {
    const dir = await tempDir()
    const s = await LevelStorage.open(dir)
    await s.write({ hardState: { term: 3, vote: 'n1', commit: 8 }, entries: makeEntries(1, 8, 3) })
    await s.saveSnapshot({ meta: { index: 8, term: 3, config }, data: Uint8Array.from([1, 2, 3, 4]) })
    await s.close()
    await tamper(dir, flip(levelStorageKeys.snapshot(), () => 5))
    const { st, s2 } = await repaired(dir)
    t.equal(st.recovery?.lostUpTo, 8)
    await s2.close()
  })

  t.test('corrupt snapshot and corrupt index record: refused, it cannot know what it held', async (t) => {
    const dir = await prepared(true)
    await tamper(dir, async (db) => {
      await flip(levelStorageKeys.snapshot(), (n) => n - 2)(db)
      await flip(levelStorageKeys.snapshotMeta(), (n) => n - 1)(db)
    })
    const s = await LevelStorage.open(dir, { logger: recordingLogger() })
    await t.rejects(s.load(), { code: 'CORRUPT_STORAGE', message: /index is unreadable/ })
    await s.close()
  })

  t.test('corrupt hard state: restored from its copy, nothing lost', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, flip(levelStorageKeys.hardState(), (n) => n - 1))
    const { st, again, logger, s2 } = await repaired(dir)
    t.same(st.hardState, { term: 3, vote: 'n1', commit: 15 })
    t.equal(st.recovery, undefined, 'no marker: nothing was lost')
    t.equal(st.entries.length, 20)
    t.equal(logger.lines.filter((l) => l.level === 'warn').length, 1, 'one warning')
    t.same(again.hardState, st.hardState, 'the record is rewritten')
    await s2.close()
  })

  t.test('both hard state records corrupt: refused with a reason an operator can act on', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, async (db) => {
      await flip(levelStorageKeys.hardState(), (n) => n - 1)(db)
      await flip(levelStorageKeys.hardStateCopy(), (n) => n - 1)(db)
    })
    const logger = recordingLogger()
    const s = await LevelStorage.open(dir, { logger })
    await t.rejects(s.load(), { code: 'CORRUPT_STORAGE', message: /term and vote are lost.*new one/ })
    t.equal(logger.lines.filter((l) => l.level === 'error').length, 1, 'one error line')
    await s.close()
  })

  t.test('a second repair before catching up keeps the higher mark', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, flip(levelStorageKeys.entry(15), (n) => n - 1))
    const first = await repaired(dir)
    await first.s2.close()
    await tamper(dir, flip(levelStorageKeys.entry(5), (n) => n - 1))
    const { st, s2 } = await repaired(dir)
    t.equal(st.entries.length, 4)
    t.equal(st.recovery?.lostUpTo, 20, 'still 20: the first loss is not caught up yet')
    await s2.close()
  })
})

t.test('reopen: after a failed write the storage refuses until reopened, then serves again', async (t) => {
  const dir = await tempDir()
  const logger = recordingLogger()
  const s = await LevelStorage.open(dir, { logger })
  await s.write({ entries: makeEntries(1, 3, 1), hardState: { term: 1, vote: undefined, commit: 0 } })
  const db = (s as unknown as { db: Level<Uint8Array, Uint8Array> }).db
  const realBatch = db.batch.bind(db)
  // an fsync error: the batch is refused by the disk
  ;(db as unknown as { batch: () => unknown }).batch = () => {
    const b = realBatch()
    return Object.assign(Object.create(Object.getPrototypeOf(b) as object) as object, b, {
      put: (k: Uint8Array, v: Uint8Array) => b.put(k, v),
      del: (k: Uint8Array) => b.del(k),
      close: () => b.close(),
      write: async () => {
        await b.close()
        throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' })
      },
    })
  }
  await t.rejects(s.write({ entries: makeEntries(4, 1, 1) }), { code: 'STORAGE', message: /EIO/ })
  await t.rejects(s.write({ entries: makeEntries(4, 1, 1) }), { code: 'STORAGE' }, 'sticky')
  await s.reopen() // a fresh LevelDB handle: the fault is gone
  await s.write({ entries: makeEntries(4, 2, 1) })
  const st = await s.load()
  t.same(st.entries.map((e) => e.index), [1, 2, 3, 4, 5], 'the failed write left nothing; later writes work')
  await s.close()
  await t.rejects(s.reopen(), { code: 'STORAGE' }, 'not after close')
})

t.test('crash safety: every acknowledged write survives SIGKILL', async (t) => {
  const dir = await tempDir()
  const script = fileURLToPath(new URL('./fixtures/storage-writer.js', import.meta.url))
  const child = spawn(process.execPath, [script, dir], { stdio: ['ignore', 'pipe', 'pipe'] })
  let acked = 0
  let acks = 0
  let buf = ''
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  )
  const enough = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${acks} acks within the deadline; stderr: ${stderr}`)), 30_000)
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        const n = Number(line)
        if (!Number.isSafeInteger(n) || n <= acked) {
          clearTimeout(timer)
          reject(new Error(`bad ack line ${JSON.stringify(line)}`))
          return
        }
        acked = n
        acks++
        if (acks >= 400) {
          clearTimeout(timer)
          child.kill('SIGKILL')
          resolve()
          return
        }
      }
    })
    void exited.then(({ code, signal }) => {
      clearTimeout(timer)
      if (acks < 400) reject(new Error(`writer exited early (${code ?? signal}); stderr: ${stderr}`))
    })
  })
  try {
    await enough
  } finally {
    child.kill('SIGKILL')
  }
  const ex = await exited
  t.equal(ex.signal, 'SIGKILL', 'writer was killed mid-flight')
  const highestAck = acked // acks read after the kill are durable too, but not needed

  const s = await LevelStorage.open(dir)
  const st = await s.load() // validates every checksum and contiguity
  t.ok(st.entries.length >= highestAck, `all ${highestAck} acknowledged entries present (found ${st.entries.length})`)
  let ok = true
  for (let i = 0; i < st.entries.length; i++) {
    const e = st.entries[i]!
    if (e.index !== i + 1 || e.term !== 1 || JSON.stringify(e.data) !== JSON.stringify(writerPayload(i + 1))) {
      ok = false
      t.fail(`entry at position ${i} is wrong: ${JSON.stringify(e)}`)
      break
    }
  }
  t.ok(ok, 'entries 1.. contiguous with the written data')
  t.ok(st.hardState.commit >= highestAck, 'hard state at least as recent as the last ack')
  t.equal(st.hardState.commit, st.entries[st.entries.length - 1]!.index, 'hard state written in the same batch as the entries')
  await s.close()
})

t.test('sticky failure: a failed write refuses every later write', async (t) => {
  const dir = await tempDir()
  const logger = recordingLogger()
  const s = await LevelStorage.open(dir, { logger })
  await s.write({ entries: makeEntries(1, 3, 1), hardState: { term: 1, vote: undefined, commit: 0 } })
  const db = (s as unknown as { db: Level<Uint8Array, Uint8Array> }).db
  await db.close() // the database fails underneath

  const err = await s.write({ entries: makeEntries(4, 1, 1) }).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(err instanceof StorageError, 'failed write rejects with StorageError')
  t.ok((err as StorageError).cause, 'carrying the cause')
  t.ok(logger.lines.some((l) => l.level === 'error'), 'the failure is logged')

  await db.open() // even if the database works again...
  await t.rejects(s.write({ entries: makeEntries(4, 1, 1) }), StorageError, '...later writes are refused')
  await t.rejects(s.write({ hardState: { term: 2, vote: undefined, commit: 0 } }), StorageError, 'hard state writes too')
  await t.rejects(s.saveSnapshot({ meta: { index: 2, term: 1, config }, data: new Uint8Array(0) }), StorageError, 'snapshots too')
  await s.close()

  const s2 = await LevelStorage.open(dir)
  t.same((await s2.load()).entries, makeEntries(1, 3, 1), 'nothing after the failure reached the disk')
  await s2.close()
})

t.test('write after close rejects with StorageError', async (t) => {
  const s = await LevelStorage.open(await tempDir())
  await s.close()
  await t.rejects(s.write({ hardState: { term: 1, vote: undefined, commit: 0 } }), StorageError)
  await t.rejects(s.saveSnapshot({ meta: { index: 1, term: 1, config }, data: new Uint8Array(0) }), StorageError)
  await t.rejects(s.load(), StorageError)
})

t.test('latency of a synced batch of 100 small entries (informational)', async (t) => {
  const s = await LevelStorage.open(await tempDir())
  await s.load()
  const rounds = 200
  const times: number[] = []
  let next = 1
  for (let r = 0; r < rounds; r++) {
    const entries = []
    for (let i = 0; i < 100; i++, next++) entries.push({ index: next, term: 1, type: 'cmd' as const, data: { k: `key${next}`, v: next } })
    const t0 = performance.now()
    await s.write({ entries, hardState: { term: 1, vote: 'n1', commit: next - 1 } })
    times.push(performance.now() - t0)
  }
  times.sort((a, b) => a - b)
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!.toFixed(2)
  t.comment(`synced batch of 100 entries: p50 ${q(0.5)} ms, p90 ${q(0.9)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms`)
  t.ok(times.length === rounds)
  await s.close()
})

t.test('snapshots in parts', async (t) => {
  const big = (n: number, salt: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + salt) & 0xff)
  const partKeys = async (dir: string): Promise<number> => {
    let n = 0
    await tamper(dir, async (db) => {
      const { from, to } = levelStorageKeys.snapshotParts()
      n = (await db.keys({ gte: from, lt: to }).all()).length
    })
    return n
  }

  t.test('a snapshot of several MiB is stored in parts and loads whole; a smaller one leaves no stale part', async (t) => {
    const dir = await tempDir()
    const s = await LevelStorage.open(dir)
    await s.write({ hardState: { term: 3, vote: 'n1', commit: 20 }, entries: makeEntries(1, 20, 3) })
    const first = big(3.5 * 1024 * 1024, 1)
    await s.saveSnapshot({ meta: { index: 10, term: 3, config }, data: first })
    await s.close()
    t.equal(await partKeys(dir), 4, '4 parts of at most 1 MiB')
    const s2 = await LevelStorage.open(dir)
    const st = await s2.load()
    t.equal(Buffer.compare(Buffer.from(st.snapshot!.data), Buffer.from(first)), 0, 'the data, byte for byte')
    t.equal(st.entries[0]?.index, 11)
    await s2.saveSnapshot({ meta: { index: 15, term: 3, config }, data: big(1.5 * 1024 * 1024, 2) })
    await s2.close()
    t.equal(await partKeys(dir), 2, 'the parts beyond the new snapshot are gone')
    const s3 = await LevelStorage.open(dir)
    const again = await s3.load()
    t.equal(again.snapshot!.meta.index, 15)
    t.equal(Buffer.compare(Buffer.from(again.snapshot!.data), Buffer.from(big(1.5 * 1024 * 1024, 2))), 0)
    await s3.close()
  })

  t.test('a corrupt part: the snapshot is dropped with the log after it, as a corrupt snapshot is', async (t) => {
    const dir = await tempDir()
    const s = await LevelStorage.open(dir)
    await s.write({ hardState: { term: 3, vote: 'n1', commit: 20 }, entries: makeEntries(1, 20, 3) })
    await s.saveSnapshot({ meta: { index: 10, term: 3, config }, data: big(2.5 * 1024 * 1024, 3) })
    await s.close()
    await tamper(dir, flip(levelStorageKeys.snapshotPart(1), (n) => n - 100))
    const strict = await LevelStorage.open(dir, { logger: recordingLogger(), repair: false })
    await t.rejects(strict.load(), { code: 'CORRUPT_STORAGE', record: 'snapshot part 1', message: /checksum mismatch/ })
    await strict.close()
    const s2 = await LevelStorage.open(dir, { logger: recordingLogger() })
    const st = await s2.load()
    t.equal(st.snapshot, undefined, 'no snapshot')
    t.same(st.entries, [], 'no log')
    t.equal(st.recovery?.lostUpTo, 20, 'marked up to the last entry held')
    await s2.close()
    t.equal(await partKeys(dir), 0, 'its parts are gone')
  })

  t.test('a crash after some parts of a new snapshot, before its metadata: the stored one is intact', async (t) => {
    const dir = await tempDir()
    const s = await LevelStorage.open(dir)
    await s.write({ hardState: { term: 3, vote: 'n1', commit: 20 }, entries: makeEntries(1, 20, 3) })
    const first = big(2.5 * 1024 * 1024, 5)
    await s.saveSnapshot({ meta: { index: 10, term: 3, config }, data: first })
    await s.close()
    // what a crash in the middle of the next save leaves: parts of generation 2, no metadata
    await tamper(dir, async (db) => {
      await db.put(levelStorageKeys.snapshotPart(0, 2), encodeRecord(big(1024 * 1024, 6)))
      await db.put(levelStorageKeys.snapshotPart(1, 2), encodeRecord(big(1024 * 1024, 7)))
    })
    const s2 = await LevelStorage.open(dir)
    const st = await s2.load()
    t.equal(st.snapshot!.meta.index, 10)
    t.equal(Buffer.compare(Buffer.from(st.snapshot!.data), Buffer.from(first)), 0, 'the stored snapshot, byte for byte')
    const next = big(1.2 * 1024 * 1024, 8)
    await s2.saveSnapshot({ meta: { index: 15, term: 3, config }, data: next })
    await s2.close()
    t.equal(await partKeys(dir), 2, 'the next snapshot replaced the leftovers, and only its parts remain')
    const s3 = await LevelStorage.open(dir)
    t.equal(Buffer.compare(Buffer.from((await s3.load()).snapshot!.data), Buffer.from(next)), 0)
    await s3.close()
  })

  t.test('a missing part is a corrupt snapshot too', async (t) => {
    const dir = await tempDir()
    const s = await LevelStorage.open(dir)
    await s.write({ hardState: { term: 3, vote: 'n1', commit: 20 }, entries: makeEntries(1, 20, 3) })
    await s.saveSnapshot({ meta: { index: 10, term: 3, config }, data: big(2.5 * 1024 * 1024, 4) })
    await s.close()
    await tamper(dir, (db) => db.del(levelStorageKeys.snapshotPart(2)))
    const strict = await LevelStorage.open(dir, { logger: recordingLogger(), repair: false })
    await t.rejects(strict.load(), { code: 'CORRUPT_STORAGE', record: 'snapshot part 2', message: /missing/ })
    await strict.close()
  })

  t.test('a snapshot written by an older version (its data in the snapshot record) still loads', async (t) => {
    const dir = await prepared(false)
    await tamper(dir, async (db) => {
      await db.put(levelStorageKeys.snapshot(), encodeRecord({ meta: { index: 5, term: 3, config }, data: Uint8Array.from([4, 5, 6]) }))
      await db.put(levelStorageKeys.snapshotMeta(), encodeRecord({ index: 5, term: 3 }))
      for (let i = 1; i <= 5; i++) await db.del(levelStorageKeys.entry(i))
    })
    const s = await LevelStorage.open(dir)
    const st = await s.load()
    t.same([...st.snapshot!.data], [4, 5, 6])
    t.equal(st.entries[0]?.index, 6)
    await s.close()
  })
})

t.test('entries a snapshot replaces are deleted after it; leftovers of a crash are deleted at load, silently', async (t) => {
  const dir = await tempDir()
  const s = await LevelStorage.open(dir)
  await s.write({ hardState: { term: 3, vote: 'n1', commit: 20 }, entries: makeEntries(1, 20, 3) })
  await s.saveSnapshot({ meta: { index: 12, term: 3, config }, data: Uint8Array.from([1, 2, 3]) })
  await s.close()
  let left = 0
  await tamper(dir, async (db) => {
    for (let i = 1; i <= 12; i++) if ((await db.get(levelStorageKeys.entry(i))) !== undefined) left++
    // as if the process died between the snapshot's batch and the deletion of the entries
    for (let i = 5; i <= 12; i++) await db.put(levelStorageKeys.entry(i), encodeRecord([i, 3, 'noop', null]))
  })
  t.equal(left, 0, 'no entry the snapshot covers is left')
  const logger = recordingLogger()
  const s2 = await LevelStorage.open(dir, { logger })
  const st = await s2.load()
  t.same(st.entries.map((e) => e.index), [13, 14, 15, 16, 17, 18, 19, 20])
  t.same(logger.lines.filter((l) => l.level === 'warn' || l.level === 'error'), [], 'no warning: nothing was wrong')
  await s2.close()
  let after = 0
  await tamper(dir, async (db) => {
    for (let i = 1; i <= 12; i++) if ((await db.get(levelStorageKeys.entry(i))) !== undefined) after++
  })
  t.equal(after, 0, 'the leftovers are gone')
})
