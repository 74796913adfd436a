/**
 * Terminal output of the demo (scripted and dashboard modes): colours (`util.styleText`, only on a
 * colour terminal), a progress line that rewrites itself, and number formatting.
 * @module
 */
import { styleText } from 'node:util'

/** Whether stdout is a terminal. */
export const TTY = process.stdout.isTTY === true
const COLOR = TTY && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb'

type Style = Parameters<typeof styleText>[0]
const paint =
  (style: Style) =>
  (s: string): string =>
    COLOR ? styleText(style, s) : s

/** Text styles (plain text when stdout is not a colour terminal). */
export const bold = paint('bold')
export const dim = paint('dim')
export const green = paint('green')
export const red = paint('red')
export const yellow = paint('yellow')
export const cyan = paint('cyan')

let lineOpen = false

/** Rewrite the current line (a progress bar) on a terminal; elsewhere print only the final state. */
export function progress(text: string, final = false): void {
  if (TTY) {
    process.stdout.write(`\r\x1b[2K${text}`)
    lineOpen = !final
    if (final) process.stdout.write('\n')
  } else if (final) process.stdout.write(`${text}\n`)
}

/** Print a line (after closing an open progress line). */
export function say(text: string): void {
  if (lineOpen) {
    process.stdout.write('\n')
    lineOpen = false
  }
  process.stdout.write(`${text}\n`)
}

/** A progress bar `[████░░░░]` of `done` out of `total`. */
export function bar(done: number, total: number, width = 28): string {
  const k = total === 0 ? width : Math.min(width, Math.round((done / total) * width))
  return `[${'█'.repeat(k)}${dim('░'.repeat(width - k))}]`
}

/** `123 ms` below a second, else seconds with `digits` decimals (`1.5 s`). */
export const formatMs = (ms: number, digits: number): string => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(digits)} s`)

/** A count with thousands separators (`1,000`). */
export const num = (n: number): string => n.toLocaleString('en-US')

/** Resolve after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
