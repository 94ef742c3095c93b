import { describe, expect, it } from 'vitest'
import { cidrContains, parseCidr } from './cidr.js'
import { parseIp } from './ip.js'

describe('parseCidr', () => {
  it.each([
    ['10.0.0.0/8', '10.0.0.0/8', 4],
    ['10.20.0.0/16', '10.20.0.0/16', 4],
    ['0.0.0.0/0', '0.0.0.0/0', 4],
    ['10.0.0.1', '10.0.0.1/32', 4],
    ['10.0.0.1/32', '10.0.0.1/32', 4],
    ['2001:db8::/32', '2001:db8::/32', 6],
    ['2001:DB8::/32', '2001:db8::/32', 6],
    ['::/0', '::/0', 6],
    ['::1', '::1/128', 6],
    ['fc00::/7', 'fc00::/7', 6],
    // IPv4-mapped blocks become IPv4 blocks.
    ['::ffff:10.0.0.0/104', '10.0.0.0/8', 4],
    ['::ffff:10.0.0.1', '10.0.0.1/32', 4],
  ])('%s → %s', (text, canonical, family) => {
    const result = parseCidr(text)
    expect(result.ok && result.cidr.text).toBe(canonical)
    expect(result.ok && result.cidr.family).toBe(family)
  })

  it.each([
    ['10.0.0.1/8', 'host bits are set; write the network 10.0.0.0/8, or the single host 10.0.0.1/32'],
    ['2001:db8::1/32', 'host bits are set; write the network 2001:db8::/32, or the single host 2001:db8::1/128'],
    ['10.0.0.0/33', 'the prefix length "/33" is not an integer from 0 to 32'],
    ['10.0.0.0/', 'the prefix length "/" is not an integer from 0 to 32'],
    ['10.0.0.0/08', 'the prefix length "/08" is not an integer from 0 to 32'],
    ['::/129', 'the prefix length "/129" is not an integer from 0 to 128'],
    ['::ffff:10.0.0.0/8', 'an IPv4-mapped block needs a prefix length of at least /96 (got /8)'],
    ['10.0.0/8', 'the address ("10.0.0") is not an IPv4 or IPv6 address'],
    ['example.com', 'the address is not an IPv4 or IPv6 address'],
    ['', 'empty'],
  ])('rejects %j: %s', (text, problem) => {
    const result = parseCidr(text)
    expect(result.ok).toBe(false)
    expect(!result.ok && result.problem).toContain(problem)
  })
})

describe('cidrContains', () => {
  const cidr = (t: string) => {
    const r = parseCidr(t)
    if (!r.ok) throw new Error(r.problem)
    return r.cidr
  }
  const ip = (t: string) => parseIp(t)!.bytes
  it.each([
    ['10.20.0.0/16', '10.20.0.0', true],
    ['10.20.0.0/16', '10.20.255.255', true],
    ['10.20.0.0/16', '10.21.0.0', false],
    ['10.0.0.0/9', '10.127.255.255', true],
    ['10.0.0.0/9', '10.128.0.0', false],
    ['0.0.0.0/0', '8.8.8.8', true],
    ['0.0.0.0/0', '2001:db8::1', false], // families never mix
    ['::/0', '10.0.0.1', false],
    ['10.0.0.0/8', '::ffff:10.1.2.3', true], // mapped is IPv4
    ['2001:db8::/32', '2001:db8:ffff::1', true],
    ['2001:db8::/33', '2001:db8:8000::1', false],
  ])('%s contains %s: %s', (block, address, expected) => {
    expect(cidrContains(cidr(block), ip(address))).toBe(expected)
  })
})
