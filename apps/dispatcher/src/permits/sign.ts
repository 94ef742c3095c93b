/**
 * Ed25519-signed permits, as JWS compact serialization (RFC 7515) with `alg: EdDSA`
 * (RFC 8037), so any JOSE library or `openssl pkeyutl -verify -rawin` can check one.
 * Signing and verifying use node:crypto only.
 *
 * A permit binds one call: the SHA-256 of the exact request body, the SHA-256 of a binding
 * key (the sandbox id inside `keel run`, or the `x-keel-binding-key` the client chose),
 * the endpoint it was issued for, and signed constraints (provider, route, model, max
 * output tokens, agent, project).
 */
import { sha256Hex } from '@keel/audit'
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign, verify, type KeyObject } from 'node:crypto'
import { DispatchReason } from '@keel/core'
import type { RouteKind } from '../types.js'

export const PERMIT_TYPE = 'keel-permit+jwt'
export const PERMIT_ISSUER = 'keel-dispatcher'

export interface PermitClaims {
  /** Claims version. */
  v: 1
  /** Permit id (UUID). */
  jti: string
  iss: string
  /** Issued at / expires, seconds since the epoch (JWT convention). */
  iat: number
  exp: number
  project: string
  agent: string
  provider: string
  route: RouteKind
  model: string
  /** The most output tokens the call may ask for (0 for embeddings); null when the request set none. */
  maxOutputTokens: number | null
  /** Endpoint base URL the permit was issued for. */
  endpoint: string
  /** Hex SHA-256 of the request body bytes. */
  requestSha256: string
  /** Hex SHA-256 of the binding key. */
  bindingKeySha256: string
  /** The rule that allowed it, and how. */
  rule?: string
  reason: string
}

export type VerifyResult =
  | { ok: true; claims: PermitClaims }
  | { ok: false; reason: typeof DispatchReason.PERMIT_SIGNATURE_INVALID | typeof DispatchReason.PERMIT_EXPIRED; detail: string }

export interface PermitSigner {
  /** Key id: first 16 hex digits of the SHA-256 of the SPKI DER public key. */
  readonly keyId: string
  readonly publicKeyPem: string
  /** The public key as a JWK (OKP / Ed25519). */
  readonly publicJwk: Record<string, unknown>
  sign(claims: PermitClaims): string
  /** Checks shape, signature and expiry (`now` in ms). Never throws. */
  verify(token: string, now: number): VerifyResult
}

export { sha256Hex }

const b64url = (buf: Uint8Array | string): string => Buffer.from(buf).toString('base64url')

/** A new permit id. */
export const newPermitId = (): string => randomUUID()

/**
 * Creates a signer from an Ed25519 private key (PKCS#8 PEM or KeyObject); generates an
 * ephemeral key when none is given (permits then do not survive a restart).
 */
export function createPermitSigner(privateKey?: string | KeyObject): PermitSigner {
  const priv =
    privateKey === undefined
      ? generateKeyPairSync('ed25519').privateKey
      : typeof privateKey === 'string'
        ? createPrivateKey(privateKey)
        : privateKey
  if (priv.asymmetricKeyType !== 'ed25519') {
    throw new TypeError(`permit signing key must be Ed25519, got ${priv.asymmetricKeyType ?? 'unknown'}`)
  }
  const pub = createPublicKey(priv)
  const spki = pub.export({ type: 'spki', format: 'der' })
  const keyId = sha256Hex(spki).slice(0, 16)
  const header = b64url(JSON.stringify({ alg: 'EdDSA', typ: PERMIT_TYPE, kid: keyId }))
  const publicKeyPem = pub.export({ type: 'spki', format: 'pem' }).toString()
  const publicJwk = { ...(pub.export({ format: 'jwk' }) as Record<string, unknown>), kid: keyId, alg: 'EdDSA', use: 'sig' }

  return {
    keyId,
    publicKeyPem,
    publicJwk,
    sign(claims) {
      const signingInput = `${header}.${b64url(JSON.stringify(claims))}`
      const sig = sign(null, Buffer.from(signingInput), priv)
      return `${signingInput}.${sig.toString('base64url')}`
    },
    verify(token, now) {
      const invalid = (detail: string): VerifyResult => ({ ok: false, reason: DispatchReason.PERMIT_SIGNATURE_INVALID, detail })
      if (typeof token !== 'string' || token.length > 16_384) return invalid('permit is not a compact JWS')
      const parts = token.split('.')
      if (parts.length !== 3) return invalid('permit is not a compact JWS')
      const [h, p, s] = parts as [string, string, string]
      let hdr: unknown
      let claims: unknown
      try {
        hdr = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'))
        claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'))
      } catch {
        return invalid('permit header or claims are not JSON')
      }
      const hd = hdr as { alg?: unknown; kid?: unknown }
      // Fixed algorithm: never let the token pick it (RFC 8725 §3.1).
      if (hd?.alg !== 'EdDSA') return invalid('permit alg must be EdDSA')
      if (hd.kid !== keyId) return invalid('permit was signed by another key')
      let good = false
      try {
        good = verify(null, Buffer.from(`${h}.${p}`), pub, Buffer.from(s, 'base64url'))
      } catch {
        good = false
      }
      if (!good) return invalid('permit signature does not verify')
      const c = claims as Partial<PermitClaims>
      if (
        c?.v !== 1 ||
        typeof c.jti !== 'string' ||
        typeof c.exp !== 'number' ||
        typeof c.requestSha256 !== 'string' ||
        typeof c.bindingKeySha256 !== 'string' ||
        typeof c.model !== 'string' ||
        typeof c.provider !== 'string' ||
        (typeof c.maxOutputTokens !== 'number' && c.maxOutputTokens !== null)
      ) {
        return invalid('permit claims are incomplete')
      }
      if (now >= c.exp * 1000) return { ok: false, reason: DispatchReason.PERMIT_EXPIRED, detail: 'permit has expired' }
      return { ok: true, claims: c as PermitClaims }
    },
  }
}

/**
 * The binding digest sent upstream as `x-keel-binding` and recorded in the audit log: joins
 * a provider-side request to its permit, body and endpoint. Base64url SHA-256 of the four
 * values, newline-separated.
 */
export function bindingDigest(permitId: string, requestSha256: string, endpoint: string, bindingKeySha256: string): string {
  return createHash('sha256').update(`${permitId}\n${requestSha256}\n${endpoint}\n${bindingKeySha256}`).digest('base64url')
}
