/**
 * The README's first command, scripted: `npm run demo -- --script --quick` must tell its story and exit 0
 * (5 real node processes: register, SIGKILL the leader, partition, heal, restart).
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'

t.test('the scripted demo passes', { timeout: 240_000 }, async (t) => {
  const script = fileURLToPath(new URL('../demo/run.js', import.meta.url))
  const child = spawn(process.execPath, [script, '--script', '--quick'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  t.comment(out.split('\n').filter((l) => l.includes('✔') || l.includes('✘')).join('\n'))
  t.equal(code, 0, 'exit code 0')
  t.match(out, /all checks passed/)
})
