/**
 * `keel dispatcher serve` as a user runs it: a child process, keys from the environment and
 * from a 0600 file, a JSONL governance log and ledger on disk. Asserts the key never appears
 * in stdout, stderr, responses, the governance log or the ledger, and that a key file
 * readable by group or world is refused at startup.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import OpenAI from 'openai'
import Anthropic from '@anthropic-ai/sdk'
import { startFakeProvider, type FakeProvider } from '../fake-provider/index.mjs'
import { within } from './helpers.js'

const KEEL = fileURLToPath(new URL('../../apps/cli/bin/keel.js', import.meta.url))
const OPENAI_KEY = 'sk-cli-openai-secret-9f8e7d6c5b4a3210'
const ANTHROPIC_KEY = 'sk-ant-cli-secret-0a1b2c3d4e5f6789'

let fake: FakeProvider
let dir: string
const children: ChildProcessWithoutNullStreams[] = []

beforeAll(async () => {
  fake = await startFakeProvider({ expectedKeys: { openai: OPENAI_KEY, anthropic: ANTHROPIC_KEY } })
  dir = mkdtempSync(join(tmpdir(), 'keel-dispatcher-cli-'))
})
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL')
})
afterAll(async () => {
  await fake?.close()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

function writeConfig(name: string, keyFileMode: number): string {
  const keyFile = join(dir, `${name}-anthropic.key`)
  writeFileSync(keyFile, `${ANTHROPIC_KEY}\n`)
  chmodSync(keyFile, keyFileMode)
  const path = join(dir, `${name}.yaml`)
  writeFileSync(
    path,
    `apiVersion: keel.dev/v1alpha1
kind: DispatcherConfig
metadata: { name: ${name} }
spec:
  providers:
    - { name: openai, format: openai, endpoints: ["${fake.openaiBaseUrl}"], credential: { env: KEEL_OPENAI_KEY } }
    - { name: anthropic, format: anthropic, endpoints: ["${fake.anthropicBaseUrl}"], credential: { file: ./${name}-anthropic.key } }
  pricing:
    - { model: "*", inputPerMTok: 1, outputPerMTok: 1, maxOutputTokens: 100 }
  budgets:
    ledger: ./${name}-ledger.jsonl
    defaultProject: { limitUsd: 1 }
  permits:
    rules:
      - { name: no-cui, when: { dataClass: [CUI] }, action: deny }
      - { name: all, action: allow }
  audit: { dir: ./${name}-audit }
`,
  )
  return path
}

interface Run {
  child: ChildProcessWithoutNullStreams
  stdout: () => string
  stderr: () => string
  exit: Promise<number | null>
}

function run(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [KEEL, ...args], { env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: 'pipe' })
  children.push(child)
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, stdout: () => out, stderr: () => err, exit }
}

async function listening(r: Run): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const m = /listening on (http:\/\/\S+)/.exec(r.stdout())
    if (m) return m[1]!
    if (r.child.exitCode !== null) throw new Error(`serve exited ${r.child.exitCode}: ${r.stderr()}`)
    await new Promise((res) => setTimeout(res, 25))
  }
  throw new Error(`serve did not start: ${r.stdout()} ${r.stderr()}`)
}

describe('keel dispatcher serve', () => {
  it('serves both SDKs with injected keys; keys never appear in output, responses, the governance log or the ledger', async () => {
    const config = writeConfig('ok', 0o600)
    const r = run(['dispatcher', 'serve', '--config', config, '--port', '0', '--host', '127.0.0.1'], { KEEL_OPENAI_KEY: OPENAI_KEY })
    const url = await listening(r)
    const openai = new OpenAI({ apiKey: 'sk-keel-dummy', baseURL: `${url}/v1`, maxRetries: 0 })
    const anthropic = new Anthropic({ apiKey: 'sk-keel-dummy', baseURL: url, maxRetries: 0 })
    const seen: string[] = []
    const chat = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] })
    seen.push(JSON.stringify(chat))
    const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream: true })
    for await (const c of stream) seen.push(JSON.stringify(c))
    const msg = await anthropic.messages.stream({ model: 'claude-x', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] }).finalMessage()
    seen.push(JSON.stringify(msg))
    const denied = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'x-keel-data-class': 'CUI' } }).catch((e: Error) => e)
    seen.push(String(denied), JSON.stringify((denied as { error?: unknown }).error))
    // Reviewer endpoints without a token, an unknown route: errors must not carry keys either.
    for (const path of ['/v1/challenges', '/v1/nope']) seen.push(await (await fetch(url + path)).text())
    expect(fake.requests.filter((q) => q.headers['authorization'] === `Bearer ${OPENAI_KEY}`)).toHaveLength(2)
    expect(fake.requests.filter((q) => q.headers['x-api-key'] === ANTHROPIC_KEY)).toHaveLength(1)
    expect(chat.choices[0]!.message.content).toContain('Hello')
    expect(msg.usage.output_tokens).toBe(12)
    expect((denied as { code?: string }).code).toBe('permit_denied_rule')

    r.child.kill('SIGTERM')
    expect(await within(r.exit, 10_000, 'serve to exit on SIGTERM')).toBe(0)
    // The hash-chained audit log (@keel/audit): one chain per project, each verifiable.
    const auditDir = join(dir, 'ok-audit')
    const chains = readdirSync(auditDir).filter((f) => f.endsWith('.jsonl'))
    expect(chains.length).toBeGreaterThan(0)
    for (const chain of chains) {
      const verify = run(['audit', 'verify', '--project', chain.replace(/\.jsonl$/, ''), '--data-dir', auditDir])
      expect(await within(verify.exit, 20_000, 'audit verify'), verify.stdout() + verify.stderr()).toBe(0)
    }
    const governance = chains.map((f) => readFileSync(join(auditDir, f), 'utf8')).join('')
    const ledger = readFileSync(join(dir, 'ok-ledger.jsonl'), 'utf8')
    const events = governance.trim().split('\n').map((l) => JSON.parse(l) as { event: string; reason: string })
    expect(events.map((e) => e.event)).toEqual(expect.arrayContaining(['dispatch.egress_bound', 'dispatch.completed', 'permit.denied']))
    expect(r.stderr()).toContain('"reason":"permit_denied_rule"')
    for (const [what, text] of Object.entries({ stdout: r.stdout(), stderr: r.stderr(), responses: seen.join('\n'), governance, ledger })) {
      expect(text, what).not.toContain(OPENAI_KEY)
      expect(text, what).not.toContain(ANTHROPIC_KEY)
    }
  })

  it('refuses to start with a group- or world-readable key file, without printing the key', async () => {
    for (const mode of [0o644, 0o640]) {
      const config = writeConfig(`open${mode.toString(8)}`, mode)
      const r = run(['dispatcher', 'serve', '--config', config, '--port', '0'], { KEEL_OPENAI_KEY: OPENAI_KEY })
      expect(await within(r.exit, 10_000, 'serve to fail')).toBe(2) // EXIT_USAGE: invalid config
      expect(r.stderr()).toMatch(/provider "anthropic": key file .*-anthropic\.key is group- or world-accessible \(mode 06[0-7]{2}\)/)
      expect(r.stderr() + r.stdout()).not.toContain(ANTHROPIC_KEY)
      expect(r.stdout()).not.toContain('listening')
    }
  })

  it('refuses to start when a key variable is unset', async () => {
    const config = writeConfig('noenv', 0o600)
    const r = run(['dispatcher', 'serve', '--config', config, '--port', '0'])
    expect(await within(r.exit, 10_000, 'serve to fail')).toBe(2) // EXIT_USAGE: invalid config
    expect(r.stderr()).toContain('environment variable KEEL_OPENAI_KEY is not set')
  })

  it('check reports config errors with file:line:column', async () => {
    const path = join(dir, 'bad.yaml')
    writeFileSync(path, 'apiVersion: keel.dev/v1alpha1\nkind: DispatcherConfig\nspec:\n  providers:\n    - { name: p, format: openai, endpoints: ["https://x/v1"], credential: { env: K }, colour: red }\n')
    const r = run(['dispatcher', 'check', '--config', path])
    expect(await within(r.exit, 10_000, 'check')).toBe(2) // EXIT_USAGE
    expect(r.stderr()).toContain(`${path}:5:87: spec.providers[0].colour: unknown field "colour"`)
    const ok = run(['dispatcher', 'check', '--config', fileURLToPath(new URL('../../examples/dispatcher.yaml', import.meta.url))])
    expect(await within(ok.exit, 10_000, 'check example')).toBe(0)
  })
})
