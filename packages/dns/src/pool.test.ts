import { describe, expect, it } from 'vitest'
import { addressFromReverseName, formatIPv6, parseIPNormalized, parseIPv4, parseIPv6 } from './ip.js'
import { SyntheticPool } from './pool.js'

describe('SyntheticPool', () => {
  it('binds one IPv4 and one IPv6 address per name, both mapping back to it', () => {
    const pool = new SyntheticPool({ ipv6Prefix: 'fd12:3456:789a:1::/64' })
    const a = pool.bind('api.example.com')!
    expect(a).toEqual({ name: 'api.example.com', ipv4: '198.18.0.1', ipv6: 'fd12:3456:789a:1::1' })
    expect(pool.nameFor(a.ipv4)).toBe('api.example.com')
    expect(pool.nameFor(a.ipv6)).toBe('api.example.com')
    expect(pool.bindingFor('198.18.0.1')).toBe(a)
  })

  it('gives the same name the same addresses, whatever its case or trailing dot', () => {
    const pool = new SyntheticPool()
    const a = pool.bind('api.example.com')
    expect(pool.bind('API.Example.COM.')).toBe(a)
    expect(pool.lookup('api.example.com.')).toBe(a)
    expect(pool.size).toBe(1)
    const b = pool.bind('other.example.com')!
    expect(b.ipv4).not.toBe(a?.ipv4)
    expect(b.ipv6).not.toBe(a?.ipv6)
  })

  it('normalizes IPv4-mapped IPv6 and other spellings in nameFor', () => {
    const pool = new SyntheticPool({ ipv6Prefix: 'fd00:1:2:3::/64' })
    for (let i = 0; i < 300; i++) pool.bind(`n${i}.test`)
    const b = pool.lookup('n299.test')!
    expect(b.ipv4).toBe('198.18.1.44')
    expect(pool.nameFor('::ffff:198.18.1.44')).toBe('n299.test')
    expect(pool.nameFor('::ffff:c612:12c')).toBe('n299.test')
    expect(pool.nameFor('0:0:0:0:0:ffff:198.18.1.44')).toBe('n299.test')
    expect(pool.nameFor('fd00:1:2:3:0:0:0:12c')).toBe('n299.test')
    expect(pool.nameFor('FD00:0001:0002:0003::012C')).toBe('n299.test')
  })

  it('knows synthetic-but-unbound from not synthetic at all', () => {
    const pool = new SyntheticPool({ ipv6Prefix: 'fd00:1:2:3::/64' })
    pool.bind('x.test')
    for (const addr of ['198.18.0.0', '198.19.255.255', '198.18.9.9', '::ffff:198.19.0.1', 'fd00:1:2:3::ffff:ffff', 'fd00:1:2:3::2']) {
      expect(pool.isSynthetic(addr), addr).toBe(true)
      expect(pool.nameFor(addr), addr).toBeUndefined()
    }
    for (const addr of ['198.17.255.255', '198.20.0.0', '127.0.0.1', 'fd00:1:2:4::1', '::1', 'not an ip', '', '198.018.0.1']) {
      expect(pool.isSynthetic(addr), addr).toBe(false)
      expect(pool.nameFor(addr), addr).toBeUndefined()
    }
  })

  it('gives every sandbox its own random ULA /64', () => {
    const a = new SyntheticPool()
    const b = new SyntheticPool()
    expect(a.ipv6Cidr).toMatch(/^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::\/64$|^fd[0-9a-f]{2}:/)
    expect(a.ipv6Cidr).not.toBe(b.ipv6Cidr)
    const bound = a.bind('x.test')!
    expect(b.isSynthetic(bound.ipv6)).toBe(false)
    expect(a.isSynthetic(bound.ipv6)).toBe(true)
    expect(new SyntheticPool({ randomBytes: () => new Uint8Array([1, 2, 3, 4, 5]) }).ipv6Cidr).toBe('fd01:203:405::/64')
  })

  it('stops binding new names when full, and keeps the old ones', () => {
    const pool = new SyntheticPool({ capacity: 2 })
    const a = pool.bind('a.test')
    pool.bind('b.test')
    expect(pool.bind('c.test')).toBeUndefined()
    expect(pool.bind('a.test')).toBe(a)
    expect(pool.size).toBe(2)
    expect(() => new SyntheticPool({ capacity: 0 })).toThrow(RangeError)
    expect(() => new SyntheticPool({ capacity: 200_000 })).toThrow(RangeError)
    expect(() => new SyntheticPool({ ipv6Prefix: 'fd00::/48' })).toThrow(RangeError)
  })
})

describe('ip helpers', () => {
  it('parses strictly', () => {
    expect(parseIPv4('1.2.3.4')).toEqual(new Uint8Array([1, 2, 3, 4]))
    for (const bad of ['1.2.3', '1.2.3.4.5', '01.2.3.4', '256.1.1.1', '1.2.3.-1', ' 1.2.3.4']) expect(parseIPv4(bad), bad).toBeUndefined()
    for (const bad of [':::', '1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7:8:9']) expect(parseIPv6(bad), bad).toBeUndefined()
    expect(formatIPv6(parseIPv6('2001:db8:0:0:1:0:0:1')!)).toBe('2001:db8::1:0:0:1')
    expect(formatIPv6(parseIPv6('fe80::1%eth0')!)).toBe('fe80::1')
    expect(parseIPNormalized('::ffff:10.0.0.1')).toEqual({ family: 4, bytes: new Uint8Array([10, 0, 0, 1]) })
  })

  it('reads reverse-DNS names', () => {
    expect(addressFromReverseName('1.0.18.198.in-addr.arpa')).toBe('198.18.0.1')
    expect(addressFromReverseName('0.18.198.in-addr.arpa')).toBeUndefined()
    const v6 = '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa'
    expect(addressFromReverseName(v6)).toBe('fd00:1:2:3::1')
    expect(addressFromReverseName('example.com')).toBeUndefined()
  })
})
