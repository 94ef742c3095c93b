/**
 * `keel audit ...`: wiring only; the log, export, checkpoints and verifier live in
 * @keel/audit. Exit codes: 0 ok, 1 verification failed (or an I/O error), 2 usage.
 */
import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { InvalidArgumentError, Option } from 'commander'
import { KeelError } from '@keel/core'
import {
  defaultAuditDir,
  exportBundle,
  generateKeyFiles,
  openAuditLog,
  readAuditRecords,
  readPrivateKeyFile,
  readPublicKeyFile,
  repairAuditLog,
  timestampCheckpoint,
  verifyBundle,
  verifyLog,
  writeCheckpoint,
} from '@keel/audit'
import type { FsyncPolicy, VerifyReport } from '@keel/audit'

/** Exit code when verification finds a problem. */
export const EXIT_VERIFY_FAILED = 1

const out = (line = '') => process.stdout.write(`${line}\n`)
const err = (line: string) => process.stderr.write(`${line}\n`)

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer')
  return n
}

function example(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText('after', `\nExample${lines.length > 1 ? 's' : ''}:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`)
}

const dataDirOption = () =>
  new Option('--data-dir <dir>', 'directory of the logs (<dir>/<project>.jsonl)').env('KEEL_AUDIT_DIR')
const dataDir = (opts: { dataDir?: string }) => opts.dataDir ?? defaultAuditDir()

async function readTextFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (e) {
    throw new KeelError('ERR_USAGE', `cannot read ${what} ${path}: ${(e as Error).message}`, { cause: e })
  }
}

function printReport(report: VerifyReport, json: boolean): void {
  if (json) {
    out(JSON.stringify(report, null, 2))
    return
  }
  const what = report.kind === 'bundle' ? `bundle ${report.path}` : `log ${report.path}`
  out(`${report.ok ? 'OK' : 'FAILED'}: ${what}${report.project ? ` (project ${report.project})` : ''}`)
  out(`  records: ${report.records}, last seq ${report.lastSeq}, head ${report.headHash}`)
  if (report.kind === 'bundle') out(`  signature: ${report.signatureValid ? 'valid' : 'INVALID'} (trusted key ${report.keyFingerprint})`)
  const c = report.checkpoints
  if (c.checked > 0 || c.skipped > 0) {
    out(
      `  checkpoints: ${c.matched}/${c.checked} match` +
        (c.skipped ? ` (${c.skipped} newer than the bundle, skipped)` : '') +
        `; receipts: ${c.timestamps} (${c.anchoredTimestamps} anchored to --tsa-ca)`,
    )
    if (c.timestamps > c.anchoredTimestamps && c.timestamps > 0) out('  note: receipts not anchored to a trusted TSA CA; pass --tsa-ca')
  }
  for (const f of report.findings) out(`  ${f.code}: ${f.message}`)
}

/** Registers `keel audit ...`. */
export function registerAuditCommands(program: Command): void {
  const audit = program
    .command('audit')
    .description('hash-chained governance log: keys, export, verify, checkpoints, RFC 3161 receipts')

  example(
    audit
      .command('keygen')
      .description('write an Ed25519 key pair: <prefix>.key (PKCS#8 PEM, mode 0600) and <prefix>.pub (SPKI PEM)')
      .requiredOption('--out <prefix>', 'path prefix of the two files')
      .option('--force', 'overwrite existing files')
      .action(async (opts: { out: string; force?: boolean }) => {
        const r = await generateKeyFiles(opts.out, { force: opts.force === true })
        out(`wrote ${r.privateKeyPath} (0600) and ${r.publicKeyPath}`)
        out(`fingerprint ${r.fingerprint}`)
      }),
    'keel audit keygen --out /etc/keel/audit-signing',
  )

  example(
    audit
      .command('append')
      .description('append one governance event to a project log (for scripts and tests; keel components append directly)')
      .requiredOption('--project <name>', 'project whose chain to append to')
      .requiredOption('--event <name>', 'stable event name')
      .requiredOption('--reason <code>', 'stable reason code')
      .requiredOption('--actor <id>', 'agent or workflow identity')
      .requiredOption('--subject <s>', 'what it was about')
      .option('--data <json>', 'extra detail, a JSON object')
      .addOption(new Option('--fsync <policy>', 'durability').choices(['always', 'batch', 'never']).default('always'))
      .addOption(dataDirOption())
      .action(async (opts: { project: string; event: string; reason: string; actor: string; subject: string; data?: string; fsync: FsyncPolicy; dataDir?: string }) => {
        let data: Record<string, unknown> | undefined
        if (opts.data !== undefined) {
          try {
            data = JSON.parse(opts.data) as Record<string, unknown>
          } catch (e) {
            throw new KeelError('ERR_USAGE', `--data is not JSON: ${(e as Error).message}`)
          }
        }
        const log = openAuditLog({ dir: dataDir(opts), project: opts.project, fsync: opts.fsync })
        try {
          const rec = await log.append({ event: opts.event, reason: opts.reason, actor: opts.actor, subject: opts.subject, ...(data !== undefined ? { data } : {}) })
          out(`appended ${opts.project} #${rec.seq} ${rec.hash}`)
        } finally {
          await log.close()
        }
      }),
    'keel audit append --project acme --event dispatch.egress_bound --reason allowed --actor agent:coder --subject api.anthropic.com:443',
  )

  example(
    audit
      .command('log')
      .description('show the records of a project log')
      .requiredOption('--project <name>', 'project')
      .option('--tail <n>', 'only the last n records', positiveInt)
      .option('--json', 'one JSON record per line, as stored, plus its hash')
      .addOption(dataDirOption())
      .action(async (opts: { project: string; tail?: number; json?: boolean; dataDir?: string }) => {
        const r = await readAuditRecords({ dir: dataDir(opts), project: opts.project, ...(opts.tail ? { tail: opts.tail } : {}) })
        for (const rec of r.records) {
          if (opts.json) out(JSON.stringify(rec))
          else out(`${String(rec.seq).padStart(6)}  ${rec.time}  ${rec.event}  ${rec.reason}  actor=${rec.actor}  subject=${rec.subject}`)
        }
        if (r.malformed > 0) err(`keel: ${r.malformed} malformed line(s) skipped; run keel audit verify`)
        if (r.torn) err(`keel: torn last line at byte ${r.torn.offset} (${r.torn.length} bytes); see keel audit repair`)
      }),
    'keel audit log --project acme --tail 20',
  )

  example(
    audit
      .command('export')
      .description('write a signed bundle: records.jsonl, manifest.json, manifest.sig (Ed25519), pubkey.pem')
      .requiredOption('--project <name>', 'project to export')
      .requiredOption('--key <file>', 'Ed25519 private key (PKCS#8 PEM)')
      .requiredOption('--out <dir>', 'bundle directory to create (must not exist, or be empty)')
      .option('--checkpoints <dir>', 'include (and check against) the checkpoints in this directory')
      .addOption(dataDirOption())
      .action(async (opts: { project: string; key: string; out: string; checkpoints?: string; dataDir?: string }) => {
        const key = await readPrivateKeyFile(opts.key)
        const r = await exportBundle({
          dir: dataDir(opts),
          project: opts.project,
          key,
          out: opts.out,
          ...(opts.checkpoints ? { checkpointsDir: opts.checkpoints } : {}),
        })
        out(`exported ${r.manifest.count} records of ${r.manifest.project} to ${r.out}`)
        out(`head seq ${r.manifest.lastSeq} ${r.manifest.headHash}; signed by ${r.manifest.publicKeyFingerprint}`)
        if (r.manifest.checkpoints.length) out(`with ${r.manifest.checkpoints.length} checkpoint(s)`)
      }),
    'keel audit export --project acme --key audit.key --out ./acme-2025-06',
  )

  example(
    audit
      .command('verify')
      .description('verify a signed bundle (signature, chain, checkpoints, receipts), or a live log with --project')
      .argument('[bundle]', 'bundle directory')
      .option('--pubkey <file>', 'trusted Ed25519 public key (SPKI PEM); required for bundles and checkpoints')
      .option('--project <name>', 'verify the live log of this project instead of a bundle')
      .option('--checkpoints <dir>', "the operator's checkpoint directory to check the chain against")
      .option('--tsa-ca <file>', 'trusted TSA CA certificate(s), PEM, to anchor RFC 3161 receipts')
      .option('--json', 'print the report as JSON')
      .addOption(dataDirOption())
      .action(async (bundle: string | undefined, opts: { pubkey?: string; project?: string; checkpoints?: string; tsaCa?: string; json?: boolean; dataDir?: string }) => {
        if ((bundle === undefined) === (opts.project === undefined)) {
          throw new KeelError('ERR_USAGE', 'give either a bundle directory or --project')
        }
        const publicKey = opts.pubkey ? await readPublicKeyFile(opts.pubkey) : undefined
        const tsaCa = opts.tsaCa ? await readTextFile(opts.tsaCa, 'TSA CA') : undefined
        let report: VerifyReport
        if (bundle !== undefined) {
          if (!publicKey) throw new KeelError('ERR_USAGE', 'verifying a bundle needs --pubkey (the key you trust, not the bundle\'s own)')
          report = await verifyBundle({
            bundle,
            publicKey,
            ...(opts.checkpoints ? { checkpointsDir: opts.checkpoints } : {}),
            ...(tsaCa ? { tsaCa } : {}),
          })
        } else {
          report = await verifyLog({
            dir: dataDir(opts),
            project: opts.project!,
            ...(opts.checkpoints ? { checkpointsDir: opts.checkpoints } : {}),
            ...(publicKey ? { publicKey } : {}),
            ...(tsaCa ? { tsaCa } : {}),
          })
        }
        printReport(report, opts.json === true)
        if (!report.ok) process.exitCode = EXIT_VERIFY_FAILED
      }),
    'keel audit verify ./acme-2025-06 --pubkey audit.pub',
    'keel audit verify ./acme-2025-06 --pubkey audit.pub --checkpoints /srv/keel-checkpoints --tsa-ca tsa-ca.pem --json',
    'keel audit verify --project acme --checkpoints /srv/keel-checkpoints --pubkey audit.pub',
  )

  example(
    audit
      .command('checkpoint')
      .description('sign a snapshot of the chain head into <dir>/<project>/<seq>.json (+ .sig, and .tsr with --tsa)')
      .requiredOption('--project <name>', 'project')
      .requiredOption('--key <file>', 'Ed25519 private key (PKCS#8 PEM)')
      .requiredOption('--dir <dir>', 'checkpoint directory, outside the runtime')
      .option('--tsa <url>', 'also get an RFC 3161 receipt from this TSA')
      .addOption(dataDirOption())
      .action(async (opts: { project: string; key: string; dir: string; tsa?: string; dataDir?: string }) => {
        const key = await readPrivateKeyFile(opts.key)
        const log = openAuditLog({ dir: dataDir(opts), project: opts.project })
        let head
        try {
          head = await log.head()
        } finally {
          await log.close()
        }
        const w = await writeCheckpoint({ dir: opts.dir, head, key, ...(opts.tsa ? { tsa: { url: opts.tsa } } : {}) })
        out(`${w.created ? 'wrote' : 'kept existing'} checkpoint ${w.path} (seq ${w.seq})`)
        if (w.receiptPath) out(`receipt ${w.receiptPath}`)
      }),
    'keel audit checkpoint --project acme --key audit.key --dir /srv/keel-checkpoints --tsa http://tsa.example/tsr',
  )

  example(
    audit
      .command('timestamp')
      .description('get an RFC 3161 receipt (<seq>.tsr) for an existing checkpoint file')
      .argument('<checkpoint>', 'checkpoint .json file')
      .requiredOption('--tsa <url>', 'TSA URL')
      .action(async (checkpoint: string, opts: { tsa: string }) => {
        const path = await timestampCheckpoint(checkpoint, { url: opts.tsa })
        out(`receipt ${path}`)
      }),
    'keel audit timestamp /srv/keel-checkpoints/acme/000000001000.json --tsa http://tsa.example/tsr',
  )

  example(
    audit
      .command('repair')
      .description('move a torn or malformed last line to <log>.torn-<offset> so appends can continue')
      .requiredOption('--project <name>', 'project')
      .addOption(dataDirOption())
      .action(async (opts: { project: string; dataDir?: string }) => {
        const r = await repairAuditLog({ dir: dataDir(opts), project: opts.project })
        if (!r.repaired) out(`${r.path}: ends cleanly, nothing to repair`)
        else out(`${r.path}: ${r.detail}; moved ${r.length} bytes from offset ${r.offset} to ${r.quarantine}`)
      }),
    'keel audit repair --project acme',
  )
}
