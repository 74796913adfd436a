/**
 * Hostile connections from outside the cluster, for the real-process nemesis: raw WebSockets (the
 * `ws` package) and TCP sockets to a node's listen port that send garbage instead of speaking the
 * protocol. Every attack targets 127.0.0.1 only, opens a bounded number of sockets, and destroys
 * whatever is left after a bounded time; none ever throws.
 *
 * - `oversized`: one 2-16 MiB frame before the protocol handshake (random bytes, or a `hello`
 *   padded with a huge binary field), over a WebSocket; or as many bytes of garbage on a TCP
 *   socket instead of an HTTP upgrade request.
 * - `manyMaps`: a msgpack array of 64 Ki-1 Mi empty maps as the first frame.
 * - `truncated`: a `hello` cut short; a valid `hello` and then silence (the handshake never ends);
 *   or half an HTTP upgrade request and then silence.
 * - `wrongSecret`: a full handshake with a proof made with the wrong secret, under a random id, a
 *   member's id, or the target's own id.
 * - `idle`: 16-200 connections (WebSockets upgraded, or bare TCP) that send nothing for 1-6 s.
 * @module
 */
import { createHmac, randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { Packr } from 'msgpackr'
import { WebSocket } from 'ws'

export const HOSTILE_KINDS = ['oversized', 'manyMaps', 'truncated', 'wrongSecret', 'idle'] as const
export type HostileKind = (typeof HOSTILE_KINDS)[number]

const packr = new Packr({ useRecords: false })
const MiB = 1024 * 1024

/** What an attack needs. */
export interface HostileTarget {
  /** The node's listen address, `ws://127.0.0.1:port`. */
  url: string
  /** The node's id (to impersonate it to itself). */
  nodeId: string
  /** Ids of the cluster's members (to impersonate them). */
  memberIds: string[]
}

/**
 * Run one attack of `kind` on `target`; resolves (never rejects) once every socket it opened is
 * closed, at most about `maxMs` (default 8 s) later. Returns a short description.
 */
export async function hostileAttack(kind: HostileKind, target: HostileTarget, r: () => number, maxMs = 8000): Promise<string> {
  const u = new URL(target.url)
  if (u.hostname !== '127.0.0.1') throw new Error(`hostile connections target 127.0.0.1 only, not ${u.hostname}`)
  const port = Number(u.port)
  const sockets = new Set<{ destroy(): void }>()
  const wsOpen = (): WebSocket => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false, handshakeTimeout: 3000, maxPayload: 1 * MiB })
    ws.on('error', () => {})
    sockets.add({ destroy: () => ws.terminate() })
    return ws
  }
  const tcpOpen = (): Socket => {
    const s = connect({ host: '127.0.0.1', port })
    s.on('error', () => {})
    s.setTimeout(maxMs, () => s.destroy())
    sockets.add(s)
    return s
  }
  const closed = (ws: WebSocket, ms: number): Promise<void> =>
    new Promise((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve()
      const t = setTimeout(resolve, ms)
      ws.once('close', () => {
        clearTimeout(t)
        resolve()
      })
    })
  const opened = (ws: WebSocket): Promise<boolean> =>
    new Promise((resolve) => {
      ws.once('open', () => resolve(true))
      ws.once('close', () => resolve(false))
      ws.once('error', () => resolve(false))
    })
  const hello = (id: string): Buffer => packr.pack({ v: 1, t: 'hello', id, boot: randomBytes(8).toString('hex'), nonce: randomBytes(32) })
  const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms))
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1))

  const attack = async (): Promise<string> => {
    switch (kind) {
      case 'oversized': {
        const size = int(2 * MiB, 16 * MiB)
        const how = Math.floor(r() * 3)
        if (how === 2) {
          // garbage instead of an HTTP upgrade request
          const s = tcpOpen()
          await new Promise<void>((res) => s.once('connect', () => res()).once('error', () => res()))
          s.write(randomBytes(size))
          await sleep(2000)
          return `${size} bytes of garbage over TCP`
        }
        const ws = wsOpen()
        if (!(await opened(ws))) return 'upgrade refused'
        const frame = how === 0 ? randomBytes(size) : packr.pack({ v: 1, t: 'hello', pad: Buffer.alloc(size, 0x61) })
        ws.send(frame, { binary: true })
        await closed(ws, 4000)
        return `a ${frame.length}-byte ${how === 0 ? 'random' : 'padded hello'} frame`
      }
      case 'manyMaps': {
        const n = Math.floor(2 ** (16 + r() * 4))
        const frame = Buffer.alloc(5 + n, 0x80) // array32 header, then n fixmaps of size 0
        frame[0] = 0xdd
        frame.writeUInt32BE(n, 1)
        const ws = wsOpen()
        if (!(await opened(ws))) return 'upgrade refused'
        ws.send(frame, { binary: true })
        await closed(ws, 4000)
        return `an array of ${n} empty maps`
      }
      case 'truncated': {
        const how = Math.floor(r() * 3)
        if (how === 2) {
          const s = tcpOpen()
          await new Promise<void>((res) => s.once('connect', () => res()).once('error', () => res()))
          s.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Ver`)
          await new Promise<void>((res) => {
            s.once('close', () => res())
            setTimeout(res, 6500)
          })
          return 'half an HTTP upgrade request'
        }
        const ws = wsOpen()
        if (!(await opened(ws))) return 'upgrade refused'
        const h = hello(`intruder-${randomBytes(3).toString('hex')}`)
        ws.send(how === 0 ? h.subarray(0, 1 + Math.floor(r() * (h.length - 2))) : h, { binary: true })
        await closed(ws, 6500)
        return how === 0 ? 'a truncated hello' : 'a hello, then silence'
      }
      case 'wrongSecret': {
        const x = r()
        const id = x < 0.4 ? `intruder-${randomBytes(3).toString('hex')}` : x < 0.8 ? target.memberIds[Math.floor(r() * target.memberIds.length)]! : target.nodeId
        const ws = wsOpen()
        if (!(await opened(ws))) return 'upgrade refused'
        const challenge = new Promise<boolean>((res) => {
          ws.once('message', () => res(true))
          ws.once('close', () => res(false))
        })
        ws.send(hello(id), { binary: true })
        if (await challenge) {
          const proof = createHmac('sha256', 'not the secret').update(randomBytes(16)).digest()
          ws.send(packr.pack({ v: 1, t: 'auth', proof }), { binary: true })
        }
        await closed(ws, 4000)
        return `a handshake as ${id} with the wrong secret`
      }
      case 'idle': {
        const n = int(16, 200)
        const holdMs = int(1000, 6000)
        const tcp = r() < 0.3
        for (let i = 0; i < n; i++) {
          if (tcp) tcpOpen()
          else wsOpen()
        }
        await sleep(holdMs)
        return `${n} idle ${tcp ? 'TCP' : 'WebSocket'} connections for ${holdMs} ms`
      }
    }
  }
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      attack().catch((err: unknown) => `failed: ${String(err)}`),
      new Promise<string>((res) => (timer = setTimeout(() => res('cut short'), maxMs))),
    ])
  } finally {
    clearTimeout(timer)
    for (const s of sockets) s.destroy()
  }
}
