/**
 * A small, strict DNS wire codec (RFC 1035 §4, RFC 6891 EDNS(0), RFC 8914 EDE).
 *
 * Why not dns2's `Packet`: its parser swallows per-record errors (a packet claiming
 * 65 535 questions "parses" with whatever it could read), it reads bit by bit into
 * JS arrays, it has no Extended DNS Error option and no way to say "this message is
 * malformed, drop it". The resolver's input is hostile by design (an agent trying to
 * tunnel out through DNS), so this codec:
 *
 * - bounds-checks every read and throws {@link DnsWireError} on anything malformed;
 * - caps labels at 63 octets and names at 255 (RFC 1035 §2.3.4);
 * - accepts a compression pointer only if it points strictly before the start of the
 *   name segment being read, so pointer loops are impossible and the work per name
 *   is bounded (plus an explicit hop limit);
 * - rejects trailing bytes, reserved label types (0x40/0x80) and more than one OPT;
 * - decompresses names inside the rdata it understands (CNAME, PTR, NS, MX, SOA), so
 *   every parsed record's `data` is self-contained.
 *
 * Names are presentation text without the trailing dot (`api.example.com`, root is
 * `''`). Bytes that are not printable ASCII, plus `.` and `\` inside a label, are
 * escaped as `\DDD` / `\.` (RFC 1035 §5.1), so a label containing a dot can never be
 * confused with two labels.
 */

export const RRType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  SVCB: 64,
  HTTPS: 65,
  AXFR: 252,
  ANY: 255,
} as const

export const RRClass = { IN: 1, CH: 3, ANY: 255 } as const

/** RCODEs (RFC 1035 §4.1.1, RFC 6891 §9 for BADVERS, which needs an OPT RR). */
export const RCode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  BADVERS: 16,
} as const

export const Opcode = { QUERY: 0 } as const

/** EDNS option code of Extended DNS Errors (RFC 8914 §2). */
export const EDNS_OPTION_EDE = 15

/** Extended DNS Error INFO-CODEs keel uses (RFC 8914 §4). */
export const EdeCode = {
  OTHER: 0,
  BLOCKED: 15,
  CENSORED: 16,
  FILTERED: 17,
  PROHIBITED: 18,
  NOT_SUPPORTED: 21,
  NO_REACHABLE_AUTHORITY: 22,
  NETWORK_ERROR: 23,
} as const

export const DNS_HEADER_SIZE = 12
export const MAX_LABEL_OCTETS = 63
export const MAX_NAME_OCTETS = 255
const MAX_POINTER_HOPS = 64

export type DnsWireErrorCode =
  | 'ERR_DNS_TRUNCATED'
  | 'ERR_DNS_BAD_LABEL'
  | 'ERR_DNS_BAD_POINTER'
  | 'ERR_DNS_NAME_TOO_LONG'
  | 'ERR_DNS_TRAILING_BYTES'
  | 'ERR_DNS_BAD_RDATA'
  | 'ERR_DNS_BAD_OPT'
  | 'ERR_DNS_TOO_MANY_RECORDS'
  | 'ERR_DNS_BAD_NAME'

/** A message (or a name given to the encoder) is malformed. */
export class DnsWireError extends Error {
  override readonly name = 'DnsWireError'
  constructor(
    readonly code: DnsWireErrorCode,
    message: string,
  ) {
    super(message)
  }
}

export interface DnsHeader {
  id: number
  qr: boolean
  opcode: number
  aa: boolean
  tc: boolean
  rd: boolean
  ra: boolean
  ad: boolean
  cd: boolean
  /** The 4-bit header RCODE. See {@link DnsMessage.rcode} for the full 12-bit value. */
  rcode: number
}

export interface DnsQuestion {
  name: string
  type: number
  class: number
}

export interface DnsRecord {
  name: string
  type: number
  class: number
  /** Seconds. Values with the top bit set are read as 0 (RFC 2181 §8). */
  ttl: number
  /** RDATA, with names decompressed for the types this codec understands. */
  data: Uint8Array
}

export interface EdnsOption {
  code: number
  data: Uint8Array
}

export interface Edns {
  udpPayloadSize: number
  extendedRcode: number
  version: number
  dnssecOk: boolean
  options: EdnsOption[]
}

export interface DnsMessage {
  header: DnsHeader
  /** Full RCODE: header RCODE plus the OPT extended RCODE (RFC 6891 §6.1.3). */
  rcode: number
  questions: DnsQuestion[]
  answers: DnsRecord[]
  authorities: DnsRecord[]
  /** Additional records other than OPT (which is parsed into `edns`). */
  additionals: DnsRecord[]
  edns?: Edns
}

export interface ParseOptions {
  /** Reject bytes after the last record. Default true. */
  strict?: boolean
  /** Reject messages whose four section counts add up to more than this. Default 256. */
  maxRecords?: number
}

// ---------------------------------------------------------------- names

const isPlainLabelByte = (c: number): boolean => c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c

function labelToText(buf: Uint8Array, start: number, len: number): string {
  let s = ''
  for (let i = start; i < start + len; i++) {
    const c = buf[i] ?? 0
    if (isPlainLabelByte(c)) s += String.fromCharCode(c)
    else if (c === 0x2e || c === 0x5c) s += '\\' + String.fromCharCode(c)
    else s += '\\' + c.toString().padStart(3, '0')
  }
  return s
}

/**
 * Splits presentation text into label bytes, undoing `\DDD` and `\X` escapes.
 * A trailing dot is optional; `''` and `'.'` are the root (no labels).
 * Throws {@link DnsWireError} on empty labels or over-long labels/names.
 */
export function nameToLabels(text: string): Uint8Array[] {
  if (text === '' || text === '.') return []
  const labels: Uint8Array[] = []
  let cur: number[] = []
  let total = 1
  let trailingDot = false
  const flush = (): void => {
    if (cur.length === 0) throw new DnsWireError('ERR_DNS_BAD_NAME', `empty label in ${JSON.stringify(text)}`)
    if (cur.length > MAX_LABEL_OCTETS) throw new DnsWireError('ERR_DNS_BAD_NAME', `label over 63 octets in name`)
    total += cur.length + 1
    labels.push(Uint8Array.from(cur))
    cur = []
  }
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i)
    if (ch > 0xff) throw new DnsWireError('ERR_DNS_BAD_NAME', 'non-latin1 character in name (use punycode)')
    if (ch === 0x5c) {
      const d = text.slice(i + 1, i + 4)
      if (/^[0-9]{3}$/.test(d) && Number(d) <= 255) {
        cur.push(Number(d))
        i += 3
      } else if (i + 1 < text.length) {
        cur.push(text.charCodeAt(i + 1) & 0xff)
        i += 1
      } else {
        throw new DnsWireError('ERR_DNS_BAD_NAME', 'dangling escape in name')
      }
    } else if (ch === 0x2e) {
      flush()
      if (i === text.length - 1) {
        trailingDot = true
        break
      }
    } else {
      cur.push(ch)
    }
  }
  if (!trailingDot) flush()
  if (total > MAX_NAME_OCTETS) throw new DnsWireError('ERR_DNS_NAME_TOO_LONG', 'name over 255 octets')
  return labels
}

/**
 * Reads a (possibly compressed) name at `start`. Returns the text and the offset
 * just after the name *in place* (after the first pointer, if any). Pointers must
 * target `minTarget` or later (names never live in the 12-byte header).
 */
export function readName(buf: Uint8Array, start: number, minTarget = DNS_HEADER_SIZE): { name: string; next: number } {
  const labels: string[] = []
  let off = start
  let segmentStart = start
  let next = -1
  let total = 1
  let hops = 0
  for (;;) {
    if (off >= buf.length) throw new DnsWireError('ERR_DNS_TRUNCATED', 'name runs past the end')
    const len = buf[off] ?? 0
    const kind = len & 0xc0
    if (kind === 0xc0) {
      if (off + 1 >= buf.length) throw new DnsWireError('ERR_DNS_TRUNCATED', 'pointer runs past the end')
      const target = ((len & 0x3f) << 8) | (buf[off + 1] ?? 0)
      // Strictly backwards from the segment we are in (no loops, bounded work), never into the header.
      if (target >= segmentStart || target < minTarget || ++hops > MAX_POINTER_HOPS) {
        throw new DnsWireError('ERR_DNS_BAD_POINTER', `bad compression pointer to ${target}`)
      }
      if (next < 0) next = off + 2
      off = target
      segmentStart = target
      continue
    }
    if (kind !== 0) throw new DnsWireError('ERR_DNS_BAD_LABEL', `reserved label type 0x${len.toString(16)}`)
    if (len === 0) {
      if (next < 0) next = off + 1
      break
    }
    if (off + 1 + len > buf.length) throw new DnsWireError('ERR_DNS_TRUNCATED', 'label runs past the end')
    total += len + 1
    if (total > MAX_NAME_OCTETS) throw new DnsWireError('ERR_DNS_NAME_TOO_LONG', 'name over 255 octets')
    labels.push(labelToText(buf, off + 1, len))
    off += 1 + len
  }
  return { name: labels.join('.'), next }
}

/** Lower-cases ASCII letters only (DNS names compare case-insensitively in ASCII, RFC 4343). */
export const asciiLower = (s: string): string => s.replace(/[A-Z]+/g, (m) => m.toLowerCase())

// ---------------------------------------------------------------- parse

class Reader {
  off = 0
  constructor(readonly buf: Uint8Array) {}
  need(n: number): void {
    if (this.off + n > this.buf.length) throw new DnsWireError('ERR_DNS_TRUNCATED', 'message truncated')
  }
  u8(): number {
    this.need(1)
    return this.buf[this.off++] ?? 0
  }
  u16(): number {
    this.need(2)
    const v = ((this.buf[this.off] ?? 0) << 8) | (this.buf[this.off + 1] ?? 0)
    this.off += 2
    return v
  }
  u32(): number {
    this.need(4)
    const v = (this.u16() * 0x10000 + this.u16()) >>> 0
    return v
  }
  name(): string {
    const { name, next } = readName(this.buf, this.off)
    this.off = next
    return name
  }
}

function encodeNameUncompressed(name: string): Uint8Array {
  const w = new Writer(false)
  w.name(name)
  return w.finish()
}

function decodeRdata(r: Reader, type: number, rdlen: number): Uint8Array {
  const start = r.off
  const end = start + rdlen
  r.need(rdlen)
  const done = (): void => {
    if (r.off !== end) throw new DnsWireError('ERR_DNS_BAD_RDATA', `rdata of type ${type} has the wrong length`)
  }
  switch (type) {
    case RRType.A:
    case RRType.AAAA: {
      if (rdlen !== (type === RRType.A ? 4 : 16)) throw new DnsWireError('ERR_DNS_BAD_RDATA', 'bad address length')
      r.off = end
      return r.buf.slice(start, end)
    }
    case RRType.CNAME:
    case RRType.PTR:
    case RRType.NS: {
      const n = r.name()
      done()
      return encodeNameUncompressed(n)
    }
    case RRType.MX: {
      const pref = r.u16()
      const n = r.name()
      done()
      const nb = encodeNameUncompressed(n)
      const out = new Uint8Array(2 + nb.length)
      out[0] = pref >> 8
      out[1] = pref & 0xff
      out.set(nb, 2)
      return out
    }
    case RRType.SOA: {
      const m = encodeNameUncompressed(r.name())
      const rn = encodeNameUncompressed(r.name())
      r.need(20)
      const tail = r.buf.slice(r.off, r.off + 20)
      r.off += 20
      done()
      const out = new Uint8Array(m.length + rn.length + 20)
      out.set(m, 0)
      out.set(rn, m.length)
      out.set(tail, m.length + rn.length)
      return out
    }
    default:
      r.off = end
      return r.buf.slice(start, end)
  }
}

function parseOptions(data: Uint8Array): EdnsOption[] {
  const options: EdnsOption[] = []
  let off = 0
  while (off < data.length) {
    if (off + 4 > data.length) throw new DnsWireError('ERR_DNS_BAD_OPT', 'truncated EDNS option')
    const code = ((data[off] ?? 0) << 8) | (data[off + 1] ?? 0)
    const len = ((data[off + 2] ?? 0) << 8) | (data[off + 3] ?? 0)
    off += 4
    if (off + len > data.length) throw new DnsWireError('ERR_DNS_BAD_OPT', 'truncated EDNS option')
    options.push({ code, data: data.slice(off, off + len) })
    off += len
  }
  return options
}

/**
 * Parses one DNS message. Throws {@link DnsWireError} if anything is malformed;
 * never loops more than the section counts, and those are capped by `maxRecords`.
 */
export function parseMessage(buf: Uint8Array, options: ParseOptions = {}): DnsMessage {
  const strict = options.strict ?? true
  const maxRecords = options.maxRecords ?? 256
  const r = new Reader(buf)
  r.need(DNS_HEADER_SIZE)
  const id = r.u16()
  const flags = r.u16()
  const counts = [r.u16(), r.u16(), r.u16(), r.u16()] as const
  if (counts[0] + counts[1] + counts[2] + counts[3] > maxRecords) {
    throw new DnsWireError('ERR_DNS_TOO_MANY_RECORDS', 'too many records')
  }
  // Every question needs ≥ 5 bytes and every record ≥ 11: cheap early reject of huge counts.
  if (DNS_HEADER_SIZE + counts[0] * 5 + (counts[1] + counts[2] + counts[3]) * 11 > buf.length) {
    throw new DnsWireError('ERR_DNS_TRUNCATED', 'section counts exceed the message size')
  }
  const header: DnsHeader = {
    id,
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0,
    ra: (flags & 0x0080) !== 0,
    ad: (flags & 0x0020) !== 0,
    cd: (flags & 0x0010) !== 0,
    rcode: flags & 0xf,
  }
  const questions: DnsQuestion[] = []
  for (let i = 0; i < counts[0]; i++) {
    const name = r.name()
    questions.push({ name, type: r.u16(), class: r.u16() })
  }
  const sections: DnsRecord[][] = [[], [], []]
  let edns: Edns | undefined
  for (let s = 0; s < 3; s++) {
    const list = sections[s] as DnsRecord[]
    for (let i = 0; i < (counts[s + 1] ?? 0); i++) {
      const name = r.name()
      const type = r.u16()
      const cls = r.u16()
      const rawTtl = r.u32()
      const rdlen = r.u16()
      if (type === RRType.OPT) {
        if (s !== 2 || edns || name !== '') throw new DnsWireError('ERR_DNS_BAD_OPT', 'misplaced or repeated OPT record')
        r.need(rdlen)
        const data = buf.slice(r.off, r.off + rdlen)
        r.off += rdlen
        edns = {
          udpPayloadSize: cls,
          extendedRcode: rawTtl >>> 24,
          version: (rawTtl >>> 16) & 0xff,
          dnssecOk: (rawTtl & 0x8000) !== 0,
          options: parseOptions(data),
        }
        continue
      }
      const data = decodeRdata(r, type, rdlen)
      list.push({ name, type, class: cls, ttl: rawTtl > 0x7fffffff ? 0 : rawTtl, data })
    }
  }
  if (strict && r.off !== buf.length) throw new DnsWireError('ERR_DNS_TRAILING_BYTES', 'bytes after the last record')
  return {
    header,
    rcode: header.rcode | ((edns?.extendedRcode ?? 0) << 4),
    questions,
    answers: sections[0] ?? [],
    authorities: sections[1] ?? [],
    additionals: sections[2] ?? [],
    ...(edns ? { edns } : {}),
  }
}

// ---------------------------------------------------------------- encode

class Writer {
  buf = Buffer.allocUnsafe(512)
  off = 0
  readonly names = new Map<string, number>()
  constructor(readonly compress: boolean) {}
  ensure(n: number): void {
    if (this.off + n <= this.buf.length) return
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n))
    this.buf.copy(next, 0, 0, this.off)
    this.buf = next
  }
  u8(v: number): void {
    this.ensure(1)
    this.buf[this.off++] = v & 0xff
  }
  u16(v: number): void {
    this.ensure(2)
    this.buf.writeUInt16BE(v & 0xffff, this.off)
    this.off += 2
  }
  u32(v: number): void {
    this.ensure(4)
    this.buf.writeUInt32BE(v >>> 0, this.off)
    this.off += 4
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length)
    this.buf.set(b, this.off)
    this.off += b.length
  }
  name(text: string): void {
    const labels = nameToLabels(text)
    for (let i = 0; i < labels.length; i++) {
      if (this.compress) {
        const key = labels
          .slice(i)
          .map((l) => asciiLower(labelToText(l, 0, l.length)))
          .join('.')
        const at = this.names.get(key)
        if (at !== undefined) {
          this.u16(0xc000 | at)
          return
        }
        if (this.off < 0x4000) this.names.set(key, this.off)
      }
      const l = labels[i] as Uint8Array
      this.u8(l.length)
      this.bytes(l)
    }
    this.u8(0)
  }
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.off))
  }
}

/** A record to encode. `data` is written as-is (no compression inside RDATA). */
export interface DnsRecordInput {
  name: string
  type: number
  class?: number
  ttl: number
  data: Uint8Array
}

export interface EdnsInput {
  udpPayloadSize?: number
  dnssecOk?: boolean
  options?: EdnsOption[]
}

export interface DnsMessageInput {
  header: Partial<DnsHeader> & { id: number }
  /** Full RCODE (may exceed 15 only with `edns`). Overrides `header.rcode`. */
  rcode?: number
  questions?: DnsQuestion[]
  answers?: DnsRecordInput[]
  authorities?: DnsRecordInput[]
  additionals?: DnsRecordInput[]
  /** Present → an OPT record is appended to the additional section. */
  edns?: EdnsInput
}

/** Encodes a message, compressing owner names. Throws {@link DnsWireError} for unencodable names. */
export function encodeMessage(msg: DnsMessageInput): Buffer {
  const w = new Writer(true)
  const h = msg.header
  const rcode = msg.rcode ?? h.rcode ?? 0
  if (rcode > 0xf && !msg.edns) throw new DnsWireError('ERR_DNS_BAD_OPT', 'extended RCODE needs an OPT record')
  const flags =
    (h.qr ? 0x8000 : 0) |
    (((h.opcode ?? 0) & 0xf) << 11) |
    (h.aa ? 0x0400 : 0) |
    (h.tc ? 0x0200 : 0) |
    (h.rd ? 0x0100 : 0) |
    (h.ra ? 0x0080 : 0) |
    (h.ad ? 0x0020 : 0) |
    (h.cd ? 0x0010 : 0) |
    (rcode & 0xf)
  const questions = msg.questions ?? []
  const answers = msg.answers ?? []
  const authorities = msg.authorities ?? []
  const additionals = msg.additionals ?? []
  w.u16(h.id)
  w.u16(flags)
  w.u16(questions.length)
  w.u16(answers.length)
  w.u16(authorities.length)
  w.u16(additionals.length + (msg.edns ? 1 : 0))
  for (const q of questions) {
    w.name(q.name)
    w.u16(q.type)
    w.u16(q.class)
  }
  for (const rr of [...answers, ...authorities, ...additionals]) {
    if (rr.data.length > 0xffff) throw new DnsWireError('ERR_DNS_BAD_RDATA', 'rdata too long')
    w.name(rr.name)
    w.u16(rr.type)
    w.u16(rr.class ?? RRClass.IN)
    w.u32(Math.min(Math.max(0, Math.floor(rr.ttl)), 0x7fffffff))
    w.u16(rr.data.length)
    w.bytes(rr.data)
  }
  if (msg.edns) {
    const e = msg.edns
    const options = e.options ?? []
    w.u8(0) // root owner name
    w.u16(RRType.OPT)
    w.u16(e.udpPayloadSize ?? 1232)
    w.u32(((rcode >>> 4) & 0xff) * 0x1000000 + (e.dnssecOk ? 0x8000 : 0)) // version 0
    const len = options.reduce((n, o) => n + 4 + o.data.length, 0)
    if (len > 0xffff) throw new DnsWireError('ERR_DNS_BAD_OPT', 'OPT rdata too long')
    w.u16(len)
    for (const o of options) {
      w.u16(o.code)
      w.u16(o.data.length)
      w.bytes(o.data)
    }
  }
  return w.finish()
}

// ---------------------------------------------------------------- rdata helpers

export function rdataA(address: string): Uint8Array {
  const parts = address.split('.').map(Number)
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new DnsWireError('ERR_DNS_BAD_RDATA', `not an IPv4 address: ${address}`)
  }
  return Uint8Array.from(parts)
}

/** The wire form of a name (uncompressed), e.g. for PTR/CNAME rdata. */
export const rdataName = (name: string): Uint8Array => encodeNameUncompressed(name)

/** Reads the name in self-contained rdata (CNAME, PTR, NS) as parsed by {@link parseMessage}. */
export const decodeNameRdata = (data: Uint8Array): string => readName(data, 0).name

export interface SoaData {
  mname: string
  rname: string
  serial: number
  refresh: number
  retry: number
  expire: number
  minimum: number
}

export function rdataSoa(soa: SoaData): Uint8Array {
  const w = new Writer(false)
  w.name(soa.mname)
  w.name(soa.rname)
  for (const v of [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum]) w.u32(v)
  return w.finish()
}

export function decodeSoa(data: Uint8Array): SoaData {
  const r = new Reader(data)
  const mname = r.name()
  const rname = r.name()
  return { mname, rname, serial: r.u32(), refresh: r.u32(), retry: r.u32(), expire: r.u32(), minimum: r.u32() }
}

/** An Extended DNS Error option (RFC 8914 §2): INFO-CODE plus UTF-8 EXTRA-TEXT. */
export function edeOption(infoCode: number, extraText = ''): EdnsOption {
  const text = Buffer.from(extraText, 'utf8')
  const data = new Uint8Array(2 + text.length)
  data[0] = infoCode >> 8
  data[1] = infoCode & 0xff
  data.set(text, 2)
  return { code: EDNS_OPTION_EDE, data }
}

/** The Extended DNS Errors in a parsed message. */
export function extendedErrors(msg: DnsMessage): { infoCode: number; text: string }[] {
  return (msg.edns?.options ?? [])
    .filter((o) => o.code === EDNS_OPTION_EDE && o.data.length >= 2)
    .map((o) => ({
      infoCode: ((o.data[0] ?? 0) << 8) | (o.data[1] ?? 0),
      text: Buffer.from(o.data.subarray(2)).toString('utf8'),
    }))
}

const TYPE_NAMES = new Map<number, string>(Object.entries(RRType).map(([k, v]) => [v, k]))

/** `A`, `AAAA`, … or `TYPE1234` (RFC 3597 §5). */
export const typeName = (type: number): string => TYPE_NAMES.get(type) ?? `TYPE${type}`
