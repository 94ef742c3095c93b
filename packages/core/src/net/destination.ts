/**
 * `host:port[/proto]` as typed on a command line (`keel policy explain --dest`).
 * IPv6 goes in brackets, as in URLs: `[2001:db8::1]:5432`.
 */
import { KeelError } from '../errors.js'
import type { Protocol } from '../types.js'
import { normalizeHostname } from './hostname.js'
import { parseIp } from './ip.js'

export interface Destination {
  /** Normalized hostname (set when the destination is a name). */
  host?: string
  /** Canonical IP address (set when the destination is an IP literal). */
  address?: string
  port: number
  protocol: Protocol
}

const FORMS = 'expected <host-or-ip>:<port>[/tcp|/udp], e.g. api.example.com:443, 10.0.0.5:5432/tcp or [2001:db8::1]:53/udp'

function usage(text: string, problem: string): KeelError {
  return new KeelError('ERR_USAGE', `bad destination "${text}": ${problem}; ${FORMS}`)
}

/**
 * Parses a destination. Throws KeelError `ERR_USAGE` with a message naming the
 * accepted forms when the text is not one of them.
 * @example parseDestination('[2001:db8::1]:5432') // { address: '2001:db8::1', port: 5432, protocol: 'TCP' }
 */
export function parseDestination(text: string): Destination {
  if (typeof text !== 'string' || text.trim() === '') throw usage(String(text), 'it is empty')
  let rest = text.trim()
  let protocol: Protocol = 'TCP'
  const slash = rest.lastIndexOf('/')
  if (slash >= 0) {
    const proto = rest.slice(slash + 1).toLowerCase()
    if (proto !== 'tcp' && proto !== 'udp') throw usage(text, `protocol "${rest.slice(slash + 1)}" is not tcp or udp`)
    protocol = proto === 'tcp' ? 'TCP' : 'UDP'
    rest = rest.slice(0, slash)
  }
  let hostText: string
  let portText: string
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']')
    if (close < 0) throw usage(text, 'missing "]" after the IPv6 address')
    hostText = rest.slice(1, close)
    if (rest.charAt(close + 1) !== ':') throw usage(text, 'missing ":<port>" after "]"')
    portText = rest.slice(close + 2)
    if (!hostText.includes(':')) throw usage(text, 'brackets are only for IPv6 addresses')
  } else {
    const colon = rest.lastIndexOf(':')
    if (colon < 0) throw usage(text, 'missing ":<port>"')
    hostText = rest.slice(0, colon)
    portText = rest.slice(colon + 1)
    if (hostText.includes(':')) throw usage(text, `put IPv6 addresses in brackets: [${hostText}]:${portText}`)
  }
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw usage(text, `port "${portText}" is not an integer from 1 to 65535`)
  }
  const port = Number(portText)
  const ip = parseIp(hostText)
  if (ip) return { address: ip.text, port, protocol }
  if (hostText.includes(':')) throw usage(text, `"${hostText}" is not a valid IPv6 address`)
  const host = normalizeHostname(hostText)
  if (host === undefined) throw usage(text, `"${hostText}" is neither an IP address nor a valid hostname`)
  return { host, port, protocol }
}
