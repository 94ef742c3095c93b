/**
 * The exit report: every destination the agent tried, allowed or denied, with counts and
 * bytes (`--report file.json`), and the short table printed to stderr at exit.
 */
import { Reason, type DecisionEvent, type Verdict } from '@keel/core'
import type { Rejection } from './ruleset.js'

export interface ReportDestination {
  name: string | null
  address: string | null
  port: number | null
  protocol: string
  verdict: Verdict
  reason: string
  count: number
  bytesOut: number
  bytesIn: number
}

export interface Report {
  destinations: ReportDestination[]
}

/**
 * DNS answers that are not a destination decision: keel answers every non-address query
 * type for an allowed name with empty data (so SVCB/HTTPS records cannot carry ECH keys
 * or other addresses), and resolvers ask for them routinely.
 */
const NOT_A_DESTINATION: ReadonlySet<string> = new Set<Reason>([Reason.DNS_QUERY_TYPE_DENIED])

/** Collects decision events as they happen; cheap enough to sit on the data path. */
export class ReportCollector {
  private readonly rows = new Map<string, ReportDestination>()

  readonly sink = (event: DecisionEvent): void => {
    if (event.kind === 'dns') {
      // An allowed lookup is not a destination (the connection that follows is), and a
      // query-type refusal is routine; a denied or failed name is listed on its own.
      if (event.verdict === 'allow' || NOT_A_DESTINATION.has(event.reason)) return
      this.add({ name: event.name ?? null, address: null, port: null, protocol: 'DNS', verdict: event.verdict, reason: event.reason }, 1, 0, 0)
      return
    }
    this.add(
      {
        name: event.name ?? null,
        address: event.address ?? null,
        port: event.port ?? null,
        protocol: event.protocol,
        verdict: event.verdict,
        reason: event.reason,
      },
      1,
      event.bytesOut ?? 0,
      event.bytesIn ?? 0,
    )
  }

  /** Adds what nftables rejected in the namespace (UDP, ICMP, other protocols). */
  addRejections(rejections: readonly Rejection[], nameFor: (address: string) => string | undefined): void {
    for (const r of rejections) {
      const reason =
        r.protocol === 'UDP' ? Reason.UDP_NOT_ALLOWED : r.protocol === 'ICMP' ? Reason.ICMP_NOT_ALLOWED : Reason.PROTOCOL_NOT_ALLOWED
      this.add(
        { name: nameFor(r.address) ?? null, address: r.address, port: r.port ?? null, protocol: r.protocol, verdict: 'deny', reason },
        r.packets,
        0,
        0,
      )
    }
  }

  report(): Report {
    const destinations = [...this.rows.values()].sort(
      (a, b) =>
        (a.verdict === b.verdict ? 0 : a.verdict === 'deny' ? -1 : 1) ||
        (a.name ?? a.address ?? '').localeCompare(b.name ?? b.address ?? '') ||
        (a.port ?? 0) - (b.port ?? 0),
    )
    return { destinations }
  }

  deniedCount(): number {
    let n = 0
    for (const row of this.rows.values()) if (row.verdict === 'deny') n++
    return n
  }

  private add(key: Omit<ReportDestination, 'count' | 'bytesOut' | 'bytesIn'>, count: number, bytesOut: number, bytesIn: number): void {
    const id = JSON.stringify([key.name, key.address, key.port, key.protocol, key.verdict, key.reason])
    const row = this.rows.get(id)
    if (row) {
      row.count += count
      row.bytesOut += bytesOut
      row.bytesIn += bytesIn
    } else {
      this.rows.set(id, { ...key, count, bytesOut, bytesIn })
    }
  }
}

const formatBytes = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : n < 1024 ** 3 ? `${(n / 1024 ** 2).toFixed(1)} MiB` : `${(n / 1024 ** 3).toFixed(2)} GiB`

function destinationLabel(d: ReportDestination): string {
  if (d.protocol === 'DNS') return `${d.name ?? '?'} (dns)`
  const host = d.name ?? (d.address?.includes(':') ? `[${d.address}]` : (d.address ?? '?'))
  return d.port === null ? `${host}/${d.protocol.toLowerCase()}` : `${host}:${d.port}/${d.protocol.toLowerCase()}`
}

/** The short table printed to stderr when the agent ends (unless --quiet). */
export function formatExitTable(report: Report): string {
  const { destinations } = report
  if (destinations.length === 0) return 'keel: the agent tried no network destinations\n'
  const allowed = destinations.filter((d) => d.verdict === 'allow').length
  const rows = destinations.map((d) => [
    d.verdict === 'allow' ? 'ALLOW' : 'DENY',
    destinationLabel(d),
    `${d.count}x`,
    d.verdict === 'allow' ? `${formatBytes(d.bytesOut)} out, ${formatBytes(d.bytesIn)} in` : d.reason,
  ])
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)))
  const lines = rows.map((r) => `  ${r.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c)).join('  ')}`.trimEnd())
  return `keel: ${destinations.length} destination${destinations.length === 1 ? '' : 's'} (${allowed} allowed, ${destinations.length - allowed} denied)\n${lines.join('\n')}\n`
}
