import { execFile } from 'node:child_process'

export interface ExecResult {
  stdout: string
  stderr: string
}

/**
 * Runs a system tool with an argument array (never a shell string), bounded in time.
 * Rejects with an Error whose message carries the tool's stderr.
 */
export function run(file: string, args: readonly string[], timeoutMs = 10_000): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const detail = stderr.trim() || err.message
        reject(new Error(`${file} ${args.join(' ')}: ${detail}`, { cause: err }))
      } else {
        resolve({ stdout, stderr })
      }
    })
  })
}
