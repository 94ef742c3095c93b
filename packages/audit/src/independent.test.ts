/**
 * Runs the README's "Independent verification" block verbatim, with bash and openssl
 * only, against a real bundle whose checkpoints carry receipts from a local openssl TSA.
 */
import { execFile } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exportBundle } from './bundle.js'
import { withCheckpoints } from './checkpoint.js'
import { openAuditLog } from './log.js'
import { hasOpenssl, startTestTsa } from './testing/tsa-server.js'
import type { TestTsa } from './testing/tsa-server.js'

const run = promisify(execFile)
const README = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'README.md')
const openssl = await hasOpenssl()

async function readmeBlock(): Promise<string> {
  const text = await readFile(README, 'utf8')
  const m = /<!-- independent-verification:start -->\s*```sh\n([\s\S]*?)```\s*<!-- independent-verification:end -->/.exec(text)
  if (!m) throw new Error('README has no independent-verification block')
  return m[1]!
}

describe.skipIf(!openssl)('independent verification with openssl (README steps, verbatim)', () => {
  let tsa: TestTsa
  let tmp: string
  let bundle: string
  let script: string
  let env: NodeJS.ProcessEnv

  beforeAll(async () => {
    tsa = await startTestTsa()
    tmp = await mkdtemp(join(tmpdir(), 'keel-indep-'))
    const key = generateKeyPairSync('ed25519')
    await writeFile(join(tmp, 'trusted.pub'), key.publicKey.export({ type: 'spki', format: 'pem' }))
    const dir = join(tmp, 'logs')
    const cps = join(tmp, 'cps')
    const log = withCheckpoints(openAuditLog({ dir, project: 'acme', fsync: 'batch' }), {
      dir: cps,
      key: key.privateKey,
      everyRecords: 7,
      tsa: { url: tsa.url },
    })
    for (let i = 0; i < 20; i++) {
      await log.append({ event: 'dispatch.egress_bound', reason: 'allowed', actor: 'agent:coder', subject: `h${i}.test:443`, data: { i, note: 'ünïcode ✓' } })
    }
    await log.close()
    bundle = join(tmp, 'bundle')
    const { manifest } = await exportBundle({ dir, project: 'acme', key: key.privateKey, out: bundle, checkpointsDir: cps })
    expect(manifest.checkpoints.map((c) => [c.seq, c.receipt !== undefined])).toEqual([
      [7, true],
      [14, true],
    ])
    script = join(tmp, 'verify.sh')
    await writeFile(script, await readmeBlock())
    env = { PATH: process.env.PATH, PUBKEY: join(tmp, 'trusted.pub'), TSA_CA: tsa.caPath, BUNDLE: bundle, LC_ALL: 'C' }
  }, 60_000)
  afterAll(async () => {
    await tsa?.close()
    if (tmp) await rm(tmp, { recursive: true, force: true })
  })

  const verify = (b: string, extra: NodeJS.ProcessEnv = {}) => run('bash', [script], { env: { ...env, BUNDLE: b, ...extra }, timeout: 30_000 })

  it('passes on the genuine bundle', async () => {
    const { stdout, stderr } = await verify(bundle)
    const out = stdout + stderr
    expect(out.match(/Signature Verified Successfully/g)).toHaveLength(3) // manifest + 2 checkpoints
    expect(out.match(/Verification: OK/g)).toHaveLength(2)
    expect(stdout).toContain('records.jsonl: OK')
    expect(stdout).toContain('head: OK')
    expect(stdout).toContain('checkpoints/000000000007.json: OK')
    expect(stdout).toContain('checkpoints/000000000014.json: OK')
    expect(stdout).toMatch(/Time stamp: .* GMT/)
  })

  async function copy(name: string): Promise<string> {
    const b = join(tmp, name)
    await cp(bundle, b, { recursive: true })
    return b
  }

  it('fails on a changed record', async () => {
    const b = await copy('t-record')
    const text = await readFile(join(b, 'records.jsonl'), 'utf8')
    await writeFile(join(b, 'records.jsonl'), text.replace('h3.test', 'h4.test'))
    await expect(verify(b)).rejects.toMatchObject({ code: 1, stdout: expect.not.stringContaining('records.jsonl: OK') })
  })

  it('fails on a changed manifest', async () => {
    const b = await copy('t-manifest')
    const text = await readFile(join(b, 'manifest.json'), 'utf8')
    await writeFile(join(b, 'manifest.json'), text.replace('"count": 20', '"count": 19'))
    await expect(verify(b)).rejects.toMatchObject({ code: 1, stdout: expect.stringContaining('Signature Verification Failure') })
  })

  it('fails with another trusted key', async () => {
    const other = generateKeyPairSync('ed25519')
    await writeFile(join(tmp, 'other.pub'), other.publicKey.export({ type: 'spki', format: 'pem' }))
    await expect(verify(bundle, { PUBKEY: join(tmp, 'other.pub') })).rejects.toMatchObject({ code: 1 })
  })

  it('fails on a receipt for other data, and with another TSA CA', async () => {
    const b = await copy('t-receipt')
    await writeFile(join(b, 'checkpoints/000000000007.tsr'), await readFile(join(b, 'checkpoints/000000000014.tsr')))
    await expect(verify(b)).rejects.toMatchObject({ stderr: expect.stringMatching(/Verification: FAILED|message imprint mismatch/i) })
    const other = await startTestTsa()
    try {
      await expect(verify(bundle, { TSA_CA: other.caPath })).rejects.toMatchObject({ stderr: expect.stringMatching(/Verification: FAILED|certificate verify error/i) })
    } finally {
      await other.close()
    }
  })
})
