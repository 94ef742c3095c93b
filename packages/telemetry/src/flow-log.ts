/**
 * The flow log: one JSON line per DNS query and connection (`keel run --log file.jsonl`).
 * Writes go through one append stream; a write error (disk full, …) is reported once to
 * `onError` and later records are dropped, so a broken log never breaks the sandbox.
 */
import { createWriteStream, type WriteStream } from 'node:fs'
import type { DecisionEvent, DecisionSink } from '@keel/core'

export interface FlowLogRecord extends Omit<DecisionEvent, 'time'> {
  time: string
}

export function toFlowLogRecord(event: DecisionEvent): FlowLogRecord {
  return { ...event, time: new Date(event.time).toISOString() }
}

export interface FlowLog {
  sink: DecisionSink
  /** Records written so far, and whether the log failed. */
  stats(): { written: number; failed: boolean; error?: string }
  close(): Promise<void>
}

export interface FlowLogOptions {
  path: string
  /**
   * An already-open descriptor to write to instead of opening `path` (which then only
   * names the log in messages). keel run opens it itself, before the agent starts, so
   * the agent cannot swap the path for a link (packages/sandbox output-file.ts).
   */
  fd?: number
  onError?: (err: Error) => void
}

export function openFlowLog(options: FlowLogOptions): FlowLog {
  const stream: WriteStream = createWriteStream(options.path, {
    flags: 'a',
    mode: 0o600,
    ...(options.fd === undefined ? {} : { fd: options.fd }),
  })
  let written = 0
  let error: Error | undefined
  stream.on('error', (err) => {
    if (error) return
    error = err
    options.onError?.(err)
  })
  return {
    sink(event) {
      if (error) return
      stream.write(JSON.stringify(toFlowLogRecord(event)) + '\n')
      written++
    },
    stats: () => ({ written, failed: error !== undefined, ...(error ? { error: error.message } : {}) }),
    close: () =>
      new Promise<void>((resolve) => {
        if (stream.destroyed) return resolve()
        stream.end(() => resolve())
        stream.once('error', () => resolve())
      }),
  }
}
