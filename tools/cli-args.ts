/**
 * Command-line flags of the scripts (benches, demo, simulations, nemesis), on `node:util`
 * `parseArgs`: unknown flags and flags that are not numbers where numbers are wanted are refused
 * with a clear message instead of becoming `NaN`.
 * @module
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'

/** The option definitions of `parseArgs`. */
export type CliOptions = NonNullable<ParseArgsConfig['options']>

/** The parsed flags, by name. */
export type CliValues = Record<string, string | boolean | Array<string | boolean> | undefined>

/** Bounds of an integer flag (inclusive). */
export interface IntRange {
  min?: number
  max?: number
}

function rangeText({ min, max }: IntRange): string {
  if (min !== undefined && max !== undefined) return ` from ${min} to ${max}`
  if (min !== undefined) return ` >= ${min}`
  if (max !== undefined) return ` <= ${max}`
  return ''
}

/**
 * The integer value of flag `--name`, or `def` when it is not given. Throws
 * `Error("--runs must be an integer, got 'x'")` for a value that is not an integer (or one out of
 * `range`).
 */
export function intOption(values: CliValues, name: string, def: number, range?: IntRange): number
export function intOption(values: CliValues, name: string, def: undefined, range?: IntRange): number | undefined
export function intOption(values: CliValues, name: string, def: number | undefined, range: IntRange = {}): number | undefined {
  const raw = values[name]
  if (raw === undefined) return def
  const text = String(raw).trim()
  const n = Number(text)
  const fits = /^-?\d+$/.test(text) && Number.isSafeInteger(n) && (range.min === undefined || n >= range.min) && (range.max === undefined || n <= range.max)
  if (!fits) throw new Error(`--${name} must be an integer${rangeText(range)}, got '${String(raw)}'`)
  return n
}

/** Whether boolean flag `--name` was given. */
export function flagOption(values: CliValues, name: string): boolean {
  return values[name] === true
}

/** The value of flag `--name` if it is one of `choices`, else `def` when it is not given; throws otherwise. */
export function choiceOption<const C extends string>(values: CliValues, name: string, choices: readonly C[], def: C): C {
  const raw = values[name]
  if (raw === undefined) return def
  if (!choices.includes(raw as C)) throw new Error(`--${name} must be one of ${choices.join(', ')}, got '${String(raw)}'`)
  return raw as C
}

/**
 * Parse this process's flags against `options` (plus `--help`) and read them with `read`. With
 * `--help` it prints `usage` and exits 0; on an unknown flag, a missing value or an error `read`
 * throws (e.g. from {@link intOption}) it prints the message and `usage` to stderr and exits 2.
 */
export function parseCli<T>(usage: string, options: CliOptions, read: (values: CliValues) => T, args: string[] = process.argv.slice(2)): T {
  try {
    const { values } = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false })
    if (values.help === true) {
      process.stdout.write(`${usage}\n`)
      process.exit(0)
    }
    return read(values)
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\nusage: ${usage}\n`)
    process.exit(2)
  }
}
