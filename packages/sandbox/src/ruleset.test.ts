import { describe, expect, it } from 'vitest'
import { buildRuleset, parseRejections, REJECT_SETS } from './ruleset.js'

type Cmd = { add?: Record<string, Record<string, unknown>> }
const rules = (chain: string) =>
  (buildRuleset({ proxyPort: 15001, dnsPort: 15053 }).nftables as Cmd[])
    .map((c) => c.add?.rule)
    .filter((r): r is Record<string, unknown> => r !== undefined && r.chain === chain)
    .map((r) => JSON.stringify(r.expr))

describe('buildRuleset', () => {
  it('creates the table (an error if it exists, never a second copy), and deletes nothing', () => {
    const cmds = buildRuleset({ proxyPort: 15001, dnsPort: 15053 }).nftables as Record<string, unknown>[]
    expect(cmds[0]).toEqual({ create: { table: { family: 'inet', name: 'keel' } } })
    // A delete in the batch costs an RCU grace period at commit (see buildRuleset).
    expect(cmds.filter((c) => 'delete' in c || 'flush' in c)).toEqual([])
  })

  it('redirects DNS to any address (loopback too) before leaving loopback alone, then all TCP to the proxy', () => {
    const nat = rules('nat_output')
    expect(nat[0]).toContain('"udp","field":"dport"}},"right":53')
    expect(nat[0]).toContain('{"redirect":{"port":15053}}')
    expect(nat[1]).toContain('"tcp","field":"dport"}},"right":53')
    expect(nat[2]).toContain('127.0.0.0')
    expect(nat[2]).toContain('"return":null')
    expect(nat[3]).toContain('"::1"')
    expect(nat.at(-1)).toContain('{"redirect":{"port":15001}}')
  })

  it('has a drop policy filter that ends in rejects with counters', () => {
    const cmds = buildRuleset({ proxyPort: 1, dnsPort: 2 }).nftables as Cmd[]
    const chain = cmds.map((c) => c.add?.chain).find((c) => c?.name === 'filter_output')
    expect(chain).toMatchObject({ type: 'filter', hook: 'output', policy: 'drop' })
    const filter = rules('filter_output')
    expect(filter[0]).toContain('established')
    expect(filter.at(-1)).toBe('[{"counter":"other_rejected"},{"reject":null}]')
    expect(filter.filter((r) => r.includes('"reject"'))).toHaveLength(4)
    for (const set of Object.keys(REJECT_SETS)) expect(filter.some((r) => r.includes(`"@${set}"`))).toBe(true)
  })

  it.each([0, 65536, 1.5, Number.NaN])('refuses port %s', (port) => {
    expect(() => buildRuleset({ proxyPort: port, dnsPort: 53 })).toThrow(/proxyPort must be a port number/)
  })
})

describe('parseRejections', () => {
  it('reads totals and itemized destinations from a `list table` answer', () => {
    const answer = {
      nftables: [
        { metainfo: { json_schema_version: 1 } },
        { table: { family: 'inet', name: 'keel' } },
        { counter: { family: 'inet', name: 'udp_rejected', table: 'keel', packets: 3, bytes: 90 } },
        { counter: { family: 'inet', name: 'other_rejected', table: 'other', packets: 9, bytes: 9 } },
        {
          set: {
            family: 'inet', name: 'udp4', table: 'keel', type: ['ipv4_addr', 'inet_service'],
            elem: [{ elem: { val: { concat: ['5.5.5.5', 443] }, counter: { packets: 2, bytes: 58 } } }],
          },
        },
        { set: { family: 'inet', name: 'icmp4', table: 'keel', type: 'ipv4_addr', elem: [{ elem: { val: '8.8.4.4', counter: { packets: 1, bytes: 28 } } }] } },
        { set: { family: 'inet', name: 'other6', table: 'keel', elem: [{ elem: { val: { concat: ['2001:db8::7', 'sctp'] }, counter: { packets: 4, bytes: 1 } } }] } },
      ],
    }
    expect(parseRejections(answer)).toEqual({
      totals: { udp_rejected: 3, icmp_rejected: 0, other_rejected: 0 },
      rejections: [
        { protocol: 'UDP', address: '5.5.5.5', port: 443, packets: 2 },
        { protocol: 'ICMP', address: '8.8.4.4', packets: 1 },
        { protocol: 'SCTP', address: '2001:db8::7', packets: 4 },
      ],
    })
  })

  it('tolerates garbage', () => {
    expect(parseRejections(undefined).rejections).toEqual([])
    expect(parseRejections({ nftables: [null, 1, 'x', { set: { table: 'keel', name: 'udp4', elem: [null, {}] } }] }).rejections).toEqual([])
  })
})
