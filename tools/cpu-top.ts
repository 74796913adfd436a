/**
 * The functions that took the most CPU in a `.cpuprofile` (self time), for a quick look without
 * DevTools: `node dist/tools/cpu-top.js <file> [count]`. With `--busiest`, the same for the longest
 * run of samples without idle time only (what a stall of the event loop was made of), by stack.
 * With `--stalls <log>`, for each stall of this profile's node in a log written with
 * `SWORM_STALL_LOG` (`[stall n2] 376 ms ending at ... (monotonic clock <µs> ...)`; the node is the
 * profile file's name up to its first dot, as `SWORM_CPU_PROF` names them), the stacks that filled
 * it: how session 17 found three stalls a whole-run profile hid among collections. A stall with no
 * sample inside was time the process did not run (waiting for a core, or blocked in the kernel).
 * @module
 */
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}
interface Profile {
  startTime: number
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

const args = process.argv.slice(2)
const busiest = args.includes('--busiest')
const stallsAt = args.indexOf('--stalls')
const stallLog = stallsAt >= 0 ? args[stallsAt + 1] : undefined
const [file, countArg] = args.filter((a, i) => a !== '--busiest' && i !== stallsAt && (stallsAt < 0 || i !== stallsAt + 1))
if (!file || (stallsAt >= 0 && !stallLog)) {
  process.stderr.write('usage: node dist/tools/cpu-top.js <file.cpuprofile> [count] [--busiest | --stalls <stall log>]\n')
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

if (stallLog) {
  // each stall of this node: the stacks (three callers deep) of the samples inside it
  const node = basename(file).split('.')[0]
  const times: number[] = []
  for (let i = 0, t = p.startTime; i < p.samples.length; i++) times.push((t += p.timeDeltas[i] ?? 0))
  const re = /^\[stall (\S+)\] (\d+) ms .*monotonic clock (\d+)/
  for (const line of readFileSync(stallLog, 'utf8').split('\n')) {
    const m = re.exec(line)
    if (!m || m[1] !== node) continue
    const end = Number(m[3])
    const start = end - Number(m[2]) * 1000
    const byStack = new Map<string, number>()
    for (let i = 0; i < p.samples.length; i++) {
      if (times[i]! < start || times[i]! > end) continue
      const chain: string[] = []
      for (let k = 0, c: number | undefined = p.samples[i]!; k < 4 && c !== undefined; k++, c = parent.get(c)) chain.push(frame(c))
      const key = chain.join(' < ')
      byStack.set(key, (byStack.get(key) ?? 0) + (p.timeDeltas[i + 1] ?? 0))
    }
    process.stdout.write(`${line.slice(0, line.indexOf(' ending'))}, ending at ${end} µs:${byStack.size ? '' : ' no sample (the process did not run)'}\n`)
    for (const [k, us] of [...byStack].sort((a, b) => b[1] - a[1]).slice(0, Number(countArg ?? 3))) process.stdout.write(`${(us / 1000).toFixed(1).padStart(9)} ms  ${k}\n`)
  }
  process.exit(0)
}

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
