import { execFile } from 'node:child_process'

export interface ExecResult {
  stdout: string
  stderr: string
}

/**
 * Runs a system tool with an argument array (never a shell string), bounded in time;
 * `input`, when given, is written to its stdin (e.g. an `ip -batch -` script).
 * Rejects with an Error whose message carries the tool's stderr.
 */
export function run(file: string, args: readonly string[], timeoutMs = 10_000, input?: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const detail = stderr.trim() || err.message
        reject(new Error(`${file} ${args.join(' ')}: ${detail}`, { cause: err }))
      } else {
        resolve({ stdout, stderr })
      }
    })
    if (input !== undefined) {
      // A tool that exits before reading all of it (an error) must not crash us with EPIPE.
      child.stdin?.on('error', () => {})
      child.stdin?.end(input)
    }
  })
}
