// Starts the fake world (test/world: DNS, HTTPS and HTTP servers on 127.0.0.x), runs
// examples/demo-agent.sh inside `keel run` with examples/fake-world.yaml, prints keel's
// report, and stops the world. Nothing here reaches beyond loopback.
import { spawn } from 'node:child_process'
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startWorld } from '../test/dist/world/index.js'

if (process.getuid?.() !== 0) {
  console.error('scripts/demo: keel run needs root (network namespaces, nftables): run it with sudo')
  process.exit(1)
}

const world = await startWorld()
const dir = mkdtempSync(join(tmpdir(), 'keel-demo-'))
chmodSync(dir, 0o755)
const ca = join(dir, 'world-ca.pem')
copyFileSync(world.ca.path, ca)
chmodSync(ca, 0o644)
const report = join(dir, 'report.json')

// The agent runs as the invoking user (sudo), or as nobody when root ran this directly.
const user = process.env.SUDO_UID ? [] : ['--user', 'nobody']
const args = [
  'apps/cli/bin/keel.js', 'run',
  '--policy', 'examples/fake-world.yaml',
  '--agent', 'test-agent',
  '--upstream-dns', `${world.dnsAddress}:${world.dnsPort}`,
  '--report', report,
  ...user,
  '--', 'examples/demo-agent.sh',
]
console.log(`$ keel ${args.slice(1).join(' ')}\n`)
const code = await new Promise((resolve) => {
  const child = spawn(process.execPath, args, { stdio: 'inherit', env: { ...process.env, KEEL_DEMO_CA: ca } })
  child.on('exit', (c, s) => resolve(c ?? (s ? 128 : 1)))
})
const { destinations } = JSON.parse(readFileSync(report, 'utf8'))
console.log(`\nkeel exited ${code}. The report (--report) has ${destinations.length} destinations, e.g.:`)
console.log(JSON.stringify(destinations.find((d) => d.verdict === 'deny')))
console.log(`Upstream DNS saw only allowed names: ${[...new Set(world.dns.queries.map((q) => q.name))].join(', ') || '(none)'}`)
await world.stop()
rmSync(dir, { recursive: true, force: true })
process.exit(code)
