import dns2 from 'dns2'
import { describe, expect, it } from 'vitest'
import {
  DnsWireError,
  EdeCode,
  RCode,
  RRClass,
  RRType,
  decodeNameRdata,
  decodeSoa,
  edeOption,
  encodeMessage,
  extendedErrors,
  nameToLabels,
  parseMessage,
  rdataA,
  rdataName,
  rdataSoa,
  readName,
} from './wire.js'

const header = (id: number, flags: number, qd: number, an = 0, ns = 0, ar = 0): number[] => [
  id >> 8,
  id & 0xff,
  flags >> 8,
  flags & 0xff,
  0,
  qd,
  0,
  an,
  0,
  ns,
  0,
  ar,
]
const label = (s: string): number[] => [s.length, ...Buffer.from(s, 'latin1')]
const question = (...labels: string[]): number[] => [...labels.flatMap(label), 0, 0, 1, 0, 1]

describe('parseMessage', () => {
  it('round-trips a query with EDNS and an EDE option', () => {
    const wire = encodeMessage({
      header: { id: 0x1234, rd: true },
      questions: [{ name: 'Api.Example.com', type: RRType.AAAA, class: RRClass.IN }],
      edns: { udpPayloadSize: 1232, dnssecOk: true, options: [edeOption(EdeCode.BLOCKED, 'dns_name_denied')] },
    })
    const msg = parseMessage(wire)
    expect(msg.header).toMatchObject({ id: 0x1234, rd: true, qr: false, opcode: 0 })
    expect(msg.questions).toEqual([{ name: 'Api.Example.com', type: RRType.AAAA, class: RRClass.IN }])
    expect(msg.edns).toMatchObject({ udpPayloadSize: 1232, version: 0, dnssecOk: true })
    expect(extendedErrors(msg)).toEqual([{ infoCode: 15, text: 'dns_name_denied' }])
  })

  it('compresses owner names and reads them back', () => {
    const wire = encodeMessage({
      header: { id: 1, qr: true },
      questions: [{ name: 'a.example.com', type: RRType.A, class: RRClass.IN }],
      answers: [
        { name: 'a.example.com', type: RRType.CNAME, ttl: 5, data: rdataName('b.example.com') },
        { name: 'b.example.com', type: RRType.A, ttl: 7, data: rdataA('192.0.2.1') },
      ],
    })
    // The second 'a.example.com' is a 2-byte pointer to offset 12.
    expect(wire.includes(Buffer.from([0xc0, 0x0c]))).toBe(true)
    const msg = parseMessage(wire)
    expect(msg.answers.map((r) => [r.name, r.type, r.ttl])).toEqual([
      ['a.example.com', RRType.CNAME, 5],
      ['b.example.com', RRType.A, 7],
    ])
    expect(decodeNameRdata(msg.answers[0]!.data)).toBe('b.example.com')
  })

  it('carries a 12-bit RCODE through the OPT record (BADVERS)', () => {
    const wire = encodeMessage({ header: { id: 9, qr: true }, rcode: RCode.BADVERS, edns: {} })
    const msg = parseMessage(wire)
    expect(msg.header.rcode).toBe(0)
    expect(msg.rcode).toBe(RCode.BADVERS)
  })

  it('decompresses names inside SOA rdata so it is self-contained', () => {
    const soa = { mname: 'ns.test', rname: 'hostmaster.test', serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5 }
    const wire = encodeMessage({
      header: { id: 2, qr: true, rcode: RCode.NXDOMAIN },
      authorities: [{ name: 'test', type: RRType.SOA, ttl: 5, data: rdataSoa(soa) }],
    })
    expect(decodeSoa(parseMessage(wire).authorities[0]!.data)).toEqual(soa)
  })

  it('agrees with dns2 (an independent codec) both ways', () => {
    const ours = encodeMessage({
      header: { id: 77, qr: true, rd: true, ra: true },
      questions: [{ name: 'x.test', type: RRType.A, class: RRClass.IN }],
      answers: [{ name: 'x.test', type: RRType.A, ttl: 30, data: rdataA('198.18.0.1') }],
    })
    const theirs = dns2.Packet.parse(ours)
    expect(theirs.header.id).toBe(77)
    expect(theirs.answers[0]).toMatchObject({ name: 'x.test', address: '198.18.0.1', ttl: 30 })

    const q = new dns2.Packet()
    q.header.id = 4321
    q.questions.push(new dns2.Packet.Question('y.test', dns2.Packet.TYPE.AAAA, dns2.Packet.CLASS.IN))
    const parsed = parseMessage(q.toBuffer())
    expect(parsed.header.id).toBe(4321)
    expect(parsed.questions).toEqual([{ name: 'y.test', type: RRType.AAAA, class: RRClass.IN }])
  })

  it('escapes bytes that would make a name ambiguous', () => {
    const wire = Buffer.from([...header(1, 0x0100, 1), ...label('a.b'), ...label('c'), 0, 0, 1, 0, 1])
    expect(parseMessage(wire).questions[0]?.name).toBe('a\\.b.c')
    const bin = Buffer.from([...header(1, 0x0100, 1), 2, 0x00, 0xff, 0, 0, 1, 0, 1])
    expect(parseMessage(bin).questions[0]?.name).toBe('\\000\\255')
    expect(nameToLabels('a\\.b.c').map((l) => Buffer.from(l).toString('latin1'))).toEqual(['a.b', 'c'])
  })

  const malformed: [string, number[]][] = [
    ['empty', []],
    ['truncated header', [0x12, 0x34, 0x01, 0x00, 0x00]],
    ['question count with no question', header(1, 0x0100, 1)],
    ['label length past the end', [...header(1, 0x0100, 1), 0x3f, 0x61, 0x62]],
    ['reserved label type 0x40', [...header(1, 0x0100, 1), 0x41, 0x61, 0, 0, 1, 0, 1]],
    ['reserved label type 0x80', [...header(1, 0x0100, 1), 0x81, 0x61, 0, 0, 1, 0, 1]],
    ['pointer to itself', [...header(1, 0x0100, 1), 0xc0, 0x0c, 0, 1, 0, 1]],
    ['pointer forwards', [...header(1, 0x0100, 1), 0xc0, 0x20, 0, 1, 0, 1, ...new Array<number>(30).fill(0)]],
    // label 'a' at 12, then a pointer at 14 back to 12: a loop that only a segment check catches
    ['two-step pointer loop', [...header(1, 0x0100, 1), 1, 0x61, 0xc0, 0x0c, 0, 1, 0, 1]],
    ['pointer into the header', [...header(1, 0x0100, 1), 0xc0, 0x02, 0, 1, 0, 1]],
    ['huge question count', [...header(1, 0x0100, 0xff), ...question('a', 'test')].map((b, i) => (i === 4 ? 0xff : b))],
    ['huge additional count', header(1, 0x0100, 1, 0, 0, 0xff).concat(question('a', 'test'))],
    ['trailing bytes', [...header(1, 0x0100, 1), ...question('a', 'test'), 0xde, 0xad]],
    ['name over 255 octets', [...header(1, 0x0100, 1), ...Array.from({ length: 5 }, () => label('x'.repeat(60))).flat(), 0, 0, 1, 0, 1]],
    ['record with rdata past the end', [...header(1, 0x8100, 1, 1), ...question('a', 'test'), 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 40, 1, 2]],
    ['A record of 5 bytes', [...header(1, 0x8100, 1, 1), ...question('a', 'test'), 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 5, 1, 2, 3, 4, 5]],
    ['two OPT records', [...header(1, 0x0100, 1, 0, 0, 2), ...question('a', 'test'), 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]],
    ['OPT with a truncated option', [...header(1, 0x0100, 1, 0, 0, 1), ...question('a', 'test'), 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 3, 0, 15, 0]],
  ]
  it.each(malformed)('rejects %s', (_name, bytes) => {
    expect(() => parseMessage(Buffer.from(bytes))).toThrow(DnsWireError)
  })

  it('survives random garbage without hanging', () => {
    // Deterministic pseudo-random bytes; every input either parses or throws DnsWireError.
    let seed = 42
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 8) & 0xff
    for (let i = 0; i < 5000; i++) {
      const bytes = Buffer.from(Array.from({ length: 12 + (rnd() % 80) }, rnd))
      try {
        parseMessage(bytes)
      } catch (err) {
        expect(err).toBeInstanceOf(DnsWireError)
      }
    }
  })
})

describe('names', () => {
  it('reads compressed names and reports where the name ended in place', () => {
    const buf = Buffer.from([...label('b'), 0, ...label('a'), 0xc0, 0x00])
    expect(readName(buf, 3, 0)).toEqual({ name: 'a.b', next: 7 })
  })

  it('refuses names the encoder cannot write', () => {
    expect(() => nameToLabels('a..b')).toThrow(DnsWireError)
    expect(() => nameToLabels('x'.repeat(64) + '.test')).toThrow(DnsWireError)
    expect(() => nameToLabels(Array.from({ length: 5 }, () => 'y'.repeat(60)).join('.'))).toThrow(DnsWireError)
    expect(nameToLabels('.')).toEqual([])
    expect(nameToLabels('a.test.')).toHaveLength(2)
  })
})
