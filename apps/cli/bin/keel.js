#!/usr/bin/env node
// Tiny shim: all of the CLI lives in the package, so `npx keel` and the tests run the same code.
//
// It runs dist/keel.cjs, the one-file bundle `npm run build` makes of dist/index.js
// (scripts/bundle.mjs), compiled with a V8 code cache kept beside it: loading ~300 modules
// and compiling every function on first use was most of `keel run`'s start-up (see
// bench/sandbox). The cache is written, once per bundle, Node version and command, by the
// first run that finds none (or finds it rejected); it lives in dist/, so it has the same
// owner as the code it was made from, and a directory that cannot be written just means
// no cache. The modules themselves (dist/index.js) run instead when the bundle is missing
// or older than a package it was made from (e.g. after a bare `tsc -b`), or when
// KEEL_NO_BUNDLE is set.
//
// This file is CommonJS (bin/package.json says so, inside a "type": "module" package):
// Node starts a CommonJS entry point about 7 ms sooner than an ES module one, on every
// keel command.
'use strict'
const { existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } = require('node:fs')
const { createRequire } = require('node:module')
const { dirname, join } = require('node:path')
const { pathToFileURL } = require('node:url')
const vm = require('node:vm')

const DIST = join(__dirname, '..', 'dist') + '/'
const PKG = join(__dirname, '..') + '/'
const BUNDLE = `${DIST}keel.cjs`
const argv = process.argv.slice(2)

/** The manifest, when the bundle is there and no package it was made from is newer. */
function currentBundle() {
  if (process.env.KEEL_NO_BUNDLE) return undefined
  try {
    const manifest = JSON.parse(readFileSync(`${DIST}keel.json`, 'utf8'))
    const built = statSync(BUNDLE).mtimeMs
    if (typeof manifest.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(manifest.sha256)) return undefined
    if (!Array.isArray(manifest.inputs) || !manifest.inputs.every((p) => statSync(`${PKG}${p}`).mtimeMs <= built)) return undefined
    return manifest
  } catch {
    return undefined
  }
}

/** Runs the bundle with its code cache; returns its exports. */
function loadBundle(manifest) {
  const group = ['run', 'gc', 'policy', 'audit', 'dispatcher'].includes(argv[0]) ? argv[0] : 'other'
  const cachePath = `${BUNDLE}.${manifest.sha256.slice(0, 16)}.${process.version}-${process.arch}.${group}.v8cache`
  let cachedData
  try {
    cachedData = readFileSync(cachePath)
  } catch {
    // none yet
  }
  // The bundle is pure ASCII (scripts/bundle.mjs: charset 'ascii'), so latin1 reads it
  // exactly, without UTF-8 decoding, into a one-byte string.
  const source = readFileSync(BUNDLE, 'latin1')
  // The CommonJS wrapper on the first line, so line numbers in stack traces stay right.
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: BUNDLE,
    ...(cachedData ? { cachedData } : {}),
  })
  if (!cachedData || script.cachedDataRejected) {
    // At exit the cache also holds every function this run compiled, not just the top level.
    process.once('exit', () => {
      const tmp = `${cachePath}.${process.pid}.tmp`
      try {
        writeFileSync(tmp, script.createCachedData(), { mode: 0o644 })
        renameSync(tmp, cachePath)
      } catch {
        try {
          if (existsSync(tmp)) unlinkSync(tmp)
        } catch {
          // nothing to clean up
        }
      }
    })
  }
  const module = { exports: {} }
  script.runInThisContext()(module.exports, createRequire(BUNDLE), module, BUNDLE, dirname(BUNDLE))
  return module.exports
}

// As the ES module's top-level await did: a throw is exit 1 whatever --unhandled-rejections
// says, and an event loop that empties before main settles is exit 13, not a silent 0.
let settled = false

// `keel ... | head` closes the pipe early: that is the reader's choice, not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') {
      settled = true
      process.exit(process.exitCode ?? 0)
    }
    throw err
  })
}

process.on('exit', (code) => {
  if (!settled && code === 0) {
    process.stderr.write('keel: exited before finishing (a promise never settled)\n')
    process.exitCode = 13
  }
})
;(async () => {
  const manifest = currentBundle()
  const { main } = manifest ? loadBundle(manifest) : await import(pathToFileURL(`${DIST}index.js`).href)
  return main(argv)
})().then(
  (code) => {
    settled = true
    process.exitCode = code
  },
  (err) => {
    settled = true
    process.stderr.write(`${err?.stack ?? err}\n`)
    process.exitCode = 1
  },
)
