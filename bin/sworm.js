#!/usr/bin/env node
// The `sworm` command: a shim over the compiled CLI (src/cli.ts; run `npm run build` first).
import { main } from '../dist/src/cli.js'

process.exitCode = await main(process.argv.slice(2))
