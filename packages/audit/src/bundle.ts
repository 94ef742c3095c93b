/**
 * Signed export bundles and verification.
 *
 * A bundle is a directory:
 *   records.jsonl   the exact bytes of the log (a prefix taken under the lock)
 *   manifest.json   what the records are (count, head hash, SHA-256 of records.jsonl …)
 *   manifest.sig    raw Ed25519 signature (64 bytes) over the exact manifest.json bytes
 *   pubkey.pem      the signer's public key, for convenience only: verify uses the key
 *                   the verifier brings, and a different key here is `key_mismatch`
 *   checkpoints/    copies of the operator's checkpoints (+ .sig, .tsr), when asked for
 *
 * Everything a standard tool needs is a plain file: `openssl pkeyutl -verify -rawin`
 * checks manifest.sig, `sha256sum` checks records.jsonl, `openssl ts -verify` the receipts.
 */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs'
import { copyFile, mkdir, open, readFile, readdir, rm, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { KeelError } from '@keel/core'
import { assertProjectName, genesisHash, isHex64, sha256Hex } from './format.js'
import { keyFingerprint, publicKeyPem, signBytes, toPublicKey, verifyBytes } from './keys.js'
import type { PrivateKeyInput, PublicKeyInput } from './keys.js'
import { acquireFileLock } from './lock.js'
import { auditLogPath } from './log.js'
import { checkChain } from './chain.js'
import type { ChainCheckResult } from './chain.js'
import { checkCheckpoints, checkpointBaseName, listCheckpoints } from './checkpoint.js'
import type { CheckpointCheckResult, CheckpointFiles } from './checkpoint.js'
import { VerifyCode } from './codes.js'
import type { Finding } from './codes.js'

export const BUNDLE_FORMAT = 'keel.audit.bundle/v1'

export interface ManifestCheckpoint {
  seq: number
  headHash: string
  /** Paths relative to the bundle. */
  file: string
  sha256: string
  signature: string
  receipt?: string
  receiptSha256?: string
}

export interface Manifest {
  format: typeof BUNDLE_FORMAT
  project: string
  /** prev of record 1. */
  genesis: string
  /** 1, or 0 for an empty log. */
  firstSeq: number
  lastSeq: number
  count: number
  /** Hash of the last record's line (the genesis hash for an empty log). */
  headHash: string
  records: 'records.jsonl'
  recordsBytes: number
  recordsSha256: string
  signatureAlgorithm: 'ed25519'
  publicKeyFingerprint: string
  exportedAt: string
  checkpoints: ManifestCheckpoint[]
}

export interface ExportOptions {
  /** The log directory and project (`<dir>/<project>.jsonl`). */
  dir: string
  project: string
  key: PrivateKeyInput
  /** Bundle directory to create; must not exist, or be empty. */
  out: string
  /** Include the operator's checkpoints (those at or below the exported head). */
  checkpointsDir?: string
  clock?: () => number
  lockTimeoutMs?: number
}

export interface ExportResult {
  out: string
  manifest: Manifest
}

async function ensureEmptyDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { mode: 0o750 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const entries = await readdir(dir)
    if (entries.length > 0) throw new KeelError('ERR_USAGE', `${dir} exists and is not empty`)
  }
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/**
 * Exports a signed bundle of a project's log. The log is read up to its size at the
 * moment we held the lock, so concurrent appends neither block for the export nor tear
 * it. Refuses (ERR_AUDIT_VERIFY) to sign a chain that does not verify, or one that
 * disagrees with the given checkpoints.
 */
export async function exportBundle(options: ExportOptions): Promise<ExportResult> {
  const { project } = options
  const logPath = auditLogPath(options.dir, project)
  const fp = keyFingerprint(options.key)
  const out = resolve(options.out)
  try {
    await stat(logPath)
  } catch (err) {
    throw new KeelError('ERR_USAGE', `no audit log for project ${project} at ${logPath}`, { cause: err })
  }
  let size = 0
  const lock = await acquireFileLock(`${logPath}.lock`, { timeoutMs: options.lockTimeoutMs ?? 10_000 })
  try {
    size = (await stat(logPath)).size
  } finally {
    await lock.release()
  }
  const checkpoints = options.checkpointsDir ? await listCheckpoints(options.checkpointsDir, project) : []
  await ensureEmptyDir(out)
  let ok = false
  try {
    const recordsPath = join(out, 'records.jsonl')
    // scanLines hands us each chunk once, in order; write it straight through (sync, so
    // the order is kept without buffering the whole log in memory).
    const fd = openSync(recordsPath, 'wx', 0o640)
    let chain: ChainCheckResult
    try {
      const wants = new Set(checkpoints.map((c) => c.seq))
      if (size > 0) {
        chain = await checkChain(logPath, project, {
          end: size,
          wantHashes: wants,
          onChunk: (c) => {
            for (let off = 0, i = 0; off < c.length && i < 1000; i++) off += writeSync(fd, c, off, c.length - off)
          },
        })
      } else {
        chain = { lines: 0, bytes: 0, sha256: sha256Hex(''), lastSeq: 0, headHash: genesisHash(project), findings: [], hashes: new Map() }
      }
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    if (chain.findings.length > 0) {
      const f = chain.findings[0]!
      throw new KeelError('ERR_AUDIT_VERIFY', `refusing to sign ${logPath}: ${f.code}: ${f.message}`)
    }
    const cps = await copyCheckpoints(checkpoints.filter((c) => c.seq <= chain.lastSeq), out, project, options.key, chain)
    const manifest: Manifest = {
      format: BUNDLE_FORMAT,
      project,
      genesis: genesisHash(project),
      firstSeq: chain.lines > 0 ? 1 : 0,
      lastSeq: chain.lastSeq,
      count: chain.lines,
      headHash: chain.headHash,
      records: 'records.jsonl',
      recordsBytes: chain.bytes,
      recordsSha256: chain.sha256,
      signatureAlgorithm: 'ed25519',
      publicKeyFingerprint: fp,
      exportedAt: new Date((options.clock ?? Date.now)()).toISOString(),
      checkpoints: cps,
    }
    const bytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`)
    await writeFileSynced(join(out, 'manifest.json'), bytes)
    await writeFileSynced(join(out, 'manifest.sig'), signBytes(bytes, options.key))
    await writeFileSynced(join(out, 'pubkey.pem'), publicKeyPem(options.key))
    await syncFile(out)
    ok = true
    return { out, manifest }
  } finally {
    if (!ok) await rm(out, { recursive: true, force: true }).catch(() => {})
  }
}

async function writeFileSynced(path: string, data: Buffer | string): Promise<void> {
  const fh = await open(path, 'wx', 0o644)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
}

async function copyCheckpoints(
  files: CheckpointFiles[],
  out: string,
  project: string,
  key: PrivateKeyInput,
  chain: ChainCheckResult,
): Promise<ManifestCheckpoint[]> {
  if (files.length === 0) return []
  const check = await checkCheckpoints(files, {
    project,
    publicKey: toPublicKey(key),
    lastSeq: chain.lastSeq,
    hashAt: (s) => chain.hashes.get(s),
  })
  const fatal = check.findings.find((f) => f.code !== VerifyCode.TIMESTAMP_INVALID)
  if (fatal) throw new KeelError('ERR_AUDIT_VERIFY', `refusing to sign: ${fatal.code}: ${fatal.message}`)
  await mkdir(join(out, 'checkpoints'))
  const list: ManifestCheckpoint[] = []
  for (const f of files) {
    const base = `checkpoints/${checkpointBaseName(f.seq)}`
    const json = await readFile(f.path)
    await copyFile(f.path, join(out, `${base}.json`))
    await copyFile(f.signaturePath, join(out, `${base}.sig`))
    const entry: ManifestCheckpoint = {
      seq: f.seq,
      headHash: (JSON.parse(json.toString('utf8')) as { headHash: string }).headHash,
      file: `${base}.json`,
      sha256: sha256Hex(json),
      signature: `${base}.sig`,
    }
    if (f.receiptPath) {
      await copyFile(f.receiptPath, join(out, `${base}.tsr`))
      entry.receipt = `${base}.tsr`
      entry.receiptSha256 = sha256Hex(await readFile(f.receiptPath))
    }
    list.push(entry)
  }
  return list
}

// --- verification ----------------------------------------------------------

export interface VerifyReport {
  ok: boolean
  kind: 'bundle' | 'log'
  path: string
  project?: string
  /** Complete lines in the records file. */
  records: number
  lastSeq: number
  headHash: string
  recordsSha256: string
  /** The manifest's signature checked out with the given key. */
  signatureValid?: boolean
  keyFingerprint?: string
  checkpoints: { checked: number; matched: number; skipped: number; timestamps: number; anchoredTimestamps: number }
  findings: Finding[]
}

export interface VerifyBundleOptions {
  bundle: string
  /** The key the verifier trusts (never the bundle's own pubkey.pem). */
  publicKey: PublicKeyInput
  /** The operator's checkpoint directory, checked in addition to the bundle's copies. */
  checkpointsDir?: string
  /** Key for the checkpoints when it differs from `publicKey`. */
  checkpointPublicKey?: PublicKeyInput
  /** Trusted TSA certificate(s), PEM. */
  tsaCa?: string
}

function parseManifest(bytes: Buffer): Manifest | string {
  let v: unknown
  try {
    v = JSON.parse(bytes.toString('utf8'))
  } catch {
    return 'manifest.json is not valid JSON'
  }
  const m = v as Partial<Manifest>
  if (m === null || typeof m !== 'object') return 'manifest.json is not an object'
  if (m.format !== BUNDLE_FORMAT) return `unknown bundle format ${JSON.stringify(m.format)}`
  if (typeof m.project !== 'string') return 'project missing'
  try {
    assertProjectName(m.project)
  } catch {
    return `bad project name ${JSON.stringify(m.project)}`
  }
  for (const k of ['lastSeq', 'count', 'recordsBytes'] as const) {
    if (typeof m[k] !== 'number' || !Number.isSafeInteger(m[k]) || (m[k] as number) < 0) return `${k} is not a non-negative integer`
  }
  if (!isHex64(m.headHash) || !isHex64(m.recordsSha256)) return 'headHash or recordsSha256 is not a hex SHA-256'
  if (typeof m.publicKeyFingerprint !== 'string') return 'publicKeyFingerprint missing'
  if (m.checkpoints !== undefined && !Array.isArray(m.checkpoints)) return 'checkpoints is not a list'
  return { ...m, checkpoints: m.checkpoints ?? [] } as Manifest
}

async function readMaybe(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new KeelError('ERR_AUDIT_IO', `cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * Verifies a bundle: the signature with the verifier's key, then the chain against the
 * signed manifest (naming the exact record for each kind of tampering), then the
 * bundle's and the operator's checkpoints and their receipts. Never throws for bad
 * content: problems are findings. Throws ERR_AUDIT_IO only when the bundle cannot be read.
 */
export async function verifyBundle(options: VerifyBundleOptions): Promise<VerifyReport> {
  const dir = resolve(options.bundle)
  try {
    if (!(await stat(dir)).isDirectory()) throw new Error('not a directory')
  } catch (err) {
    throw new KeelError('ERR_AUDIT_IO', `cannot read bundle ${dir}: ${(err as Error).message}`, { cause: err })
  }
  const pub = toPublicKey(options.publicKey)
  const fp = keyFingerprint(pub)
  const report: VerifyReport = {
    ok: false,
    kind: 'bundle',
    path: dir,
    records: 0,
    lastSeq: 0,
    headHash: '',
    recordsSha256: '',
    signatureValid: false,
    keyFingerprint: fp,
    checkpoints: { checked: 0, matched: 0, skipped: 0, timestamps: 0, anchoredTimestamps: 0 },
    findings: [],
  }
  const manifestBytes = await readMaybe(join(dir, 'manifest.json'))
  if (!manifestBytes) {
    report.findings.push({ code: VerifyCode.MANIFEST_INVALID, file: 'manifest.json', message: 'manifest.json is missing' })
    return report
  }
  const sig = await readMaybe(join(dir, 'manifest.sig'))
  const manifest = parseManifest(manifestBytes)
  const bundledKey = await readMaybe(join(dir, 'pubkey.pem'))
  let bundledFp: string | undefined
  if (bundledKey) {
    try {
      bundledFp = keyFingerprint(bundledKey)
    } catch {
      bundledFp = 'unreadable'
    }
  }
  const declaredFp = typeof manifest === 'string' ? undefined : manifest.publicKeyFingerprint
  const signatureValid = sig !== undefined && verifyBytes(manifestBytes, sig, pub)
  report.signatureValid = signatureValid
  if (!signatureValid) {
    const other = [declaredFp, bundledFp].find((f) => f !== undefined && f !== fp)
    report.findings.push(
      other !== undefined
        ? {
            code: VerifyCode.KEY_MISMATCH,
            file: declaredFp !== undefined && declaredFp !== fp ? 'manifest.json' : 'pubkey.pem',
            message: `the bundle was signed with another key (${other}), not the trusted ${fp}: the key was replaced`,
          }
        : {
            code: VerifyCode.SIGNATURE_INVALID,
            file: 'manifest.sig',
            message: sig === undefined ? 'manifest.sig is missing' : 'manifest.sig does not verify with the trusted key: the manifest was changed',
          },
    )
  } else if (bundledFp !== undefined && bundledFp !== fp) {
    report.findings.push({ code: VerifyCode.KEY_MISMATCH, file: 'pubkey.pem', message: `pubkey.pem (${bundledFp}) is not the signing key ${fp}` })
  }
  if (typeof manifest === 'string') {
    report.findings.push({ code: VerifyCode.MANIFEST_INVALID, file: 'manifest.json', message: manifest })
    return report
  }
  report.project = manifest.project
  const recordsPath = join(dir, 'records.jsonl')
  const wants = new Set<number>(manifest.checkpoints.map((c) => c.seq))
  const external = options.checkpointsDir ? await listCheckpoints(options.checkpointsDir, manifest.project) : []
  for (const c of external) wants.add(c.seq)
  let chain: ChainCheckResult
  try {
    chain = await checkChain(recordsPath, manifest.project, {
      expect: { lastSeq: manifest.lastSeq, headHash: manifest.headHash, count: manifest.count },
      wantHashes: wants,
    })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    report.findings.push({ code: VerifyCode.TRUNCATED, file: 'records.jsonl', seq: 1, seqEnd: manifest.lastSeq, message: 'records.jsonl is missing' })
    return report
  }
  fillFromChain(report, chain)
  const recordLevel = chain.findings.length > 0
  if (!recordLevel && (chain.sha256 !== manifest.recordsSha256 || chain.bytes !== manifest.recordsBytes)) {
    report.findings.push({
      code: VerifyCode.RECORDS_HASH_MISMATCH,
      file: 'records.jsonl',
      message: `records.jsonl is ${chain.bytes} bytes with SHA-256 ${chain.sha256}; the manifest signs ${manifest.recordsBytes} bytes with ${manifest.recordsSha256}`,
    })
  }
  const cpKey = options.checkpointPublicKey ?? pub
  // The bundle's own checkpoint copies: each must be the file the manifest lists.
  const inBundle: CheckpointFiles[] = []
  for (const c of manifest.checkpoints) {
    const json = await readMaybe(join(dir, c.file))
    if (!json || sha256Hex(json) !== c.sha256) {
      report.findings.push({ code: VerifyCode.CHECKPOINT_INVALID, seq: c.seq, file: c.file, message: `checkpoint ${c.seq}: ${c.file} is ${json ? 'not the file the manifest lists' : 'missing'}` })
      continue
    }
    if (c.receipt) {
      const tsr = await readMaybe(join(dir, c.receipt))
      if (!tsr || sha256Hex(tsr) !== c.receiptSha256) {
        report.findings.push({ code: VerifyCode.TIMESTAMP_INVALID, seq: c.seq, file: c.receipt, message: `checkpoint ${c.seq}: ${c.receipt} is ${tsr ? 'not the receipt the manifest lists' : 'missing'}` })
      }
    }
    inBundle.push({ seq: c.seq, path: join(dir, c.file), signaturePath: join(dir, c.signature), ...(c.receipt ? { receiptPath: join(dir, c.receipt) } : {}) })
  }
  await addCheckpoints(report, inBundle, manifest.project, cpKey, chain, options.tsaCa)
  // The operator's directory may hold checkpoints newer than this bundle: out of scope,
  // unless they predate the export (then the export left records out).
  await addCheckpoints(report, external, manifest.project, cpKey, chain, options.tsaCa, manifest.exportedAt)
  report.ok = report.findings.length === 0
  return report
}

function fillFromChain(report: VerifyReport, chain: ChainCheckResult): void {
  report.records = chain.lines
  report.lastSeq = chain.lastSeq
  report.headHash = chain.headHash
  report.recordsSha256 = chain.sha256
  report.findings.push(...chain.findings)
}

async function addCheckpoints(
  report: VerifyReport,
  files: CheckpointFiles[],
  project: string,
  key: PublicKeyInput,
  chain: ChainCheckResult,
  tsaCa: string | undefined,
  snapshotTime?: string,
): Promise<CheckpointCheckResult | undefined> {
  if (files.length === 0) return undefined
  const res = await checkCheckpoints(files, {
    project,
    publicKey: key,
    lastSeq: chain.lastSeq,
    hashAt: (s) => chain.hashes.get(s),
    ...(tsaCa ? { tsaCa } : {}),
    ...(snapshotTime !== undefined ? { snapshotTime } : {}),
  })
  report.checkpoints.checked += res.checked
  report.checkpoints.skipped += res.skipped
  report.checkpoints.matched += res.matched
  report.checkpoints.timestamps += res.timestamps
  report.checkpoints.anchoredTimestamps += res.anchoredTimestamps
  report.findings.push(...res.findings)
  return res
}

export interface VerifyLogOptions {
  dir: string
  project: string
  checkpointsDir?: string
  /** Needed to check checkpoint signatures. */
  publicKey?: PublicKeyInput
  tsaCa?: string
}

/**
 * Verifies a live log in place: chain from genesis, torn tail, and (with a checkpoint
 * directory and key) the checkpoints, which is what catches a log rewritten from scratch.
 * Without a signed head, records appended after the last checkpoint cannot be told from
 * forged ones; export and verify a bundle for that.
 */
export async function verifyLog(options: VerifyLogOptions): Promise<VerifyReport> {
  const path = auditLogPath(options.dir, options.project)
  const report: VerifyReport = {
    ok: false,
    kind: 'log',
    path,
    project: options.project,
    records: 0,
    lastSeq: 0,
    headHash: genesisHash(options.project),
    recordsSha256: sha256Hex(''),
    checkpoints: { checked: 0, matched: 0, skipped: 0, timestamps: 0, anchoredTimestamps: 0 },
    findings: [],
  }
  const external = options.checkpointsDir ? await listCheckpoints(options.checkpointsDir, options.project) : []
  if (external.length > 0 && !options.publicKey) {
    throw new KeelError('ERR_USAGE', 'checking checkpoints needs the public key they were signed with')
  }
  let chain: ChainCheckResult
  try {
    chain = await checkChain(path, options.project, { wantHashes: new Set(external.map((c) => c.seq)) })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new KeelError('ERR_AUDIT_IO', `cannot read ${path}: ${(err as Error).message}`, { cause: err })
    chain = { lines: 0, bytes: 0, sha256: sha256Hex(''), lastSeq: 0, headHash: genesisHash(options.project), findings: [], hashes: new Map() }
  }
  fillFromChain(report, chain)
  if (options.publicKey) await addCheckpoints(report, external, options.project, options.publicKey, chain, options.tsaCa)
  report.ok = report.findings.length === 0
  return report
}
