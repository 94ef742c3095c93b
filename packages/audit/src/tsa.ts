/**
 * RFC 3161 time-stamping: build a TimeStampReq, POST it to a TSA, keep the response
 * (the receipt, `.tsr`), and check a receipt later.
 *
 * Checking a receipt (all of it, no external tool):
 *  1. PKIStatus is granted (0) or grantedWithMods (1), and a token is present (RFC 3161 §2.4.2).
 *  2. The token is CMS SignedData (RFC 5652) whose eContentType is id-ct-TSTInfo.
 *  3. TSTInfo.messageImprint is SHA-256 (or -384/-512) of the data we stamped.
 *  4. The SignerInfo's signedAttrs carry contentType = id-ct-TSTInfo and messageDigest =
 *     hash(eContent); the signature over the DER SET of signedAttrs verifies with the
 *     signer certificate's key (RFC 5652 §5.4).
 *  5. ESS signingCertificate(V2), when present, names that certificate (RFC 5816).
 *  6. With a trust anchor: the signer certificate chains to it, was valid at genTime, and
 *     has extendedKeyUsage timeStamping (RFC 3161 §2.3).
 * `openssl ts -verify` does the same checks independently (README).
 */
import { X509Certificate, createHash, randomBytes, verify as cryptoVerify } from 'node:crypto'
import {
  DerError,
  TAG,
  children,
  decodeGeneralizedTime,
  decodeOid,
  decodeSmallInt,
  decodeUnsigned,
  encodeBoolean,
  encodeNull,
  encodeOctetString,
  encodeOid,
  encodeSequence,
  encodeUnsigned,
  expectTag,
  readOne,
} from './der.js'
import type { Tlv } from './der.js'
import { KeelError } from '@keel/core'

const OID = {
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
  signedData: '1.2.840.113549.1.7.2',
  tstInfo: '1.2.840.113549.1.9.16.1.4',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingCertificate: '1.2.840.113549.1.9.16.2.12',
  signingCertificateV2: '1.2.840.113549.1.9.16.2.47',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ed25519: '1.3.101.112',
  timeStamping: '1.3.6.1.5.5.7.3.8',
} as const

const DIGEST_BY_OID: Record<string, string> = {
  [OID.sha1]: 'sha1',
  [OID.sha256]: 'sha256',
  [OID.sha384]: 'sha384',
  [OID.sha512]: 'sha512',
}

/** Signature algorithms a TSA may use, by OID, with the hash they imply (if any). */
const SIG_HASH_BY_OID: Record<string, string | null> = {
  [OID.rsaEncryption]: '', // hash from digestAlgorithm
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  [OID.ed25519]: null,
}

/** DER TimeStampReq for a SHA-256 digest, with a nonce and certReq TRUE. */
export function buildTimeStampRequest(digest: Buffer, nonce: Buffer = randomBytes(8)): Buffer {
  if (digest.length !== 32) throw new KeelError('ERR_USAGE', 'timestamp request: expected a SHA-256 digest')
  return encodeSequence(
    encodeUnsigned(1),
    encodeSequence(encodeSequence(encodeOid(OID.sha256), encodeNull()), encodeOctetString(digest)),
    encodeUnsigned(nonce),
    encodeBoolean(true),
  )
}

export interface TstInfo {
  policy: string
  hashAlgorithm: string
  imprint: Buffer
  serial: string
  genTime: Date
  nonce?: string
}

export interface ParsedTimeStampResponse {
  /** PKIStatus: 0 granted, 1 grantedWithMods, 2 rejection, 3 waiting, 4/5 revocation. */
  status: number
  statusText?: string
  /** The TimeStampToken (CMS ContentInfo), DER. */
  token?: Buffer
}

/** Splits a TimeStampResp into status and token. Throws DerError when malformed. */
export function parseTimeStampResponse(der: Buffer): ParsedTimeStampResponse {
  const resp = readOne(der, TAG.SEQUENCE)
  const [statusInfo, token] = children(resp)
  const si = children(expectTag(statusInfo, TAG.SEQUENCE, 'PKIStatusInfo'))
  const out: ParsedTimeStampResponse = { status: decodeSmallInt(expectTag(si[0], TAG.INTEGER, 'PKIStatus')) }
  const text = si[1]?.tag === TAG.SEQUENCE ? children(si[1]).map((t) => t.value.toString('utf8')).join('; ') : undefined
  if (text) out.statusText = text
  if (token) out.token = Buffer.from(expectTag(token, TAG.SEQUENCE, 'TimeStampToken').raw)
  return out
}

function parseTstInfo(der: Buffer): TstInfo {
  const f = children(readOne(der, TAG.SEQUENCE))
  const policy = decodeOid(expectTag(f[1], TAG.OID, 'TSTInfo.policy'))
  const mi = children(expectTag(f[2], TAG.SEQUENCE, 'messageImprint'))
  const alg = decodeOid(expectTag(children(expectTag(mi[0], TAG.SEQUENCE, 'hashAlgorithm'))[0], TAG.OID))
  const imprint = Buffer.from(expectTag(mi[1], TAG.OCTET_STRING, 'hashedMessage').value)
  const serial = decodeUnsigned(expectTag(f[3], TAG.INTEGER, 'serialNumber')).toString('hex')
  const genTime = decodeGeneralizedTime(expectTag(f[4], TAG.GENERALIZED_TIME, 'genTime'))
  const info: TstInfo = { policy, hashAlgorithm: DIGEST_BY_OID[alg] ?? alg, imprint, serial, genTime }
  const nonce = f.slice(5).find((t) => t.tag === TAG.INTEGER)
  if (nonce) info.nonce = decodeUnsigned(nonce).toString('hex')
  return info
}

export interface VerifyTimestampOptions {
  /** The data that was stamped (its hash must be the token's message imprint). */
  data: Buffer
  /** PEM with one or more trusted TSA (root or intermediate) certificates. */
  trustedCa?: string
  /** Extra certificates to build the chain with (PEM), e.g. the TSA's own certificate. */
  untrusted?: string
  /** When given, the token's nonce must equal it (hex, leading zeros stripped). */
  nonce?: string
}

export type TimestampCheck =
  | { ok: true; tstInfo: TstInfo; signer: string; anchored: boolean }
  | { ok: false; problem: string }

function pemCerts(pem: string | undefined): X509Certificate[] {
  if (!pem) return []
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  return blocks.map((b) => new X509Certificate(b))
}

function attrValue(attrs: Tlv[], oid: string): Tlv | undefined {
  for (const a of attrs) {
    const [type, values] = children(a)
    if (type && decodeOid(type) === oid) return values ? children(expectTag(values, TAG.SET))[0] : undefined
  }
  return undefined
}

function serialHex(cert: X509Certificate): string {
  return cert.serialNumber.toLowerCase().replace(/^(00)+(?=.)/, '')
}

/** Checks a receipt against the data it should cover. Never throws for bad input. */
export function verifyTimestampResponse(der: Buffer, options: VerifyTimestampOptions): TimestampCheck {
  try {
    return check(der, options)
  } catch (err) {
    if (err instanceof DerError) return { ok: false, problem: `malformed receipt: ${err.message}` }
    return { ok: false, problem: (err as Error).message }
  }
}

function check(der: Buffer, options: VerifyTimestampOptions): TimestampCheck {
  const resp = parseTimeStampResponse(der)
  if (resp.status !== 0 && resp.status !== 1) {
    return { ok: false, problem: `TSA did not grant the request (status ${resp.status}${resp.statusText ? `: ${resp.statusText}` : ''})` }
  }
  if (!resp.token) return { ok: false, problem: 'granted response carries no token' }
  // ContentInfo { contentType, [0] EXPLICIT SignedData }
  const ci = children(readOne(resp.token, TAG.SEQUENCE))
  if (decodeOid(expectTag(ci[0], TAG.OID)) !== OID.signedData) return { ok: false, problem: 'token is not CMS SignedData' }
  const sd = children(expectTag(children(expectTag(ci[1], TAG.CTX0, 'content'))[0], TAG.SEQUENCE, 'SignedData'))
  const encap = children(expectTag(sd[2], TAG.SEQUENCE, 'encapContentInfo'))
  if (decodeOid(expectTag(encap[0], TAG.OID)) !== OID.tstInfo) return { ok: false, problem: 'token content is not TSTInfo' }
  const eContent = expectTag(children(expectTag(encap[1], TAG.CTX0, 'eContent'))[0], TAG.OCTET_STRING, 'eContent').value
  const tstInfo = parseTstInfo(Buffer.from(eContent))

  const digestName = tstInfo.hashAlgorithm
  if (!['sha256', 'sha384', 'sha512'].includes(digestName)) return { ok: false, problem: `unsupported imprint algorithm ${digestName}` }
  const expected = createHash(digestName).update(options.data).digest()
  if (!expected.equals(tstInfo.imprint)) return { ok: false, problem: 'message imprint does not match the stamped data' }
  if (options.nonce !== undefined && tstInfo.nonce !== options.nonce.replace(/^(00)+(?=.)/, '').toLowerCase()) {
    return { ok: false, problem: 'nonce does not match the request' }
  }

  let idx = 3
  const embedded: X509Certificate[] = []
  if (sd[idx]?.tag === TAG.CTX0) {
    for (const c of children(sd[idx]!)) if (c.tag === TAG.SEQUENCE) embedded.push(new X509Certificate(Buffer.from(c.raw)))
    idx++
  }
  if (sd[idx]?.tag === TAG.CTX1) idx++
  const signerInfos = children(expectTag(sd[idx], TAG.SET, 'signerInfos'))
  if (signerInfos.length !== 1) return { ok: false, problem: `expected one SignerInfo, found ${signerInfos.length}` }
  const si = children(expectTag(signerInfos[0], TAG.SEQUENCE, 'SignerInfo'))
  const sid = si[1]!
  const digestAlg = DIGEST_BY_OID[decodeOid(expectTag(children(expectTag(si[2], TAG.SEQUENCE))[0], TAG.OID))]
  if (!digestAlg || digestAlg === 'sha1') return { ok: false, problem: 'unsupported SignerInfo digest algorithm' }
  const signedAttrsTlv = expectTag(si[3], TAG.CTX0, 'signedAttrs')
  const sigAlgOid = decodeOid(expectTag(children(expectTag(si[4], TAG.SEQUENCE))[0], TAG.OID))
  const signature = expectTag(si[5], TAG.OCTET_STRING, 'signature').value

  const attrs = children(signedAttrsTlv)
  const ct = attrValue(attrs, OID.contentType)
  if (!ct || decodeOid(ct) !== OID.tstInfo) return { ok: false, problem: 'signed contentType attribute is not TSTInfo' }
  const md = attrValue(attrs, OID.messageDigest)
  if (!md || !expectTag(md, TAG.OCTET_STRING).value.equals(createHash(digestAlg).update(eContent).digest())) {
    return { ok: false, problem: 'messageDigest attribute does not match the TSTInfo' }
  }

  const pool = [...embedded, ...pemCerts(options.untrusted)]
  let signer: X509Certificate | undefined
  if (sid.tag === TAG.SEQUENCE) {
    const serial = decodeUnsigned(expectTag(children(sid)[1], TAG.INTEGER)).toString('hex')
    signer = pool.find((c) => serialHex(c) === serial)
  } else if (sid.tag === TAG.CTX0_PRIM) {
    const ski = sid.value.toString('hex')
    signer = pool.find((c) => certSki(c) === ski)
  }
  if (!signer) return { ok: false, problem: 'signer certificate not found (not in the token; pass it as untrusted)' }

  const essV2 = attrValue(attrs, OID.signingCertificateV2)
  const essV1 = attrValue(attrs, OID.signingCertificate)
  if (essV2 || essV1) {
    const certIds = children(expectTag(children(expectTag((essV2 ?? essV1)!, TAG.SEQUENCE))[0], TAG.SEQUENCE))
    const first = children(expectTag(certIds[0], TAG.SEQUENCE, 'ESSCertID'))
    let hashName = essV2 ? 'sha256' : 'sha1'
    let hashTlv = first[0]
    if (essV2 && first[0]?.tag === TAG.SEQUENCE) {
      hashName = DIGEST_BY_OID[decodeOid(children(first[0])[0]!)] ?? 'unknown'
      hashTlv = first[1]
    }
    if (hashName === 'unknown') return { ok: false, problem: 'unsupported ESS certificate hash' }
    const certHash = expectTag(hashTlv, TAG.OCTET_STRING, 'certHash').value
    if (!certHash.equals(createHash(hashName).update(signer.raw).digest())) {
      return { ok: false, problem: 'ESS signingCertificate does not name the signer certificate' }
    }
  }

  const toVerify = Buffer.from(signedAttrsTlv.raw)
  toVerify[0] = TAG.SET // RFC 5652 §5.4: the signature covers the DER SET OF, not the [0] IMPLICIT form
  const sigHash = SIG_HASH_BY_OID[sigAlgOid]
  if (sigHash === undefined) return { ok: false, problem: `unsupported signature algorithm ${sigAlgOid}` }
  const ok = cryptoVerify(sigHash === null ? null : sigHash || digestAlg, toVerify, signer.publicKey, signature)
  if (!ok) return { ok: false, problem: 'TSA signature does not verify' }

  const eku = signer.keyUsage ?? []
  if (!eku.includes(OID.timeStamping)) return { ok: false, problem: 'signer certificate lacks extendedKeyUsage timeStamping' }
  if (tstInfo.genTime < new Date(signer.validFrom) || tstInfo.genTime > new Date(signer.validTo)) {
    return { ok: false, problem: 'signer certificate was not valid at genTime' }
  }

  const anchors = pemCerts(options.trustedCa)
  let anchored = false
  if (anchors.length > 0) {
    const chainOk = chainsTo(signer, anchors, pool, tstInfo.genTime)
    if (!chainOk) return { ok: false, problem: 'signer certificate does not chain to the trusted TSA CA' }
    anchored = true
  }
  return { ok: true, tstInfo, signer: signer.subject, anchored }
}

/** The certificate's SubjectKeyIdentifier extension (2.5.29.14), hex, if present. */
function certSki(c: X509Certificate): string | undefined {
  const tbs = children(expectTag(children(readOne(c.raw, TAG.SEQUENCE))[0], TAG.SEQUENCE, 'tbsCertificate'))
  const exts = tbs.find((t) => t.tag === 0xa3)
  if (!exts) return undefined
  for (const ext of children(expectTag(children(exts)[0], TAG.SEQUENCE))) {
    const parts = children(ext)
    if (decodeOid(expectTag(parts[0], TAG.OID)) !== '2.5.29.14') continue
    const value = expectTag(parts[parts.length - 1], TAG.OCTET_STRING)
    return expectTag(readOne(Buffer.from(value.value)), TAG.OCTET_STRING).value.toString('hex')
  }
  return undefined
}

function validAt(c: X509Certificate, when: Date): boolean {
  return when >= new Date(c.validFrom) && when <= new Date(c.validTo)
}

/** True when `leaf` reaches one of `anchors` through certificates in `pool` (at most 5 links). */
function chainsTo(leaf: X509Certificate, anchors: X509Certificate[], pool: X509Certificate[], when: Date): boolean {
  let cur = leaf
  for (let depth = 0; depth < 5; depth++) {
    if (anchors.some((a) => a.fingerprint256 === cur.fingerprint256)) return validAt(cur, when)
    const anchor = anchors.find((a) => cur.checkIssued(a) && cur.verify(a.publicKey))
    if (anchor) return validAt(anchor, when) && validAt(cur, when)
    const next = pool.find((p) => p.fingerprint256 !== cur.fingerprint256 && cur.checkIssued(p) && cur.verify(p.publicKey) && p.ca)
    if (!next || !validAt(cur, when)) return false
    cur = next
  }
  return false
}

export interface TimestampRequestOptions {
  /** TSA URL (http or https). */
  url: string
  timeoutMs?: number
}

export interface TimestampReceipt {
  /** DER TimeStampResp as received. */
  response: Buffer
  tstInfo: TstInfo
}

/**
 * Asks a TSA to stamp `data` (SHA-256 imprint) and returns its response after checking
 * status, imprint, nonce and signature (not the trust anchor: the verifier does that).
 */
export async function requestTimestamp(data: Buffer, options: TimestampRequestOptions): Promise<TimestampReceipt> {
  const nonce = randomBytes(8)
  nonce[0] = nonce[0]! & 0x7f || 0x01
  const body = buildTimeStampRequest(createHash('sha256').update(data).digest(), nonce)
  let res: Response
  try {
    res = await fetch(options.url, {
      method: 'POST',
      headers: { 'content-type': 'application/timestamp-query', accept: 'application/timestamp-reply' },
      body,
      signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
    })
  } catch (err) {
    throw new KeelError('ERR_AUDIT_IO', `TSA ${options.url}: ${(err as Error).message}`, { cause: err })
  }
  const response = Buffer.from(await res.arrayBuffer())
  if (!res.ok) throw new KeelError('ERR_AUDIT_IO', `TSA ${options.url}: HTTP ${res.status}`)
  const checked = verifyTimestampResponse(response, { data, nonce: nonce.toString('hex') })
  if (!checked.ok) throw new KeelError('ERR_AUDIT_VERIFY', `TSA ${options.url}: ${checked.problem}`)
  return { response, tstInfo: checked.tstInfo }
}
