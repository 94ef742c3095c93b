/**
 * The per-sandbox certificate authority for `via: dispatcher` names (DESIGN.md, data path
 * step 7): keel terminates the agent's TLS to those names with a leaf certificate from
 * this CA, and the agent trusts the CA through NODE_EXTRA_CA_CERTS, SSL_CERT_FILE & co.
 *
 * Hardening, because a CA the agent trusts is a powerful thing to hand out:
 * - **Name constraints** (RFC 5280 §4.2.1.10, critical): the permitted dNSName subtrees are
 *   the dispatcher names (each name and its subdomains, as RFC 5280 defines a dNSName
 *   subtree), and every IPv4 and IPv6 address is excluded. A verifier that honours name
 *   constraints (OpenSSL, so Node, curl, Python, git; Go; NSS; BoringSSL) rejects any
 *   other certificate this CA signs, even if the key leaked.
 * - **pathLenConstraint 0**: it issues leaves, never intermediates.
 * - **The private key never leaves the process**: it is a non-extractable-in-practice
 *   `KeyObject` in the launcher's memory; only the certificate PEM is ever written out.
 * - **Short validity**, backdated a little for clock skew; leaves are shorter still and
 *   re-issued from the cache before they expire.
 *
 * Keys come from node:crypto (native, asynchronous for the CA). node-forge builds the
 * certificates, but the signature is made with node:crypto (RSASSA-PKCS1-v1_5 over
 * SHA-256, the same bytes forge would produce) because forge's pure-JS RSA takes ~80 ms
 * per signature, which a first connection would otherwise wait for.
 * node-forge only handles RSA keys in certificates, hence RSA-2048.
 */
import {
  constants,
  createPrivateKey,
  generateKeyPair,
  generateKeyPairSync,
  privateEncrypt,
  randomBytes,
  type KeyObject,
} from 'node:crypto'
import { isIP } from 'node:net'
import { promisify } from 'node:util'
import type forgeTypes from 'node-forge'
import { KeelError, normalizeHostname } from '@keel/core'

const generateKeyPairAsync = promisify(generateKeyPair)

/**
 * node-forge, loaded by the first CA made: only sandboxes with `via: dispatcher` routes
 * need it, and loading it is ~20-50 ms of every `keel run` start otherwise (bench/sandbox).
 * Everything below that uses it runs after buildSandboxCa has set it.
 */
let forge: typeof forgeTypes

export const DEFAULT_CA_VALIDITY_MS = 7 * 24 * 3600_000
export const DEFAULT_LEAF_VALIDITY_MS = 24 * 3600_000
/** Certificates start this far in the past, so a client whose clock lags still accepts them. */
export const CLOCK_SKEW_MS = 5 * 60_000
/** A cached leaf is re-issued when it has less than this left. */
const RENEW_BEFORE_MS = 3600_000
const RSA_BITS = 2048
/** DER prefix of a DigestInfo for SHA-256 (RFC 8017 §9.2, note 1). */
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex')

export interface SandboxCaOptions {
  /** Subject CN of the CA. Default `keel sandbox CA`. */
  commonName?: string
  /**
   * The names the CA may issue for: exact names, or a wildcard pattern's base name
   * (`*.example.com` → `example.com`). Each becomes a permitted dNSName subtree, and
   * {@link SandboxCa.leafFor} refuses anything outside them. Required and non-empty: an
   * unconstrained CA is not something keel hands to an agent.
   */
  names: readonly string[]
  /** CA lifetime from now. Default 7 days (a `keel run` that outlives it loses dispatcher TLS). */
  validityMs?: number
  /** Leaf lifetime, capped at the CA's. Default 24 hours. */
  leafValidityMs?: number
  /** Clock (ms since the epoch). Default `Date.now`. */
  now?: () => number
}

export interface LeafCertificate {
  /** PKCS#8 PEM private key. */
  key: string
  /** PEM certificate (the leaf only). */
  cert: string
  /** When the leaf expires (ms since the epoch). */
  notAfter: number
}

export interface SandboxCa {
  /** The CA certificate, PEM: the only thing that goes to the agent. */
  readonly certPem: string
  /** The permitted names (normalized), as in the name constraints. */
  readonly names: readonly string[]
  readonly notBefore: number
  readonly notAfter: number
  /** True when `name` is inside the name constraints. */
  permits(name: string): boolean
  /**
   * A leaf certificate for `name` (SAN dNSName, serverAuth), cached per name and renewed
   * before it expires. Throws a KeelError (`ERR_USAGE`) for a name outside the
   * constraints or not a hostname, and `ERR_INTERNAL` once the CA itself has expired.
   */
  leafFor(name: string): LeafCertificate
}

/**
 * Makes a fresh CA (key generated off the main thread) for one sandbox.
 *
 * @example
 * const ca = await createSandboxCa({ names: ['api.openai.com', 'api.anthropic.com'] })
 * writeFileSync(caPath, ca.certPem, { mode: 0o644 })
 * const { key, cert } = ca.leafFor('api.openai.com')
 */
export async function createSandboxCa(options: SandboxCaOptions): Promise<SandboxCa> {
  return (await buildSandboxCa(options)).ca
}

/**
 * @internal Test-only: the CA plus a raw issuer that skips the name checks, so tests can
 * prove that clients reject what the name constraints forbid. Not exported from the package.
 */
export async function buildSandboxCa(
  options: SandboxCaOptions,
): Promise<{ ca: SandboxCa; issueUnchecked(altNames: Array<{ dns: string } | { ip: string }>): LeafCertificate }> {
  const names = constraintNames(options.names)
  const now = options.now ?? Date.now
  const validityMs = options.validityMs ?? DEFAULT_CA_VALIDITY_MS
  const leafValidityMs = options.leafValidityMs ?? DEFAULT_LEAF_VALIDITY_MS
  if (!(validityMs > 0) || !(leafValidityMs > 0)) throw new KeelError('ERR_USAGE', 'certificate validity must be positive')
  forge ??= (await import('node-forge')).default

  const caKeys = await generateKeyPairAsync('rsa', {
    modulusLength: RSA_BITS,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  })
  const caPrivate = createPrivateKey(caKeys.privateKey)
  const signer = nodeSigner(caPrivate)

  const issuedAt = now()
  const notBefore = issuedAt - CLOCK_SKEW_MS
  const notAfter = issuedAt + validityMs
  const caName = [
    { name: 'commonName', value: options.commonName ?? 'keel sandbox CA' },
    { name: 'organizationName', value: 'keel' },
  ]
  const ca = forge.pki.createCertificate()
  ca.publicKey = forge.pki.publicKeyFromPem(caKeys.publicKey)
  ca.serialNumber = serialNumber()
  ca.validity.notBefore = new Date(notBefore)
  ca.validity.notAfter = new Date(notAfter)
  ca.setSubject(caName)
  ca.setIssuer(caName)
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
    { id: '2.5.29.30', name: 'nameConstraints', critical: true, value: nameConstraintsValue(names) },
  ])
  ca.sign(signer, forge.md.sha256.create())
  const certPem = forge.pki.certificateToPem(ca)
  const caKeyId = ca.generateSubjectKeyIdentifier().getBytes()

  // One leaf key for every name of this sandbox: the leaves share one trust domain (this
  // process), and a key per name would cost a keygen on each first connection.
  let leafKeys: { privatePem: string; publicKey: forgeTypes.pki.PublicKey } | undefined
  const leafKey = () => {
    if (leafKeys === undefined) {
      const k = generateKeyPairSync('rsa', {
        modulusLength: RSA_BITS,
        publicKeyEncoding: { type: 'spki', format: 'pem' },
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      })
      leafKeys = { privatePem: k.privateKey, publicKey: forge.pki.publicKeyFromPem(k.publicKey) }
    }
    return leafKeys
  }

  const permits = (name: string): boolean => {
    const n = normalizeHostname(name)
    return n !== undefined && isIP(n) === 0 && names.some((base) => n === base || n.endsWith(`.${base}`))
  }

  const cache = new Map<string, LeafCertificate>()
  function leafFor(name: string): LeafCertificate {
    const n = normalizeHostname(name)
    if (n === undefined || isIP(n) !== 0) throw new KeelError('ERR_USAGE', `not a hostname: ${JSON.stringify(name)}`)
    if (!permits(n)) {
      throw new KeelError('ERR_USAGE', `${n} is outside the sandbox CA's name constraints (${names.join(', ')})`)
    }
    const t = now()
    const cached = cache.get(n)
    if (cached !== undefined && cached.notAfter - t > RENEW_BEFORE_MS) return cached
    if (t >= notAfter) {
      throw new KeelError('ERR_INTERNAL', `the sandbox CA expired at ${new Date(notAfter).toISOString()}; restart keel run`)
    }
    const issued = issue(n, [{ type: 2, value: n }], t)
    cache.set(n, issued)
    return issued
  }

  function issue(commonName: string, altNames: Array<{ type: number; value?: string; ip?: string }>, t: number): LeafCertificate {
    const keys = leafKey()
    const leafNotAfter = Math.min(t + leafValidityMs, notAfter)
    const leaf = forge.pki.createCertificate()
    leaf.publicKey = keys.publicKey
    leaf.serialNumber = serialNumber()
    leaf.validity.notBefore = new Date(Math.max(t - CLOCK_SKEW_MS, notBefore))
    leaf.validity.notAfter = new Date(leafNotAfter)
    leaf.setSubject([{ name: 'commonName', value: commonName }])
    leaf.setIssuer(caName)
    leaf.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: caKeyId },
    ])
    leaf.sign(signer, forge.md.sha256.create())
    return { key: keys.privatePem, cert: forge.pki.certificateToPem(leaf), notAfter: leafNotAfter }
  }

  return {
    ca: { certPem, names, notBefore, notAfter, permits, leafFor },
    issueUnchecked: (altNames) =>
      issue(
        altNames.map((a) => ('dns' in a ? a.dns : a.ip)).join(' '),
        altNames.map((a) => ('dns' in a ? { type: 2, value: a.dns } : { type: 7, ip: a.ip })),
        now(),
      ),
  }
}

/** Normalized, deduplicated names; a name already covered by another's subtree is dropped. */
function constraintNames(input: readonly string[]): string[] {
  const out = new Set<string>()
  for (const raw of input) {
    const n = normalizeHostname(raw.startsWith('**.') ? raw.slice(3) : raw.startsWith('*.') ? raw.slice(2) : raw)
    if (n === undefined || isIP(n) !== 0) throw new KeelError('ERR_USAGE', `sandbox CA: not a hostname: ${JSON.stringify(raw)}`)
    out.add(n)
  }
  if (out.size === 0) throw new KeelError('ERR_USAGE', 'sandbox CA: at least one name is required (it is always name-constrained)')
  const all = [...out]
  return all.filter((n) => !all.some((other) => other !== n && n.endsWith(`.${other}`))).sort()
}

/**
 * NameConstraints ::= SEQUENCE { permittedSubtrees [0] GeneralSubtrees OPTIONAL,
 *                                excludedSubtrees  [1] GeneralSubtrees OPTIONAL }
 * GeneralSubtree  ::= SEQUENCE { base GeneralName, ... }  (minimum/maximum left out, as RFC 5280 requires)
 * dNSName is GeneralName [2] IA5String and iPAddress [7] OCTET STRING (address ‖ mask), both IMPLICIT.
 * node-forge parses this extension but cannot build it, so it is built here with forge.asn1.
 */
function nameConstraintsValue(names: readonly string[]): forgeTypes.asn1.Asn1 {
  const { asn1 } = forge
  const subtree = (tag: number, bytes: string) =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [asn1.create(asn1.Class.CONTEXT_SPECIFIC, tag, false, bytes)])
  const permitted = names.map((n) => subtree(2, n))
  const excluded = [
    subtree(7, '\0'.repeat(8)), // 0.0.0.0/0
    subtree(7, '\0'.repeat(32)), // ::/0
  ]
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, permitted),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 1, true, excluded),
  ])
}

/**
 * A forge-compatible signing key backed by node:crypto. forge's `cert.sign(key, md)` calls
 * `key.sign(md)` with the SHA-256 state of the TBSCertificate and expects the RSASSA-PKCS1-v1_5
 * signature as a binary string: that is `privateEncrypt` (type-1 padding) of the DigestInfo.
 */
function nodeSigner(key: KeyObject): forgeTypes.pki.rsa.PrivateKey {
  const sign = (md: forgeTypes.md.MessageDigest): string => {
    const digest = Buffer.from(md.digest().getBytes(), 'binary')
    const signature = privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest]))
    return signature.toString('binary')
  }
  return { sign } as unknown as forgeTypes.pki.rsa.PrivateKey
}

/** 16 random bytes, top bit clear so the DER INTEGER stays positive (RFC 5280 §4.1.2.2). */
function serialNumber(): string {
  const b = randomBytes(16)
  b[0] = (b[0] ?? 0) & 0x7f
  return b.toString('hex')
}
