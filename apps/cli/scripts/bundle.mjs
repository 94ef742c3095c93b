#!/usr/bin/env node
// Bundles the built CLI (dist/index.js and everything it imports: workspace packages and
// npm dependencies alike) into one CommonJS file, dist/keel.cjs, which bin/keel.js runs
// with a V8 code cache. Part of `npm run build` (after tsc -b).
//
// Why (bench/sandbox, BENCHMARKS.md): on Node 20, most of `keel run`'s start-up was
// loading ~300 ES and CommonJS modules and compiling every function the first time it
// ran. One file removes the module loading; the code cache (Node 20 has no
// module.enableCompileCache) removes the compiling. The command groups main.ts imports
// dynamically stay lazy: esbuild initializes a module on its first import.
//
// import.meta.url keeps its meaning: the bundle sits in dist/, beside the tsc output, so
// paths relative to it (version.ts reads ../package.json) resolve as before, and in
// @keel/nftables-napi's modules, which find the native addon relative to their own files,
// it is rewritten to the URL of the original file (relative to dist/, so the tree can move).
//
// dist/keel.json records what bin/keel.js needs: the bundle's SHA-256 (the code cache is
// keyed by it: V8 itself checks only the source length) and the tsc build-info files it was
// made from, so that after a bare `tsc -b` the modules run instead of a stale bundle.
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const DIST = join(PKG, 'dist')
const OUT = join(DIST, 'keel.cjs')

// Earlier bundles and their code caches.
for (const f of readdirSync(DIST)) {
  if (/^keel(-[A-Z0-9]+)?\.(c?js)(\.map)?$/.test(f) || /^keel\.cjs\..*\.v8cache(\.\d+\.tmp)?$/.test(f) || f === 'keel.json') rmSync(join(DIST, f))
}

/** import.meta.url in @keel/nftables-napi's modules → their own location, seen from dist/. */
const keepOwnUrl = {
  name: 'keel-own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /[\\/]nftables-napi[\\/]dist[\\/][^\\/]+\.js$/ }, (args) => {
      const rel = relative(DIST, args.path).split(sep).join('/')
      const url = `new URL(${JSON.stringify(rel)}, import.meta.url).href`
      return { contents: readFileSync(args.path, 'utf8').replaceAll('import.meta.url', url), loader: 'js', resolveDir: dirname(args.path) }
    })
  },
}

const result = await build({
  entryPoints: [join(DIST, 'index.js')],
  outfile: OUT,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  external: builtinModules.flatMap((m) => [m, `node:${m}`]),
  plugins: [keepOwnUrl],
  // CommonJS has no import.meta: the bundle's own file URL stands in for it.
  define: { 'import.meta.url': '__keelImportMetaUrl' },
  banner: { js: 'const __keelImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
  // Smaller source: less to read and decode at every start (identifiers are kept, so
  // stack traces and Function#name stay as they are).
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  charset: 'ascii',
  sourcemap: 'linked',
  metafile: true,
  logLevel: 'warning',
})

// The build-info file of every workspace package whose dist/ went into the bundle.
const infos = new Set()
for (const input of Object.keys(result.metafile.inputs)) {
  const abs = resolve(process.cwd(), input)
  const m = /^(.*[\\/](?:packages|apps)[\\/][^\\/]+)[\\/]dist[\\/]/.exec(abs)
  if (m && !abs.includes(`${sep}node_modules${sep}`)) infos.add(join(m[1], 'dist', '.tsbuildinfo'))
}
const inputs = [...infos].filter((p) => {
  try {
    return statSync(p).isFile()
  } catch {
    return false
  }
})
const sha256 = createHash('sha256').update(readFileSync(OUT)).digest('hex')
writeFileSync(
  join(DIST, 'keel.json'),
  JSON.stringify({ note: 'made by scripts/bundle.mjs; read by bin/keel.js', sha256, inputs: inputs.map((p) => relative(PKG, p)) }, null, 2) + '\n',
)
