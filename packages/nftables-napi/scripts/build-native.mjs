#!/usr/bin/env node
// Compiles build/Release/keel_nft.node with this workspace's own node-gyp (a
// devDependency), offline, and incrementally.
//
// Why not an `install` script: npm 11 does not run dependencies' install scripts unless
// allowed, so the turbo `build` task is what compiles the addon.
// Why not `node-gyp-build` as the builder: it skips compiling whenever an old build
// loads, so an edited nft.cc would be silently ignored. `node-gyp build` is make, so an
// unchanged tree rebuilds in well under a second.
//
// Headers: node-gyp downloads Node's headers unless it is given a nodedir. npm passes
// `nodedir` from npmrc as npm_config_nodedir; otherwise this script uses the headers
// installed beside the running node (official tarballs and distro packages ship
// include/node), so nothing is downloaded.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const BUILD = path.join(ROOT, 'build')
const STAMP = path.join(BUILD, 'keel-configure.json')

const require = createRequire(import.meta.url)
let nodeGyp
try {
  nodeGyp = require.resolve('node-gyp/bin/node-gyp.js')
} catch {
  fail('node-gyp is not installed: run `npm ci` at the repository root (it is a devDependency of @keel/nftables-napi)')
}

function fail(message) {
  process.stderr.write(`build-native: ${message}\n`)
  process.exit(1)
}

function localNodedir() {
  const prefix = path.resolve(path.dirname(process.execPath), '..')
  const ok = ['include/node/node_api.h', 'include/node/common.gypi'].every((f) => existsSync(path.join(prefix, f)))
  return ok ? prefix : undefined
}

const nodedir = process.env.npm_config_nodedir || localNodedir()
if (!nodedir) {
  process.stderr.write(
    'build-native: no local Node headers found (set npm_config_nodedir, or install them); node-gyp will try to download them\n',
  )
}
if (!existsSync('/usr/include/nftables/libnftables.h')) {
  fail('libnftables headers are missing: apt-get install libnftables-dev (or run scripts/bootstrap)')
}

const common = nodedir ? [`--nodedir=${nodedir}`] : []
const stamp = JSON.stringify({
  node: process.version,
  nodedir: nodedir ?? null,
  gyp: createHash('sha256').update(readFileSync(path.join(ROOT, 'binding.gyp'))).digest('hex'),
})

function nodeGypRun(args) {
  const env = { ...process.env, MAKEFLAGS: `${process.env.MAKEFLAGS ?? ''} --no-print-directory`.trim() }
  const r = spawnSync(process.execPath, [nodeGyp, ...args, ...common], { cwd: ROOT, stdio: 'inherit', env })
  if (r.error) fail(`cannot run node-gyp: ${r.error.message}`)
  if (r.status !== 0) fail(`node-gyp ${args[0]} failed (exit ${r.status ?? r.signal})`)
}

const configured =
  existsSync(path.join(BUILD, 'Makefile')) && existsSync(STAMP) && readFileSync(STAMP, 'utf8') === stamp
if (!configured) {
  nodeGypRun(['configure', '--release', '--loglevel=warn'])
  writeFileSync(STAMP, stamp)
}
nodeGypRun(['build', '--release', '--jobs=max', '--silent'])
