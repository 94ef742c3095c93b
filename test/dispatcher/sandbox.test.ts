/**
 * The dispatcher inside `keel run`, end to end: a real sandbox, the official `openai` and
 * `@anthropic-ai/sdk` clients as the agent (user nobody) with DUMMY keys and https base
 * URLs on `via: dispatcher` names, keel terminating TLS with its per-sandbox CA, the
 * dispatcher injecting the REAL keys, and the fake provider on loopback behind it.
 * Governance events land in a hash-chained audit log that `keel audit verify` accepts.
 */
import { execFile } from 'node:child_process'
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startWorld, type World } from '../world/index.js'
import { startFakeProvider, type FakeProvider } from '../fake-provider/index.mjs'
import { FAKE_WORLD_POLICY, isRoot, KEEL, keelNamespaces, keelRun, publicCa, ROOT, rowsFor, scratchDir, writePolicy } from '../sandbox/harness.js'

const OPENAI_KEY = 'sk-real-openai-sandbox-0123456789abcdef'
const ANTHROPIC_KEY = 'sk-ant-real-sandbox-0123456789abcdef'
const DUMMY = 'sk-keel-dummy-in-the-sandbox'
const PROJECT = 'sandbox-proj'
const REPLY = 'Hello from the keel fake provider. This reply streams word by word.'

const LLM_POLICY = `apiVersion: keel.dev/v1alpha1
kind: EgressPolicy
metadata: { name: llm }
spec:
  routes:
    - name: llm
      via: dispatcher
      registry: { owner: keel-tests, purpose: "LLM calls through the dispatcher" }
      rules:
        - matches:
            - destinationHostnames: ["api.openai.test", "api.anthropic.test"]
              ports: [{ port: 443 }]
              protocol: TCP
`

function dispatcherConfig(fake: FakeProvider, anthropicKeyFile: string): string {
  return `apiVersion: keel.dev/v1alpha1
kind: DispatcherConfig
metadata: { name: sandbox-test }
spec:
  providers:
    - { name: openai, format: openai, hosts: [api.openai.test], endpoints: ["${fake.openaiBaseUrl}"], credential: { env: KEEL_TEST_OPENAI_KEY } }
    - { name: anthropic, format: anthropic, hosts: [api.anthropic.test], endpoints: ["${fake.anthropicBaseUrl}"], credential: { file: ${anthropicKeyFile} } }
  placeholders: ["sk-keel-dummy*"]
  pricing:
    - { model: "gpt-*", inputPerMTok: 1, outputPerMTok: 2, maxOutputTokens: 1000 }
    - { model: "claude-*", inputPerMTok: 3, outputPerMTok: 15, maxOutputTokens: 1000 }
  permits:
    rules:
      - { name: no-gpt-4o, when: { model: ["gpt-4o"] }, action: deny, message: "gpt-4o is not for sandboxed agents" }
      - { name: models, when: { model: ["gpt-*", "claude-*"] }, action: allow }
  identity: { defaultProject: ${PROJECT} }
`
}

/**
 * The agent: CommonJS, so the SDKs resolve by absolute path from a scratch directory
 * that user nobody can read (the repository is world-readable; ESM would ignore NODE_PATH).
 */
const AGENT_SCRIPT = `'use strict'
const { OpenAI } = require(${JSON.stringify(join(ROOT, 'node_modules/openai'))})
const { Anthropic } = require(${JSON.stringify(join(ROOT, 'node_modules/@anthropic-ai/sdk'))})
const DUMMY = ${JSON.stringify(DUMMY)}

async function main() {
  const out = { env: process.env }
  const openai = new OpenAI({ apiKey: DUMMY, baseURL: 'https://api.openai.test/v1', maxRetries: 0, timeout: 20000 })
  const chat = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] })
  out.openaiJson = chat.choices[0].message.content
  out.openaiUsage = chat.usage
  let text = ''
  let chunks = 0
  const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream: true })
  for await (const c of stream) { chunks++; text += (c.choices[0] && c.choices[0].delta.content) || '' }
  out.openaiStream = { text, chunks }
  try {
    await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
    out.denied = { status: 'no error' }
  } catch (e) {
    out.denied = { status: e.status, code: e.code, reason: e.headers && (e.headers.get ? e.headers.get('x-keel-reason') : e.headers['x-keel-reason']), message: e.message }
  }

  const anthropic = new Anthropic({ apiKey: DUMMY, baseURL: 'https://api.anthropic.test', maxRetries: 0, timeout: 20000 })
  const msg = await anthropic.messages.create({ model: 'claude-3-5-haiku-latest', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })
  out.anthropicJson = msg.content[0].text
  let atext = ''
  let events = 0
  const astream = await anthropic.messages.create({ model: 'claude-3-5-haiku-latest', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }], stream: true })
  for await (const ev of astream) { events++; if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') atext += ev.delta.text }
  out.anthropicStream = { text: atext, events }
  process.stdout.write('AGENT ' + JSON.stringify(out) + '\\n')
}
main().catch((e) => { process.stderr.write('agent failed: ' + (e && e.stack || e) + '\\n'); process.exit(1) })
`

/** Python's ssl (OpenSSL) trusts keel's CA through SSL_CERT_FILE. */
const PYTHON_SCRIPT = `import json, urllib.request
req = urllib.request.Request('https://api.anthropic.test/v1/messages',
    data=json.dumps({'model': 'claude-3-5-haiku-latest', 'max_tokens': 16, 'messages': [{'role': 'user', 'content': 'from python'}]}).encode(),
    headers={'x-api-key': ${JSON.stringify(DUMMY)}, 'anthropic-version': '2023-06-01', 'content-type': 'application/json'})
with urllib.request.urlopen(req, timeout=10) as r:
    print('PYTHON', json.loads(r.read())['content'][0]['text'])
`

interface AgentOut {
  env: Record<string, string>
  openaiJson: string
  openaiUsage: { prompt_tokens: number; completion_tokens: number }
  openaiStream: { text: string; chunks: number }
  denied: { status: number | string; code?: string; reason?: string; message?: string }
  anthropicJson: string
  anthropicStream: { text: string; events: number }
}

function agentOut(stdout: string): AgentOut {
  const line = stdout.split('\n').find((l) => l.startsWith('AGENT '))
  if (line === undefined) throw new Error(`the agent printed no result:\n${stdout}`)
  return JSON.parse(line.slice('AGENT '.length)) as AgentOut
}

function runKeel(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [KEEL, ...args], { env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    )
  })
}

describe.skipIf(!isRoot)('the dispatcher inside keel run (needs root)', () => {
  let world: World
  let fake: FakeProvider
  let scratch: ReturnType<typeof scratchDir>
  let worldCa: string
  let configPath: string
  let llmPolicy: string
  let auditDir: string
  let agentScript: string
  let pythonScript: string

  beforeAll(async () => {
    world = await startWorld()
    fake = await startFakeProvider({ name: 'sandbox', expectedKeys: { openai: OPENAI_KEY, anthropic: ANTHROPIC_KEY } })
    scratch = scratchDir('keel-dispatcher-')
    worldCa = publicCa(world, scratch.path)
    const keyFile = join(scratch.path, 'anthropic.key')
    writeFileSync(keyFile, ANTHROPIC_KEY + '\n', { mode: 0o600 })
    configPath = join(scratch.path, 'dispatcher.yaml')
    writeFileSync(configPath, dispatcherConfig(fake, keyFile), { mode: 0o600 })
    llmPolicy = writePolicy(scratch.path, 'llm.yaml', LLM_POLICY)
    auditDir = join(scratch.path, 'audit')
    agentScript = join(scratch.path, 'agent.cjs')
    writeFileSync(agentScript, AGENT_SCRIPT)
    chmodSync(agentScript, 0o644)
    pythonScript = join(scratch.path, 'agent.py')
    writeFileSync(pythonScript, PYTHON_SCRIPT)
    chmodSync(pythonScript, 0o644)
  })
  afterAll(async () => {
    await fake?.close()
    await world?.stop()
    scratch?.remove()
    expect(keelNamespaces()).toEqual([])
  })

  it('official SDKs with a dummy key reach the fake provider with the real key, JSON and streaming, audited', async () => {
    fake.reset()
    const curlBody = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'from curl' }] })
    const r = await keelRun({
      world,
      dir: scratch.path,
      policy: [FAKE_WORLD_POLICY, llmPolicy],
      flags: ['--dispatcher-config', configPath, '--audit-dir', auditDir],
      // The world's CA for the direct routes: keel's bundles must extend it, not replace it.
      env: { KEEL_TEST_OPENAI_KEY: OPENAI_KEY, SSL_CERT_FILE: worldCa, CURL_CA_BUNDLE: worldCa, NODE_EXTRA_CA_CERTS: worldCa },
      timeoutMs: 60_000,
      command: [
        'sh',
        '-c',
        [
          `node ${agentScript}`,
          // curl trusts keel's CA through CURL_CA_BUNDLE alone (no --cacert)
          `curl -sS --max-time 10 https://api.openai.test/v1/chat/completions -H 'authorization: Bearer ${DUMMY}' -H 'content-type: application/json' -d '${curlBody}'`,
          `echo`,
          `/usr/bin/python3 ${pythonScript}`,
          // and a direct route still verifies against the world's CA, through the same bundle
          `curl -sS --max-time 10 https://api.allowed.test/direct`,
        ].join(' && '),
      ],
    })
    expect(r.code, r.stderr).toBe(0)
    const out = agentOut(r.stdout)

    // Both SDKs, JSON and streaming.
    expect(out.openaiJson).toContain('Hello from the keel fake provider')
    expect(out.openaiUsage.completion_tokens).toBeGreaterThan(0)
    expect(out.openaiStream.text).toBe(REPLY)
    expect(out.openaiStream.chunks).toBeGreaterThan(5)
    expect(out.anthropicJson).toContain('Hello from the keel fake provider')
    expect(out.anthropicStream.text).toBe(REPLY)
    expect(out.anthropicStream.events).toBeGreaterThan(5)

    // A permit deny reaches the SDK as a 403 carrying the reason code.
    expect(out.denied).toMatchObject({ status: 403, code: 'permit_denied_rule', reason: 'permit_denied_rule' })
    expect(out.denied.message).toContain('gpt-4o is not for sandboxed agents')

    // curl and Python, trusting keel's CA through the environment only, and a direct route beside it.
    expect(r.stdout).toMatch(/"object":\s*"chat.completion"/)
    expect(r.stdout).toContain('"path":"/direct"')
    expect(r.stdout).toContain('PYTHON Hello from the keel fake provider')

    // The provider saw the real keys and never the dummy one.
    const openaiCalls = fake.requests.filter((q) => q.path === '/v1/chat/completions')
    const anthropicCalls = fake.requests.filter((q) => q.path === '/v1/messages')
    expect(fake.requests).toHaveLength(openaiCalls.length + anthropicCalls.length)
    expect(openaiCalls).toHaveLength(3) // JSON, stream, curl (the denied call never left keel)
    expect(anthropicCalls).toHaveLength(3) // JSON, stream, python
    for (const q of openaiCalls) expect(q.headers['authorization']).toBe(`Bearer ${OPENAI_KEY}`)
    for (const q of anthropicCalls) expect(q.headers['x-api-key']).toBe(ANTHROPIC_KEY)
    expect(JSON.stringify(fake.requests)).not.toContain('sk-keel-dummy')
    expect(fake.requests.map((q) => (JSON.parse(q.body) as { model: string }).model)).not.toContain('gpt-4o')

    // The real keys never entered the sandbox: not in the agent's environment, nor its output.
    for (const secret of [OPENAI_KEY, ANTHROPIC_KEY]) {
      expect(r.stdout).not.toContain(secret)
      expect(r.stderr).not.toContain(secret)
      expect(JSON.stringify(out.env)).not.toContain(secret)
    }
    expect(out.env['KEEL_TEST_OPENAI_KEY']).toBeUndefined()
    // The five trust variables point at keel's files in the sandbox's state directory.
    for (const v of ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'GIT_SSL_CAINFO']) {
      expect(out.env[v], v).toMatch(/^\/run\/keel\/[0-9a-f]{10}\/(keel-ca|ca-bundle(-\d+)?)\.pem$/)
    }

    // The report lists the dispatcher names as allowed.
    for (const name of ['api.openai.test', 'api.anthropic.test']) {
      const rows = rowsFor(r.report, name)
      expect(rows.length, name).toBeGreaterThan(0)
      for (const row of rows) expect(row).toMatchObject({ verdict: 'allow', reason: 'allowed', port: 443 })
    }

    // Governance events in a hash-chained log that verifies.
    expect(readdirSync(auditDir)).toContain(`${PROJECT}.jsonl`)
    // Read as plain JSON lines, the stored format (test/ does not depend on @keel/audit).
    const records = readFileSync(join(auditDir, `${PROJECT}.jsonl`), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { event: string; reason: string; actor: string; subject: string })
    const events = records.map((x) => x.event)
    expect(events.filter((e) => e === 'dispatch.egress_bound')).toHaveLength(6)
    expect(events).toContain('dispatch.completed')
    expect(records.find((x) => x.event === 'permit.denied')).toMatchObject({ reason: 'permit_denied_rule' })
    for (const x of records.filter((y) => y.event === 'dispatch.egress_bound')) {
      expect(x.actor).toContain('test-agent')
      expect(JSON.stringify(x)).not.toContain(OPENAI_KEY)
      expect(JSON.stringify(x)).not.toContain(ANTHROPIC_KEY)
    }
    const verify = await runKeel(['audit', 'verify', '--project', PROJECT, '--data-dir', auditDir, '--json'])
    expect(verify.code, verify.stdout + verify.stderr).toBe(0)
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, kind: 'log', project: PROJECT, records: records.length, findings: [] })
  })

  it('without --dispatcher-config the names are denied (dispatcher_unavailable), with a warning at start', async () => {
    const r = await keelRun({
      world,
      dir: scratch.path,
      policy: [FAKE_WORLD_POLICY, llmPolicy],
      command: ['sh', '-c', `curl -sS --max-time 5 https://api.openai.test/v1/models; echo "curl=$?"`],
    })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('route "llm" is via: dispatcher, but no --dispatcher-config was given')
    expect(r.stdout).toMatch(/curl=(35|56)/)
    expect(rowsFor(r.report, 'api.openai.test')).toEqual([expect.objectContaining({ verdict: 'deny', reason: 'dispatcher_unavailable' })])
  })

  it('refuses to start when a via: dispatcher name is in no provider hosts (config mismatch)', async () => {
    const policy = writePolicy(scratch.path, 'mismatch.yaml', LLM_POLICY.replace('"api.anthropic.test"]', '"api.anthropic.test", "api.mistral.test"]'))
    const before = keelNamespaces()
    const r = await keelRun({
      world,
      dir: scratch.path,
      policy: [FAKE_WORLD_POLICY, policy],
      flags: ['--dispatcher-config', configPath, '--audit-dir', auditDir],
      env: { KEEL_TEST_OPENAI_KEY: OPENAI_KEY },
      command: ['true'],
    })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/api\.mistral\.test via: dispatcher, but no provider in the dispatcher config lists it in hosts/)
    expect(r.report).toEqual([]) // nothing ran
    expect(keelNamespaces()).toEqual(before)
  })

  it('a missing key fails at start, naming the variable, before the sandbox exists', async () => {
    const r = await keelRun({
      world,
      dir: scratch.path,
      policy: [FAKE_WORLD_POLICY, llmPolicy],
      flags: ['--dispatcher-config', configPath, '--audit-dir', auditDir],
      env: { KEEL_TEST_OPENAI_KEY: '' },
      command: ['true'],
    })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('environment variable KEEL_TEST_OPENAI_KEY is not set')
  })
})
