/**
 * The functions that took the most CPU in a `.cpuprofile` (self time), for a quick look without
 * DevTools: `node dist/tools/cpu-top.js <file> [count]`.
 * @module
 */
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
}
interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

const [file, countArg] = process.argv.slice(2)
if (!file) {
  process.stderr.write('usage: node dist/tools/cpu-top.js <file.cpuprofile> [count]\n')
  process.exit(2)
}
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(p.nodes.map((n) => [n.id, n]))
const self = new Map<string, number>()
let total = 0
p.samples.forEach((id, i) => {
  const n = byId.get(id)!
  const f = n.callFrame
  const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`
  const dt = p.timeDeltas[i] ?? 0
  self.set(key, (self.get(key) ?? 0) + dt)
  total += dt
})
const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(countArg ?? 30))
process.stdout.write(`total ${(total / 1000).toFixed(0)} ms\n`)
for (const [k, us] of rows) process.stdout.write(`${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}\n`)
