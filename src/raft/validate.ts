/**
 * Checks that a message from a peer has the shape of a Raft message before the core sees it.
 * The transport authenticates peers; this guards against bugs and hostile content alike:
 * anything that does not fit is dropped by the node with a log line, never thrown.
 *
 * Besides the shape, it refuses what no correct node can send whatever its state: log terms that
 * go down or exceed the message's term, a snapshot newer than its term or without voters, entries
 * not numbered from `prevIndex + 1`. What depends on the receiver's state (an index beyond its
 * log, a stale or a newer term) is the core's business: it rejects, clamps or follows Raft's rules.
 * @module
 */
import type { Entry, RaftMessage, SnapshotMeta } from './types.js'

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isNat = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 256
const ENTRY_TYPES = new Set(['cmd', 'noop', 'conf'])

function isConfig(v: unknown): boolean {
  if (!isObj(v) || !isObj(v.voters) || !isObj(v.learners)) return false
  for (const a of [...Object.values(v.voters), ...Object.values(v.learners)]) if (typeof a !== 'string') return false
  if (v.disks !== undefined && (!isObj(v.disks) || !Object.values(v.disks).every(isStr))) return false
  // (ids of any length, as the voters' and learners' keys, and as many as a later build may keep:
  // a configuration refused here could never reach this node, and its log would stop there)
  if (v.removed !== undefined && (!Array.isArray(v.removed) || !v.removed.every((x) => typeof x === 'string'))) return false
  return v.cluster === undefined || isStr(v.cluster)
}

function isEntry(v: unknown): v is Entry {
  if (!isObj(v) || !isNat(v.index) || v.index < 1 || !isNat(v.term) || typeof v.type !== 'string' || !ENTRY_TYPES.has(v.type)) return false
  return v.type !== 'conf' || isConfig(v.data)
}

function isSnapshotMeta(v: unknown, term: number): v is SnapshotMeta {
  if (!isObj(v) || !isNat(v.index) || !isNat(v.term) || v.term > term || !isConfig(v.config)) return false
  // every configuration a cluster can reach has a voter
  return Object.keys((v.config as { voters: object }).voters).length > 0
}

/** A chunk lies within its snapshot, and only an empty snapshot has an empty chunk. */
function isChunk(msg: Record<string, unknown>): boolean {
  const { total, offset, data, crc } = msg
  if (!isNat(total) || !isNat(offset) || !(data instanceof Uint8Array) || !isNat(crc) || crc > 0xffffffff) return false
  return offset + data.length <= total && (data.length > 0 || total === 0)
}

/**
 * Return `msg` as a {@link RaftMessage} if it is one, sent by `from` to `self`; otherwise a short
 * reason string (for the log line).
 */
export function validateRaftMessage(msg: unknown, from: string, self: string): RaftMessage | string {
  if (!isObj(msg)) return 'not an object'
  if (msg.from !== from) return 'sender mismatch'
  if (msg.to !== self) return 'not addressed to this node'
  if (!isNat(msg.term)) return 'bad term'
  if (msg.dk !== undefined && !isStr(msg.dk)) return 'bad data directory id'
  switch (msg.t) {
    case 'vote':
      if (typeof msg.pre !== 'boolean' || typeof msg.transfer !== 'boolean' || !isNat(msg.lastIndex) || !isNat(msg.lastTerm)) return 'bad vote'
      if (msg.lastTerm > msg.term) return 'bad vote'
      break
    case 'voteResp':
      if (typeof msg.pre !== 'boolean' || typeof msg.granted !== 'boolean') return 'bad voteResp'
      break
    case 'app': {
      if (!isNat(msg.prevIndex) || !isNat(msg.prevTerm) || !isNat(msg.commit) || !Array.isArray(msg.entries)) return 'bad app'
      if (msg.prevTerm > msg.term) return 'bad app'
      let expect = msg.prevIndex + 1
      let lastTerm = msg.prevTerm
      for (const e of msg.entries) {
        // contiguous from prevIndex, terms never going down nor beyond the sender's term
        if (!isEntry(e) || e.index !== expect++ || e.term > msg.term || e.term < lastTerm) return 'bad entry in app'
        lastTerm = e.term
      }
      break
    }
    case 'appResp':
      if (typeof msg.success !== 'boolean' || !isNat(msg.index) || !isNat(msg.hint)) return 'bad appResp'
      if (msg.lost !== undefined && msg.lost !== true) return 'bad appResp'
      break
    case 'hb':
      if (!isNat(msg.commit) || !isNat(msg.seq)) return 'bad hb'
      if ((msg.lease !== undefined && typeof msg.lease !== 'boolean') || (msg.ack !== undefined && !isNat(msg.ack)) || (msg.ackP !== undefined && !isNat(msg.ackP))) return 'bad hb'
      break
    case 'hbResp':
      if (!isNat(msg.seq) || (msg.p !== undefined && !isNat(msg.p))) return 'bad hbResp'
      break
    case 'snap':
      if (!isSnapshotMeta(msg.meta, msg.term) || !isChunk(msg)) return 'bad snap'
      break
    case 'snapResp':
      if (!isNat(msg.index) || !isNat(msg.offset) || (msg.retry !== undefined && msg.retry !== true)) return 'bad snapResp'
      break
    case 'timeoutNow':
      break
    case 'readIndex':
      if (!Array.isArray(msg.ids) || !msg.ids.every(isNat)) return 'bad readIndex'
      break
    case 'readIndexResp':
      if (!Array.isArray(msg.ids) || !msg.ids.every(isNat) || !isNat(msg.index)) return 'bad readIndexResp'
      break
    default:
      return `unknown message type ${JSON.stringify(String(msg.t)).slice(0, 40)}`
  }
  if (!isStr(msg.from) || !isStr(msg.to)) return 'bad ids'
  return msg as unknown as RaftMessage
}
