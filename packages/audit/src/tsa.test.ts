/**
 * RFC 3161 against a real TSA: Debian's `openssl ts -reply` behind node:http on loopback.
 */
import { execFile } from 'node:child_process'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { children, decodeOid, encodeOid, encodeSequence, encodeUnsigned, readOne } from './der.js'
import { buildTimeStampRequest, parseTimeStampResponse, requestTimestamp, verifyTimestampResponse } from './tsa.js'
import { hasOpenssl, startTestTsa } from './testing/tsa-server.js'
import type { TestTsa } from './testing/tsa-server.js'
import { withCheckpoints, writeCheckpoint, listCheckpoints } from './checkpoint.js'
import { exportBundle, verifyBundle, verifyLog } from './bundle.js'
import { openAuditLog } from './log.js'
import { VerifyCode } from './codes.js'

const run = promisify(execFile)
const openssl = await hasOpenssl()

describe('DER helpers', () => {
  it('round-trips OIDs', () => {
    for (const oid of ['2.16.840.1.101.3.4.2.1', '1.2.840.113549.1.9.16.1.4', '1.3.6.1.4.1.57264.1.1', '2.999.3']) {
      expect(decodeOid(readOne(encodeOid(oid)))).toBe(oid)
    }
  })

  it('builds a TimeStampReq that openssl reads', async () => {
    if (!openssl) return
    const dir = await mkdtemp(join(tmpdir(), 'keel-tsq-'))
    try {
      const digest = randomBytes(32)
      await writeFile(join(dir, 'q.tsq'), buildTimeStampRequest(digest, Buffer.from('0102030405060708', 'hex')))
      const { stdout } = await run('openssl', ['ts', '-query', '-in', join(dir, 'q.tsq'), '-text'])
      expect(stdout).toContain('Version: 1')
      expect(stdout).toContain('Hash Algorithm: sha256')
      expect(stdout).toContain('Nonce: 0x0102030405060708')
      expect(stdout).toContain('Certificate required: yes')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe.skipIf(!openssl)('RFC 3161 with a local openssl TSA', () => {
  let tsa: TestTsa
  let tmp: string
  beforeAll(async () => {
    tsa = await startTestTsa()
    tmp = await mkdtemp(join(tmpdir(), 'keel-tsa-test-'))
  }, 60_000)
  afterAll(async () => {
    await tsa?.close()
    await rm(tmp, { recursive: true, force: true })
  })

  it('requests a token and verifies it against the TSA CA', async () => {
    const data = Buffer.from('checkpoint bytes\n')
    const receipt = await requestTimestamp(data, { url: tsa.url })
    expect(parseTimeStampResponse(receipt.response).status).toBe(0)
    expect(receipt.tstInfo.policy).toBe('1.3.6.1.4.1.57264.1.1')
    expect(Math.abs(receipt.tstInfo.genTime.getTime() - Date.now())).toBeLessThan(60_000)
    const ok = verifyTimestampResponse(receipt.response, { data, trustedCa: tsa.caPem })
    expect(ok).toMatchObject({ ok: true, anchored: true, signer: expect.stringContaining('keel test TSA') })
    // openssl agrees.
    await writeFile(join(tmp, 'data'), data)
    await writeFile(join(tmp, 'r.tsr'), receipt.response)
    await run('openssl', ['ts', '-verify', '-data', join(tmp, 'data'), '-in', join(tmp, 'r.tsr'), '-CAfile', tsa.caPath])
  })

  it('rejects other data, another CA, and tampered tokens', async () => {
    const data = Buffer.from('abc')
    const { response } = await requestTimestamp(data, { url: tsa.url })
    expect(verifyTimestampResponse(response, { data: Buffer.from('abd') })).toEqual({ ok: false, problem: 'message imprint does not match the stamped data' })

    const other = await startTestTsa()
    try {
      expect(verifyTimestampResponse(response, { data, trustedCa: other.caPem })).toMatchObject({ ok: false, problem: expect.stringContaining('does not chain') })
    } finally {
      await other.close()
    }
    // Flip one byte of the signature (the last bytes of the token belong to it).
    const bad = Buffer.from(response)
    bad[bad.length - 5] = bad[bad.length - 5]! ^ 0xff
    expect(verifyTimestampResponse(bad, { data, trustedCa: tsa.caPem })).toMatchObject({ ok: false })
    expect(verifyTimestampResponse(Buffer.from('garbage'), { data })).toMatchObject({ ok: false, problem: expect.stringContaining('malformed') })
  })

  it('rejects a token signed by a certificate without the timeStamping EKU', async () => {
    // openssl will not run a TSA with such a certificate, so sign a genuine TSTInfo with
    // `openssl cms` instead, and wrap it in a granted TimeStampResp.
    const data = Buffer.from('eku')
    const { response } = await requestTimestamp(data, { url: tsa.url })
    const token = parseTimeStampResponse(response).token!
    const ci = children(readOne(token))
    const sd = children(children(ci[1]!)[0]!)
    const eContent = children(children(sd[2]!)[1]!)[0]!.value
    const d = join(tmp, 'noeku')
    await run('mkdir', ['-p', d])
    await writeFile(join(d, 'tst.der'), eContent)
    const o = (args: string[]) => run('openssl', args, { cwd: d })
    await o(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'k.pem', '-out', 'c.csr', '-subj', '/CN=no eku'])
    await writeFile(join(d, 'ext.cnf'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n')
    await o(['x509', '-req', '-in', 'c.csr', '-CA', join(tsa.dir, 'ca.pem'), '-CAkey', join(tsa.dir, 'ca.key'), '-CAcreateserial', '-out', 'c.pem', '-days', '30', '-extfile', 'ext.cnf'])
    await o(['cms', '-sign', '-in', 'tst.der', '-binary', '-nodetach', '-outform', 'DER', '-out', 'tok.der', '-econtent_type', '1.2.840.113549.1.9.16.1.4', '-signer', 'c.pem', '-inkey', 'k.pem', '-md', 'sha256'])
    const forged = encodeSequence(encodeSequence(encodeUnsigned(0)), await readFile(join(d, 'tok.der')))
    expect(verifyTimestampResponse(forged, { data, trustedCa: tsa.caPem })).toEqual({
      ok: false,
      problem: 'signer certificate lacks extendedKeyUsage timeStamping',
    })
  })

  it('a TSA that is down fails the request with ERR_AUDIT_IO', async () => {
    await expect(requestTimestamp(Buffer.from('x'), { url: 'http://127.0.0.1:9/tsa', timeoutMs: 2000 })).rejects.toMatchObject({ code: 'ERR_AUDIT_IO' })
  })

  it('checkpoints on a cadence with receipts; verify checks them; a swapped receipt is timestamp_invalid', async () => {
    const key = generateKeyPairSync('ed25519')
    const dir = join(tmp, 'logs')
    const cps = join(tmp, 'cps')
    const errors: unknown[] = []
    const log = withCheckpoints(openAuditLog({ dir, project: 'p', fsync: 'batch' }), {
      dir: cps,
      key: key.privateKey,
      everyRecords: 5,
      tsa: { url: tsa.url },
      onError: (e) => errors.push(e),
    })
    for (let i = 0; i < 12; i++) await log.append({ event: 'e', reason: 'allowed', actor: 'a', subject: String(i) })
    await log.idle()
    const now = await log.checkpointNow()
    expect(now?.seq).toBe(12)
    await log.close()
    expect(errors).toEqual([])
    const files = await listCheckpoints(cps, 'p')
    expect(files.map((f) => [f.seq, f.receiptPath !== undefined])).toEqual([
      [5, true],
      [10, true],
      [12, true],
    ])
    const live = await verifyLog({ dir, project: 'p', checkpointsDir: cps, publicKey: key.publicKey, tsaCa: tsa.caPem })
    expect(live.findings).toEqual([])
    expect(live.checkpoints).toEqual({ checked: 3, matched: 3, skipped: 0, timestamps: 3, anchoredTimestamps: 3 })

    const out = join(tmp, 'bundle')
    await exportBundle({ dir, project: 'p', key: key.privateKey, out, checkpointsDir: cps })
    const b = await verifyBundle({ bundle: out, publicKey: key.publicKey, tsaCa: tsa.caPem })
    expect(b.findings).toEqual([])
    expect(b.checkpoints.anchoredTimestamps).toBe(3)

    // Receipt of checkpoint 5 swapped for the one of checkpoint 10 (in the operator's dir).
    await writeFile(files[0]!.receiptPath!, await readFile(files[1]!.receiptPath!))
    const swapped = await verifyLog({ dir, project: 'p', checkpointsDir: cps, publicKey: key.publicKey, tsaCa: tsa.caPem })
    expect(swapped.findings.map((f) => [f.code, f.seq])).toEqual([[VerifyCode.TIMESTAMP_INVALID, 5]])
  })

  it('writeCheckpoint adds a receipt to an existing checkpoint and keeps the checkpoint', async () => {
    const key = generateKeyPairSync('ed25519')
    const cps = join(tmp, 'cps2')
    const head = { project: 'q', seq: 3, hash: 'ab'.repeat(32) }
    const first = await writeCheckpoint({ dir: cps, head, key: key.privateKey })
    expect(first).toMatchObject({ created: true })
    expect(first.receiptPath).toBeUndefined()
    const again = await writeCheckpoint({ dir: cps, head, key: key.privateKey, tsa: { url: tsa.url } })
    expect(again).toMatchObject({ created: false, checkpoint: first.checkpoint })
    expect(again.receiptPath).toBeDefined()
  })
})
