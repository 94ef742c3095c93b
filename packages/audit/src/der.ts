/**
 * The little DER (ITU-T X.690) that RFC 3161 needs: encode a TimeStampReq, walk a
 * TimeStampResp. Single-byte tags only (all of CMS and RFC 3161 fit), definite lengths
 * only (DER forbids indefinite ones). Every read is bounds-checked and throws
 * {@link DerError} on malformed input.
 */

export class DerError extends Error {
  override readonly name = 'DerError'
}

/** One tag-length-value: `buf.subarray(start, end)` is the whole TLV, `value` its content. */
export interface Tlv {
  tag: number
  start: number
  end: number
  value: Buffer
  /** The whole encoding, header included. */
  raw: Buffer
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  SEQUENCE: 0x30,
  SET: 0x31,
  GENERALIZED_TIME: 0x18,
  /** [0] constructed (EXPLICIT or IMPLICIT SET/SEQUENCE). */
  CTX0: 0xa0,
  CTX1: 0xa1,
  /** [0] primitive (e.g. SubjectKeyIdentifier in a SignerIdentifier). */
  CTX0_PRIM: 0x80,
} as const

export function readTlv(buf: Buffer, pos: number, limit = buf.length): Tlv {
  if (pos + 2 > limit) throw new DerError(`truncated DER at ${pos}`)
  const tag = buf[pos]!
  if ((tag & 0x1f) === 0x1f) throw new DerError(`multi-byte tag at ${pos} not supported`)
  let len = buf[pos + 1]!
  let hdr = 2
  if (len & 0x80) {
    const n = len & 0x7f
    if (n === 0 || n > 4) throw new DerError(`unsupported length encoding at ${pos}`)
    if (pos + 2 + n > limit) throw new DerError(`truncated DER length at ${pos}`)
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + 2 + i]!
    hdr += n
  }
  const end = pos + hdr + len
  if (end > limit) throw new DerError(`DER value at ${pos} runs past its container`)
  return { tag, start: pos, end, value: buf.subarray(pos + hdr, end), raw: buf.subarray(pos, end) }
}

/** Reads one TLV that must fill `buf` exactly. */
export function readOne(buf: Buffer, tag?: number): Tlv {
  const t = readTlv(buf, 0)
  if (t.end !== buf.length) throw new DerError('trailing bytes after DER value')
  if (tag !== undefined) expectTag(t, tag)
  return t
}

export function children(t: Tlv): Tlv[] {
  const out: Tlv[] = []
  let pos = 0
  // Bounded: each child consumes at least two bytes.
  while (pos < t.value.length) {
    const c = readTlv(t.value, pos)
    out.push(c)
    pos = c.end
  }
  return out
}

export function expectTag(t: Tlv | undefined, tag: number, what = 'value'): Tlv {
  if (!t) throw new DerError(`missing ${what}`)
  if (t.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${t.tag.toString(16)}`)
  return t
}

export function decodeOid(t: Tlv): string {
  expectTag(t, TAG.OID, 'OID')
  const v = t.value
  if (v.length === 0) throw new DerError('empty OID')
  const parts: number[] = []
  let n = 0
  for (let i = 0; i < v.length; i++) {
    n = n * 128 + (v[i]! & 0x7f)
    if (!(v[i]! & 0x80)) {
      if (parts.length === 0) {
        const first = n < 80 ? Math.floor(n / 40) : 2
        parts.push(first, n - first * 40)
      } else {
        parts.push(n)
      }
      n = 0
    }
  }
  return parts.join('.')
}

/** Unsigned big-endian content of an INTEGER, leading zero bytes removed. */
export function decodeUnsigned(t: Tlv): Buffer {
  expectTag(t, TAG.INTEGER, 'INTEGER')
  let i = 0
  while (i < t.value.length - 1 && t.value[i] === 0) i++
  return t.value.subarray(i)
}

export function decodeSmallInt(t: Tlv): number {
  const v = decodeUnsigned(t)
  if (v.length > 6) throw new DerError('INTEGER too large')
  return v.readUIntBE(0, v.length || 1)
}

/** GeneralizedTime `YYYYMMDDHHMMSS[.fff]Z` to a Date. */
export function decodeGeneralizedTime(t: Tlv): Date {
  expectTag(t, TAG.GENERALIZED_TIME, 'GeneralizedTime')
  const s = t.value.toString('latin1')
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?Z$/.exec(s)
  if (!m) throw new DerError(`bad GeneralizedTime ${JSON.stringify(s)}`)
  const ms = m[7] ? Math.floor(Number(`0.${m[7]}`) * 1000) : 0
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, ms))
}

// --- encoding -------------------------------------------------------------

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

export function encodeTlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(content.length), content])
}

export const encodeSequence = (...parts: Buffer[]): Buffer => encodeTlv(TAG.SEQUENCE, Buffer.concat(parts))

export function encodeOid(oid: string): Buffer {
  const parts = oid.split('.').map((p) => Number(p))
  if (parts.length < 2 || parts.some((p) => !Number.isSafeInteger(p) || p < 0)) throw new DerError(`bad OID ${oid}`)
  const out: number[] = []
  const arcs = [parts[0]! * 40 + parts[1]!, ...parts.slice(2)]
  for (const arc of arcs) {
    const bytes = [arc & 0x7f]
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) bytes.unshift((v & 0x7f) | 0x80)
    out.push(...bytes)
  }
  return encodeTlv(TAG.OID, Buffer.from(out))
}

/** A non-negative INTEGER from big-endian bytes (or a small number). */
export function encodeUnsigned(value: Buffer | number): Buffer {
  let bytes: Buffer
  if (typeof value === 'number') {
    const arr: number[] = []
    for (let v = value; v > 0; v = Math.floor(v / 256)) arr.unshift(v & 0xff)
    bytes = Buffer.from(arr.length ? arr : [0])
  } else {
    let i = 0
    while (i < value.length - 1 && value[i] === 0) i++
    bytes = value.subarray(i)
    if (bytes.length === 0) bytes = Buffer.from([0])
  }
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes])
  return encodeTlv(TAG.INTEGER, bytes)
}

export const encodeOctetString = (b: Buffer): Buffer => encodeTlv(TAG.OCTET_STRING, b)
export const encodeBoolean = (v: boolean): Buffer => encodeTlv(TAG.BOOLEAN, Buffer.from([v ? 0xff : 0x00]))
export const encodeNull = (): Buffer => Buffer.from([TAG.NULL, 0])
