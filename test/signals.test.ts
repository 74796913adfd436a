/**
 * SIGTERM and SIGINT (issue #13): a process manager's stop signal makes the sworm stop gracefully,
 * and the process then ends as the signal would have ended it; an app that handles the signal
 * itself (even with `process.once`) keeps control of its exit; `stopOnSignals: false` leaves the
 * signal alone. Each case runs a real child process with a one-node sworm.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePorts, tempDir, TEST_SECRET } from './helpers.js'

const INDEX = fileURLToPath(new URL('../src/index.js', import.meta.url))

/** Run a child that starts a sworm (with `options`, then `after`), send it `signal` once ready, and say how it ended. */
async function run(dir: string, name: string, options: string, after: string, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  const [port] = await freePorts(1)
  const file = join(dir, `${name}.mjs`)
  writeFileSync(
    file,
    `import { Sworm } from ${JSON.stringify(INDEX)}
const listen = 'ws://127.0.0.1:${port}'
const s = await Sworm.start({ name: 'sig', nodeId: 'a', listen, peers: { a: listen }, dataDir: ${JSON.stringify(join(dir, name))}, secret: ${JSON.stringify(TEST_SECRET)}, logLevel: 'info', ${options} })
${after}
setInterval(() => {}, 1000)
console.log('ready')
`,
  )
  // (under the test runner the child also runs its loader, whose signal-exit listens for signals:
  // as in an app that uses a tool built on signal-exit)
  const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
    if (out.includes('ready\n') && !child.killed) child.kill(signal)
  })
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const [code, sig] = (await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])))) as [number | null, NodeJS.Signals | null]
  clearTimeout(killer)
  return { code, signal: sig, out, err }
}

t.test('signals', { timeout: 120_000 }, async (t) => {
  const { dir, cleanup } = tempDir('sworm-signals-')
  t.teardown(cleanup)

  const plain = await run(dir, 'plain', '', '', 'SIGTERM')
  t.same([plain.code, plain.signal], [null, 'SIGTERM'], 'SIGTERM: the process ends by the signal')
  t.match(plain.err, /signal received: stopping gracefully/, 'after a graceful stop')
  t.match(plain.err, /"msg":"sworm stopped"/)

  const int = await run(dir, 'int', '', '', 'SIGINT')
  t.same([int.code, int.signal], [null, 'SIGINT'], 'SIGINT too')
  t.match(int.err, /"msg":"sworm stopped"/)

  // the app's own handler, added with once (gone by the time the sworm has stopped), exits itself
  const app = await run(
    dir,
    'app',
    '',
    `process.once('SIGTERM', async () => { await s.stop(); await new Promise((r) => setTimeout(r, 300)); console.log('app cleanup done'); process.exit(7) })`,
    'SIGTERM',
  )
  t.same([app.code, app.signal], [7, null], 'an app that handles SIGTERM decides how the process ends')
  t.match(app.out, /app cleanup done/, 'and its cleanup ran to the end')

  const off = await run(dir, 'off', 'stopOnSignals: false', '', 'SIGTERM')
  t.same([off.code, off.signal], [null, 'SIGTERM'], 'stopOnSignals: false: the signal acts as without Sworm')
  t.notMatch(off.err, /sworm stopped/, 'with no stop')
})
