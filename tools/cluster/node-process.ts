/**
 * The scaffolding every node process entry of the cluster harness shares (`sworm-node.ts`,
 * `raft-kv-node.ts`): the JSON argument, the IPC channel, crash logging, the request loop and the
 * shutdown.
 *
 * A node process is spawned as `node <entry>.js '<json>'` with an IPC channel
 * (`stdio: ['ignore', 'pipe', 'pipe', 'ipc']`). Once started it sends `{ ready: true, ... }`
 * over IPC. Then it answers requests `{ id, op, ... }` with `{ id, ok: true, result }` or
 * `{ id, ok: false, error: { code, message, leader? } }`. A failed request never crashes the
 * process. The `stop` request stops the node and exits 0; once it came, other requests are
 * refused with `SHUTTING_DOWN`. If the parent goes away (IPC disconnects) the process exits 1.
 * If the node does not start, the process sends `{ startFailed: { code, message } }` and exits 2.
 * @module
 */

/** What a node process answers a failed request with. */
export interface ErrorInfo {
  code: string
  message: string
  /** The leader a Raft node named when it refused a request as a follower. */
  leader?: string
}

/**
 * The `{ code, message, leader? }` of an error: its string `code`, else (with `nameAsCode`) its
 * `name`, else `ERROR`.
 */
export function errorInfo(err: unknown, nameAsCode = true): ErrorInfo {
  if (err instanceof Error) {
    const e = err as Error & { code?: unknown; leader?: unknown }
    const info: ErrorInfo = { code: typeof e.code === 'string' ? e.code : (nameAsCode && err.name) || 'ERROR', message: e.message }
    if (typeof e.leader === 'string') info.leader = e.leader
    return info
  }
  return { code: 'ERROR', message: String(err) }
}

/** Send a message to the parent, if it still listens. */
export type SendToParent = (msg: unknown) => void

/** Where the scaffolding reports its own troubles (a bad message, an unhandled rejection, ...). */
export interface ProcessLog {
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

/** A log writing `msg {fields}` lines to stderr. */
export const stderrLog: ProcessLog = {
  warn: (msg, fields) => process.stderr.write(`${msg}${fields ? ` ${JSON.stringify(fields)}` : ''}\n`),
  error: (msg, fields) => process.stderr.write(`${msg}${fields ? ` ${JSON.stringify(fields)}` : ''}\n`),
}

/** A started node, as the request loop drives it. */
export interface NodeService {
  /** Fields of the `{ ready: true, ... }` message (besides `pid`). */
  readonly ready: Record<string, unknown>
  /** Answer one request other than `stop` (its resolved value is the result; `undefined` becomes `null`). */
  handle(req: { op: string }): Promise<unknown>
  /** Stop the node (the `stop` request); the process exits once the answer is sent. */
  stop(): Promise<void>
}

/** What {@link runNodeProcess} needs to know about one kind of node. */
export interface NodeProcessSpec<A, L extends ProcessLog = ProcessLog> {
  /** Name of the entry in messages (`sworm-process`, `raft-kv-process`). */
  title: string
  /** Where the scaffolding logs (e.g. {@link stderrLog}); handed to `start` too. */
  log: (args: A) => L
  /** Whether an error without a string `code` is answered with its `name` as code (default true). */
  nameAsCode?: boolean
  /** Start the node. A rejection is reported as `startFailed` and the process exits 2. */
  start(args: A, send: SendToParent, log: L): Promise<NodeService>
}

/**
 * A {@link NodeService.handle} that looks the request's op up in `ops` (op name -> handler) and
 * rejects unknown ops.
 */
export function opTableHandler<R extends { op: string }>(ops: object): (req: { op: string }) => Promise<unknown> {
  const table = ops as Record<string, (req: R) => unknown>
  return async (req) => {
    if (!Object.hasOwn(table, req.op)) throw new Error(`unknown op ${String(req.op)}`)
    return await table[req.op]!(req as R)
  }
}

function stackOf(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err)
}

/** Run a node process entry: parse the JSON argument, start the node, answer IPC requests. */
export function runNodeProcess<A, L extends ProcessLog>(spec: NodeProcessSpec<A, L>): void {
  main(spec).catch((err: unknown) => {
    process.stderr.write(`${spec.title} failed to start: ${stackOf(err)}\n`)
    process.exit(2)
  })
}

async function main<A, L extends ProcessLog>(spec: NodeProcessSpec<A, L>): Promise<void> {
  const raw = process.argv[2]
  if (!raw) throw new Error(`usage: ${spec.title}.js <json args>`)
  const args = JSON.parse(raw) as A
  const log = spec.log(args)
  const nameAsCode = spec.nameAsCode ?? true
  if (!process.send) throw new Error(`${spec.title} must be spawned with an IPC channel`)
  const send: SendToParent = (msg) => {
    try {
      if (process.connected) process.send!(msg)
    } catch (err) {
      log.warn('ipc send failed', { err: String(err) })
    }
  }
  process.on('disconnect', () => process.exit(1))
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', { err: String(err) }))
  process.on('uncaughtException', (err) => log.error('uncaught exception', { err: String(err), stack: err.stack }))

  let service: NodeService
  try {
    service = await spec.start(args, send, log)
  } catch (err) {
    // say why over IPC (the harness tells a refusal from a crash), then exit
    process.stderr.write(`${spec.title} failed to start: ${stackOf(err)}\n`)
    setTimeout(() => process.exit(2), 1000)
    if (process.connected) process.send!({ startFailed: errorInfo(err, nameAsCode) }, () => process.exit(2))
    else process.exit(2)
    return
  }
  let stopping = false

  const handle = async (req: { op: string }): Promise<unknown> => {
    if (req.op !== 'stop') return await service.handle(req)
    stopping = true
    await service.stop()
    return null
  }

  process.on('message', (rawMsg: unknown) => {
    const msg = rawMsg as { id?: unknown; op?: unknown } | null
    if (!msg || typeof msg !== 'object' || typeof msg.id !== 'number') {
      log.warn('bad ipc message', { msg: JSON.stringify(rawMsg) })
      return
    }
    const id = msg.id
    if (stopping && msg.op !== 'stop') {
      send({ id, ok: false, error: { code: 'SHUTTING_DOWN', message: 'the process is stopping' } })
      return
    }
    const exitAfterStop = (): void => {
      if (msg.op === 'stop') setImmediate(() => process.exit(0))
    }
    handle(msg as { op: string }).then(
      (result) => {
        send({ id, ok: true, result: result ?? null })
        exitAfterStop()
      },
      (err: unknown) => {
        send({ id, ok: false, error: errorInfo(err, nameAsCode) })
        exitAfterStop()
      },
    )
  })

  send({ ready: true, ...service.ready, pid: process.pid })
}
