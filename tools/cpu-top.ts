/**
 * The functions that took the most CPU in a `.cpuprofile` (self time), for a quick look without
 * DevTools: `node dist/tools/cpu-top.js <file> [count]`. With `--busiest`, the same for the longest
 * run of samples without idle time only (what a stall of the event loop was made of), by stack.
 * @module
 */
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}
interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

const args = process.argv.slice(2)
const busiest = args.includes('--busiest')
const [file, countArg] = args.filter((a) => a !== '--busiest')
if (!file) {
  process.stderr.write('usage: node dist/tools/cpu-top.js <file.cpuprofile> [count] [--busiest]\n')
  process.exit(2)
}
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(p.nodes.map((n) => [n.id, n]))
const parent = new Map<number, number>()
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const frame = (id: number): string => {
  const f = byId.get(id)!.callFrame
  return `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`
}
const isIdle = (id: number): boolean => byId.get(id)!.callFrame.functionName === '(idle)'

// the samples to count: all, or the longest run without an idle sample
let from = 0
let to = p.samples.length
if (busiest) {
  let best = { len: -1, from: 0, to: 0 }
  let start = -1
  let startT = 0
  let t = 0
  for (let i = 0; i <= p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0
    const idle = i === p.samples.length || isIdle(p.samples[i]!)
    if (!idle && start < 0) {
      start = i
      startT = t
    } else if (idle && start >= 0) {
      if (t - startT > best.len) best = { len: t - startT, from: start, to: i }
      start = -1
    }
  }
  from = best.from
  to = best.to
  process.stdout.write(`longest run without idle time: ${(best.len / 1000).toFixed(0)} ms\n`)
}
const self = new Map<string, number>()
let total = 0
for (let i = from; i < to; i++) {
  const id = p.samples[i]!
  const chain: string[] = []
  // by function, or (--busiest) by its stack, three callers deep
  for (let k = 0, c: number | undefined = id; k < (busiest ? 4 : 1) && c !== undefined; k++, c = parent.get(c)) chain.push(frame(c))
  const key = chain.join(' < ')
  const dt = p.timeDeltas[i] ?? 0
  self.set(key, (self.get(key) ?? 0) + dt)
  total += dt
}
const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(countArg ?? 30))
process.stdout.write(`total ${(total / 1000).toFixed(0)} ms\n`)
for (const [k, us] of rows) process.stdout.write(`${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}\n`)
