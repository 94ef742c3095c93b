#!/usr/bin/env node
// Tiny shim: all of the CLI lives in the package, so `npx keel` and the tests run the same code.
import { main } from '../dist/index.js'

process.exitCode = await main(process.argv.slice(2))
