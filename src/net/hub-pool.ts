/**
 * One {@link WsHub} per listen address in a process, shared by every sworm that listens there
 * (several sworms share a port; each uses its own channels).
 * @module
 */
import { InvalidArgumentError } from '../errors.js'
import type { Logger } from '../raft/types.js'
import { WsHub, type WsHubOptions } from './hub.js'

interface Entry {
  hub: WsHub
  ready: Promise<void>
  users: number
  nodeId: string
  secret: string
}

const hubs = new Map<string, Entry>()

/** Get (starting it if needed) the hub for `listen`; release it with {@link releaseHub}. */
export async function acquireHub(opts: WsHubOptions & { logger: Logger }): Promise<WsHub> {
  const e = hubs.get(opts.listen)
  if (e) {
    if (e.nodeId !== opts.nodeId) throw new InvalidArgumentError(`listen ${opts.listen} is already used by node ${e.nodeId} in this process`)
    if (e.secret !== opts.secret) throw new InvalidArgumentError(`listen ${opts.listen} is already used with another secret`)
    e.users++
    try {
      await e.ready
    } catch (err) {
      e.users--
      throw err
    }
    return e.hub
  }
  const hub = new WsHub(opts)
  const entry: Entry = { hub, ready: hub.start(), users: 1, nodeId: opts.nodeId, secret: opts.secret }
  hubs.set(opts.listen, entry)
  try {
    await entry.ready
  } catch (err) {
    hubs.delete(opts.listen)
    await hub.close().catch(() => {})
    throw err
  }
  return hub
}

/** Release a hub; the last user closes it. */
export async function releaseHub(hub: WsHub): Promise<void> {
  for (const [listen, e] of hubs) {
    if (e.hub !== hub) continue
    if (--e.users > 0) return
    hubs.delete(listen)
    await hub.close()
    return
  }
}
