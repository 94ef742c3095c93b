/**
 * Child process for cross-process tests and the bench: appends `count` records to one
 * log and reports on stdout. argv: <dir> <project> <id> <count> <fsync> [concurrency] [goFile]
 * (goFile: the worker creates `<goFile>.ready-<id>`, then waits, at most 20 s, until goFile
 * exists, so that workers that started apart append at the same time).
 */
import { existsSync, writeFileSync } from 'node:fs'
import { openAuditLog } from '../log.js'
import type { FsyncPolicy } from '../log.js'

const [dir, project, id, countText, fsync, concText, goFile] = process.argv.slice(2)
const count = Number(countText)
const concurrency = Number(concText ?? '1')
const log = openAuditLog({ dir: dir!, project: project!, fsync: fsync as FsyncPolicy, lockTimeoutMs: 60_000 })
if (goFile) {
  writeFileSync(`${goFile}.ready-${id}`, '')
  for (let i = 0; i < 4000 && !existsSync(goFile); i++) await new Promise((resolve) => setTimeout(resolve, 5))
}
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
