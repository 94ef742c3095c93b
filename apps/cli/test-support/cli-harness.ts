/**
 * Runs `keel` in-process for unit tests: a fresh temp directory per test, stdout and
 * stderr captured, process.exitCode reset around each call.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, vi } from 'vitest'
import { main } from '../src/main.js'

export interface CliIo {
  /** This test's temp directory. */
  tmp: string
  /** What the last `keel(...)` call wrote. */
  stdout: string
  stderr: string
}

export function useCli(prefix: string): { io: CliIo; keel: (...args: string[]) => Promise<number> } {
  const io: CliIo = { tmp: '', stdout: '', stderr: '' }
  beforeEach(async () => {
    io.tmp = await mkdtemp(join(tmpdir(), prefix))
    io.stdout = ''
    io.stderr = ''
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      io.stdout += String(chunk)
      return true
    })
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      io.stderr += String(chunk)
      return true
    })
  })
  afterEach(async () => {
    process.exitCode = undefined
    await rm(io.tmp, { recursive: true, force: true })
  })
  const keel = async (...args: string[]): Promise<number> => {
    io.stdout = ''
    io.stderr = ''
    process.exitCode = undefined
    const code = await main(args)
    process.exitCode = undefined
    return code
  }
  return { io, keel }
}
