import { describe, expect, it } from 'vitest'
import { parseIp } from './ip.js'
import { classifyAddress, isMetadataAddress } from './special-ranges.js'

describe('classifyAddress', () => {
  it.each([
    ['169.254.169.254', 'metadata'],
    ['169.254.0.1', 'metadata'],
    ['fe80::1', 'metadata'],
    ['febf::1', 'metadata'],
    ['fd00:ec2::254', 'metadata'],
    ['::ffff:169.254.169.254', 'metadata'], // mapped
    ['64:ff9b::a9fe:a9fe', 'metadata'], // NAT64 embedding 169.254.169.254
    ['2002:a9fe:a9fe::1', 'metadata'], // 6to4 embedding
    ['127.0.0.1', 'private'],
    ['127.255.0.9', 'private'],
    ['::1', 'private'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['198.18.0.1', 'private'],
    ['198.19.255.255', 'private'],
    ['0.0.0.0', 'private'],
    ['::', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['224.0.0.1', 'private'],
    ['255.255.255.255', 'private'],
    ['ff02::1', 'private'],
    ['64:ff9b::7f00:1', 'private'], // NAT64 of 127.0.0.1
    ['64:ff9b:1::1', 'private'],
    ['8.8.8.8', undefined],
    ['172.32.0.1', undefined],
    ['100.128.0.1', undefined],
    ['198.20.0.1', undefined],
    ['2001:db8::1', undefined],
    ['fec0::1', undefined],
    ['64:ff9b::808:808', undefined],
  ])('%s → %s', (address, kind) => {
    const bytes = parseIp(address)!.bytes
    expect(classifyAddress(bytes)?.kind).toBe(kind)
    expect(isMetadataAddress(bytes)).toBe(kind === 'metadata')
  })
})
