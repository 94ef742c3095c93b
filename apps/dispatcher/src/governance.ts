/**
 * Governance events and logs.
 *
 * The dispatcher writes every decision to an injected core `GovernanceSink` (packages/audit's
 * hash-chained log in production). The event that admits a call upstream
 * (`dispatch.egress_bound`) is awaited and the call is denied if it cannot be written
 * (`audit_unavailable`): no unrecorded egress. Other events are written without holding the
 * response, with deferred durability (written in order at once, synced with the next
 * egress record or shortly after), so no call waits for the disk on another's behalf; a
 * failed write is logged once per event.
 * {@link createMemoryGovernanceSink} serves tests.
 */
import type { GovernanceEventInput, GovernanceSink, Logger, RecordOptions } from '@keel/core'
import { scrubSecrets } from './credentials/store.js'

export const LOG_FIELD = {
  reason: 'reason',
  event: 'event',
  provider: 'provider',
  model: 'model',
  project: 'project',
  agent: 'agent',
  permitId: 'permitId',
  endpoint: 'endpoint',
  status: 'status',
  durationMs: 'durationMs',
  headers: 'headers',
} as const

/** Headers whose values may be logged; everything else is `[REDACTED]` (STYLE §6). */
const LOGGABLE_HEADERS = new Set([
  'content-type',
  'content-length',
  'accept',
  'user-agent',
  'anthropic-version',
  'anthropic-beta',
  'openai-beta',
  'x-keel-agent',
  'x-keel-project',
  'x-keel-provider',
  'x-keel-data-class',
  'x-keel-program',
  'x-keel-export-control',
  'x-keel-priority',
  'x-keel-permit-id',
  'x-keel-request-sha256',
  'x-keel-binding',
  'traceparent',
  'retry-after',
  'x-request-id',
  'request-id',
])

export function redactHeaders(headers: Iterable<[string, string]>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of headers) {
    const name = k.toLowerCase()
    out[name] = LOGGABLE_HEADERS.has(name) ? v : '[REDACTED]'
  }
  return out
}

export interface Governance {
  /** Writes an event; rejects if the sink fails. */
  record(event: GovernanceEventInput, options?: RecordOptions): Promise<void>
  /** Writes an event without waiting (deferred durability); failures are logged. */
  recordQuiet(event: GovernanceEventInput): void
}

export function createGovernance(sink: GovernanceSink, logger: Logger, secrets: () => readonly string[]): Governance {
  // Events are built from ids, hashes, names and keel's own messages, never from headers or
  // bodies; the one free-text path (a refusal's message) is scrubbed where it is built (app.ts).
  return {
    async record(event, options) {
      await sink.record(event, options)
    },
    recordQuiet(event) {
      let p: Promise<void>
      try {
        p = sink.record(event, { durability: 'deferred' })
      } catch (err) {
        p = Promise.reject(err)
      }
      p.catch((err: unknown) =>
        logger.error('governance event not recorded', { [LOG_FIELD.event]: event.event, error: scrubSecrets(String(err), secrets()) }),
      )
    },
  }
}

export interface MemoryGovernanceSink extends GovernanceSink {
  readonly events: GovernanceEventInput[]
}

/**
 * Events kept in memory (tests, or a dispatcher without `spec.audit`). With `limit`, only
 * the most recent events are kept (at least `limit`, at most twice that), so a long-running
 * server without an audit log does not grow without bound.
 */
export function createMemoryGovernanceSink(limit = Infinity): MemoryGovernanceSink {
  const events: GovernanceEventInput[] = []
  return {
    events,
    record(event) {
      events.push({ time: Date.now(), ...event })
      // Trimmed in bulk, so a push stays O(1) amortized.
      if (events.length >= 2 * limit) events.splice(0, events.length - limit)
      return Promise.resolve()
    },
  }
}

/**
 * A Logger writing one JSON line per entry to a stream (stderr for `keel dispatcher serve`),
 * scrubbing every known secret from the line before it is written.
 */
export function createJsonLogger(write: (line: string) => void, secrets: () => readonly string[] = () => [], level: 'debug' | 'info' = 'info'): Logger {
  const emit = (lvl: string, msg: string, fields?: Record<string, unknown>): void => {
    try {
      write(scrubSecrets(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }), secrets()) + '\n')
    } catch {
      // A broken log never breaks the data path.
    }
  }
  return {
    debug: (m, f) => {
      if (level === 'debug') emit('debug', m, f)
    },
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  }
}
