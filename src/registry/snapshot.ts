/**
 * The registry's snapshot: how its tables are encoded, in steps that each take a few
 * milliseconds, and decoded the same way, so that a registry of a million names never stalls the
 * event loop for long.
 *
 * **A consistent cut without a copy.** {@link SnapshotWriter} copies only the small tables
 * (nodes, sessions) and the order of the groups when it starts. The registry keeps applying
 * commands while the writer works: before it changes a name or a group, it hands the writer the
 * old value ({@link SnapshotWriter.touchName}, {@link SnapshotWriter.touchGroup}), and the writer
 * encodes that old value instead of the live one. So the snapshot is the registry exactly as it
 * was at the cut, in the same order (the order matters: replicas iterate names in it when they
 * place workers).
 *
 * **The names' order, a shard at a time.** The name table is 64 maps iterated one after another
 * (`util/sharded-map.ts`). The writer takes a shard's keys when it reaches that shard, or, if a
 * name of that shard is about to change first, just before that change: until then the shard is
 * as it was at the cut, so its keys are the cut's, in the cut's order (a name deleted and added
 * again after the cut would otherwise come out at the shard's end). Taking every key at the start
 * held the event loop for 32 ms at a million names on a quiet machine, up to 196 ms in a loaded
 * one; a shard costs a 64th of that.
 *
 * **The format.** Four magic bytes (0xc1 is never a MessagePack value, so the older format, one
 * MessagePack map, is still read), then frames of `[u32 length][MessagePack]`: a header (index,
 * nodes, sessions), frames of up to {@link NAMES_PER_FRAME} names, frames of groups. A static
 * name is `[name, t, id]`, with `t` an index into its frame's table of node incarnations: about 25
 * bytes, where a map with named fields took 80.
 * @module
 */
import { pack, Unpackr } from 'msgpackr'
import { RefIndex } from './ref-index.js'
import { ShardedMap } from '../util/sharded-map.js'
import { StaticName } from './static-name.js'
import type { NodeRecord, Registration, RegistryResult, WorkerRef } from './types.js'

/** A group member: a static worker by ref, or a supervised worker by name (follows it). */
export type Member = { ref: WorkerRef } | { name: string }

/** A client session: its node incarnation, the lowest seq still wanted, results by seq. */
export interface Session {
  inc: string
  low: number
  results: Map<number, RegistryResult>
}

/** The registry's tables. The indexes (`namesOf`, `aliasesOf`, `groupsOf`, `placed`, `unplaced`) are derived. */
export interface Tables {
  names: ShardedMap<string, Readonly<Registration>>
  /** current worker -> names (static names, the supervised name, never aliases) */
  namesOf: RefIndex
  /** supervised name -> its aliases */
  aliasesOf: Map<string, Set<string>>
  /** group -> member key -> member */
  groups: Map<string, ReadonlyMap<string, Member>>
  /** member key -> groups */
  groupsOf: Map<string, Set<string>>
  nodes: Map<string, NodeRecord>
  sessions: Map<string, Session>
  /**
   * node -> the supervised names placed on it (its load is the size): what a node's failure or
   * restart moves, found without a scan of every name. Iteration order depends on history: sort
   * before letting it decide anything.
   */
  placed: Map<string, Set<string>>
  /** Supervised names placed on no node (none could take them). Same caveat on order. */
  unplaced: Set<string>
}

/** Empty tables. */
export function emptyTables(): Tables {
  return {
    names: new ShardedMap(),
    namesOf: new RefIndex(),
    aliasesOf: new Map(),
    groups: new Map(),
    groupsOf: new Map(),
    nodes: new Map(),
    sessions: new Map(),
    placed: new Map(),
    unplaced: new Set(),
  }
}

/**
 * The decoder of snapshots (msgpackr's default, with binaries decoded as copies: a handoff state
 * holding a few bytes must not keep the whole snapshot it came in in memory).
 */
const unpackr = new Unpackr({ useRecords: false, copyBuffers: true })
const unpack = (bytes: Uint8Array): unknown => unpackr.unpack(bytes)

/** Names per frame: a frame is encoded or decoded in a step of a few milliseconds. */
export const NAMES_PER_FRAME = 4096
/** Bytes of encoded frames copied into the whole snapshot per step (see `SnapshotWriter`). */
export const COPY_PER_STEP = 2 * 1024 * 1024
const MAGIC = [0xc1, 0x53, 0x52, 0x03]

interface Header {
  v: 3
  i: number
  sworm: string | undefined
  nodes: NodeRecord[]
  sessions: Array<[string, string, number, Array<[number, RegistryResult]>]>
}
/** A frame of names: the node incarnations its static refs point at, and the names. */
interface NamesFrame {
  t: Array<[string, string]>
  n: Array<[string, number, number] | [string, Readonly<Registration>]>
}
interface GroupsFrame {
  g: Array<[string, Array<[string, Member]>]>
}

/**
 * Encodes the registry as it was when the writer was made, one frame per {@link step}, while
 * the registry goes on changing (see the module documentation).
 */
export class SnapshotWriter {
  /** Each shard's names at the cut, once taken (see the module documentation); dropped once encoded. */
  private readonly shardNames: Array<string[] | undefined>
  /** The shard being encoded, and the next name of it. */
  private shard = 0
  private nameAt = 0
  /** Names at the cut, and how many of them are encoded. */
  private readonly nameCount: number
  private namesDone = 0
  private taken = 0
  private readonly groups: string[]
  private readonly preNames = new Map<string, Readonly<Registration> | null>()
  private readonly preGroups = new Map<string, ReadonlyMap<string, Member> | null>()
  private parts: Uint8Array[] = []
  private size = 0
  private groupAt = 0
  private header: Header | undefined
  /** The whole snapshot, being assembled from `parts` (see {@link SnapshotWriter.step}). */
  private out: Uint8Array | undefined
  private partAt = 0
  private outAt = 0

  /**
   * @param t - the live tables (the writer keeps reading them)
   * @param index - the log index the registry has applied
   * @param sworm - the sworm name every stored ref shares (undefined if none yet)
   * @param perFrame - names per frame (and twice as many group members)
   * @param copyPerStep - bytes of frames copied into the whole snapshot per step, once they are
   *   all encoded (at least one frame a step)
   */
  constructor(
    private readonly t: Tables,
    index: number,
    private readonly sworm: string | undefined,
    private readonly perFrame = NAMES_PER_FRAME,
    private readonly copyPerStep = COPY_PER_STEP,
  ) {
    this.shardNames = new Array<string[] | undefined>(t.names.shardCount)
    this.nameCount = t.names.size
    this.groups = Array.from(t.groups.keys())
    const sessions: Header['sessions'] = []
    for (const [node, x] of t.sessions) sessions.push([node, x.inc, x.low, [...x.results]])
    this.header = { v: 3, i: index, sworm, nodes: [...t.nodes.values()].map((n) => ({ ...n })), sessions }
  }

  /** Before `name` changes: its value now (undefined if absent), kept if the cut needs it. */
  touchName(name: string, now: Readonly<Registration> | undefined): void {
    const s = this.t.names.shardIndexOf(name)
    if (s < this.shard) return // that shard is encoded: its old values are no longer needed
    if (this.shardNames[s] === undefined) this.takeShard(s) // its first change: its order at the cut, now
    // (a static name's registration never changes: the object itself is its value at the cut)
    if (!this.preNames.has(name)) this.preNames.set(name, now ? (now instanceof StaticName ? now : { ...now }) : null)
  }

  /** How many names' keys the writer has taken so far (the whole table's would be one stall). */
  get namesTaken(): number {
    return this.taken
  }

  private takeShard(s: number): string[] {
    const keys = this.t.names.shardKeys(s)
    this.shardNames[s] = keys
    this.taken += keys.length
    return keys
  }

  /** Before the members of `group` change: the members now (undefined if no such group). */
  touchGroup(group: string, now: ReadonlyMap<string, Member> | undefined): void {
    if (!this.preGroups.has(group)) this.preGroups.set(group, now ? new Map(now) : null)
  }

  /**
   * Whether every frame is encoded: the registry's writes no longer need to hand this writer
   * their old values (the steps left only copy bytes).
   */
  get framesDone(): boolean {
    return this.header === undefined && this.namesDone >= this.nameCount && this.groupAt >= this.groups.length
  }

  /** Encode the next frame; the whole snapshot once the last one is done, else undefined. */
  step(): Uint8Array | undefined {
    if (this.header) {
      this.push(Uint8Array.from(MAGIC), false)
      this.push(pack(this.header), true)
      this.header = undefined
      return undefined
    }
    if (this.namesDone < this.nameCount) {
      this.push(pack(this.namesFrame()), true)
      return undefined
    }
    if (this.groupAt < this.groups.length) {
      this.push(pack(this.groupsFrame()), true)
      return undefined
    }
    return this.assemble()
  }

  /**
   * Copy the next frames into the whole snapshot, `copyPerStep` bytes of them a step: the memory
   * a snapshot is copied into is new, and the first write to each of its pages costs the kernel a
   * page fault (on the 2-core VM the benches run on, about 4 ms a MiB: one copy of a 100 MiB
   * snapshot held a node's event loop for 1.1-1.8 s, with 300k supervised names). The whole
   * snapshot once the last frame is in, else undefined.
   */
  private assemble(): Uint8Array | undefined {
    this.out ??= new Uint8Array(this.size)
    let copied = 0
    while (this.partAt < this.parts.length && (copied === 0 || copied + this.parts[this.partAt]!.length <= this.copyPerStep)) {
      const p = this.parts[this.partAt]!
      this.out.set(p, this.outAt)
      this.outAt += p.length
      copied += p.length
      this.partAt++
    }
    if (this.partAt < this.parts.length) return undefined
    this.parts = []
    return this.out
  }

  private namesFrame(): NamesFrame {
    const frame: NamesFrame = { t: [], n: [] }
    const incs = new Map<string, number>()
    const end = Math.min(this.nameCount, this.namesDone + this.perFrame)
    while (this.namesDone < end) {
      // (the shards' names at the cut add up to the count at the cut, unless a write bypassed touchName)
      if (this.shard >= this.shardNames.length) throw new Error('registry snapshot: the name table changed without the writer seeing it')
      const keys = this.shardNames[this.shard] ?? this.takeShard(this.shard)
      if (this.nameAt >= keys.length) {
        this.shardNames[this.shard++] = undefined
        this.nameAt = 0
        continue
      }
      const name = keys[this.nameAt++]!
      this.namesDone++
      const pre = this.preNames.get(name)
      const r = pre === undefined ? this.t.names.get(name) : pre
      if (!r) continue // absent at the cut (touched before it was added)
      if (r instanceof StaticName && r.sworm === this.sworm && Number.isSafeInteger(r.id)) {
        const key = `${r.refNode}\u0000${r.refInc}`
        let k = incs.get(key)
        if (k === undefined) {
          incs.set(key, (k = frame.t.length))
          frame.t.push([r.refNode, r.refInc])
        }
        frame.n.push([name, k, r.id])
      } else frame.n.push([name, r instanceof StaticName ? r.copy() : r])
    }
    return frame
  }

  private groupsFrame(): GroupsFrame {
    const frame: GroupsFrame = { g: [] }
    let members = 0
    while (this.groupAt < this.groups.length && members < 2 * this.perFrame) {
      const group = this.groups[this.groupAt++]!
      const pre = this.preGroups.get(group)
      const g = pre === undefined ? this.t.groups.get(group) : pre
      if (!g) continue
      frame.g.push([group, [...g.entries()]])
      members += g.size
    }
    return frame
  }

  private push(bytes: Uint8Array, framed: boolean): void {
    if (framed) {
      const len = new Uint8Array(4)
      new DataView(len.buffer).setUint32(0, bytes.length)
      this.parts.push(len)
      this.size += 4
    }
    this.parts.push(bytes)
    this.size += bytes.length
  }
}

/** The result of decoding a snapshot: the tables, the applied index and the sworm name. */
export interface Restored {
  tables: Tables
  index: number
  sworm: string | undefined
}

/**
 * Decodes a snapshot into new tables, one frame per {@link step}: the registry keeps serving
 * from its old tables until the last step, then swaps them in at once.
 */
export class SnapshotReader {
  private readonly t = emptyTables()
  private at = MAGIC.length
  private index = 0
  private sworm: string | undefined
  private started = false

  constructor(private readonly data: Uint8Array) {}

  /** Decode the next frame; the result once the data is all read, else undefined. */
  step(): Restored | undefined {
    if (!this.started && !hasMagic(this.data)) return decodeV2(this.data)
    if (this.at >= this.data.length) {
      if (!this.started) throw new Error('registry snapshot: no header')
      return { tables: this.t, index: this.index, sworm: this.sworm }
    }
    if (this.at + 4 > this.data.length) throw new Error('registry snapshot: truncated frame')
    const len = new DataView(this.data.buffer, this.data.byteOffset + this.at, 4).getUint32(0)
    const end = this.at + 4 + len
    if (end > this.data.length) throw new Error('registry snapshot: truncated frame')
    const frame = unpack(this.data.subarray(this.at + 4, end)) as Header | NamesFrame | GroupsFrame
    this.at = end
    if (!this.started) {
      const h = frame as Header
      if (h.v !== 3) throw new Error(`registry snapshot: unknown version ${String(h.v)}`)
      this.started = true
      this.index = h.i
      this.sworm = h.sworm
      for (const n of h.nodes) this.t.nodes.set(n.node, n)
      for (const [node, inc, low, results] of h.sessions) this.t.sessions.set(node, { inc, low, results: new Map(results) })
    } else if ('n' in frame) {
      for (const rec of frame.n) {
        if (rec.length === 3) {
          const [node, inc] = frame.t[rec[1]]!
          addName(this.t, { name: rec[0], ref: { sworm: this.sworm!, node, inc, id: rec[2] }, kind: 'static' }, this.sworm)
        } else addName(this.t, { ...rec[1], name: rec[0] }, this.sworm)
      }
    } else if ('g' in frame) {
      for (const [group, members] of frame.g) addGroup(this.t, group, members, this.sworm)
    } else throw new Error('registry snapshot: unknown frame')
    return undefined
  }
}

function hasMagic(data: Uint8Array): boolean {
  return data.length >= MAGIC.length && MAGIC.every((b, i) => data[i] === b)
}

/** The ref to keep: its strings shared with the node record (see RegistryState). */
export function sharedRef(ref: WorkerRef, nodes: Map<string, NodeRecord>, sworm: string | undefined): WorkerRef {
  const n = nodes.get(ref.node)
  if (!n || n.inc !== ref.inc) return ref
  return { sworm: ref.sworm === sworm && sworm !== undefined ? sworm : ref.sworm, node: n.node, inc: n.inc, id: ref.id }
}

/** Record supervised `name` as placed on `node` (undefined: on none). */
export function addPlaced(t: Pick<Tables, 'placed' | 'unplaced'>, name: string, node: string | undefined): void {
  if (node === undefined) {
    t.unplaced.add(name)
    return
  }
  let s = t.placed.get(node)
  if (!s) t.placed.set(node, (s = new Set()))
  s.add(name)
}

/** Undo {@link addPlaced}. */
export function deletePlaced(t: Pick<Tables, 'placed' | 'unplaced'>, name: string, node: string | undefined): void {
  if (node === undefined) {
    t.unplaced.delete(name)
    return
  }
  const s = t.placed.get(node)
  if (s?.delete(name) && s.size === 0) t.placed.delete(node)
}

/** Names in a deterministic order (by code unit), whatever order the set holds them in. */
export function sortedNames(names: Iterable<string>): string[] {
  return [...names].sort(byName)
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

/**
 * The first `max` of `names` in name order (distinct names): what {@link sortedNames} would begin
 * with, without sorting them all (a selection, then a sort of those alone). A gone node's names
 * move a slice an entry; sorting all that were left for each slice cost a survivor half a
 * second of sorts at 100k names.
 */
export function firstNames(names: Iterable<string>, max: number): string[] {
  const a = [...names]
  if (a.length <= max) return a.sort(byName)
  // quickselect (median of three): afterwards, a[0..max) holds the `max` smallest
  let lo = 0
  let hi = a.length - 1
  const k = max - 1
  // (names are the users': a run of bad pivots ends in a sort, not in n² steps)
  for (let rounds = 2 * Math.ceil(Math.log2(a.length)) + 8; hi > lo; rounds--) {
    if (rounds === 0) {
      a.sort(byName)
      break
    }
    const mid = lo + ((hi - lo) >> 1)
    const x = a[lo]!
    const y = a[mid]!
    const z = a[hi]!
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y
    let i = lo
    let j = hi
    while (i <= j) {
      while (a[i]! < pivot) i++
      while (a[j]! > pivot) j--
      if (i <= j) {
        const t = a[i]!
        a[i] = a[j]!
        a[j] = t
        i++
        j--
      }
    }
    if (k <= j) hi = j
    else if (k >= i) lo = i
    else break
  }
  a.length = max
  return a.sort(byName)
}

function addName(t: Tables, r: Registration, sworm: string | undefined): void {
  if (r.ref) r.ref = sharedRef(r.ref, t.nodes, sworm)
  t.names.set(r.name, r.kind === 'static' && r.ref ? new StaticName(r.name, r.ref.sworm, r.ref.node, r.ref.inc, r.ref.id) : r)
  if (r.ref) t.namesOf.add(r.ref, r.name, r.kind === 'supervised')
  if (r.kind === 'supervised') addPlaced(t, r.name, r.node)
  if (r.kind === 'alias') {
    let a = t.aliasesOf.get(r.target!)
    if (!a) t.aliasesOf.set(r.target!, (a = new Set()))
    a.add(r.name)
  }
}

function addGroup(t: Tables, group: string, members: Array<[string, Member]>, sworm: string | undefined): void {
  const m = new Map<string, Member>()
  for (const [key, member] of members) {
    m.set(key, 'ref' in member ? { ref: sharedRef(member.ref, t.nodes, sworm) } : member)
    let set = t.groupsOf.get(key)
    if (!set) t.groupsOf.set(key, (set = new Set()))
    set.add(group)
  }
  t.groups.set(group, m)
}

/** The format before frames: one MessagePack map (snapshots written by older versions). */
function decodeV2(data: Uint8Array): Restored {
  const s = unpack(data) as {
    i: number
    names: Registration[]
    groups: Array<[string, Array<[string, Member]>]>
    nodes: NodeRecord[]
    sessions?: Array<[string, string, number, Array<[number, RegistryResult]>]>
  }
  const t = emptyTables()
  for (const [node, inc, low, results] of s.sessions ?? []) t.sessions.set(node, { inc, low, results: new Map(results) })
  for (const n of s.nodes) t.nodes.set(n.node, n)
  const sworm = s.names.find((r) => r.ref)?.ref?.sworm
  for (const r of s.names) addName(t, r, sworm)
  for (const [g, members] of s.groups) addGroup(t, g, members, sworm)
  return { tables: t, index: s.i, sworm }
}
