import { describe, expect, it } from 'vitest'
import { isKeelError } from '../errors.js'
import { parseDestination } from './destination.js'

describe('parseDestination', () => {
  it.each([
    ['api.example.com:443', { host: 'api.example.com', port: 443, protocol: 'TCP' }],
    ['API.Example.com.:443/tcp', { host: 'api.example.com', port: 443, protocol: 'TCP' }],
    ['dns.example:53/udp', { host: 'dns.example', port: 53, protocol: 'UDP' }],
    ['dns.example:53/UDP', { host: 'dns.example', port: 53, protocol: 'UDP' }],
    ['10.0.0.5:5432', { address: '10.0.0.5', port: 5432, protocol: 'TCP' }],
    ['[2001:db8::1]:5432', { address: '2001:db8::1', port: 5432, protocol: 'TCP' }],
    ['[::ffff:10.0.0.1]:80/tcp', { address: '10.0.0.1', port: 80, protocol: 'TCP' }],
    ['bücher.de:443', { host: 'xn--bcher-kva.de', port: 443, protocol: 'TCP' }],
  ])('%s', (text, expected) => {
    expect(parseDestination(text)).toEqual(expected)
  })

  it.each([
    ['api.example.com', 'missing ":<port>"'],
    ['api.example.com:0', 'port "0" is not an integer from 1 to 65535'],
    ['api.example.com:65536', 'port "65536"'],
    ['api.example.com:https', 'port "https"'],
    ['api.example.com:443/sctp', 'protocol "sctp" is not tcp or udp'],
    ['2001:db8::1:5432', 'put IPv6 addresses in brackets'],
    ['[2001:db8::1]5432', 'missing ":<port>" after "]"'],
    ['[2001:db8::1:5432', 'missing "]"'],
    ['[10.0.0.1]:80', 'brackets are only for IPv6 addresses'],
    ['bad host:80', 'neither an IP address nor a valid hostname'],
    ['', 'it is empty'],
  ])('rejects %j with ERR_USAGE: %s', (text, problem) => {
    let error: unknown
    try {
      parseDestination(text)
    } catch (e) {
      error = e
    }
    expect(isKeelError(error) && error.code).toBe('ERR_USAGE')
    expect((error as Error).message).toContain(problem)
    expect((error as Error).message).toContain('[2001:db8::1]:53/udp') // names the accepted forms
  })
})
