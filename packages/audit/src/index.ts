/**
 * @module @keel/audit: the per-project, hash-chained governance log; Ed25519-signed
 * export bundles; signed checkpoints with RFC 3161 receipts; and the verifier that names
 * the exact record behind each kind of tampering.
 *
 * @example
 * import { createAuditSink } from '@keel/audit'
 * const sink = createAuditSink({ dir: '/var/lib/keel/audit', fsync: 'batch' })
 * await sink.record({ project: 'acme', event: 'dispatch.egress_bound', reason: 'allowed', actor: 'agent:coder', subject: 'api.anthropic.com:443' })
 */
export {
  RECORD_VERSION,
  MAX_RECORD_BYTES,
  assertProjectName,
  buildRecord,
  buildRecordLine,
  encodeRecord,
  genesisHash,
  parseRecordLine,
  sha256Hex,
} from './format.js'
export type { AuditEventInput, AuditRecord, ChainedRecord, ParseResult } from './format.js'
export {
  AuditTornTailError,
  auditLogPath,
  createAuditSink,
  openAuditLog,
  readAuditRecords,
  repairAuditLog,
} from './log.js'
export type { AppendOptions, AuditLog, AuditLogOptions, AuditSink, AuditSinkOptions, ChainHead, FsyncPolicy, RepairResult } from './log.js'
export { acquireFileLock, createFileLocker } from './lock.js'
export type { FileLock, FileLocker, FileLockOptions } from './lock.js'
export { scanLines } from './lines.js'
export type { ScanResult, TornTail } from './lines.js'
export {
  generateKeyFiles,
  keyFingerprint,
  publicKeyPem,
  readPrivateKeyFile,
  readPublicKeyFile,
  signBytes,
  toPrivateKey,
  toPublicKey,
  verifyBytes,
} from './keys.js'
export type { KeygenResult, PrivateKeyInput, PublicKeyInput } from './keys.js'
export { ALL_VERIFY_CODES, VerifyCode } from './codes.js'
export type { Finding } from './codes.js'
export { checkChain } from './chain.js'
export type { ChainCheckOptions, ChainCheckResult, ChainExpectation } from './chain.js'
export {
  CHECKPOINT_FORMAT,
  checkCheckpoints,
  checkpointBaseName,
  encodeCheckpoint,
  listCheckpoints,
  parseCheckpoint,
  timestampCheckpoint,
  withCheckpoints,
  writeCheckpoint,
} from './checkpoint.js'
export type {
  Checkpoint,
  CheckpointCheckContext,
  CheckpointCheckResult,
  CheckpointFiles,
  CheckpointedLog,
  CheckpointerOptions,
  WriteCheckpointOptions,
  WrittenCheckpoint,
} from './checkpoint.js'
export { BUNDLE_FORMAT, exportBundle, verifyBundle, verifyLog } from './bundle.js'
export type { ExportOptions, ExportResult, Manifest, ManifestCheckpoint, VerifyBundleOptions, VerifyLogOptions, VerifyReport } from './bundle.js'
export {
  buildTimeStampRequest,
  parseTimeStampResponse,
  requestTimestamp,
  verifyTimestampResponse,
} from './tsa.js'
export type {
  ParsedTimeStampResponse,
  TimestampCheck,
  TimestampReceipt,
  TimestampRequestOptions,
  TstInfo,
  VerifyTimestampOptions,
} from './tsa.js'
export { defaultAuditDir } from './paths.js'
