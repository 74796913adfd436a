/**
 * `npm run bench:objects`: the heap objects one static name costs, counted in heap snapshots
 * (`-- --names N`, default 50,000). A full collection marks every live object, and at a million
 * names its pause is what the longest event-loop stalls are (see the README's benchmarks): this
 * counts what the collector marks per name, a figure that does not move between runs the way
 * stalls and rates do.
 *
 * Two measures, each the difference between a snapshot before and one after the names:
 * - a replica: the registry state machine alone, with `register` commands applied for workers of
 *   another node (what every node holds for every name);
 * - a hosting node: a one-node sworm that spawns a worker and registers a name for it (the
 *   registry, the worker's mailbox, and the app's worker object, counted apart).
 * @module
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeHeapSnapshot } from 'node:v8'

import { Sworm } from '../src/index.js'
import { RegistryState } from '../src/registry/state.js'
import { intOption, parseCli } from '../tools/cli-args.js'
import { benchLogger, runMain } from './common.js'

const N = parseCli('objects-bench.js [--names N]', { names: { type: 'string' } }, (v) => intOption(v, 'names', 50_000, { min: 1 }))
const log = benchLogger('objects')
const dir = mkdtempSync(join(tmpdir(), 'sworm-objects-'))

/** Objects and their own bytes, by kind: constructor, and for plain objects their property names. */
type Census = Map<string, { n: number; bytes: number }>

interface SnapshotJson {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } }
  nodes: number[]
  edges: number[]
  strings: string[]
}

/** Count the live heap of this process (after a full collection) by kind of object. */
function census(): Census {
  ;(globalThis as { gc?: () => void }).gc?.()
  const file = writeHeapSnapshot(join(dir, `${Date.now()}.heapsnapshot`))
  const j = JSON.parse(readFileSync(file, 'utf8')) as SnapshotJson
  rmSync(file)
  const m = j.snapshot.meta
  const nf = m.node_fields.length
  const ef = m.edge_fields.length
  const [typeAt, nameAt, sizeAt, edgesAt] = ['type', 'name', 'self_size', 'edge_count'].map((f) => m.node_fields.indexOf(f)) as [number, number, number, number]
  const nodeTypes = m.node_types[0]
  const edgeTypes = m.edge_types[0]
  const out: Census = new Map()
  let edge = 0
  for (let i = 0; i < j.nodes.length; i += nf) {
    const type = nodeTypes[j.nodes[i + typeAt]!]!
    const edges = j.nodes[i + edgesAt]!
    let kind = type
    if (type === 'object' || type === 'closure') {
      kind = `${type === 'closure' ? 'function ' : ''}${j.strings[j.nodes[i + nameAt]!]}`
      if (kind === 'Object') {
        const props: string[] = []
        for (let k = 0; k < edges; k++) {
          const e = edge + k * ef
          if (edgeTypes[j.edges[e]!] === 'property' && props.length < 8) props.push(j.strings[j.edges[e + 1]!]!)
        }
        kind = `{${props.filter((p) => p !== '__proto__').join(', ')}}`
      }
    }
    edge += edges * ef
    const c = out.get(kind) ?? { n: 0, bytes: 0 }
    c.n++
    c.bytes += j.nodes[i + sizeAt]!
    out.set(kind, c)
  }
  return out
}

/** What `after` holds more than `before`, per name, for the kinds with at least one object in ten names. */
function perName(before: Census, after: Census): Array<{ kind: string; objects: number; bytes: number }> {
  const rows = []
  for (const [kind, a] of after) {
    const b = before.get(kind) ?? { n: 0, bytes: 0 }
    const objects = (a.n - b.n) / N
    if (objects >= 0.1) rows.push({ kind, objects, bytes: (a.bytes - b.bytes) / N })
  }
  return rows.sort((x, y) => y.bytes - x.bytes)
}

function table(title: string, rows: Array<{ kind: string; objects: number; bytes: number }>, appKinds: (kind: string) => boolean): void {
  console.log(`\n### ${title}\n`)
  console.log('| kind of object (plain objects by their properties) | objects per name | bytes per name |')
  console.log('|---|---|---|')
  let objects = 0
  let bytes = 0
  for (const r of rows) {
    const app = appKinds(r.kind)
    if (!app) {
      objects += r.objects
      bytes += r.bytes
    }
    console.log(`| ${r.kind}${app ? ' (the app\'s worker)' : ''} | ${r.objects.toFixed(2)} | ${r.bytes.toFixed(0)} |`)
  }
  console.log(`| **Sworm's, in all** | **${objects.toFixed(2)}** | **${bytes.toFixed(0)}** |`)
  console.log('\nKinds under 0.1 objects a name are left out. What a node keeps whatever its size (the last 8,192 log entries and their encodings, say) shows as a fraction that shrinks with `--names`.')
}

async function main(): Promise<void> {
  if (!(globalThis as { gc?: unknown }).gc) log('without --expose-gc the counts include garbage (npm run bench:objects passes it)')
  log(`${N.toLocaleString('en')} names`)

  try {
    replica()
    await hostingNode()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A replica: the state machine alone (gone when this returns, before the next measure). */
function replica(): void {
  const inc = 'a1b2c3d4e5f6'
  const st = new RegistryState(() => {})
  st.apply({ c: 'nodeUp', node: 'n1', inc, prev: '', ord: 1 }, 1)
  const before = census()
  for (let i = 0; i < N; i++) st.apply({ c: 'register', name: `name:${i}`, ref: { sworm: 'bench', node: 'n1', inc, id: i + 1 } }, 2 + i)
  if (st.size !== N) throw new Error(`${st.size} names applied, not ${N}`)
  table(`A replica's registry: ${N.toLocaleString('en')} static names`, perName(before, census()), () => false)
}

/** A hosting node: a one-node sworm. */
async function hostingNode(): Promise<void> {
  const s = await Sworm.start({
    name: 'objects',
    nodeId: 'n1',
    listen: 'ws://127.0.0.1:0',
    peers: { n1: 'ws://127.0.0.1:0' },
    dataDir: join(dir, 'n1'),
    secret: 'bench-objects-0123456789abcdefghij',
    logLevel: 'warn',
  })
  try {
    const base = census()
    let pending: Array<Promise<boolean>> = []
    for (let i = 0; i < N; i++) {
      pending.push(s.registerName(`name:${i}`, s.spawn({ handleCall: (m: unknown) => m })))
      if (pending.length >= 256) {
        await Promise.all(pending)
        pending = []
      }
    }
    await Promise.all(pending)
    if (s.registered().length !== N) throw new Error(`${s.registered().length} names registered, not ${N}`)
    table(`A node hosting ${N.toLocaleString('en')} spawned workers, a static name each`, perName(base, census()), (k) => k === 'function handleCall' || k === '{handleCall}')
  } finally {
    await s.stop()
  }
}

runMain(main)
