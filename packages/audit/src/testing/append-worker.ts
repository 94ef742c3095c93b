/**
 * Child process for cross-process tests and the bench: appends `count` records to one
 * log and reports on stdout. argv: <dir> <project> <id> <count> <fsync> [concurrency] [startAtMs]
 * (startAtMs: wall-clock time to start appending, so workers that started apart overlap).
 */
import { openAuditLog } from '../log.js'
import type { FsyncPolicy } from '../log.js'

const [dir, project, id, countText, fsync, concText, startAtText] = process.argv.slice(2)
const count = Number(countText)
const concurrency = Number(concText ?? '1')
const log = openAuditLog({ dir: dir!, project: project!, fsync: fsync as FsyncPolicy, lockTimeoutMs: 60_000 })
const wait = Number(startAtText ?? '0') - Date.now()
if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 10_000)))
let next = 0
const t0 = process.hrtime.bigint()
async function lane(): Promise<void> {
  for (let i = next++; i < count; i = next++) {
    await log.append({ event: 'test.append', reason: 'allowed', actor: `worker:${id}`, subject: String(i) })
  }
}
await Promise.all(Array.from({ length: concurrency }, () => lane()))
await log.close()
const ms = Number(process.hrtime.bigint() - t0) / 1e6
process.stdout.write(JSON.stringify({ id, count, ms }) + '\n')
