import { describe, expect, it } from 'vitest'
import { formatIp, parseIp } from './ip.js'

describe('parseIp', () => {
  it.each([
    ['10.0.0.1', 4, '10.0.0.1'],
    ['0.0.0.0', 4, '0.0.0.0'],
    ['255.255.255.255', 4, '255.255.255.255'],
    ['2001:db8::1', 6, '2001:db8::1'],
    ['2001:DB8:0:0:0:0:0:1', 6, '2001:db8::1'],
    ['::', 6, '::'],
    ['::1', 6, '::1'],
    ['fe80::', 6, 'fe80::'],
    ['1:2:3:4:5:6:7:8', 6, '1:2:3:4:5:6:7:8'],
    ['1:0:0:4:0:0:0:8', 6, '1:0:0:4::8'],
    ['2001:db8:0:1:1:1:1:1', 6, '2001:db8:0:1:1:1:1:1'],
    ['64:ff9b::192.0.2.1', 6, '64:ff9b::c000:201'],
    // IPv4-mapped IPv6 is treated as IPv4.
    ['::ffff:10.0.0.1', 4, '10.0.0.1'],
    ['::FFFF:a00:1', 4, '10.0.0.1'],
    ['0:0:0:0:0:ffff:169.254.169.254', 4, '169.254.169.254'],
  ])('%s → IPv%i %s', (text, family, canonical) => {
    const ip = parseIp(text)
    expect(ip?.family).toBe(family)
    expect(ip?.text).toBe(canonical)
    expect(ip?.bytes.length).toBe(family === 4 ? 4 : 16)
  })

  it.each([
    '',
    '10.0.0',
    '10.0.0.256',
    '10.0.0.1.2',
    '010.0.0.1', // leading zero: octal in some parsers
    '10.0.0.01',
    '1e1.0.0.1',
    ' 10.0.0.1',
    '10.0.0.1/32',
    '[::1]',
    '::1%eth0',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7::8', // eight groups plus "::" is nine
    '12345::',
    'g::1',
    ':1',
    '1:',
    '::ffff:10.0.0.1.5',
    '::10.0.0.1:1',
    'example.com',
  ])('rejects %j', (text) => {
    expect(parseIp(text)).toBeUndefined()
  })

  it('never throws on non-strings', () => {
    expect(parseIp(undefined as unknown as string)).toBeUndefined()
    expect(parseIp(42 as unknown as string)).toBeUndefined()
  })

  it('formats with RFC 5952 rules (first longest zero run compressed)', () => {
    expect(formatIp(parseIp('1:0:0:2:0:0:3:4')!.bytes)).toBe('1::2:0:0:3:4')
    expect(formatIp(parseIp('1:0:2:3:4:5:6:7')!.bytes)).toBe('1:0:2:3:4:5:6:7')
  })
})
