/**
 * The default logger: pino, JSON lines on stderr, behind the {@link Logger} port.
 * @module
 */
import pino from 'pino'
import type { Logger, LogLevel } from '../raft/types.js'

let stderr: pino.DestinationStream | undefined

/**
 * A pino logger writing one JSON line per event to stderr (`{"level":"info","t":"<ISO time>",
 * "sworm":...,"node":...,"msg":...}`), at `level` and above. Every logger of the process shares
 * one synchronous stderr destination.
 * @param level - the lowest level written
 * @param base - fields added to every line (for example `{ sworm: 'users', node: 'n1' }`)
 */
export function pinoLogger(level: LogLevel = 'info', base: Record<string, unknown> = {}): Logger {
  stderr ??= pino.destination({ dest: 2, sync: true })
  const p = pino(
    {
      level,
      base,
      // `t`, as in consoleLogger's lines (log readers key on it)
      timestamp: () => `,"t":"${new Date().toISOString()}"`,
      formatters: { level: (label) => ({ level: label }) },
    },
    stderr,
  )
  const baseKeys = Object.keys(base)
  // Callers may repeat a base field (the Raft node adds `node`): write each key once.
  const clean = (fields: Record<string, unknown>): Record<string, unknown> => {
    let out = fields
    for (const k of baseKeys) {
      if (k in out && out[k] === base[k]) {
        if (out === fields) out = { ...fields }
        delete out[k]
      }
    }
    return out
  }
  const at =
    (lvl: LogLevel) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      if (!p.isLevelEnabled(lvl)) return
      if (fields === undefined) p[lvl](msg)
      else p[lvl](clean(fields), msg)
    }
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}
